import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { timestampPart } from '../../src/repository/backup-id.js';
import { upgradeManifest, type Manifest } from '../../src/repository/manifest.js';
import { writePin } from '../../src/repository/pins.js';
import { Repository } from '../../src/repository/repository.js';
import { resolveHealthThresholds } from '../../src/config/health-settings.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { FleetCatalog } from '../../src/status/fleet-catalog.js';

// A real logical manifest written by this pgkeep, re-dated and re-sourced (the catalog reads manifests, not objects).
const FIXTURE = path.join(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/manifests/logical.json');
const template = upgradeManifest(JSON.parse(readFileSync(FIXTURE, 'utf8')));
const thresholds = resolveHealthThresholds({ config: {}, options: {}, env: {}, cwd: '/' } as never, 'db');

const work = await mkdtemp(path.join(tmpdir(), 'pgkeep-fleet-catalog-'));
after(() => rm(work, { recursive: true, force: true }));

async function write(repository: Repository, source: string, hoursAgo: number): Promise<Manifest> {
  const at = new Date(Date.now() - hoursAgo * 3_600_000);
  const manifest = { ...template, source, id: timestampPart(at), startedAt: at.toISOString(), finishedAt: new Date(at.getTime() + 1000).toISOString() } as Manifest;
  await repository.writeManifest(manifest);
  return manifest;
}

describe('FleetCatalog', () => {
  it('reads each manifest once; a refresh reads only what is new or changed and drops what is gone; reading nothing per question', async () => {
    const url = path.join(work, 'repo');
    const repository = await Repository.open(openStorage(url), { createIfEmpty: true });
    const made: Manifest[] = [];
    for (let h = 30; h >= 1; h--) made.push(await write(repository, 'db', h));
    await write(repository, 'other', 2);
    const catalog = new FleetCatalog({
      sources: [{ name: 'db', thresholds }, { name: 'other', thresholds }, { name: 'empty', thresholds }],
      open: async (source) => [{ url, repository: source === 'empty' ? undefined : repository, error: source === 'empty' ? new PgkeepError('REPO_MISSING', 'no repository yet') : undefined }],
      now: () => new Date(),
      sliceMs: 1,
    });
    await catalog.refresh();
    assert.equal(catalog.loaded, true);
    assert.equal(catalog.counts.manifests, 31, 'every manifest read once');
    assert.equal(catalog.counts.listings, 2, 'one listing per source with a repository');
    assert.deepEqual(catalog.backups('db').map((b) => b.manifest.id), made.map((m) => m.id));
    assert.equal(catalog.status('db')!.healthy, true, JSON.stringify(catalog.status('db')!.findings));
    assert.deepEqual(catalog.status('empty')!.findings.map((f) => f.code), ['NO_BACKUP']);
    assert.deepEqual(catalog.repositories('empty'), [{ location: url, missing: true, error: undefined }]);

    // questions cost nothing
    for (let i = 0; i < 100; i++) {
      catalog.statuses();
      catalog.backups('db');
      catalog.findBackup(made[3]!.id);
    }
    await catalog.refresh();
    assert.equal(catalog.counts.manifests, 31, 'a refresh with nothing new reads no manifest');

    // another writer: one new backup, one removed, one pinned, one manifest damaged
    const fresh = await write(repository, 'db', 0.5);
    await repository.removeBackup('db', made[0]!.id);
    await writePin(repository, { source: 'db', backupId: made[1]!.id, pinnedAt: new Date().toISOString(), by: 'test', reason: null });
    // edited by hand: its checksum no longer matches
    const damaged = path.join(url, 'sources', 'db', 'backups', made[2]!.id, 'manifest.json');
    await writeFile(damaged, (await readFile(damaged, 'utf8')).replace(/"durationMs": \d+/, '"durationMs": 1'));
    await catalog.refresh('db');
    assert.equal(catalog.counts.manifests, 33, 'only the new manifest and the changed one were read');
    const ids = catalog.backups('db').map((b) => b.manifest.id);
    assert.ok(ids.includes(fresh.id) && !ids.includes(made[0]!.id) && !ids.includes(made[2]!.id), ids.join(' '));
    assert.equal(catalog.backups('db').find((b) => b.manifest.id === made[1]!.id)!.pinned, true);
    assert.equal(catalog.status('db')!.lastBackup!.id, fresh.id);
    assert.equal(catalog.status('db')!.repositories[0]!.backups, 29);
    assert.equal(catalog.findBackup(fresh.id)!.manifest.source, 'db');
    catalog.stop();
    await catalog.refresh();
    assert.equal(catalog.counts.listings, 5, 'a stopped catalog reads nothing more');
  });
});
