import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { json, pgkeep as cliPgkeep } from '../support/cli.js';
import { ContentIndex, DEFAULT_INDEX_MEMORY_ENTRIES, setIndexMemory } from '../../src/repository/content-store/content-index.js';
import { INDEX_PREFIX } from '../../src/repository/content-store/content-store.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { readObject } from '../../src/storage/storage.js';
import { eachStorage } from '../support/each-storage.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase } from '../support/db-compare.js';
import { createShopWithEvents } from '../support/awkward-fixture.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

/**
 * The chunk index past its in-memory cap (content-index.ts): with a cap of 32
 * entries the index of these repositories (a few hundred chunks) lives mostly
 * in sorted run files on local disk, merged as they pile up, and each backup
 * writes an index file every 8 entries. Every command must work as it does
 * with the index in memory. The cap, not the data, makes the spill: a shop of
 * 30,000 events (~200 chunks a backup) spills as much past a cap of 32 as
 * 60,000 did past 64, for half the dumps, restores and copies.
 */
const CAP = 32;
const EVENTS = 30_000;
setIndexMemory({ memoryEntries: CAP });
after(() => setIndexMemory({ memoryEntries: DEFAULT_INDEX_MEMORY_ENTRIES }));

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('content-index-spill', async (c, w) => {
  cluster = c;
  work = w;
  await createShopWithEvents(cluster, EVENTS);
});

const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('shop'), ...extra });

/** A repository's index read with the tiny cap (no keys needed: index files are never encrypted): how much spilled, its entries, its index files. */
async function spilled(repo: string): Promise<{ entries: number; runs: number; chunks: number; files: number }> {
  const storage = openStorage(repo);
  const index = new ContentIndex({ memoryEntries: CAP });
  for await (const e of storage.list(INDEX_PREFIX, { recursive: true })) if (e.kind === 'object') index.addIndexFile(e.path, await readObject(storage, e.path), e.path);
  const figures = { ...index.spilled, chunks: index.chunkCount, files: index.fileNames.length };
  index.close();
  return figures;
}

eachStorage('the chunk index spilled to disk (encrypted on S3)', (storage) => {
  const encrypted = storage.kind === 's3';
  test('backups, verify, restore (identical: schema, owners, privileges, content hashes), copy and prune work with the index mostly on disk', async () => {
    const repo = storage.repo('spill');
    const keys: Record<string, string> = {};
    const init = ['init', '--repo', repo, '--dedup'];
    if (encrypted) {
      const keyFile = path.join(work, `${storage.kind}.key`);
      assert.equal((await pgkeep(['keygen', '--output', keyFile])).code, 0);
      init.push('--encrypt', '--recipient', /age1[0-9a-z]+/.exec(await readFile(keyFile, 'utf8'))![0]);
      keys.PGKEEP_AGE_IDENTITY_FILE = keyFile;
    }
    assert.equal((await pgkeep(init, { env: env(keys) })).code, 0);
    assert.equal((await pgkeep(['backup', '--repo', repo], { env: env(keys) })).code, 0);
    await cluster.query(`UPDATE events SET body = upper(body) WHERE id % 50 = ${storage.kind === 's3' ? 1 : 2}`, [], 'shop');
    await cluster.query(`DELETE FROM events WHERE id <= ${EVENTS / 2}`, [], 'shop');
    const secondRun = await pgkeep(['backup', '--repo', repo, '--json'], { env: env(keys) });
    assert.equal(secondRun.code, 0, secondRun.stderr);

    const before = await spilled(repo);
    assert.ok(before.chunks > 4 * CAP, `${before.chunks} chunks`);
    assert.ok(before.entries >= before.chunks - CAP - CAP / 2 && before.runs >= 1 && before.runs <= 9, JSON.stringify(before));
    // an index file once a session's packs hold CAP / 4 entries: here after each pack (data and lists), not once per backup
    assert.ok(before.files > 2, `${before.files} index files for 2 backups`);

    const whole = await pgkeep(['verify', '--read-data-subset', '100%', '--repo', repo], { env: env(keys) });
    assert.equal(whole.code, 0, whole.stderr);

    const shop = await snapshotDatabase(cluster, 'shop');
    const target = `spill_${storage.kind}`;
    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', target], { env: env(keys) });
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(diffSnapshots(shop, await snapshotDatabase(cluster, target)), []);

    // copy: only the chunks the destination lacks, looked up in its own spilled index
    const copyTo = path.join(work, `copy-${storage.kind}`);
    const copy = await pgkeep(['copy', 'latest', '--from', repo, '--to', copyTo, '--json'], { env: env(keys) });
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(json(copy).method, 'chunks');
    const catSource = path.join(work, `${target}.dump`);
    const catCopy = path.join(work, `${target}-copy.dump`);
    assert.equal((await pgkeep(['cat', 'latest', '--repo', repo, '--output', catSource], { env: env(keys) })).code, 0);
    assert.equal((await pgkeep(['cat', 'latest', '--repo', copyTo, '--output', catCopy], { env: env(keys) })).code, 0);
    assert.ok((await readFile(catCopy)).equals(await readFile(catSource)), 'the copy reads back the bytes the source does');

    // prune: the first backup's own chunks go (per-pack sums from one pass over the spilled entries; repacked blobs gathered in a second)
    const prune = await pgkeep(['prune', '--repo', repo, '--keep-last', '1', '--sweep-grace', '0', '--json'], { env: env(keys) });
    assert.equal(prune.code, 0, prune.stderr);
    const swept = json(prune).content[0].outcome.swept;
    assert.ok(swept.deletedPacks + swept.repackedPacks > 0, JSON.stringify(swept));
    const after = await spilled(repo);
    assert.ok(after.chunks < before.chunks, `prune left ${after.chunks} of ${before.chunks} entries`);
    // the restored stream's bytes, read back through the pruned (repacked) store, are those restored above
    const catPruned = path.join(work, `${target}-pruned.dump`);
    assert.equal((await pgkeep(['cat', 'latest', '--repo', repo, '--output', catPruned], { env: env(keys) })).code, 0);
    assert.ok((await readFile(catPruned)).equals(await readFile(catSource)), 'after prune the backup reads back the same bytes');
  });
});

