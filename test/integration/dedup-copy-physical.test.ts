import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync } from 'node:fs';
import { chmod, mkdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { json } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase, type DatabaseSnapshot } from '../support/db-compare.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { archivingConf, findFreePort, type PgCluster } from '../support/pg-cluster.js';
import { archiveCommand, giveToServer, serverUser } from '../support/server-folder.js';

// A physical base backup through copy, between every pair of repository
// formats: deduplicating with the same chunker (chunks move as they are),
// with different chunkers, deduplicating to plain and plain to deduplicating
// (each stream read back and stored again). copy does not carry WAL; the base
// tar holds the WAL from its start to its stop (pg_basebackup -X fetch), so
// each copy is proven by the bytes of its tar against the source's and by
// starting a server on the tar of a copy and comparing it with the source:
// `pg_dump --create` with owners and privileges, and per-table content hashes.

const SOURCE = 'main';
// Known before the server starts (its archive_command names it); created in before().
const shared = path.join(tmpdir(), `pgkeep-copy-physical-${randomBytes(6).toString('hex')}`);
const REPO = path.join(shared, 'repo');
let cluster: PgCluster;
const started: string[] = [];

before(async () => {
  await mkdir(shared, { mode: 0o755 });
  await chmod(shared, 0o755);
  // explicit: this file is about a deduplicating source whatever the default for new repositories
  const init = await runCommand(['init', '--repo', REPO, '--dedup']);
  assert.equal(init.code, 0, init.stderr);
  giveToServer(shared);
});

useClusterAndWorkFolder(
  'copy-physical',
  async (c) => {
    cluster = c;
    await switchAndArchive();
  },
  { conf: archivingConf(archiveCommand(REPO, SOURCE)) },
);

after(async () => {
  for (const dataDir of started) stopServer(dataDir);
  await rm(shared, { recursive: true, force: true });
});

