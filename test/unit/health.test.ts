import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Manifest } from '../../src/repository/manifest.js';
import type { SourceCatalog } from '../../src/repository/source-catalog.js';
import { parseDuration } from '../../src/retention/duration.js';
import { assessHealth, type HealthThresholds, type RepositoryFacts } from '../../src/status/health.js';

const now = new Date('2026-11-21T12:00:00Z');
const HOUR = 3_600_000;
const thresholds: HealthThresholds = { backupMaxAge: parseDuration('26h', 'x'), sizeDropMax: 0.5, minSizeBytes: 0, restoreTestMaxAge: undefined, archiveLagMax: undefined };

/** The fields of a manifest health reads; the rest does not matter to it. */
function manifest(id: string, hoursAgo: number, rawBytes: number, extra: Record<string, unknown> = {}): Manifest {
  const finishedAt = new Date(now.getTime() - hoursAgo * HOUR).toISOString();
  return {
    id,
    kind: 'logical',
    source: 'app',
    startedAt: finishedAt,
    finishedAt,
    durationMs: 1000,
    totals: { rawBytes, storedBytes: rawBytes / 4, rows: 0 },
    options: { format: 'custom', schemaOnly: false, dataOnly: false, tables: [], excludeTables: [], schemas: [], excludeSchemas: [] },
    ...extra,
  } as unknown as Manifest;
}

function facts(location: string, backups: Manifest[], more: Partial<SourceCatalog> = {}, extra: Partial<RepositoryFacts> = {}): RepositoryFacts {
  return { location, catalog: { backups, unreadable: [], leftovers: [], pins: new Map(), failures: [], ...more }, ...extra };
}

describe('assessHealth', () => {
  it('healthy with a recent backup; BACKUP_TOO_OLD past the threshold', () => {
    assert.deepEqual(assessHealth('app', [facts('/r', [manifest('a', 2, 1000)])], thresholds, now).findings, []);
    const old = assessHealth('app', [facts('/r', [manifest('a', 27, 1000)])], thresholds, now);
    assert.deepEqual(old.findings.map((f) => f.code), ['BACKUP_TOO_OLD']);
    assert.equal(old.healthy, false);
  });

  it('a failure counts per repository: failed in one, succeeded in the other', () => {
    const failure = { format: 1 as const, source: 'app', kind: 'logical', startedAt: new Date(now.getTime() - HOUR).toISOString(), failedAt: new Date(now.getTime() - HOUR + 5000).toISOString(), code: 'STORAGE_FULL', message: 'no space left on /full', key: 'k' };
    const result = assessHealth('app', [facts('/full', [manifest('a', 25, 1000)], { failures: [failure] }), facts('/good', [manifest('a', 25, 1000), manifest('b', 1, 1000)])], thresholds, now);
    assert.deepEqual(result.findings.map((f) => [f.code, f.repository, f.message]), [['LAST_BACKUP_FAILED', '/full', 'the last backup failed 60m ago in /full: no space left on /full']]);
    assert.equal(result.lastBackup?.id, 'b');
    assert.deepEqual(result.lastBackup?.repositories, ['/good']);
    assert.deepEqual(result.repositories.map((r) => [r.location, r.backups]), [['/full', 1], ['/good', 2]]);
  });

  it('size drop compares with the previous backup of the same selection only', () => {
    const drop = assessHealth('app', [facts('/r', [manifest('a', 3, 10_000), manifest('b', 2, 4000)])], thresholds, now);
    assert.match(drop.findings[0]!.message, /^backup b is 60% smaller than the previous one/);
    const schemaOnly = manifest('b', 2, 100, { options: { format: 'custom', schemaOnly: true, dataOnly: false, tables: [], excludeTables: [], schemas: [], excludeSchemas: [] } });
    assert.deepEqual(assessHealth('app', [facts('/r', [manifest('a', 3, 10_000), schemaOnly])], thresholds, now).findings, []);
    assert.deepEqual(assessHealth('app', [facts('/r', [manifest('a', 3, 10_000), manifest('b', 2, 4000)])], { ...thresholds, sizeDropMax: 0 }, now).findings, [], '0 switches it off');
  });

  it('PITR: not archiving without WAL; a window from the oldest physical backup to the newest WAL', () => {
    const logical = assessHealth('app', [facts('/r', [manifest('a', 2, 1000)])], thresholds, now);
    assert.deepEqual(logical.pitr, { archiving: false, lastArchivedAt: undefined, archiveLagMs: undefined, window: null });
    const physical = manifest('p', 30, 1000, { kind: 'physical', physical: { stopTime: '2026-11-20T06:00:05Z' } });
    const wal = new Date(now.getTime() - 10 * 60_000);
    const result = assessHealth('app', [facts('/r', [physical, manifest('a', 2, 1000)], {}, { lastWalAt: wal })], { ...thresholds, archiveLagMax: parseDuration('5m', 'x') }, now);
    assert.deepEqual(result.pitr, { archiving: true, lastArchivedAt: wal.toISOString(), archiveLagMs: 10 * 60_000, window: { from: '2026-11-20T06:00:05.000Z', to: wal.toISOString() } });
    assert.deepEqual(result.findings.map((f) => f.code), ['ARCHIVE_LAG']);
  });
});
