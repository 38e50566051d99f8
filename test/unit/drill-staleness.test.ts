import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { Manifest } from '../../src/repository/manifest.js';
import { drillKindOf, VerificationSchema, type Verification } from '../../src/repository/verification.js';
import { parseDuration } from '../../src/retention/duration.js';
import { overviewFragment } from '../../src/server/dashboard/dashboard-views.js';
import { PgkeepMetrics } from '../../src/server/metrics.js';
import { assessHealth, newestDrill, noteDrill, type HealthThresholds, type RepositoryFacts } from '../../src/status/health.js';

const now = new Date('2026-11-21T12:00:00Z');
const HOUR = 3_600_000;
const off: HealthThresholds = { backupMaxAge: parseDuration('26h', 'x'), sizeDropMax: 0, minSizeBytes: 0, restoreTestMaxAge: undefined, archiveLagMax: undefined };
const week = parseDuration('7d', 'x');
const strict: HealthThresholds = { ...off, restoreTestMaxAge: week, physicalRestoreTestMaxAge: week, pitrDrillMaxAge: parseDuration('30d', 'x') };
const at = (hoursAgo: number) => new Date(now.getTime() - hoursAgo * HOUR).toISOString();

function manifest(id: string, kind: 'logical' | 'physical', hoursAgo: number): Manifest {
  const finishedAt = at(hoursAgo);
  const common = { id, kind, source: 'app', startedAt: finishedAt, finishedAt, durationMs: 1000, totals: { rawBytes: 1000, storedBytes: 250, rows: 0 } };
  if (kind === 'physical') return { ...common, physical: { stopTime: finishedAt } } as unknown as Manifest;
  return { ...common, options: { format: 'custom', schemaOnly: false, dataOnly: false, tables: [], excludeTables: [], schemas: [], excludeSchemas: [] } } as unknown as Manifest;
}

/** A restore test record as verify writes it; `drill` undefined: an older pgkeep's record (restore.method only, or nothing). */
function record(backupId: string, hoursAgo: number, ok: boolean, drill: Verification['drill'], method?: 'logical' | 'physical' | 'pitr'): Verification {
  return VerificationSchema.parse({
    format: 1,
    backupId,
    source: 'app',
    kind: 'restore-test',
    ...(drill ? { drill } : {}),
    ok,
    startedAt: at(hoursAgo + 0.1),
    finishedAt: at(hoursAgo),
    durationMs: 360_000,
    repository: '/r',
    pgkeepVersion: 'test',
    problems: ok ? [] : ['WAL segment 000000010000000000000003 is missing from the archive'],
    restore: ok ? { scratch: 'x', durationMs: 300_000, ...(method ? { method } : {}) } : null,
  });
}

function factsOf(backups: Manifest[], records: Verification[]): RepositoryFacts {
  const drills: NonNullable<RepositoryFacts['drills']> = {};
  for (const v of records) noteDrill(drills, v);
  return { location: '/r', catalog: { backups, unreadable: [], leftovers: [], pins: new Map(), failures: [] }, drills, lastRestoreTest: newestDrill(drills) };
}

