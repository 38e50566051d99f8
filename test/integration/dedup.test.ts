import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { json, pgkeep as cliPgkeep } from '../support/cli.js';
import { contentSettings } from '../../src/repository/content-store/content-keys.js';
import { ContentStore } from '../../src/repository/content-store/content-store.js';
import { DEFAULT_INDEX_MEMORY_ENTRIES, setIndexMemory } from '../../src/repository/content-store/content-index.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { checkRepositoryContent } from '../../src/repository/content-store/check-repository-content.js';
import { Repository } from '../../src/repository/repository.js';
import { keySettings, loadSettings } from '../../src/config/settings.js';
import { resolveHealthThresholds } from '../../src/config/health-settings.js';
import { FleetCatalog } from '../../src/status/fleet-catalog.js';
import { PgkeepMetrics } from '../../src/server/metrics.js';
import { eachStorage } from '../support/each-storage.js';
import { runCommand, runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase } from '../support/db-compare.js';
import { createShopWithEvents } from '../support/awkward-fixture.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { sample } from '../support/prometheus-sample.js';


let cluster: PgCluster;
let work: string;
/**
 * The shop's events: ~3.5 MB of dump in ~200 chunks, where a day's change (500 rows, 21 updated) is a few
 * chunks and half the events deleted frees about half the first backup's packs (the ratios asserted below).
 */
const EVENTS = 30_000;

useClusterAndWorkFolder('dedup', async (c, w) => {
  cluster = c;
  work = w;
  await createShopWithEvents(cluster, EVENTS);
});

const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('shop'), ...extra });