describe('a backup killed after some of its index files (a real process, PGKEEP_INDEX_MEMORY_ENTRIES)', () => {
  test('its indexed chunks are unused: prune sweeps them, and every backup left verifies', async () => {
    const repo = path.join(work, 'killed');
    const spawnEnv = (extra: Record<string, string> = {}) => env({ PGKEEP_INDEX_MEMORY_ENTRIES: String(CAP), ...extra });
    // The killed backup is a real process (the knob and SIGKILL are its subject); the commands around it run in
    // this process, whose index has the same cap (setIndexMemory above): a Node start-up each saved.
    assert.equal((await pgkeep(['init', '--repo', repo, '--dedup'], { env: env() })).code, 0);
    const kept = await pgkeep(['backup', '--repo', repo, '--json'], { env: env() });
    assert.equal(kept.code, 0, kept.stderr);
    await cluster.query("UPDATE events SET body = md5(body || 'killed')", [], 'shop');
    const filesBefore = (await spilled(repo)).files;
    // killed with its packs written and most of them indexed (an index file every CAP / 4 entries), its last index file and manifest not
    const killed = await cliPgkeep(['backup', '--repo', repo], { env: spawnEnv({ PGKEEP_FAULT: 'before-content-index' }) });
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    const afterKill = await spilled(repo);
    assert.ok(afterKill.files > filesBefore, `the killed backup indexed packs as it went: ${filesBefore} -> ${afterKill.files} index files`);
    const prune = await pgkeep(['prune', '--repo', repo, '--keep-last', '5', '--sweep-grace', '0', '--json'], { env: env() });
    assert.equal(prune.code, 0, prune.stderr);
    const swept = json(prune).content[0].outcome.swept;
    assert.ok(swept.deletedPacks > 0, `the killed backup's indexed packs are swept: ${JSON.stringify(swept)}`);
    assert.ok((await spilled(repo)).chunks < afterKill.chunks);
    const all = await pgkeep(['verify', '--read-data-subset', '100%', '--repo', repo], { env: env() });
    assert.equal(all.code, 0, all.stderr);
  });
});
