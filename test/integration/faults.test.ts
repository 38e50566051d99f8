// Fault injection: pgkeep is killed (SIGKILL, as a real process) at each named
// fault point (src/fault-points.ts, armed by PGKEEP_FAULT), and damaged
// repositories are read, the way a user or an attacker would break them. After
// each fault: every listed backup verifies, the next run of the same command
// succeeds and cleans up, and no database, folder or temp file is left behind.

import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { cp, mkdir, readdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import pg from 'pg';
import { collect, json, pgkeep, startPgkeep, type CliResult } from '../support/cli.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { snapshotDatabase, diffSnapshots } from '../support/db-compare.js';
import { keygenInProcess as keygen, runCommand } from '../support/run-command.js';
import type { PgCluster } from '../support/pg-cluster.js';

/**
 * Rows of the backed-up table `big` in `app`, the database of every test but
 * two: ~1 MB. The size is not what these tests are about (a fault point is
 * reached whatever the size), and each backs up and restores it several times.
 */
const BIG_ROWS = 12_000;
/**
 * Rows of `big` in `loading`, the database of the two tests that stop a
 * restore from outside while pg_restore loads. Few: what keeps the restore
 * mid-load when the signal comes is not the size but a pause (PAUSE_SQL) at
 * the middle row, which the tests wait for.
 */
const LOADING_ROWS = 5_000;
/**
 * A CHECK constraint of `loading`'s big, restored with the table and so
 * evaluated for every row pg_restore copies in: at the middle row, and only
 * in a restore's temporary database (`<target>_pgkeep_<time>`: not when the
 * constraint is added here), the COPY sleeps 2 s (interrupted at once when
 * its session is terminated). Half the rows are in, the load is not done, and
 * a signal sent then lands mid-load whatever the machine's load: before, ~10
 * MB of rows made that likely (and cost their CPU to make, back up and load).
 */
const PAUSE_SQL = [
  `CREATE FUNCTION pause_mid_load(id int) RETURNS boolean LANGUAGE plpgsql AS $$
  BEGIN
    IF id = ${LOADING_ROWS / 2} AND current_database() LIKE '%\\_pgkeep\\_%' THEN PERFORM pg_sleep(2); END IF;
    RETURN true;
  END $$`,
  'ALTER TABLE big ADD CONSTRAINT paused_mid_load CHECK (pause_mid_load(id))',
];
let cluster: PgCluster;
let work: string;
/** The backed-up database's fingerprint: what every restore must reproduce. */
let sourceSnapshot: Awaited<ReturnType<typeof snapshotDatabase>>;

useClusterAndWorkFolder('faults', async (c, w) => {
  cluster = c;
  work = w;
  for (const [database, rows] of [['app', BIG_ROWS], ['loading', LOADING_ROWS]] as const) {
    await cluster.query(`CREATE DATABASE ${database}`);
    await cluster.query(`CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload FROM generate_series(1, ${rows}) g`, [], database);
  }
  for (const sql of PAUSE_SQL) await cluster.query(sql, [], 'loading');
  await cluster.query('CREATE TABLE small (id int PRIMARY KEY, note text)', [], 'app');
  await cluster.query("INSERT INTO small SELECT g, 'n' || g FROM generate_series(1, 50) g", [], 'app');
  sourceSnapshot = await snapshotDatabase(cluster, 'app');
});

/** A private temp dir per test (PGKEEP_TEMP_DIR), so leftovers in it can be counted. */
async function tempDir(name: string): Promise<string> {
  const dir = path.join(work, `tmp-${name}`);
  await mkdir(dir, { recursive: true });
  return dir;
}

const env = (temp: string, extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('app'), PGKEEP_TEMP_DIR: temp, ...extra });

/**
 * A repository with one backup of the `loading` database (LOADING_ROWS), made
 * once for the tests that stop a restore of it from outside mid-load.
 */
let loadingRepo: Promise<string> | undefined;
/** The environment's addition that makes `loading` the source (restore latest picks its backups). */
const loadingSource = () => ({ DATABASE_URL: cluster.url('loading') });
function repoOfLoading(): Promise<string> {
  loadingRepo ??= (async () => {
    const repo = path.join(work, 'repo-loading');
    const temp = await tempDir('loading-backup');
    ok(await run(['backup', '--repo', repo], temp, loadingSource()), 'backup of loading');
    return repo;
  })();
  return loadingRepo;
}