// over a folder unencrypted, over S3 encrypted (keyed chunk ids, sealed packs): both drivers, both kinds of store, in two runs
eachStorage('a deduplicating repository (encrypted on S3)', (storage) => {
    const encrypted = storage.kind === 's3';
    test('backups store only what changed; each restores identically (schema with owners and privileges, content hashes); verify, cat, and prune sweep what no backup needs', async () => {
      const repo = storage.repo('dedup');
      const keys: Record<string, string> = {};
      let publicKey: string | undefined;
      const init = ['init', '--repo', repo, '--dedup'];
      if (encrypted) {
        const keygen = await pgkeep(['keygen', '--output', path.join(work, `${storage.kind}.key`)]);
        assert.equal(keygen.code, 0, keygen.stderr);
        publicKey = /age1[0-9a-z]+/.exec(await readFile(path.join(work, `${storage.kind}.key`), 'utf8'))![0];
        init.push('--encrypt', '--recipient', publicKey);
        keys.PGKEEP_AGE_IDENTITY_FILE = path.join(work, `${storage.kind}.key`);
      }
      const created = await pgkeep(init, { env: env(keys) });
      assert.equal(created.code, 0, created.stderr);
      assert.match(created.stdout, /deduplicating/);

      const first = json(await pgkeep(['backup', '--repo', repo, '--json'], { env: env(keys) }));
      await cluster.query(`INSERT INTO events SELECT g, md5(g::text), now() FROM generate_series(${EVENTS + 1}, ${EVENTS + 500}) g`, [], 'shop');
      await cluster.query('UPDATE events SET body = upper(body) WHERE id BETWEEN 100 AND 120', [], 'shop');
      // the oldest half of the events goes: the first backup's chunks of them are then used by no later backup,
      // enough of its pack for prune to sweep whatever the chunk boundaries (a run's timestamps move them)
      await cluster.query('DELETE FROM events WHERE id IN (SELECT id FROM events ORDER BY id LIMIT (SELECT count(*) / 2 FROM events))', [], 'shop');
      const secondRun = await pgkeep(['backup', '--repo', repo, '--json'], { env: env(keys) });
      assert.equal(secondRun.code, 0, secondRun.stderr);
      const second = json(secondRun);
      const dump = (m: any) => m.objects.find((o: any) => o.role === 'dump');
      assert.ok(dump(first).content && dump(second).content, 'the dump is a content stream');
      assert.ok(dump(second).stored.size < dump(first).stored.size * 0.25, `the second backup adds ${dump(second).stored.size} bytes, the first ${dump(first).stored.size}`);

      await figuresMatchStorage(repo, env(keys), [first, second]);
      if (!encrypted) await plainRepositoryShowsNoRatio(storage.repo('plain'), env());

      const verify = await pgkeep(['verify', 'latest', '--repo', repo, '--json'], { env: env(keys) });
      assert.equal(verify.code, 0, verify.stderr);

      const target = `dedup_${storage.kind}_${encrypted ? 'enc' : 'plain'}`;
      const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', target, '--json'], { env: env(keys) });
      assert.equal(restore.code, 0, restore.stderr);
      assert.deepEqual(diffSnapshots(await snapshotDatabase(cluster, 'shop'), await snapshotDatabase(cluster, target)), []);

      const out = path.join(work, `${target}.dump`);
      const cat = await pgkeep(['cat', 'latest', '--repo', repo, '--output', out], { env: env(keys) });
      assert.equal(cat.code, 0, cat.stderr);
      // the manifest records the stream's size, not its SHA-256 (each chunk is checked against its id as cat reads it)
      assert.equal(dump(second).raw.sha256, undefined);
      const catted = await readFile(out);
      assert.equal(catted.length, dump(second).raw.size);
      assert.equal(catted.subarray(0, 5).toString(), 'PGDMP', 'a custom-format archive');

      // copy to a location that holds no repository creates one with the source's encryption and chunk ids: the chunks move as they are
      const copyTo = path.join(work, `copy-${storage.kind}`);
      const copy = await pgkeep(['copy', 'latest', '--from', repo, '--to', copyTo, '--json'], { env: env(keys) });
      assert.equal(copy.code, 0, copy.stderr);
      assert.deepEqual([json(copy).createdDestination, json(copy).method, json(copy).encryption?.recipients], [true, 'chunks', encrypted ? [publicKey] : undefined]);
      const copied = path.join(work, `${target}-copy.dump`);
      const catCopy = await pgkeep(['cat', 'latest', '--repo', copyTo, '--output', copied], { env: env(keys) });
      assert.equal(catCopy.code, 0, catCopy.stderr);
      assert.ok((await readFile(copied)).equals(catted), 'the copy reads back the bytes the source does');

      // keep the newest only: the first backup's own chunks go (grace 0), the newest still reads back whole
      const prune = await pgkeep(['prune', '--repo', repo, '--keep-last', '1', '--sweep-grace', '0', '--json'], { env: env(keys) });
      assert.equal(prune.code, 0, prune.stderr);
      const swept = json(prune).content[0].outcome.swept;
      assert.ok(swept && swept.deletedPacks + swept.repackedPacks > 0, JSON.stringify(json(prune).content));
      assert.ok(swept.deletedBytes + swept.repackFreedBytes > dump(first).stored.size * 0.1, `prune freed ${swept.deletedBytes + swept.repackFreedBytes} bytes of the first backup's ${dump(first).stored.size}`);
      // every chunk of it is still there and checks against its id: cat gives the bytes restored identically
      // above (a second restore of the same bytes would prove nothing more, for 2-3 s of pg_restore and compare)
      const afterPrune = path.join(work, `${target}-pruned.dump`);
      const catAgain = await pgkeep(['cat', 'latest', '--repo', repo, '--output', afterPrune], { env: env(keys) });
      assert.equal(catAgain.code, 0, catAgain.stderr);
      assert.ok((await readFile(afterPrune)).equals(catted), 'after prune, the newest backup reads back the bytes it did before');
      assert.equal((await pgkeep(['verify', 'latest', '--repo', repo], { env: env(keys) })).code, 0, 'and verifies');
    });
});

/** Sizes of the objects under a prefix, from the storage's own listing. */
async function listedBytes(repo: string, prefix: string): Promise<{ count: number; bytes: number }> {
  let count = 0;
  let bytes = 0;
  for await (const e of openStorage(repo).list(prefix, { recursive: true })) {
    if (e.kind !== 'object') continue;
    count++;
    bytes += e.size;
  }
  return { count, bytes };
}