async function switchAndArchive(): Promise<void> {
  const [{ name }] = (await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name')) as [{ name: string }];
  for (let i = 0; i < 300; i++) {
    const [stats] = await cluster.query<{ last: string | null }>('SELECT last_archived_wal AS last FROM pg_stat_archiver');
    if (stats!.last !== null && stats!.last >= name) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} was not archived in time`);
}

const cli = (args: string[]) => runCommand(args, { env: { DATABASE_URL: cluster.url() } });

async function catSha256(repo: string, id: string, out: string): Promise<string> {
  const cat = await cli(['cat', id, '--repo', repo, '--source', SOURCE, '--output', out]);
  assert.equal(cat.code, 0, cat.stderr);
  return createHash('sha256').update(await readFile(out)).digest('hex');
}

function stopServer(dataDir: string): void {
  if (!existsSync(path.join(dataDir, 'postmaster.pid'))) return;
  const user = serverUser();
  spawnSync(path.join(cluster.binDir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w'], { uid: user?.uid, gid: user?.gid, cwd: '/', stdio: 'ignore' });
}

/**
 * Starts a server on a base backup's tar as it stands: backup_label and the
 * WAL inside make it consistent without an archive. Archiving off, so the
 * copy never pushes into the source's archive.
 */
async function startFromTar(tar: string, name: string): Promise<PgCluster> {
  const dataDir = path.join(shared, name);
  const sockets = path.join(shared, `${name}-sockets`);
  await mkdir(dataDir, { mode: 0o700 });
  await mkdir(sockets, { mode: 0o755 });
  const untar = spawnSync('tar', ['-xf', tar, '-C', dataDir]);
  assert.equal(untar.status, 0, untar.stderr?.toString());
  giveToServer(dataDir);
  giveToServer(sockets);
  const port = await findFreePort();
  const user = serverUser();
  const options = `-p ${port} -k ${sockets} -c listen_addresses=127.0.0.1 -c archive_mode=off`;
  started.push(dataDir);
  const start = spawnSync(path.join(cluster.binDir, 'pg_ctl'), ['start', '-D', dataDir, '-w', '-t', '120', '-l', path.join(sockets, 'log'), '-o', options], { uid: user?.uid, gid: user?.gid, cwd: '/' });
  assert.equal(start.status, 0, `${start.stderr?.toString()}\n${existsSync(path.join(sockets, 'log')) ? await readFile(path.join(sockets, 'log'), 'utf8') : ''}`);
  const url = (database = 'postgres', user = cluster.superuser, password = cluster.password) =>
    `postgresql://${encodeURIComponent(user)}:${encodeURIComponent(password)}@127.0.0.1:${port}/${encodeURIComponent(database)}`;
  return {
    ...cluster,
    port,
    dataDir,
    socketDir: sockets,
    url,
    async query<T = any>(sql: string, params: unknown[] = [], database = 'postgres'): Promise<T[]> {
      const client = new pg.Client({ connectionString: url(database) });
      await client.connect();
      try {
        return (await client.query(sql, params)).rows as T[];
      } finally {
        await client.end();
      }
    },
    async stop() {
      stopServer(dataDir);
    },
  };
}

describe('copy of a physical base backup between repository formats', { concurrency: 1 }, () => {
  let id: string;
  let sourceSha: string;
  let before: DatabaseSnapshot;

  test('a physical backup into a deduplicating repository', async () => {
    await cluster.query('CREATE ROLE shop_owner');
    await cluster.query('CREATE ROLE shop_reader');
    await cluster.query('CREATE DATABASE shop OWNER shop_owner');
    await cluster.query('CREATE TABLE items (id int PRIMARY KEY, note text, payload bytea) ', [], 'shop');
    await cluster.query("INSERT INTO items SELECT g, 'item ' || g, decode(md5(g::text), 'hex') FROM generate_series(1, 20000) g", [], 'shop');
    await cluster.query('ALTER TABLE items OWNER TO shop_owner', [], 'shop');
    await cluster.query('GRANT SELECT ON items TO shop_reader', [], 'shop');
    await cluster.query('CHECKPOINT');
    before = await snapshotDatabase(cluster, 'shop', { full: true });
    const backup = await cli(['backup', '--physical', '--repo', REPO, '--source', SOURCE, '--json']);
    assert.equal(backup.code, 0, backup.stderr);
    id = json(backup).id;
    const manifest = json(await cli(['show', id, '--repo', REPO, '--source', SOURCE, '--json']));
    assert.equal(manifest.kind, 'physical');
    assert.ok(manifest.objects.some((o: any) => o.role === 'base' && o.content), 'the base tar is stored as chunks');
    sourceSha = await catSha256(REPO, id, path.join(shared, 'source.tar'));
  });

  // each step: the destination's init flags, where it copies from, and the method copy must choose
  const steps = [
    { name: 'same-chunker', init: ['--dedup', '--chunker-from', REPO], from: REPO, method: 'chunks' },
    { name: 'other-chunker', init: ['--dedup'], from: REPO, method: 'restored' },
    { name: 'plain', init: ['--plain'], from: REPO, method: 'restored' },
    { name: 'plain-to-dedup', init: ['--dedup'], from: path.join(shared, 'plain'), method: 'restored' },
  ] as const;
  for (const step of steps) {
    test(`copy ${step.name === 'plain-to-dedup' ? 'plain -> deduplicating' : `deduplicating -> ${step.name}`} (${step.method}): verified, the same tar bytes`, async () => {
      const to = path.join(shared, step.name);
      const init = await cli(['init', '--repo', to, ...step.init]);
      assert.equal(init.code, 0, init.stderr);
      const copy = await cli(['copy', id, '--from', step.from, '--to', to, '--source', SOURCE, '--json']);
      assert.equal(copy.code, 0, copy.stderr);
      const result = json(copy);
      assert.equal(result.method, step.method);
      assert.equal(result.copied, true);
      assert.equal(result.verification.ok, true, JSON.stringify(result.verification));
      const verify = await cli(['verify', id, '--repo', to, '--source', SOURCE]);
      assert.equal(verify.code, 0, verify.stderr);
      const copied = json(await cli(['show', id, '--repo', to, '--source', SOURCE, '--json']));
      assert.equal(copied.kind, 'physical');
      assert.equal(copied.objects.some((o: any) => o.content), step.name !== 'plain', 'stored as the destination stores');
      assert.equal(await catSha256(to, id, path.join(shared, `${step.name}.tar`)), sourceSha);
      if (step.method === 'chunks') assert.ok(result.chunks.sent > 0 && result.chunks.sent <= result.chunks.walked, JSON.stringify(result.chunks));
    });
  }

  test('the copy that went through plain and back starts as the source cluster was', async () => {
    // Every copy's tar has the source's SHA-256 (the tests above): a server started on one of them starts on
    // them all. The one started is the longest way (re-chunked into plain and back); starting a second on the
    // same bytes (same-chunker's) cost a recovery, a full compare and a stop, and proved nothing more.
    for (const step of ['plain-to-dedup']) {
      const tar = path.join(shared, `${step}.tar`);
      const restored = await startFromTar(tar, `pgdata-${step}`);
      try {
        const after = await snapshotDatabase(restored, 'shop', { full: true });
        assert.deepEqual(diffSnapshots(before, after), [], step);
        assert.equal(after.tables['public.items']?.rows, 20000);
      } finally {
        await restored.stop();
      }
    }
  });
});