/**
 * Repositories of `app`'s backups made once, which tests copy and then break
 * or kill something in (a copy of the folder costs far less than a backup):
 * one backup named "first", and three (that one, then "second" and "third").
 * A copy keeps the source's order of folders.
 */
let firstBackupRepo: Promise<string> | undefined;
let threeBackupsRepo: Promise<string> | undefined;
function repoWithBackups(count: 1 | 3): Promise<string> {
  firstBackupRepo ??= (async () => {
    const made = path.join(work, 'repo-first-backup');
    ok(await run(['backup', '--repo', made, '--name', 'first'], await tempDir('first-backup')), 'backup');
    return made;
  })();
  if (count === 1) return firstBackupRepo;
  threeBackupsRepo ??= (async () => {
    const made = path.join(work, 'repo-three-backups');
    await cp(await firstBackupRepo!, made, { recursive: true });
    const temp = await tempDir('three-backups');
    for (const name of ['second', 'third']) ok(await run(['backup', '--repo', made, '--name', name], temp), 'backup');
    return made;
  })();
  return threeBackupsRepo;
}
async function copyOfRepoWithBackups(repo: string, count: 1 | 3): Promise<void> {
  await cp(await repoWithBackups(count), repo, { recursive: true });
}

/**
 * A run with a fault point armed is a real process (it is killed there); the
 * runs around it (setting up, the next run that cleans up, the checks) run in
 * this process, which saves a Node start-up each.
 */
async function run(args: string[], temp: string, extra: Record<string, string> = {}): Promise<CliResult> {
  if (extra.PGKEEP_FAULT) return pgkeep(args, { env: env(temp, extra) });
  return runCommand(args, { env: env(temp, extra) });
}

function ok(result: CliResult, what: string): CliResult {
  assert.equal(result.code, 0, `${what} failed (exit ${result.code}, ${result.signal ?? 'no signal'}): ${result.stderr}`);
  return result;
}

/** Runs pgkeep with a fault point armed and checks that it died there. */
async function killedAt(point: string, args: string[], temp: string): Promise<void> {
  const result = await run(args, temp, { PGKEEP_FAULT: point });
  assert.equal(result.signal, 'SIGKILL', `expected a kill at ${point}; exit ${result.code}: ${result.stderr}`);
  assert.match(result.stderr, new RegExp(`fault point ${point.replace('#', '#')} reached`));
}

async function databases(): Promise<string[]> {
  return (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY datname')).map((r) => r.datname);
}

async function pgkeepDatabases(): Promise<string[]> {
  return (await databases()).filter((d) => d.includes('_pgkeep_'));
}

/** Every backup `list` shows passes `verify`. */
async function everyListedBackupVerifies(repo: string, temp: string): Promise<number> {
  const listed = json<{ id: string; damaged?: unknown }[]>(ok(await run(['list', '--repo', repo, '--json'], temp), 'list'));
  assert.deepEqual(listed.filter((b) => b.damaged), [], 'no backup is damaged');
  for (const backup of listed) ok(await run(['verify', backup.id, '--repo', repo], temp), `verify ${backup.id}`);
  return listed.length;
}

/** Whether the repository deduplicates (pgkeep.json names a content store). */
function deduplicating(repo: string): boolean {
  return JSON.parse(readFileSync(path.join(repo, 'pgkeep.json'), 'utf8')).content !== undefined;
}

function backupFolders(repo: string, source = 'app'): string[] {
  const dir = path.join(repo, 'sources', source, 'backups');
  return existsSync(dir) ? readdirSync(dir) : [];
}

/** Temp files of the repository and temp folders of pgkeep, anywhere under `roots`. */
function leftoverFiles(...roots: string[]): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.name.startsWith('.pgkeep-tmp-') || /^pgkeep-(restore|verify|dump|globals|upload|schema)-/.test(entry.name)) found.push(full);
      else if (entry.isDirectory()) walk(full);
    }
  };
  roots.forEach(walk);
  return found;
}

/**
 * Waits until pg_restore's COPY into the temporary database of a restore to `target` sleeps in PAUSE_SQL at the
 * middle row: mid-load, for 2 s. It asks every 25 ms (the pause is 80 times that) on one connection: cluster.query
 * would open one per question (a backend and an authentication each).
 */