/**
 * list, show, status and serve's metrics give a deduplicating repository's
 * figures, and they agree with what is on storage: the bytes the backups
 * added sum to the packs listed, the stored bytes are packs plus index files,
 * the logical bytes are the backups' streams, and the ratio is above 1.
 */
async function figuresMatchStorage(repo: string, environment: Record<string, string>, backups: any[]): Promise<void> {
  const packs = await listedBytes(repo, 'content/packs');
  const index = await listedBytes(repo, 'content/index');
  assert.ok(packs.count > 0 && index.count > 0);
  const logical = backups.reduce((n, m) => n + m.totals.rawBytes, 0);

  // list: per backup its logical size and the bytes it added; together they are every pack written
  const listRun = await pgkeep(['list', '--repo', repo, '--json'], { env: environment });
  const listed = json<any[]>(listRun);
  assert.deepEqual(listed.map((b) => b.id), backups.map((m) => m.id));
  for (const [i, b] of listed.entries()) {
    assert.equal(b.logicalBytes, backups[i].totals.rawBytes);
    assert.equal(b.addedBytes, backups[i].totals.content.addedBytes);
    assert.ok(b.newChunks > 0 && b.newChunks <= b.chunks, JSON.stringify(b));
  }
  assert.equal(listed[0].newChunks, listed[0].chunks, 'the first backup found nothing to reuse');
  assert.ok(listed[1].newChunks < listed[1].chunks / 4, `the second reused most chunks: ${listed[1].newChunks} of ${listed[1].chunks} new`);
  assert.equal(listed.reduce((n, b) => n + b.addedBytes, 0), packs.bytes, 'the bytes the backups added are the packs on storage');
  assert.ok(listed[1].addedBytes < listed[0].addedBytes / 4);
  const table = (await pgkeep(['list', '--repo', repo], { env: environment })).stdout;
  assert.match(table, /LOGICAL\s+ADDED/);

  // show: the same, and the chunks new and reused
  const shown = await pgkeep(['show', 'latest', '--repo', repo], { env: environment });
  assert.equal(shown.code, 0, shown.stderr);
  const { chunks, newChunks } = backups[1].totals.content;
  assert.match(shown.stdout, new RegExp(`chunks\\s+${chunks.toLocaleString('en-US')}: ${newChunks.toLocaleString('en-US')} new, ${(chunks - newChunks).toLocaleString('en-US')} reused`));
  assert.match(shown.stdout, /\(logical size\), .* added to the repository/);

  // status: the repository as a whole
  const statusRun = await pgkeep(['status', '--repo', repo, '--json'], { env: environment });
  const usage = json<any>(statusRun).sources[0].repositories[0].usage;
  assert.equal(usage.packBytes, packs.bytes);
  assert.equal(usage.indexBytes, index.bytes);
  assert.equal(usage.storedBytes, packs.bytes + index.bytes);
  assert.equal(usage.packs, packs.count);
  assert.equal(usage.logicalBytes, logical);
  assert.equal(usage.backups, 2);
  assert.ok(usage.dedupRatio > 1, `ratio ${usage.dedupRatio}`);
  assert.equal(usage.dedupRatio, logical / (packs.bytes + index.bytes));
  assert.match((await pgkeep(['status', '--repo', repo], { env: environment })).stdout, /deduplication\s+.* stored \(\d+ packs \+ index\), ratio \d+\.\dx/);

  // serve's metrics: read by its catalog on refresh, from the same repository
  const repository = await Repository.open(openStorage(repo));
  const source = backups[1].source;
  const catalog = new FleetCatalog({ sources: [{ name: source, thresholds: resolveHealthThresholds({ config: {}, options: {}, env: {}, cwd: '/' } as never, source) }], open: async () => [{ url: repo, repository }], now: () => new Date() });
  await catalog.refresh();
  const metrics = new PgkeepMetrics();
  metrics.updateStatus(catalog.statuses());
  const text = await metrics.text();
  const labels = { source, repository: repository.location };
  assert.equal(sample(text, 'pgkeep_repository_logical_bytes', labels), logical);
  assert.equal(sample(text, 'pgkeep_repository_stored_bytes', labels), packs.bytes + index.bytes);
  assert.ok(Math.abs(sample(text, 'pgkeep_repository_dedup_ratio', labels)! - usage.dedupRatio) < 1e-9);
  assert.equal(sample(text, 'pgkeep_backup_added_bytes', { source, kind: 'logical' }), listed[1].addedBytes);
}