describe('drill staleness per kind', () => {
  it('old records stay readable: the drill kind comes from restore.method, and none at all is a logical restore test', () => {
    assert.equal(drillKindOf(record('a', 1, true, undefined)), 'logical-restore-test');
    assert.equal(drillKindOf(record('a', 1, true, undefined, 'physical')), 'physical-restore-test');
    assert.equal(drillKindOf(record('a', 1, true, undefined, 'pitr')), 'pitr-drill');
    // a failed physical test has no restore block: only the new field says what it was
    assert.equal(drillKindOf(record('a', 1, false, 'physical-restore-test')), 'physical-restore-test');
    assert.equal(drillKindOf({ kind: 'integrity', drill: undefined, restore: null }), undefined);
  });

  it('each kind is judged on its own, against its own limit, and the finding names the kind and its age', () => {
    const backups = [manifest('L', 'logical', 2), manifest('P', 'physical', 3)];
    const records = [record('L', 1, true, 'logical-restore-test'), record('P', 10 * 24, true, 'physical-restore-test'), record('P', 40 * 24, true, 'pitr-drill')];
    const status = assessHealth('app', [factsOf(backups, records)], strict, now);
    assert.deepEqual(
      status.findings.map((f) => [f.code, f.message]),
      [
        ['PHYSICAL_RESTORE_TEST_TOO_OLD', 'the last physical restore test passed 10d ago, longer ago than 7d: run pgkeep verify ID --restore-test on a physical backup'],
        ['PITR_DRILL_TOO_OLD', 'the last PITR drill passed 40d ago, longer ago than 30d: run pgkeep verify latest --pitr-drill'],
      ],
    );
    assert.equal(status.drills['logical-restore-test']?.last.finishedAt, at(1));
    assert.equal(status.lastRestoreTest?.drill, 'logical-restore-test', 'the newest restore test of any kind');
    // off by default: the same history is healthy
    assert.deepEqual(assessHealth('app', [factsOf(backups, records)], off, now).findings, []);
  });

  it('none yet is stale once a limit is set, but only for kinds the source has backups of', () => {
    const logicalOnly = assessHealth('app', [factsOf([manifest('L', 'logical', 2)], [])], strict, now);
    assert.deepEqual(logicalOnly.findings.map((f) => f.code), ['RESTORE_TEST_TOO_OLD']);
    assert.match(logicalOnly.findings[0]!.message, /^no logical restore test yet \(required every 7d\)/);
    const physicalOnly = assessHealth('app', [factsOf([manifest('P', 'physical', 2)], [record('P', 1, true, 'physical-restore-test')])], strict, now);
    assert.deepEqual(physicalOnly.findings.map((f) => [f.code, f.message]), [['PITR_DRILL_TOO_OLD', 'no PITR drill yet (required every 30d): run pgkeep verify latest --pitr-drill']]);
  });

  it('a failed newest drill is RESTORE_TEST_FAILED naming the kind; the newest success still feeds the metric', () => {
    const backups = [manifest('P', 'physical', 30)];
    const records = [record('P', 20, true, 'pitr-drill'), record('P', 2, false, 'pitr-drill'), record('P', 3, true, 'physical-restore-test')];
    const status = assessHealth('app', [factsOf(backups, records)], { ...off, backupMaxAge: parseDuration('2d', 'x') }, now);
    assert.deepEqual(status.findings.map((f) => f.code), ['RESTORE_TEST_FAILED']);
    assert.match(status.findings[0]!.message, /^the last PITR drill \(of P, 2h ago\) failed: WAL segment 000000010000000000000003 is missing/);
    assert.equal(status.drills['pitr-drill']?.lastSuccess?.finishedAt, at(20));

    const metrics = new PgkeepMetrics();
    metrics.updateStatus([status]);
    return metrics.registry.getSingleMetricAsString('pgkeep_drill_last_success_timestamp_seconds').then((text) => {
      assert.match(text, new RegExp(`pgkeep_drill_last_success_timestamp_seconds\\{source="app",kind="pitr-drill"\\} ${Date.parse(at(20)) / 1000}$`, 'm'));
      assert.match(text, new RegExp(`pgkeep_drill_last_success_timestamp_seconds\\{source="app",kind="physical-restore-test"\\} ${Date.parse(at(3)) / 1000}`));
      assert.doesNotMatch(text, /kind="logical-restore-test"/);
    });
  });

  it('the dashboard overview shows each drill kind\'s newest run, and when a failed kind last passed', () => {
    const records = [record('P', 20, true, 'pitr-drill'), record('P', 2, false, 'pitr-drill'), record('P', 3, true, 'physical-restore-test')];
    const status = assessHealth('app', [factsOf([manifest('P', 'physical', 30)], records)], off, now);
    const text = String(overviewFragment({ canLogin: false, loggedIn: false, base: '', now }, [{ status }]));
    assert.match(text, /<dt>Drills<\/dt>/);
    assert.match(text, /data-drill="physical-restore-test">physical restore test passed <time[^>]*>3h ago<\/time>/);
    assert.match(text, /data-drill="pitr-drill">PITR drill FAILED <time[^>]*>2h ago<\/time> \(passed <time[^>]*>20h ago<\/time>\)/);
    // only logical restore tests: the "Restore test" line says it all
    const logical = assessHealth('app', [factsOf([manifest('L', 'logical', 2)], [record('L', 1, true, 'logical-restore-test')])], off, now);
    assert.doesNotMatch(String(overviewFragment({ canLogin: false, loggedIn: false, base: '', now }, [{ status: logical }])), /Drills/);
  });
});