async function loading(target: string): Promise<void> {
  const deadline = Date.now() + 20_000;
  const client = new pg.Client({ connectionString: cluster.url() });
  await client.connect();
  try {
    const paused = "SELECT 1 FROM pg_stat_activity WHERE datname LIKE $1 AND query ILIKE 'COPY%' AND wait_event = 'PgSleep'";
    while ((await client.query(paused, [`${target}\\_pgkeep\\_%`])).rowCount === 0) {
      if (Date.now() > deadline) throw new Error(`the restore into ${target} did not start loading`);
      await sleep(25);
    }
  } finally {
    await client.end();
  }
}

async function rowsOf(database: string): Promise<number> {
  return Number((await cluster.query<{ n: string }>('SELECT count(*) AS n FROM big', [], database))[0]!.n);
}

async function dropIfExists(...names: string[]): Promise<void> {
  for (const name of names) await cluster.query(`DROP DATABASE IF EXISTS "${name}" WITH (FORCE)`);
}

describe('faults end fast, with one line', () => {
  test('a missing object fails the restore at once: pg_restore stopped, nothing created (exit 5)', async () => {
    const temp = await tempDir('missing');
    const repo = path.join(work, 'repo-missing');
    ok(await run(['init', '--repo', repo, '--plain'], temp), 'init'); // plain: the dump is one object to remove
    ok(await run(['backup', '--repo', repo], temp), 'backup');
    const [id] = backupFolders(repo);
    await rm(path.join(repo, 'sources', 'app', 'backups', id!, 'dump.zst'));
    const started = Date.now();
    const result = await run(['restore', id!, '--repo', repo, '--to', 'missing_obj'], temp);
    assert.ok(Date.now() - started < 15_000, `took ${Date.now() - started} ms`);
    assert.equal(result.code, 5, result.stderr);
    assert.match(result.stderr, /^pgkeep: object dump\.zst of the backup is missing \(.*dump\.zst\): the backup is damaged, see pgkeep verify$/m);
    assert.equal(result.stderr.split('\n').filter((l) => l.startsWith('pgkeep:')).length, 1, result.stderr);
    assert.ok(!(await databases()).some((d) => d.startsWith('missing_obj')), 'no database is left');
    assert.deepEqual(leftoverFiles(temp, repo), []);
    // "latest" skips it, saying so
    const latest = await run(['restore', 'latest', '--repo', repo, '--dry-run'], temp);
    assert.equal(latest.code, 6, latest.stderr);
    assert.match(latest.stderr, /"latest" skipped a damaged backup: .*object dump\.zst is missing/);
  });

  test('a manifest object name with ../ is a damaged backup (exit 6), never an internal error', async () => {
    const temp = await tempDir('dotdot');
    const repo = path.join(work, 'repo-dotdot');
    ok(await run(['init', '--repo', repo, '--plain'], temp), 'init'); // plain: the manifest names the dump's object
    ok(await run(['backup', '--repo', repo], temp), 'backup');
    const [id] = backupFolders(repo);
    const file = path.join(repo, 'sources', 'app', 'backups', id!, 'manifest.json');
    writeFileSync(file, readFileSync(file, 'utf8').replace('"name": "dump.zst"', '"name": "../../../dump.zst"'));
    for (const args of [['restore', id!, '--to', 'dotdot'], ['verify', id!]]) {
      const result = await run([...args, '--repo', repo], temp);
      assert.equal(result.code, 6, result.stderr);
      assert.match(result.stderr, new RegExp(`^pgkeep: backup ${id} of source app is damaged: its manifest is invalid at objects\\.0\\.name: not a path inside the backup folder$`, 'm'));
      assert.doesNotMatch(result.stderr, /internal error/);
    }
    assert.ok(!(await databases()).some((d) => d.startsWith('dotdot')));
  });

  test('a repository under /proc fails at once instead of spinning (backup, init)', async () => {
    const temp = await tempDir('proc');
    for (const args of [['backup', '--repo', '/proc/pgkeep-test/repo'], ['init', '--repo', '/proc/pgkeep-test']]) {
      const started = Date.now();
      const result = await run(args, temp);
      assert.ok(Date.now() - started < 10_000, `${args[0]} took ${Date.now() - started} ms`);
      assert.equal(result.code, 5, result.stderr);
      assert.match(result.stderr, /^pgkeep: cannot create the folder \/proc\/pgkeep-test: the filesystem refuses it \(ENOENT\); choose another --repo$/m);
    }
  });

  test('SIGTERM in the middle of a restore: exit 143 within seconds, the temporary database dropped', async () => {
    const temp = await tempDir('sigterm');
    const repo = await repoOfLoading();
    const child = startPgkeep(['restore', 'latest', '--repo', repo, '--to', 'termed'], { env: env(temp, loadingSource()) });
    const done = collect(child);
    await loading('termed');
    const signalled = Date.now();
    child.kill('SIGTERM');
    const result = await done;
    assert.ok(Date.now() - signalled < 8_000, `stopped after ${Date.now() - signalled} ms`);
    assert.equal(result.code, 143, result.stderr);
    assert.ok(!(await databases()).some((d) => d.startsWith('termed')), 'nothing is left under either name');
    assert.deepEqual(leftoverFiles(temp, repo), []);
  });
});