/** A plain repository: list as before (SIZE), no figures of deduplication in list, status or the metrics. */
async function plainRepositoryShowsNoRatio(repo: string, environment: Record<string, string>): Promise<void> {
  assert.equal((await pgkeep(['init', '--repo', repo, '--plain'], { env: environment })).code, 0);
  const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: environment });
  assert.equal(backup.code, 0, backup.stderr);
  const [listed] = json<any[]>(await pgkeep(['list', '--repo', repo, '--json'], { env: environment }));
  assert.equal(listed.logicalBytes, undefined);
  assert.equal(listed.addedBytes, undefined);
  assert.match((await pgkeep(['list', '--repo', repo], { env: environment })).stdout, /FORMAT\s+SIZE\s+DURATION/);
  const status = json<any>(await pgkeep(['status', '--repo', repo, '--json'], { env: environment }));
  assert.equal(status.sources[0].repositories[0].usage, undefined);
  assert.doesNotMatch((await pgkeep(['status', '--repo', repo], { env: environment })).stdout, /deduplication|ratio/);
  const repository = await Repository.open(openStorage(repo));
  const source = listed.source;
  const catalog = new FleetCatalog({ sources: [{ name: source, thresholds: resolveHealthThresholds({ config: {}, options: {}, env: {}, cwd: '/' } as never, source) }], open: async () => [{ url: repo, repository }], now: () => new Date() });
  await catalog.refresh();
  const metrics = new PgkeepMetrics();
  metrics.updateStatus(catalog.statuses());
  const text = await metrics.text();
  assert.ok(sample(text, 'pgkeep_repository_size_bytes', { source })! > 0);
  for (const name of ['pgkeep_repository_logical_bytes', 'pgkeep_repository_stored_bytes', 'pgkeep_repository_dedup_ratio', 'pgkeep_backup_added_bytes']) assert.equal(sample(text, name, { source }), undefined, name);
}

