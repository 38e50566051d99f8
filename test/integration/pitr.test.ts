import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { chmod, mkdir, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { json } from '../support/cli.js';
import { keygenInProcess, runCommand } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { archivingConf, clusterRoot, type PgCluster, findFreePort } from '../support/pg-cluster.js';
import { archiveCommand, giveToServer, serverUser } from '../support/server-folder.js';

// Physical backup and point-in-time recovery against a real cluster that
// archives its WAL through pgkeep wal-push. Commands run in this process
// (test/support/run-command.ts); the server's archive_command and
// restore_command run the built CLI, as they would in production. The proof: rows committed before
// the target time are back, and what happened after it (a DELETE, a DROP
// TABLE) is not.

const SOURCE = 'main';
// Known before the server starts (its archive_command names it); created in before(). Where the test clusters
// live (in memory when there is room): the recovered data directories are clusters too.
const shared = path.join(clusterRoot(), `pgkeep-pitr-${randomBytes(6).toString('hex')}`);
const REPO = path.join(shared, 'repo');
const repo = REPO;
let cluster: PgCluster;
const recovered: string[] = [];

before(async () => {
  await mkdir(shared, { mode: 0o755 });
  await chmod(shared, 0o755);
  const init = await runCommand(['init', '--repo', repo]);
  assert.equal(init.code, 0, init.stderr);
  giveToServer(shared);
});

useClusterAndWorkFolder(
  'pitr',
  async (c) => {
    cluster = c;
    // The first archived segment makes the archive folders the server's own.
    await archivedThrough((await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!.name);
  },
  // 1 MiB WAL segments: what is proven here is recovery (targets, timelines, gaps, drills), none of it a segment's
  // size; every segment archived, carried in a base backup and fetched is 16 times less work. wal-archive.test.ts
  // archives segments of the default 16 MiB.
  { conf: archivingConf(archiveCommand(REPO, SOURCE)), settings: { full_page_writes: 'on' }, walSegmentSizeMb: 1 },
);

after(async () => {
  for (const dataDir of recovered) stopServer(dataDir);
  await rm(shared, { recursive: true, force: true });
});

const env = () => ({ DATABASE_URL: cluster.url() });
const cli = (args: string[]) => runCommand([...args, '--repo', repo, '--source', SOURCE], { env: env() });

async function archivedThrough(name: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const [stats] = await cluster.query<{ last: string | null }>('SELECT last_archived_wal AS last FROM pg_stat_archiver');
    if (stats!.last !== null && stats!.last >= name) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} was not archived in time: ${JSON.stringify(await cluster.query('SELECT * FROM pg_stat_archiver'))}`);
}

async function switchAndArchive(): Promise<void> {
  await archivedThrough((await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!.name);
}

function stopServer(dataDir: string): void {
  if (!existsSync(path.join(dataDir, 'postmaster.pid'))) return;
  const user = serverUser();
  spawnSync(path.join(cluster?.binDir ?? '/usr/lib/postgresql/15/bin', 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w'], { uid: user?.uid, gid: user?.gid, cwd: '/', stdio: 'ignore' });
}

async function queryRecovered(port: number, sql: string): Promise<any[]> {
  const client = new pg.Client({ host: '127.0.0.1', port, user: cluster.superuser, password: cluster.password, database: 'postgres' });
  await client.connect();
  try {
    return (await client.query(sql)).rows;
  } finally {
    await client.end();
  }
}


// One suite, its parts in order: they share one cluster and one archive (npm test runs with --test-concurrency=2).
describe('point-in-time recovery', { concurrency: 1 }, () => {
  describe('physical backup and point-in-time recovery', { concurrency: 1 }, () => {
    let backupId: string;
    let targetTime: string;

    before(async () => {
      await cluster.query('CREATE TABLE items (id int PRIMARY KEY, note text)');
      await cluster.query("INSERT INTO items SELECT g, 'before backup' FROM generate_series(1, 100) g");
      const backup = await cli(['backup', '--physical', '--json']);
      assert.equal(backup.code, 0, backup.stderr);
      backupId = json(backup).id;

      // After the backup: more rows and a second table, committed before T.
      await cluster.query("INSERT INTO items SELECT g, 'after backup' FROM generate_series(101, 150) g");
      await cluster.query('CREATE TABLE extra AS SELECT generate_series(1, 7) AS n');
      // the target is kept to the millisecond: a few of them put the commits above before it
      await new Promise((r) => setTimeout(r, 50));
      targetTime = (await cluster.query<{ t: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS t"))[0]!.t;
      await cluster.query("SELECT pg_create_restore_point('before_damage')");
      // the target is kept to the millisecond (src/restore/run-pitr.ts): a few of them put what follows after it
      await new Promise((r) => setTimeout(r, 50));
      // The damage, after T.
      await cluster.query('DELETE FROM items WHERE id > 10');
      await cluster.query('DROP TABLE extra');
      await switchAndArchive();
    });

    test('the physical backup is complete: manifest, list, verify; restore refuses it', async () => {
      const show = json(await cli(['show', backupId, '--json']));
      assert.equal(show.kind, 'physical');
      assert.match(show.physical.startLsn, /^[0-9A-F]+\/[0-9A-F]+$/);
      assert.equal(show.physical.timeline, 1);
      assert.match(show.physical.backupLabel, /START WAL LOCATION: .*\nSTOP WAL LOCATION:/s);
      const { id } = (await cluster.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!;
      assert.equal(show.server.systemIdentifier, id);
      for (const name of [show.physical.walStart, show.physical.walStop]) {
        assert.ok(existsSync(path.join(repo, 'sources', SOURCE, 'wal', '00000001', `${name}.json`)), `${name} archived`);
      }
      const list = await cli(['list']);
      assert.match(list.stdout, new RegExp(`${backupId}\\s+main\\s+physical\\s+tar`));
      const verify = await cli(['verify', backupId]);
      assert.equal(verify.code, 0, verify.stderr + verify.stdout);
      const restore = await cli(['restore', backupId]);
      assert.equal(restore.code, 2);
      assert.match(restore.stderr, /is a physical backup .*pgkeep pitr/);
    });

    test('--dry-run prints the plan and creates nothing', async () => {
      const pgdata = path.join(shared, 'dry');
      const result = await cli(['pitr', '--pgdata', pgdata, '--target-time', targetTime, '--dry-run']);
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stdout, new RegExp(`backup +${backupId}`));
      assert.match(result.stdout, /needed for consistency: all archived/);
      assert.match(result.stdout, /timeline 1: archived through 0000000100000000000000[0-9A-F]{2}, no gap/);
      assert.equal(existsSync(pgdata), false);
    });

    test('pgkeep check: archiving through pgkeep works; a source the server does not archive for fails, naming the fix', async () => {
      const ok = await cli(['check']);
      assert.equal(ok.code, 0, ok.stdout + ok.stderr);
      assert.match(ok.stdout, /ok +archiving +0000000100000000000000[0-9A-F]{2} arrived in the repository/);
      assert.match(ok.stdout, /ok +replication +role postgres may replicate/);
      assert.match(ok.stdout, /archive lag: \d+\.\d s/);
      const other = await runCommand(['check', '--repo', repo, '--source', 'other', '--wal-timeout', '2'], { env: env() });
      assert.equal(other.code, 13, other.stderr);
      assert.match(other.stdout, /FAIL +archive_command +set archive_command = 'pgkeep wal-push %p --source other'/);
      assert.match(other.stderr, /^pgkeep: check of source other failed: archive_command/);
    });

    test('pitr --target-time T --start: the rows committed before T are back, the DELETE and DROP TABLE after it are not', async () => {
      const pgdata = path.join(shared, 'by-time');
      const port = await findFreePort();
      recovered.push(pgdata);
      const result = await cli(['pitr', '--pgdata', pgdata, '--target-time', targetTime, '--start', '--port', String(port), '--archive-mode', 'off']);
      assert.equal(result.code, 0, result.stderr + result.stdout);
      assert.match(result.stdout, /recovery promoted on new timeline 2/);
      assert.match(result.stdout, /stopped: recovery stopping before commit of transaction \d+, time/);
      assert.match(result.stderr, /replayed WAL file 0000000100000000000000/);
      const rows = await queryRecovered(port, 'SELECT count(*)::int AS n, count(*) FILTER (WHERE note = \'after backup\')::int AS later FROM items');
      assert.deepEqual(rows[0], { n: 150, later: 50 });
      assert.deepEqual(await queryRecovered(port, 'SELECT count(*)::int AS n FROM extra'), [{ n: 7 }]);
      assert.equal((await cluster.query<{ n: number }>('SELECT count(*)::int AS n FROM items'))[0]!.n, 10, 'the original still has the damage');
      const conf = readFileSync(path.join(pgdata, 'postgresql.auto.conf'), 'utf8');
      assert.match(conf, /restore_command = '.*pgkeep\.js wal-fetch %f %p --source main --repo /);
      assert.ok(!/PGPASSWORD|password/i.test(conf), 'no secret in the recovery settings');
      stopServer(pgdata);
    });

    test('pitr --target-name (restore point) reaches the same state', async () => {
      const pgdata = path.join(shared, 'by-name');
      const port = await findFreePort();
      recovered.push(pgdata);
      const result = await cli(['pitr', '--pgdata', pgdata, '--target-name', 'before_damage', '--start', '--port', String(port), '--archive-mode', 'off']);
      assert.equal(result.code, 0, result.stderr + result.stdout);
      assert.match(result.stdout, /stopped: recovery stopping at restore point "before_damage"/);
      assert.deepEqual(await queryRecovered(port, 'SELECT count(*)::int AS n FROM items'), [{ n: 150 }]);
      stopServer(pgdata);
    });

    test('table-level PITR: a table as it was at T, to a CSV or SQL file; the throwaway cluster is gone afterwards', async () => {
      const temp = path.join(shared, 'tmp');
      await mkdir(temp, { recursive: true });
      const csv = path.join(shared, 'out', 'items.csv');
      const result = await runCommand(['pitr', '--target-time', targetTime, '--extract-table', 'public.items', '--format', 'csv', '--output', csv, '--repo', repo, '--source', SOURCE], {
        env: { ...env(), PGKEEP_TEMP_DIR: temp },
      });
      assert.equal(result.code, 0, result.stderr + result.stdout);
      assert.match(result.stdout, /public\.items: 150 rows/);
      const lines = readFileSync(csv, 'utf8').trim().split('\n');
      assert.equal(lines[0], 'id,note');
      assert.equal(lines.length, 151);
      assert.ok(lines.includes('150,after backup'));
      assert.deepEqual(readdirSync(temp), [], 'the throwaway cluster was removed');

      const sql = path.join(shared, 'out', 'extra.sql');
      const dumped = await runCommand(['pitr', '--target-name', 'before_damage', '--extract-table', 'extra', '--output', sql, '--repo', repo, '--source', SOURCE], { env: { ...env(), PGKEEP_TEMP_DIR: temp } });
      assert.equal(dumped.code, 0, dumped.stderr + dumped.stdout);
      const text = readFileSync(sql, 'utf8');
      assert.match(text, /CREATE TABLE public\.extra/);
      assert.match(text, /COPY public\.extra \(n\) FROM stdin;\n1\n2\n3\n4\n5\n6\n7\n\\\.\n/);
      assert.deepEqual(readdirSync(temp), []);

      // Into the live database, beside the damaged table: the old rows under a new name, nothing of the current table touched.
      const into = await runCommand(['pitr', '--target-time', targetTime, '--extract-table', 'public.items', '--into-db', cluster.url(), '--as', 'items_before', '--repo', repo, '--source', SOURCE], {
        env: { ...env(), PGKEEP_TEMP_DIR: temp },
      });
      assert.equal(into.code, 0, into.stderr + into.stdout);
      assert.match(into.stdout, /loaded into postgres\.items_before/);
      assert.deepEqual(await cluster.query('SELECT count(*)::int AS n FROM items_before'), [{ n: 150 }]);
      assert.deepEqual(await cluster.query('SELECT count(*)::int AS n FROM items'), [{ n: 10 }]);
      const again = await runCommand(['pitr', '--target-time', targetTime, '--extract-table', 'public.items', '--into-db', cluster.url(), '--as', 'items_before', '--repo', repo, '--source', SOURCE], { env: env() });
      assert.equal(again.code, 3);
      assert.match(again.stderr, /table items_before already exists/);
      await cluster.query('DROP TABLE items_before');
      assert.deepEqual(readdirSync(temp), []);

      const missing = await runCommand(['pitr', '--target-name', 'before_damage', '--extract-table', 'nope', '--output', path.join(shared, 'out', 'nope.sql'), '--repo', repo, '--source', SOURCE], { env: { ...env(), PGKEEP_TEMP_DIR: temp } });
      assert.equal(missing.code, 2, missing.stderr);
      assert.match(missing.stderr, /table nope did not exist/);
      assert.equal(existsSync(path.join(shared, 'out', 'nope.sql')), false);
      assert.deepEqual(readdirSync(temp), []);
    });

    // Last: the promoted cluster archives a new timeline into the source, which later recoveries follow.
    test('across a timeline switch: promote a recovered cluster, write on it, recover again to the latest point', async () => {
      const first = path.join(shared, 'tl-first');
      const port = await findFreePort();
      recovered.push(first);
      const result = await cli(['pitr', '--pgdata', first, '--target-time', targetTime, '--start', '--port', String(port)]);
      assert.equal(result.code, 0, result.stderr + result.stdout);
      assert.match(result.stdout, /on new timeline 2/);
      // Writes on timeline 2, archived by the recovered server itself (archive-mode preserve).
      await queryRecovered(port, "INSERT INTO items SELECT g, 'timeline 2' FROM generate_series(1001, 1020) g");
      await queryRecovered(port, 'SELECT pg_switch_wal()');
      const deadline = Date.now() + 30_000;
      let archived: { last: string | null }[] = [];
      while (Date.now() < deadline) {
        archived = await queryRecovered(port, 'SELECT last_archived_wal AS last FROM pg_stat_archiver');
        if (archived[0]?.last?.startsWith('00000002')) break;
        await new Promise((r) => setTimeout(r, 200));
      }
      assert.match(String(archived[0]?.last), /^00000002/, 'the promoted server archived a timeline 2 segment');
      stopServer(first);
      assert.ok(existsSync(path.join(repo, 'sources', SOURCE, 'wal', '00000002', '00000002.history.json')));

      const plan = await cli(['pitr', '--pgdata', path.join(shared, 'tl-plan'), '--latest', '--dry-run']);
      assert.match(plan.stdout, /timeline 2: archived through 00000002/);
      assert.match(plan.stdout, /timeline histories: 00000002\.history/);

      const second = path.join(shared, 'tl-second');
      const port2 = await findFreePort();
      recovered.push(second);
      const again = await cli(['pitr', '--pgdata', second, '--latest', '--start', '--port', String(port2), '--archive-mode', 'off']);
      assert.equal(again.code, 0, again.stderr + again.stdout);
      assert.match(again.stdout, /on new timeline 3/);
      assert.deepEqual(await queryRecovered(port2, "SELECT count(*)::int AS n, count(*) FILTER (WHERE note = 'timeline 2')::int AS t2 FROM items"), [{ n: 170, t2: 20 }]);
      stopServer(second);
    });

    test('a non-empty data directory is refused without --force; a target before every backup is refused', async () => {
      const pgdata = path.join(shared, 'busy');
      await mkdir(pgdata);
      await writeFile(path.join(pgdata, 'something'), 'x');
      const busy = await cli(['pitr', '--pgdata', pgdata, '--latest']);
      assert.equal(busy.code, 12);
      assert.match(busy.stderr, /is not empty: .*--force/);
      assert.deepEqual(readdirSync(pgdata), ['something']);
      const early = await cli(['pitr', '--pgdata', path.join(shared, 'early'), '--target-time', '2001-01-01T00:00:00Z']);
      assert.equal(early.code, 12);
      assert.match(early.stderr, /no physical backup of source main is consistent before time 2001/);
      const none = await cli(['pitr', '--pgdata', path.join(shared, 'x')]);
      assert.equal(none.code, 2);
      assert.match(none.stderr, /exactly one of --target-time/);
    });
  });

  describe('WAL gaps', { concurrency: 1 }, () => {
    test('a segment removed from the archive shows as a gap in the plan; a backup whose own WAL is missing is refused', async () => {
      for (let i = 0; i < 2; i++) {
        await cluster.query('CREATE TABLE IF NOT EXISTS filler (n int)');
        await cluster.query('INSERT INTO filler VALUES (1)');
        await switchAndArchive();
      }
      const show = json(await cli(['show', 'latest', '--json']));
      const intact = await cli(['verify', '--wal']);
      assert.equal(intact.code, 0, intact.stdout + intact.stderr);
      assert.match(intact.stdout, new RegExp(`ok +backup ${show.id}: recovery targets from .* through [0-9A-F]+/[0-9A-F]+ \\(0000000[12]`));
      assert.match(intact.stdout, /the WAL archive is intact/);
      const folder = path.join(repo, 'sources', SOURCE, 'wal', '00000001');
      const after = readdirSync(folder).filter((f) => /^[0-9A-F]{24}\.json$/.test(f)).map((f) => f.slice(0, 24)).filter((n) => n > show.physical.walStop).sort();
      assert.ok(after.length >= 2, `segments archived after the backup: ${after}`);
      await rm(path.join(folder, `${after[0]}.json`));
      const plan = await cli(['pitr', '--pgdata', path.join(shared, 'gap'), '--latest', '--dry-run']);
      assert.equal(plan.code, 0, plan.stderr);
      assert.match(plan.stdout, new RegExp(`timeline 1: archived through \\S+, first gap at ${after[0]}`));
      const gap = await cli(['verify', '--wal']);
      assert.equal(gap.code, 7, gap.stdout + gap.stderr);
      assert.match(gap.stderr, new RegExp(`^pgkeep: .*gap in the WAL (after backup ${show.id}|archive): ${after[0]} is missing`, 'm'));

      await rm(path.join(folder, `${show.physical.walStop}.json`));
      const refused = await cli(['pitr', '--pgdata', path.join(shared, 'gap'), '--latest']);
      assert.equal(refused.code, 12, refused.stderr);
      assert.match(refused.stderr, new RegExp(`WAL backup ${show.id} needs to become consistent is missing from the archive \\(${show.physical.walStop}`));
      assert.equal(existsSync(path.join(shared, 'gap')), false);
    });
  });

  describe('physical backup and PITR with an encrypted repository', { concurrency: 1 }, () => {
    test('WAL and base tar are age files; pitr needs the identity and restores the rows before T', async () => {
      const key = path.join(shared, 'enc.key');
      const { publicKey } = await keygenInProcess(key);
      const encRepo = path.join(shared, 'enc-repo');
      assert.equal((await runCommand(['init', '--repo', encRepo, '--plain', '--encrypt', '--recipient', publicKey])).code, 0); // plain: its base tar is the age file checked below
      giveToServer(key);
      giveToServer(encRepo);
      // The same server now archives to the encrypted repository, as source "enc".
      await cluster.query(`ALTER SYSTEM SET archive_command = '${archiveCommand(encRepo, 'enc')}'`);
      await cluster.query('SELECT pg_reload_conf()');
      const enc = (args: string[]) => runCommand([...args, '--repo', encRepo, '--source', 'enc', '--identity', key], { env: env() });

      await cluster.query('CREATE TABLE secrets (id int)');
      const backup = await enc(['backup', '--physical', '--json']);
      assert.equal(backup.code, 0, backup.stderr);
      const manifest = json(backup);
      // Nothing was archived to this repository before: the backup waited for the server's first push,
      // so the source's WAL folders belong to the server's user, not to this (root) process.
      const user = serverUser();
      if (user) assert.equal(statSync(path.join(encRepo, 'sources', 'enc')).uid, user.uid);
      assert.equal(manifest.objects[0].name, 'base.tar.zst.age');
      assert.match(manifest.physical.backupLabel, /^START WAL LOCATION/);
      const stored = readFileSync(path.join(encRepo, 'sources', 'enc', 'backups', manifest.id, 'base.tar.zst.age'));
      assert.match(stored.subarray(0, 30).toString('latin1'), /^age-encryption\.org\/v1/);

      await cluster.query('INSERT INTO secrets SELECT generate_series(1, 30)');
      // the target is kept to the millisecond: a few of them put the commits above before it
      await new Promise((r) => setTimeout(r, 50));
      const t = (await cluster.query<{ t: string }>("SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') AS t"))[0]!.t;
      // the target is kept to the millisecond (src/restore/run-pitr.ts): a few of them put what follows after it
      await new Promise((r) => setTimeout(r, 50));
      await cluster.query('DELETE FROM secrets');
      await switchAndArchive();

      const noKey = await runCommand(['pitr', '--pgdata', path.join(shared, 'enc-nokey'), '--target-time', t, '--repo', encRepo, '--source', 'enc'], { env: env() });
      assert.equal(noKey.code, 2);
      assert.match(noKey.stderr, /encrypted: pitr needs --identity/);

      const pgdata = path.join(shared, 'enc-pitr');
      const port = await findFreePort();
      recovered.push(pgdata);
      const result = await enc(['pitr', '--pgdata', pgdata, '--target-time', t, '--start', '--port', String(port), '--archive-mode', 'off']);
      assert.equal(result.code, 0, result.stderr + result.stdout);
      assert.deepEqual(await queryRecovered(port, 'SELECT count(*)::int AS n FROM secrets'), [{ n: 30 }]);
      stopServer(pgdata);
    });

    test('prune deletes the older physical backup and the WAL only it needed; recovery from the kept one still has all its WAL', async () => {
      const key = path.join(shared, 'enc.key');
      const encRepo = path.join(shared, 'enc-repo');
      const enc = (args: string[]) => runCommand([...args, '--repo', encRepo, '--source', 'enc', '--identity', key], { env: env() });
      await cluster.query('INSERT INTO secrets SELECT generate_series(1, 5)');
      await switchAndArchive();
      const second = await enc(['backup', '--physical', '--json']);
      assert.equal(second.code, 0, second.stderr);
      const kept = json(second);
      await switchAndArchive();
      const walFolder = path.join(encRepo, 'sources', 'enc', 'wal', '00000001');
      const archived = () => readdirSync(walFolder).filter((f) => /^[0-9A-F]{24}(\.[0-9A-F]{8}\.backup)?\.json$/.test(f)).map((f) => f.slice(0, -'.json'.length));
      const older = archived().filter((n) => n.slice(8, 24) < kept.physical.walStart.slice(8, 24));
      assert.ok(older.length > 0, 'the first backup needed WAL older than the second one');

      const dry = await enc(['prune', '--keep-last', '1', '--dry-run']);
      assert.equal(dry.code, 0, dry.stderr);
      assert.match(dry.stdout, new RegExp(`wal +WAL: ${older.length} file\\(s\\) before ${kept.physical.walStart} `));
      assert.deepEqual(archived().filter((n) => older.includes(n)), older, 'a dry run removes nothing');

      const prune = await enc(['prune', '--keep-last', '1', '--json']);
      assert.equal(prune.code, 0, prune.stderr);
      assert.equal(json(prune).reports[0].walRemoved, older.length);
      assert.deepEqual(archived().filter((n) => older.includes(n)), [], 'the WAL only the deleted backup needed is gone');
      assert.ok(archived().includes(kept.physical.walStart), 'the kept backup\'s first segment stays');
      const objects = readdirSync(walFolder).filter((f) => !f.endsWith('.json'));
      assert.equal(objects.filter((f) => older.includes(f.slice(0, 24)) && !f.includes('.backup')).length, 0, 'their objects are gone too');
      const list = json(await enc(['list', '--json']));
      assert.deepEqual(list.map((b: { id: string }) => b.id), [kept.id]);
      const plan = await enc(['pitr', '--pgdata', path.join(shared, 'after-prune'), '--latest', '--dry-run']);
      assert.equal(plan.code, 0, plan.stderr);
      assert.match(plan.stdout, /needed for consistency: all archived/);
    });
  });
});