describe('one bad backup is isolated', () => {
  test('a corrupt manifest among several: list flags it, latest skips it, verify and verify all name it', async () => {
    const temp = await tempDir('corrupt');
    const repo = path.join(work, 'repo-corrupt');
    await copyOfRepoWithBackups(repo, 3);
    const ids = backupFolders(repo);
    assert.equal(ids.length, 3);
    const manifest = (id: string) => path.join(repo, 'sources', 'app', 'backups', id, 'manifest.json');
    writeFileSync(manifest(ids[1]!), '{bad');

    const list = ok(await run(['list', '--repo', repo], temp), 'list');
    assert.match(list.stdout, new RegExp(`^DAMAGED  app/${ids[1]}: backup ${ids[1]} of source app is damaged: its manifest .* is not valid JSON$`, 'm'));
    for (const id of [ids[0]!, ids[2]!]) assert.match(list.stdout, new RegExp(`^${id} `, 'm'));
    const listed = json<{ id: string; damaged?: { code: string } }[]>(ok(await run(['list', '--repo', repo, '--json'], temp), 'list --json'));
    assert.deepEqual(listed.map((b) => [b.id, b.damaged?.code ?? 'ok']), [[ids[0], 'ok'], [ids[2], 'ok'], [ids[1], 'MANIFEST_INVALID']]);
    ok(await run(['verify', 'latest', '--repo', repo], temp), 'verify latest');
    ok(await run(['restore', 'latest', '--repo', repo, '--dry-run'], temp), 'restore latest --dry-run');
    const named = await run(['verify', ids[1]!, '--repo', repo], temp);
    assert.equal(named.code, 6);
    assert.match(named.stderr, new RegExp(`backup ${ids[1]} of source app is damaged`));

    // The newest one damaged: latest is the one before, and says what it skipped.
    writeFileSync(manifest(ids[2]!), '[]');
    const verify = ok(await run(['verify', 'latest', '--repo', repo], temp), 'verify latest');
    assert.match(verify.stderr, new RegExp(`"latest" skipped a damaged backup: backup ${ids[2]} of source app is damaged: its manifest is not a JSON object`));
    assert.match(verify.stderr, new RegExp(`verifying app/${ids[0]} `));
    // verify all: every backup checked, each broken one named
    const all = await run(['verify', 'all', '--repo', repo], temp);
    assert.equal(all.code, 7, all.stderr);
    assert.match(all.stdout, new RegExp(`^ok +app/${ids[0]}  manifest checksum ok$`, 'm'));
    for (const id of [ids[1], ids[2]]) assert.match(all.stdout, new RegExp(`^DAMAGED +app/${id}  backup ${id} of source app is damaged`, 'm'));
    assert.match(all.stderr, new RegExp(`^pgkeep: 2 of 3 backup\\(s\\) in .* are broken: app/${ids[1]}, app/${ids[2]}$`, 'm'));
    // prune keeps and names them
    const prune = await run(['prune', '--repo', repo, '--keep-last', '1', '--dry-run', '--json'], temp);
    assert.equal(prune.code, 0, prune.stderr);
    assert.deepEqual(json(prune).reports[0].unreadable.map((u: { id: string }) => u.id).sort(), [ids[1], ids[2]].sort());
  });

  test('an edited row count is caught by verify and refused by restore', async () => {
    const temp = await tempDir('edited');
    const repo = path.join(work, 'repo-edited');
    ok(await run(['backup', '--repo', repo], temp), 'backup');
    const [id] = backupFolders(repo);
    const verified = ok(await run(['verify', id!, '--repo', repo], temp), 'verify');
    assert.match(verified.stdout, /^manifest: checksum ok$/m);
    const file = path.join(repo, 'sources', 'app', 'backups', id!, 'manifest.json');
    const text = readFileSync(file, 'utf8');
    assert.ok(text.includes(`"rows": ${BIG_ROWS}`));
    writeFileSync(file, text.replace(`"rows": ${BIG_ROWS}`, `"rows": ${BIG_ROWS + 1}`));
    for (const args of [['verify', id!], ['restore', id!, '--to', 'edited']]) {
      const result = await run([...args, '--repo', repo], temp);
      assert.equal(result.code, 6, result.stderr);
      assert.match(result.stderr, new RegExp(`^pgkeep: backup ${id} of source app is damaged: its manifest was changed after pgkeep wrote it \\(its checksum does not match\\)$`, 'm'));
    }
    // a manifest of an older pgkeep (no checksum) is still read, and verify says so
    const legacy = JSON.parse(text);
    delete legacy.integrity;
    writeFileSync(file, JSON.stringify(legacy, null, 2));
    assert.match(ok(await run(['verify', id!, '--repo', repo], temp), 'verify').stdout, /^manifest: no checksum \(written by an older pgkeep\): not checked$/m);
  });

  test('encrypted repository: a manifest edited without the key (checksum recomputed) is refused', async () => {
    const temp = await tempDir('forged');
    const repo = path.join(work, 'repo-forged');
    const key = await keygen(path.join(work, 'forged.key'));
    ok(await run(['init', '--repo', repo, '--plain', '--encrypt', '--recipient', key.publicKey], temp), 'init'); // plain: a backup without the identity
    // A backup host with only the public key: checksum, no authentication.
    ok(await run(['backup', '--repo', repo, '--name', 'public-only'], temp), 'backup');
    // One holding the identity: authenticated.
    ok(await run(['backup', '--repo', repo, '--identity', key.file], temp), 'backup');
    // Tell them apart by name: both can be taken in the same second, and a folder listing has no order.
    const unauthenticated = backupFolders(repo).find((id) => id.endsWith('-public-only'));
    const authenticated = backupFolders(repo).find((id) => !id.endsWith('-public-only'));
    assert.ok(unauthenticated && authenticated, `two backups: ${backupFolders(repo).join(', ')}`);
    const verify = (id: string) => run(['verify', id, '--repo', repo, '--identity', key.file], temp);
    assert.match(ok(await verify(authenticated!), 'verify').stdout, /^manifest: checksum ok, authenticated \(HMAC with the key of age1/m);
    assert.match(ok(await verify(unauthenticated!), 'verify').stdout, /^manifest: checksum ok; not authenticated: written by a pgkeep that held no identity/m);

    // What someone with write access to the bucket but no key can do: edit and recompute the checksum.
    const file = path.join(repo, 'sources', 'app', 'backups', authenticated!, 'manifest.json');
    const manifest = JSON.parse(readFileSync(file, 'utf8'));
    manifest.tables.find((t: { name: string }) => t.name === 'big').rows = 1;
    const { integrity, ...rest } = manifest;
    integrity.sha256 = createHash('sha256').update(JSON.stringify(rest)).digest('hex');
    writeFileSync(file, JSON.stringify({ ...rest, integrity }, null, 2));
    for (const args of [['verify', authenticated!], ['restore', authenticated!, '--to', 'forged']]) {
      const result = await run([...args, '--repo', repo, '--identity', key.file], temp);
      assert.equal(result.code, 6, result.stderr);
      assert.match(result.stderr, /its manifest was changed by someone without the repository's key \(its HMAC does not match\)/);
    }
    assert.ok(!(await databases()).includes('forged'));
  });
});

describe('killed at every fault point: consistent, and the next run cleans up', () => {
  for (const point of ['after-object-stored', 'after-object-stored#2', 'before-manifest', 'after-manifest']) {
    test(`backup killed at ${point}`, async () => {
      const temp = await tempDir(`backup-${point}`);
      const repo = path.join(work, `repo-backup-${point.replace('#', '-')}`);
      await copyOfRepoWithBackups(repo, 1);
      await killedAt(point, ['backup', '--repo', repo], temp);
      const listed = await everyListedBackupVerifies(repo, temp);
      assert.equal(listed, point === 'after-manifest' ? 2 : 1, 'the killed backup is listed only once its manifest was written');
      const next = ok(await run(['backup', '--repo', repo], temp), 'the next backup');
      // a plain repository has the killed backup's folder to remove; a deduplicating one wrote only packs no index names (prune's)
      if (point !== 'after-manifest' && !deduplicating(repo)) assert.match(next.stderr, /removed 1 interrupted backup\(s\)/);
      assert.equal(await everyListedBackupVerifies(repo, temp), listed + 1);
      assert.equal(backupFolders(repo).length, listed + 1, 'no folder without a manifest is left');
      assert.deepEqual(leftoverFiles(temp, repo), []);
    });
  }

  // restore into a new database: the requested name never shows a half-loaded database
  for (const point of ['after-database-created', 'after-load', 'before-rename']) {
    test(`restore into a new database killed at ${point}`, async () => {
      const temp = await tempDir(`restore-${point}`);
      const repo = path.join(work, 'repo-restore');
      if (backupFolders(repo).length === 0) ok(await run(['backup', '--repo', repo], temp), 'backup');
      await killedAt(point, ['restore', 'latest', '--repo', repo, '--to', 'rnew'], temp);
      assert.ok(!(await databases()).includes('rnew'), 'nothing under the requested name');
      assert.equal((await pgkeepDatabases()).length, 1, 'the temporary database is there, marked');
      const next = ok(await run(['restore', 'latest', '--repo', repo, '--to', 'rnew'], temp), 'the next restore');
      assert.match(next.stderr, /leftover of an interrupted run: dropped database "rnew_pgkeep_\d{8}t\d{6}z", left by an interrupted restore of backup/);
      assert.deepEqual(await pgkeepDatabases(), []);
      assert.deepEqual(diffSnapshots(sourceSnapshot, await snapshotDatabase(cluster, 'rnew')), []);
      const comment = await cluster.query<{ c: string | null }>("SELECT shobj_description(oid, 'pg_database') AS c FROM pg_database WHERE datname = 'rnew'");
      assert.equal(comment[0]!.c, null, 'the marker is removed once the database is in place');
      assert.deepEqual(leftoverFiles(temp, repo), []);
      await dropIfExists('rnew');
    });
  }

  test('restore into a new database killed (SIGKILL from outside) while pg_restore loads', async () => {
    const temp = await tempDir('restore-midload');
    const repo = await repoOfLoading();
    const child = startPgkeep(['restore', 'latest', '--repo', repo, '--to', 'rmid'], { env: env(temp, loadingSource()) });
    const done = collect(child);
    await loading('rmid');
    child.kill('SIGKILL');
    assert.equal((await done).signal, 'SIGKILL');
    assert.ok(!(await databases()).includes('rmid'));
    const left = leftoverFiles(temp);
    assert.ok(left.some((f) => /pgkeep-restore-\d+-/.test(f)), `the staging folder of the killed restore is left: ${left.join(', ')}`);
    const next = ok(await run(['restore', 'latest', '--repo', repo, '--to', 'rmid'], temp, loadingSource()), 'the next restore');
    assert.match(next.stderr, /dropped database "rmid_pgkeep_/);
    assert.match(next.stderr, /removed temp folder .*pgkeep-restore-\d+-/);
    assert.equal(await rowsOf('rmid'), LOADING_ROWS);
    assert.deepEqual(await pgkeepDatabases(), []);
    assert.deepEqual(leftoverFiles(temp, repo), []);
    await dropIfExists('rmid');
  });

  // overwrite: the original is never lost, and no full-size copy piles up
  for (const point of ['after-load', 'between-renames', 'after-swap']) {
    test(`restore --overwrite killed at ${point}`, async () => {
      const temp = await tempDir(`overwrite-${point}`);
      const repo = path.join(work, 'repo-restore');
      if (backupFolders(repo).length === 0) ok(await run(['backup', '--repo', repo], temp), 'backup');
      await cluster.query('CREATE DATABASE rover');
      await cluster.query('CREATE TABLE big (id int)', [], 'rover');
      await cluster.query('INSERT INTO big VALUES (1), (2)', [], 'rover');
      await killedAt(point, ['restore', 'latest', '--repo', repo, '--to', 'rover', '--overwrite', '--force'], temp);
      const next = ok(await run(['restore', 'latest', '--repo', repo, '--to', 'rover', '--overwrite', '--force'], temp), 'the next restore');
      if (point === 'between-renames') assert.match(next.stderr, /renamed "rover_pgkeep_old_\d{8}t\d{6}z" back to "rover"/);
      if (point === 'after-swap') assert.match(next.stderr, /dropped database "rover_pgkeep_old_\d{8}t\d{6}z", replaced by the restore/);
      else assert.match(next.stderr, /dropped database "rover_pgkeep_\d{8}t\d{6}z", left by an interrupted restore/);
      assert.deepEqual(await pgkeepDatabases(), []);
      assert.equal(await rowsOf('rover'), BIG_ROWS);
      assert.deepEqual(leftoverFiles(temp, repo), []);
      await dropIfExists('rover');
    });
  }

  test('prune killed between removing a manifest and its objects', async () => {
    const temp = await tempDir('prune');
    const repo = path.join(work, 'repo-prune');
    await copyOfRepoWithBackups(repo, 3);
    await killedAt('mid-prune', ['prune', '--repo', repo, '--keep-last', '1'], temp);
    assert.equal(await everyListedBackupVerifies(repo, temp), 2, 'the half-pruned backup is no longer listed');
    assert.equal(backupFolders(repo).length, 3, 'its objects are still there');
    ok(await run(['prune', '--repo', repo, '--keep-last', '1'], temp), 'the next prune');
    assert.equal(await everyListedBackupVerifies(repo, temp), 1);
    assert.equal(backupFolders(repo).length, 1);
    assert.deepEqual(leftoverFiles(temp, repo), []);
  });

  test('prune removes what a killed restore left', async () => {
    const temp = await tempDir('prune-restore');
    const repo = path.join(work, 'repo-prune');
    await killedAt('after-load', ['restore', 'latest', '--repo', repo, '--to', 'rprune'], temp);
    assert.equal((await pgkeepDatabases()).length, 1);
    // status reports it (and changes nothing)
    const status = ok(await run(['status', '--repo', repo], temp), 'status');
    assert.match(status.stdout, /^leftover: 127\.0\.0\.1:\d+: database "rprune_pgkeep_\w+" left by an interrupted restore of backup .*: the next restore or prune removes it$/m);
    assert.equal((await pgkeepDatabases()).length, 1);
    const prune = ok(await run(['prune', '--repo', repo, '--keep-last', '1'], temp), 'prune');
    assert.match(prune.stderr, /dropped database "rprune_pgkeep_/);
    assert.deepEqual(await pgkeepDatabases(), []);
    assert.deepEqual(leftoverFiles(temp), []);
  });

  test('copy killed after an object was copied', async () => {
    const temp = await tempDir('copy');
    const from = path.join(work, 'repo-copy-from');
    const to = path.join(work, 'repo-copy-to');
    ok(await run(['init', '--repo', from, '--plain'], temp), 'init'); // plain: copied object by object, as stored
    ok(await run(['backup', '--repo', from], temp), 'backup');
    await killedAt('mid-copy', ['copy', 'latest', '--from', from, '--to', to], temp);
    assert.equal(await everyListedBackupVerifies(to, temp), 0, 'nothing is visible at the destination');
    const next = ok(await run(['copy', 'latest', '--from', from, '--to', to], temp), 'the next copy');
    assert.match(next.stderr, /removed 1 interrupted backup\(s\) at the destination/);
    assert.equal(await everyListedBackupVerifies(to, temp), 1);
    assert.deepEqual(leftoverFiles(temp, from, to), []);
    assert.deepEqual(await readdir(path.join(to, 'sources', 'app', 'backups')), backupFolders(from));
  });
});