describe('a deduplicating repository under faults (real processes)', () => {
  // Size is not these tests' subject (a fault point fires per object or per step of the commit, a race per
  // content lock, a flipped byte per pack): the shop with 3,000 of its events (small_shop, made in the first
  // test) makes each of their 10 backups, 20 verifications and their restore a fraction of the work.
  const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('small_shop'), ...extra });
  const repo = () => path.join(work, 'faults');
  const packsNamedByNoIndex = async (at = repo()) => {
    const storage = openStorage(at);
    const info = JSON.parse(await readFile(path.join(at, 'pgkeep.json'), 'utf8'));
    const store = await ContentStore.open(storage, await contentSettings(storage, info.content, null, { identities: [], contentKey: undefined }));
    const indexed = store.index.packEntries();
    const stray: string[] = [];
    for await (const e of storage.list('content/packs', { recursive: true })) if (e.kind === 'object' && !indexed.has(e.path.split('/').at(-1)!)) stray.push(e.path);
    return stray;
  };
  const everyBackupVerifies = async (at = repo()) => {
    const listed = json<{ id: string; source: string; damaged?: unknown }[]>(await runCommand(['list', '--repo', at, '--json'], { env: env() }));
    assert.deepEqual(listed.filter((b) => b.damaged), []);
    for (const b of listed) {
      // two sources' backups started in the same second have the same id: an id alone may name both
      const verified = await runCommand(['verify', b.id, '--repo', at, '--source', b.source], { env: env() });
      assert.equal(verified.code, 0, `verify ${b.id}: ${verified.stderr}`);
    }
    return listed.length;
  };
  const openRepo = () => Repository.open(openStorage(repo()));
  let change = 0;
  const changeSomething = () => cluster.query(`UPDATE events SET body = md5(body || '${++change}') WHERE id % 97 = ${change}`, [], 'small_shop');

  test('SIGKILL at each step of a backup and of the sweep: every backup listed verifies, the next run works, and prune removes the packs the killed ones left', async () => {
    await cluster.query('CREATE DATABASE small_shop TEMPLATE shop');
    await cluster.query('DELETE FROM events WHERE id > (SELECT min(id) + 2999 FROM events)', [], 'small_shop');
    await cluster.query('VACUUM events', [], 'small_shop');
    assert.equal((await runCommand(['init', '--repo', repo(), '--dedup'], { env: env() })).code, 0);
    assert.equal((await runCommand(['backup', '--repo', repo()], { env: env() })).code, 0);
    for (const point of ['after-object-stored', 'before-content-index', 'after-content-index', 'before-manifest']) {
      await changeSomething();
      const killed = await cliPgkeep(['backup', '--repo', repo()], { env: env({ PGKEEP_FAULT: point }) });
      assert.equal(killed.signal, 'SIGKILL', `${point}: ${killed.stderr}`);
      assert.equal(await everyBackupVerifies(), 1, `${point}: the killed backup does not exist`);
    }
    assert.equal((await runCommand(['backup', '--repo', repo()], { env: env() })).code, 0, 'a backup after the kills (their locks are stale: dead processes)');
    assert.ok((await packsNamedByNoIndex()).length > 0, 'the kills before the index left packs');

    const sweepKilled = await cliPgkeep(['prune', '--repo', repo(), '--keep-last', '1', '--sweep-grace', '0'], { env: env({ PGKEEP_FAULT: 'mid-content-sweep' }) });
    assert.equal(sweepKilled.signal, 'SIGKILL', sweepKilled.stderr);
    assert.equal(await everyBackupVerifies(), 1);
    const pruned = await runCommand(['prune', '--repo', repo(), '--keep-last', '1', '--sweep-grace', '0', '--json'], { env: env() });
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.deepEqual(await packsNamedByNoIndex(), [], 'no pack left that no index names');
    assert.equal(await everyBackupVerifies(), 1);
  });

  test('prune killed between its new index files (the smallest index cap, small packs: several new index files), then another: every backup verifies, no pack is left that no index names', async () => {
    const at = path.join(work, 'faults-index-files');
    // 16 entries in memory (the index spills too): index files of at most 4 entries (a pack is never split).
    // The killed prune is a real process (the knob and SIGKILL are its subject); the commands around it run
    // in this process with the same cap (setIndexMemory, as the CLI sets it from the variable): a Node
    // start-up each saved.
    const small = env({ PGKEEP_INDEX_MEMORY_ENTRIES: '16' });
    const withSmallIndex = async <T>(run: () => Promise<T>): Promise<T> => {
      setIndexMemory({ memoryEntries: 16 });
      try {
        return await run();
      } finally {
        setIndexMemory({ memoryEntries: DEFAULT_INDEX_MEMORY_ENTRIES });
      }
    };
    assert.equal((await runCommand(['init', '--repo', at, '--dedup'], { env: env() })).code, 0);
    // packs of 64 KiB (the repository's setting, 16 MiB by default): a repack writes several new packs, each in its own index file
    const info = JSON.parse(await readFile(path.join(at, 'pgkeep.json'), 'utf8'));
    info.content.packTarget = 64 * 1024;
    await writeFile(path.join(at, 'pgkeep.json'), JSON.stringify(info));
    // a table of its own (~2 MB), then every other block of ~120 KB of it deleted: many packs of the first backup
    // straddle a deleted block and a kept one, and are repacked into several new packs
    await cluster.query('CREATE TABLE index_files AS SELECT g AS id, md5(g::text) AS body FROM generate_series(1, 40000) g', [], 'small_shop');
    assert.equal((await withSmallIndex(() => runCommand(['backup', '--repo', at], { env: env() }))).code, 0);
    await cluster.query('DELETE FROM index_files WHERE (id / 2000) % 2 = 0', [], 'small_shop');
    assert.equal((await withSmallIndex(() => runCommand(['backup', '--repo', at], { env: env() }))).code, 0);
    await cluster.query('DROP TABLE index_files', [], 'small_shop');
    const killed = await cliPgkeep(['prune', '--repo', at, '--keep-last', '1', '--sweep-grace', '0'], { env: { ...small, PGKEEP_FAULT: 'after-prune-index-file#2' } });
    assert.equal(killed.signal, 'SIGKILL', `the prune reaches its second index file: ${killed.stderr}`);
    assert.equal(await everyBackupVerifies(at), 1);
    const pruned = await withSmallIndex(() => runCommand(['prune', '--repo', at, '--keep-last', '1', '--sweep-grace', '0', '--json'], { env: env() }));
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.deepEqual(await packsNamedByNoIndex(at), [], 'no pack left that no index names');
    assert.equal(await everyBackupVerifies(at), 1);
  });

  test('backups and prunes at the same time, as real processes: no chunk a backup needs is ever swept', async () => {
    // prune of another source of the same repository: the source locks do not separate them, only the content locks do
    await cluster.query('CREATE DATABASE other');
    await cluster.query('CREATE TABLE t AS SELECT g AS id FROM generate_series(1, 1000) g', [], 'other');
    const other = { DATABASE_URL: cluster.url('other') };
    assert.equal((await runCommand(['backup', '--repo', repo()], { env: other })).code, 0);
    for (let round = 0; round < 2; round++) {
      await changeSomething();
      const backup = cliPgkeep(['backup', '--repo', repo()], { env: env() });
      const prune = cliPgkeep(['prune', '--repo', repo(), '--source', 'other', '--keep-last', '1', '--sweep-grace', '0'], { env: other });
      const [b, p] = await Promise.all([backup, prune]);
      assert.equal(b.code, 0, `backup: ${b.stderr}`);
      assert.equal(p.code, 0, `prune: ${p.stderr}`);
    }
    assert.ok((await everyBackupVerifies()) >= 2);
    const target = 'dedup_after_races';
    const restored = await runCommand(['restore', 'latest', '--repo', repo(), '--to', target], { env: env() });
    assert.equal(restored.code, 0, restored.stderr);
    assert.deepEqual(diffSnapshots(await snapshotDatabase(cluster, 'small_shop'), await snapshotDatabase(cluster, target)), []);
  });

  test('verify --read-data-subset: subsets cover the packs; a flipped byte in a pack fails it (exit 7), naming every backup with a chunk there', async () => {
    const whole = await runCommand(['verify', '--read-data-subset', '100%', '--repo', repo(), '--json'], { env: env() });
    assert.equal(whole.code, 0, whole.stderr);
    const all = json(whole);
    assert.equal(all.packsChecked, all.packsTotal);
    let covered = 0;
    for (let slot = 0; slot < 4; slot++) covered += (await checkRepositoryContent(await openRepo(), keySettings(loadSettings({ repo: repo() }, { env: {}, cwd: work })), { fraction: 0.25, slot })).packsChecked;
    assert.equal(covered, all.packsTotal, 'four 25% slots read every pack once');

    const storage = openStorage(repo());
    const packs: { path: string; size: number }[] = [];
    for await (const e of storage.list('content/packs', { recursive: true })) if (e.kind === 'object') packs.push({ path: e.path, size: e.size });
    const biggest = packs.sort((a, b) => b.size - a.size)[0]!;
    const file = path.join(repo(), biggest.path);
    const bytes = await readFile(file);
    bytes[bytes.length >> 2]! ^= 0x20;
    await writeFile(file, bytes);
    const damaged = await runCommand(['verify', '--read-data-subset', '100%', '--repo', repo()], { env: env() });
    assert.equal(damaged.code, 7, damaged.stderr);
    assert.match(damaged.stdout, new RegExp(`DAMAGED pack ${biggest.path.split('/').at(-1)}: .*backups with chunks in it: small_shop/\\d{8}T\\d{6}Z`));
  });
});
