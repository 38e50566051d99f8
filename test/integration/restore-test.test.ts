import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, cp, mkdir, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { collect, json, startPgkeep } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { clusterRoot, type PgCluster } from '../support/pg-cluster.js';
import { rewriteManifest } from '../support/manifest-edit.js';
import { initPassphraseRepo } from '../support/passphrase-repo.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/awkward.sql');

let cluster: PgCluster;
let work: string;
/** One repository with a checksummed backup of the awkward fixture in each format; tests tamper with copies. */
let pristine: string;
const ids: Record<string, string> = {};

/** Every process: pid, parent pid and command line (from /proc). */
function processes(): { pid: number; ppid: number; command: string }[] {
  const found: { pid: number; ppid: number; command: string }[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const [state, ppid] = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
      if (state === 'Z') continue;
      found.push({ pid: Number(entry), ppid: Number(ppid), command: readFileSync(`/proc/${entry}/cmdline`, 'utf8').replace(/\0/g, ' ') });
    } catch {
      // ended while we looked
    }
  }
  return found;
}

const env = (database = 'awkward') => ({ DATABASE_URL: cluster.url(database) });

/**
 * A PGKEEP_TEMP_DIR for local scratch clusters: where the test clusters live (in memory when there is room; an
 * initdb, a restore and a removal on disk cost kernel time), traversable by the server's OS user, who owns the
 * cluster folder inside when root. Removed after the file.
 */
const scratchTemps: string[] = [];
async function scratchTemp(name: string): Promise<string> {
  const folder = await mkdtemp(path.join(clusterRoot(), `pgkeep-${name}-`));
  await chmod(folder, 0o711);
  scratchTemps.push(folder);
  return folder;
}
after(async () => {
  for (const folder of scratchTemps) await rm(folder, { recursive: true, force: true });
});

useClusterAndWorkFolder('restore-test', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE awkward');
  const loaded = spawnSync(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', 'awkward', '-f', FIXTURE], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(loaded.status, 0, `loading the fixture failed: ${loaded.stderr}`);
  // A Rails-style migration table, recorded in the manifest at backup time.
  await cluster.query('CREATE TABLE schema_migrations (version varchar PRIMARY KEY)', [], 'awkward');
  await cluster.query("INSERT INTO schema_migrations VALUES ('20240101000000'), ('20240301000000'), ('9')", [], 'awkward');
  pristine = path.join(work, 'pristine');
  for (const format of ['custom', 'directory', 'plain']) {
    const result = await pgkeep(['backup', '--repo', pristine, '--format', format, '--name', format, '--checksums', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    ids[format] = json(result).id;
  }
});

let copies = 0;
async function copyRepo(): Promise<string> {
  const repo = path.join(work, `copy-${++copies}`);
  await cp(pristine, repo, { recursive: true });
  return repo;
}

const backupDir = (repo: string, format: string) => path.join(repo, 'sources', 'awkward', 'backups', ids[format]!);

async function editManifest(repo: string, format: string, edit: (manifest: any) => void): Promise<void> {
  await rewriteManifest(path.join(backupDir(repo, format), 'manifest.json'), edit);
}

async function scratchDatabases(): Promise<string[]> {
  return (await cluster.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep\\_verify\\_%' ORDER BY 1")).map((r) => r.datname);
}

async function records(repo: string, format: string): Promise<any[]> {
  const dir = path.join(repo, 'sources', 'awkward', 'verifications', ids[format]!);
  if (!existsSync(dir)) return [];
  const names = (await readdir(dir)).sort();
  return Promise.all(names.map(async (name) => JSON.parse(await readFile(path.join(dir, name), 'utf8'))));
}

describe('verify --restore-test', () => {
  /** The custom format's restore-tested repository and the text that run prints, for the list and show test. */
  let tested: { repo: string; text: string } | undefined;
  for (const format of ['custom', 'directory', 'plain']) {
    test(`${format}: the awkward fixture restores into a scratch database, every check passes, the scratch is dropped`, async () => {
      const repo = await copyRepo();
      const result = await pgkeep(['verify', ids[format]!, '--repo', repo, '--restore-test', '--json'], { env: env(), text: true });
      assert.equal(result.code, 0, result.stderr);
      if (format === 'custom') tested = { repo, text: result.text! };
      const report = json(result);
      assert.equal(report.ok, true);
      assert.equal(report.kind, 'restore-test');
      const testReport = report.restoreTest;
      assert.equal(testReport.scratch.kind, 'same-server', 'the superuser may create databases: same-server is the default');
      assert.equal(testReport.scratch.database, `pgkeep_verify_${ids[format]!.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`);
      assert.ok(testReport.tables.length >= 20, `every counted table is compared (${testReport.tables.length})`);
      for (const t of testReport.tables) assert.equal(t.actual, t.expected, `${t.schema}.${t.name}`);
      assert.ok(testReport.tables.some((t: { name: string }) => t.name === 'таблица'), 'unicode table names are compared');
      if (format === 'plain') {
        assert.equal(testReport.schema, null);
        assert.match(testReport.notes.join('\n'), /plain-format dump has no table of contents/);
      } else {
        assert.ok(testReport.schema.checked >= 50, `the TOC's objects are compared with the catalog (${testReport.schema.checked})`);
        assert.deepEqual(testReport.schema.missing, []);
      }
      assert.deepEqual(
        testReport.migrations.tables.map((m: any) => [m.name, m.expected.latest, m.actual.latest, m.ok]),
        [['schema_migrations', '20240301000000', '20240301000000', true]],
      );
      assert.ok(testReport.restoreMs > 0);
      assert.deepEqual(await scratchDatabases(), []);

      const [record] = await records(repo, format);
      assert.equal(record.kind, 'restore-test');
      assert.equal(record.ok, true);
      assert.equal(record.restore.durationMs, testReport.restoreMs);
      assert.match(record.restore.scratch, /^same-server: "pgkeep_verify_/);
      assert.equal(record.tables.length, testReport.tables.length);
    });
  }

  test('list and show display the last verification; a plain verify is recorded too', async () => {
    // a repository no verify has run on lists none
    const before = json(await pgkeep(['list', '--repo', pristine, '--json']));
    assert.deepEqual(before.map((b: any) => b.verification), [null, null, null]);
    // The custom test's repository, restore-tested there once (its text is what that run prints without --json);
    // alone (that test filtered out), the restore test runs here.
    if (!tested) {
      const repo = await copyRepo();
      const run = await pgkeep(['verify', ids.custom!, '--repo', repo, '--restore-test'], { env: env() });
      assert.equal(run.code, 0, run.stderr);
      tested = { repo, text: run.stdout };
    }
    const { repo } = tested;
    assert.deepEqual(json(await pgkeep(['list', '--repo', repo, '--json'])).map((b: any) => b.verification?.kind ?? null).sort(), ['restore-test', null, null].sort());
    const integrity = await pgkeep(['verify', ids.plain!, '--repo', repo]);
    assert.equal(integrity.code, 0, integrity.stderr);
    assert.match(tested.text, /schema: (\d+) of \1 objects of the table of contents present/);
    assert.match(tested.text, /restores and checks out/);

    const list = await pgkeep(['list', '--repo', repo]);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /VERIFIED/);
    assert.match(list.stdout, new RegExp(`${ids.custom}.*restore ok \\d+s ago`));
    assert.match(list.stdout, new RegExp(`${ids.plain}.*integrity ok \\d+s ago`));
    assert.match(list.stdout, new RegExp(`${ids.directory}.* -$`, 'm'));
    const listed = json(await pgkeep(['list', '--repo', repo, '--json']));
    const custom = listed.find((b: any) => b.id === ids.custom);
    assert.equal(custom.verification.kind, 'restore-test');
    assert.equal(custom.verification.ok, true);
    assert.ok(custom.verification.restoreMs > 0);
    assert.equal(listed.find((b: any) => b.id === ids.plain).verification.kind, 'integrity');

    const show = await pgkeep(['show', ids.custom!, '--repo', repo]);
    assert.match(show.stdout, /^verified +restore ok \d+s ago \(.*restored in .*same-server/m);
    assert.match(show.stdout, /^migrations +public\.schema_migrations 20240301000000 \(3 rows\)/m);
    const shown = json(await pgkeep(['show', ids.custom!, '--repo', repo, '--json']));
    assert.equal(shown.verification.kind, 'restore-test');
    assert.equal(shown.id, ids.custom);
  });

  test('a tampered row count fails the restore test naming the table; the failure is recorded and listed; the scratch is dropped', async () => {
    const repo = await copyRepo();
    await editManifest(repo, 'custom', (m) => {
      m.tables.find((t: { name: string }) => t.name === 'customers').rows = 5;
    });
    const result = await pgkeep(['verify', ids.custom!, '--repo', repo, '--restore-test'], { env: env() });
    assert.equal(result.code, 7, result.stderr);
    assert.match(result.stderr, new RegExp(`^pgkeep: restore test of backup ${ids.custom} failed: restored table public\\.customers has 4 rows where the backup recorded 5$`, 'm'));
    assert.match(result.stdout, /public\.customers +5 +4 +DIFFERENT/);
    assert.deepEqual(await scratchDatabases(), []);
    const [record] = await records(repo, 'custom');
    assert.equal(record.ok, false);
    assert.match(record.problems[0], /public\.customers has 4 rows where the backup recorded 5/);
    const list = await pgkeep(['list', '--repo', repo]);
    assert.match(list.stdout, new RegExp(`${ids.custom}.*FAILED restore \\d+s ago`));
  });

  test('a migration table that differs from the recorded state fails the restore test', async () => {
    const repo = await copyRepo();
    await editManifest(repo, 'custom', (m) => {
      m.migrations[0].latest = '20240401000000';
    });
    const result = await pgkeep(['verify', ids.custom!, '--repo', repo, '--restore-test'], { env: env() });
    assert.equal(result.code, 7, result.stderr);
    assert.match(result.stderr, /migration table public\.schema_migrations is at version 20240301000000 \(3 rows\) where the backup recorded version 20240401000000 \(3 rows\)/);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('an integrity failure stops before any database is created', async () => {
    const repo = await copyRepo();
    await editManifest(repo, 'custom', (m) => {
      m.tables.push({ schema: 'public', name: 'ghost', rows: 1 });
    });
    const result = await pgkeep(['verify', ids.custom!, '--repo', repo, '--restore-test', '--json'], { env: env() });
    assert.equal(result.code, 7);
    assert.match(result.stderr, /holds no data for 1 table\(s\) the manifest lists: public\.ghost/);
    const report = json(result);
    assert.equal(report.ok, false, 'one JSON document: the report with the error');
    assert.equal(report.error.code, 'VERIFY_FAILED');
    assert.equal(report.restoreTest, undefined);
    assert.deepEqual(await scratchDatabases(), []);
    assert.equal((await records(repo, 'custom'))[0].ok, false);
  });

  test('a data-only backup cannot be restore-tested, and says so', async () => {
    const repo = path.join(work, 'data-only');
    const backup = await pgkeep(['backup', '--repo', repo, '--data-only', '--table', 'bulk_rows'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const result = await pgkeep(['verify', 'latest', '--repo', repo, '--restore-test'], { env: env() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /is data-only: it has no schema to restore into an empty scratch database, so it cannot be restore-tested; verify it without --restore-test/);
  });

  test('probes from the config: passing ones pass, a failing one fails the test naming it', async () => {
    const dir = path.join(work, 'probes');
    await mkdir(dir);
    const config = (probes: string[]) =>
      writeFile(path.join(dir, 'pgkeep.yaml'), [`repo: ${pristine}`, 'sources:', '  awkward:', `    db: ${cluster.url('awkward')}`, '    verify:', '      probes:', ...probes.map((p) => `        - ${p}`), ''].join('\n'));
    await config([
      '"SELECT count(*) FROM orders"',
      '{ sql: "SELECT count(*) FROM customers", expect: 4 }',
      '{ sql: "SELECT max(version) FROM schema_migrations", expect: "9" }',
    ]);
    const passing = await pgkeep(['verify', ids.custom!, '--restore-test'], { cwd: dir });
    assert.equal(passing.code, 0, passing.stderr);
    assert.match(passing.stdout, /^probe 1: ok +SELECT count\(\*\) FROM orders → 301$/m);
    assert.match(passing.stdout, /^probe 2: ok +SELECT count\(\*\) FROM customers → 4$/m);
    assert.match(passing.stdout, /^probe 3: ok +SELECT max\(version\) FROM schema_migrations → 9$/m);

    // Every probe runs; the first failure is the one named.
    await config([
      '"SELECT count(*) FROM orders"',
      '{ sql: "SELECT count(*) FROM customers WHERE false", expect: non-zero }',
      '"SELECT count(*) FROM no_such_table"',
      '"DELETE FROM customers RETURNING 1"',
      '"COMMIT; DELETE FROM customers"',
    ]);
    const failing = await pgkeep(['verify', ids.custom!, '--restore-test', '--json'], { cwd: dir });
    assert.equal(failing.code, 7, failing.stderr);
    assert.match(failing.stderr, /failed: probe 2 \(SELECT count\(\*\) FROM customers WHERE false\) returned "0" where the config expects a non-zero value$/m);
    const probes = json(failing).restoreTest.probes;
    assert.deepEqual(probes.map((p: any) => p.ok), [true, false, false, false, false]);
    assert.match(probes[2].error, /relation "no_such_table" does not exist/);
    assert.match(probes[3].error, /cannot execute DELETE in a read-only transaction/);
    assert.match(probes[4].error, /cannot insert multiple commands into a prepared statement/);
    assert.deepEqual(json(failing).problems.slice(1), [
      'probe 3 (SELECT count(*) FROM no_such_table) failed: relation "no_such_table" does not exist',
      'probe 4 (DELETE FROM customers RETURNING 1) failed: cannot execute DELETE in a read-only transaction',
      'probe 5 (COMMIT; DELETE FROM customers) failed: cannot insert multiple commands into a prepared statement',
    ]);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('--deep: content checksums match and pg_amcheck runs; a changed checksum is caught naming the table', async () => {
    const repo = await copyRepo();
    const ok = await pgkeep(['verify', ids.custom!, '--repo', repo, '--deep', '--json'], { env: env() });
    assert.equal(ok.code, 0, ok.stderr);
    const report = json(ok).restoreTest;
    assert.ok(report.tables.every((t: any) => t.contentOk === true), 'every table has the same content');
    assert.equal(report.deep.compared, report.tables.length);
    assert.equal(report.deep.amcheck.status, 'ran');
    assert.equal(report.deep.amcheck.ok, true);

    await editManifest(repo, 'custom', (m) => {
      const orders = m.tables.find((t: { name: string }) => t.name === 'orders');
      orders.checksum = `v1:${'0'.repeat(32)}`;
    });
    const changed = await pgkeep(['verify', ids.custom!, '--repo', repo, '--deep'], { env: env() });
    assert.equal(changed.code, 7, changed.stderr);
    assert.match(changed.stderr, /restored table public\.orders has the recorded row count but different content/);
    assert.match(changed.stdout, /public\.orders +301 +301 +DIFFERENT +DIFFERENT/);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('--deep catches a row changed after the checksum was taken (the same count, different content)', async () => {
    // The checksum of a backup taken now, checked against a restore of a database with one value changed.
    await cluster.query('CREATE DATABASE deep_src');
    await cluster.query('CREATE TABLE t (id int PRIMARY KEY, v text)', [], 'deep_src');
    await cluster.query("INSERT INTO t SELECT g, 'v' || g FROM generate_series(1, 1000) g", [], 'deep_src');
    const repo = path.join(work, 'deep-repo');
    const first = json(await pgkeep(['backup', '--repo', repo, '--checksums', '--json'], { env: env('deep_src') }));
    await cluster.query("UPDATE t SET v = 'changed' WHERE id = 500", [], 'deep_src');
    const second = json(await pgkeep(['backup', '--repo', repo, '--checksums', '--json'], { env: env('deep_src') }));
    assert.equal(first.tables[0].rows, second.tables[0].rows);
    assert.notEqual(first.tables[0].checksum, second.tables[0].checksum, 'one changed value changes the checksum');
    // The second backup's dump under the first backup's manifest: same count, other content.
    const manifestFile = path.join(repo, 'sources', 'deep_src', 'backups', second.id, 'manifest.json');
    await rewriteManifest(manifestFile, (manifest) => {
      manifest.tables[0].checksum = first.tables[0].checksum;
    });
    const result = await pgkeep(['verify', second.id, '--repo', repo, '--deep'], { env: env('deep_src') });
    assert.equal(result.code, 7, result.stderr);
    assert.match(result.stderr, /restored table public\.t has the recorded row count but different content/);
  });

  test('--deep: a table whose column order pg_dump cannot keep (a column added to an inheritance parent) still compares equal', async () => {
    await cluster.query('CREATE DATABASE inherit_src');
    for (const statement of [
      'CREATE TABLE parent (a int)',
      'CREATE TABLE child (b text) INHERITS (parent)',
      'ALTER TABLE parent ADD COLUMN c date',
      "INSERT INTO child VALUES (1, 'one', '2024-01-01'), (2, 'two', NULL)",
    ]) {
      await cluster.query(statement, [], 'inherit_src');
    }
    const repo = path.join(work, 'inherit-repo');
    const backup = await pgkeep(['backup', '--repo', repo, '--checksums'], { env: env('inherit_src') });
    assert.equal(backup.code, 0, backup.stderr);
    const result = await pgkeep(['verify', 'latest', '--repo', repo, '--deep', '--json'], { env: env('inherit_src') });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(json(result).restoreTest.tables.map((t: any) => [t.name, t.actual, t.contentOk]), [['child', 2, true], ['parent', 0, true]]);
  });

  test('--deep on a backup without --checksums compares counts only and says so', async () => {
    const repo = path.join(work, 'no-checksums');
    const backup = await pgkeep(['backup', '--repo', repo, '--table', 'bulk_rows', '--json'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    assert.equal(json(backup).tables[0].checksum, undefined);
    const result = await pgkeep(['verify', 'latest', '--repo', repo, '--deep', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    assert.match(json(result).restoreTest.notes.join('\n'), /content of 1 table\(s\) not compared: the backup has no checksums/);
  });

  test('--scratch local: a throwaway local cluster, removed afterwards; the source server is not touched', async () => {
    // As root the scratch server runs as postgres, which must reach its temp folder.
    const temp = await scratchTemp('local-temp');
    const result = await pgkeep(['verify', ids.custom!, '--repo', pristine, '--scratch', 'local', '--deep', '--json'], { env: { PGKEEP_TEMP_DIR: temp } });
    assert.equal(result.code, 0, result.stderr);
    const report = json(result).restoreTest;
    assert.equal(report.scratch.kind, 'local');
    assert.match(report.scratch.server, /local scratch cluster \(PostgreSQL \d+\)/);
    assert.ok(report.tables.every((t: any) => t.actual === t.expected && t.contentOk === true));
    assert.deepEqual(report.schema.missing, []);
    assert.deepEqual(await readdir(temp), [], 'the scratch cluster folder is removed');
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('a role that may not create databases: the default scratch is a local cluster (plain format, owners kept)', async () => {
    await cluster.query("CREATE ROLE limited LOGIN PASSWORD 'limited-pw'");
    await cluster.query('CREATE DATABASE limited_db OWNER limited');
    await cluster.query('CREATE TABLE notes AS SELECT g AS id, repeat(chr(65 + g % 26), 3) AS body FROM generate_series(1, 77) g', [], 'limited_db');
    await cluster.query('ALTER TABLE notes OWNER TO limited', [], 'limited_db');
    const limitedEnv = { DATABASE_URL: cluster.url('limited_db', 'limited', 'limited-pw'), PGKEEP_TEMP_DIR: await scratchTemp('limited-temp') };
    const repo = path.join(work, 'limited-repo');
    const backup = await pgkeep(['backup', '--repo', repo, '--format', 'plain'], { env: limitedEnv });
    assert.equal(backup.code, 0, backup.stderr);
    const explained = await pgkeep(['verify', 'latest', '--repo', repo, '--restore-test'], { env: limitedEnv });
    assert.equal(explained.code, 0, explained.stderr);
    assert.match(explained.stdout, /restored into "pgkeep_verify_\w+" on a local scratch cluster \(PostgreSQL \d+\)/);
    assert.match(explained.stdout, /public\.notes +77 +77 +ok/);
    assert.match(explained.stderr, /role "limited" may not create databases on 127\.0\.0\.1:\d+: restore-testing on a local scratch cluster/);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('--scratch URL: a dedicated server; owners and privileges are left out there', async () => {
    const result = await pgkeep(['verify', ids.directory!, '--repo', pristine, '--scratch', cluster.url('postgres'), '--json']);
    assert.equal(result.code, 0, result.stderr);
    const report = json(result).restoreTest;
    assert.equal(report.scratch.kind, 'url');
    assert.ok(!report.scratch.server.includes(cluster.password), 'the password is not shown');
    assert.ok(!result.stdout.includes(cluster.password) && !result.stderr.includes(cluster.password));
    assert.deepEqual(await scratchDatabases(), []);

    const bad = await pgkeep(['verify', ids.directory!, '--repo', pristine, '--scratch', 'elsewhere']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--scratch "elsewhere" is not understood: use same-server, local, or a postgresql:\/\/ URL/);
  });
});

describe('migration tables and encrypted repositories', () => {
  test('each known migration table is recorded with its newest version; an unknown layout keeps its row count; excluded tables are not recorded', async () => {
    await cluster.query('CREATE DATABASE migrations');
    const sql = [
      'CREATE TABLE flyway_schema_history (installed_rank int PRIMARY KEY, version text, description text, success bool)',
      "INSERT INTO flyway_schema_history VALUES (1, '1', 'init', true), (2, '1.1', 'add', true), (3, NULL, 'repeatable', true), (4, '2', 'broken', false)",
      'CREATE TABLE knex_migrations (id serial PRIMARY KEY, name text, batch int)',
      "INSERT INTO knex_migrations (name, batch) VALUES ('20240101_init.js', 1), ('20240202_users.js', 2)",
      'CREATE TABLE _prisma_migrations (id text PRIMARY KEY, migration_name text, finished_at timestamptz, rolled_back_at timestamptz)',
      "INSERT INTO _prisma_migrations VALUES ('a', '20240101000000_init', now(), NULL), ('b', '20240301000000_more', now(), NULL), ('c', '20240401000000_failed', NULL, NULL)",
      'CREATE TABLE "__EFMigrationsHistory" ("MigrationId" text PRIMARY KEY, "ProductVersion" text)',
      `INSERT INTO "__EFMigrationsHistory" VALUES ('20240101_Init', '8.0'), ('20240505_Orders', '8.0')`,
      'CREATE TABLE alembic_version (version_num text PRIMARY KEY)',
      "INSERT INTO alembic_version VALUES ('beef01'), ('ab12cd')",
      'CREATE SCHEMA app',
      'CREATE TABLE app.schema_migrations (id int, applied text)',
      'INSERT INTO app.schema_migrations VALUES (1, 1), (2, 2)',
      'CREATE TABLE public.schema_migrations (version bigint PRIMARY KEY, dirty bool)',
      'INSERT INTO public.schema_migrations VALUES (9, false), (10, false)',
    ];
    for (const statement of sql) await cluster.query(statement, [], 'migrations');
    const repo = path.join(work, 'migrations-repo');
    const backup = await pgkeep(['backup', '--repo', repo, '--exclude-table', 'alembic_version', '--json'], { env: env('migrations') });
    assert.equal(backup.code, 0, backup.stderr);
    const recorded = Object.fromEntries(json(backup).migrations.map((m: any) => [`${m.schema}.${m.name}`, [m.rows, m.latest]]));
    assert.deepEqual(recorded, {
      'public.flyway_schema_history': [4, '1.1'],
      'public.knex_migrations': [2, '20240202_users.js'],
      'public._prisma_migrations': [3, '20240301000000_more'],
      'public.__EFMigrationsHistory': [2, '20240505_Orders'],
      'app.schema_migrations': [2, null],
      'public.schema_migrations': [2, '10'],
    });
    const all = await pgkeep(['backup', '--repo', repo, '--table', 'alembic_version', '--json'], { env: env('migrations') });
    assert.deepEqual(json(all).migrations, [{ schema: 'public', name: 'alembic_version', rows: 2, latest: 'ab12cd,beef01' }]);

    const tested = await pgkeep(['verify', json(backup).id, '--repo', repo, '--restore-test', '--json'], { env: env('migrations') });
    assert.equal(tested.code, 0, tested.stderr);
    assert.equal(json(tested).restoreTest.migrations.tables.length, 6);
    assert.ok(json(tested).restoreTest.migrations.tables.every((m: any) => m.ok));
  });

  test('a passphrase-encrypted repository: the restore test decrypts with the passphrase', async () => {
    const repo = path.join(work, 'encrypted');
    const secret = { PGKEEP_PASSPHRASE: 'correct horse battery staple' };
    // init's wrapping at the default scrypt work factor is not what this test is about (test/support/passphrase-repo.ts)
    await initPassphraseRepo(repo, secret.PGKEEP_PASSPHRASE);
    // the passphrase to write too: a deduplicating repository's chunk ids are keyed (a plain one would need none)
    const backup = await pgkeep(['backup', '--repo', repo, '--table', 'bulk_rows', '--checksums'], { env: { ...env(), ...secret } });
    assert.equal(backup.code, 0, backup.stderr);
    const noKey = await pgkeep(['verify', 'latest', '--repo', repo, '--restore-test'], { env: env() });
    assert.notEqual(noKey.code, 0);
    assert.deepEqual(await scratchDatabases(), []);
    const result = await pgkeep(['verify', 'latest', '--repo', repo, '--deep', '--json'], { env: { ...env(), ...secret } });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(json(result).restoreTest.tables.map((t: any) => [t.name, t.actual, t.contentOk]), [['bulk_rows', 2500, true]]);
  });
});

describe('an interrupted restore test leaves no scratch database', () => {
  let bigId: string;
  let bigRepo: string;
  /**
   * One connection for the waits below, which ask every 10 ms: cluster.query
   * connects (a backend and a SCRAM exchange) per call.
   */
  let poller: pg.Client | undefined;
  after(async () => {
    await poller?.end();
  });
  async function poll(sql: string): Promise<unknown[]> {
    if (!poller) {
      poller = new pg.Client({ connectionString: cluster.url('postgres') });
      await poller.connect();
    }
    return (await poller.query(sql)).rows;
  }
  /** The processes whose parent is `pid` (from /proc/PID/task/*\/children: no scan of every process). */
  function childrenOf(pid: number): { pid: number; command: string }[] {
    const found: { pid: number; command: string }[] = [];
    try {
      for (const task of readdirSync(`/proc/${pid}/task`)) {
        for (const child of readFileSync(`/proc/${pid}/task/${task}/children`, 'utf8').split(' ').filter(Boolean)) {
          try {
            found.push({ pid: Number(child), command: readFileSync(`/proc/${child}/cmdline`, 'utf8').replace(/\0/g, ' ') });
          } catch {
            // ended while we looked
          }
        }
      }
    } catch {
      // the parent ended
    }
    return found;
  }

  /**
   * A backup whose restore lasts long enough to be caught mid-COPY by a 10 ms look (the waits below) and killed
   * before the test ends. 200,000 rows (about 14 MB to COPY) are that many times over; 600,000 cost about 3 s of
   * CPU more to make, back up and partly restore, and prove nothing more.
   */
  async function bigBackup(): Promise<void> {
    if (bigId) return;
    await cluster.query('CREATE DATABASE big');
    await cluster.query("CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 3)::text) AS payload FROM generate_series(1, 200000) g", [], 'big');
    bigRepo = path.join(work, 'big-repo');
    const backup = await pgkeep(['backup', '--repo', bigRepo, '--json'], { env: env('big') });
    assert.equal(backup.code, 0, backup.stderr);
    bigId = json(backup).id;
  }

  async function waitFor(what: string, check: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
    const deadline = Date.now() + timeoutMs;
    while (!(await check())) {
      if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
      await sleep(10);
    }
  }

  for (const signal of ['SIGTERM', 'SIGINT'] as const) {
    test(`${signal} while pg_restore loads the scratch database: it is dropped, exit ${signal === 'SIGINT' ? 130 : 143}`, async () => {
      await bigBackup();
      const child = startPgkeep(['verify', bigId, '--repo', bigRepo, '--restore-test'], { env: env('big') });
      const done = collect(child);
      let exited = false;
      void done.then(() => (exited = true));
      await waitFor('pg_restore to copy into the scratch database', async () => {
        // a verify that ended before its COPY was seen would otherwise be waited for until the deadline
        if (exited) throw new Error(`pgkeep verify ended before pg_restore was seen copying: ${JSON.stringify(await done)}`);
        const rows = await poll("SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'pgkeep\\_verify\\_%' AND query LIKE 'COPY%'");
        return rows.length > 0;
      }).catch((error: Error) => {
        child.kill('SIGKILL');
        throw error;
      });
      assert.equal((await scratchDatabases()).length, 1);
      child.kill(signal);
      const result = await done;
      assert.equal(result.code, signal === 'SIGINT' ? 130 : 143, result.stderr);
      assert.match(result.stderr, new RegExp(`interrupted by ${signal}`));
      assert.deepEqual(await scratchDatabases(), []);
      assert.ok(!existsSync(path.join(bigRepo, 'sources', 'big', 'verifications')), 'an interrupted verification stores no record');
    });
  }

  test('SIGTERM during a slow probe: the scratch database is dropped', async () => {
    const dir = path.join(work, 'slow-probe');
    await mkdir(dir);
    await writeFile(path.join(dir, 'pgkeep.yaml'), [`repo: ${pristine}`, 'sources:', '  awkward:', `    db: ${cluster.url('awkward')}`, '    verify:', '      probes: ["SELECT pg_sleep(60)::text || 1"]', ''].join('\n'));
    const child = startPgkeep(['verify', ids.custom!, '--restore-test'], { cwd: dir });
    const done = collect(child);
    await waitFor('the probe to run', async () => (await poll("SELECT 1 FROM pg_stat_activity WHERE query LIKE 'SELECT pg_sleep(60)%' AND datname LIKE 'pgkeep\\_verify\\_%'")).length > 0);
    child.kill('SIGTERM');
    const result = await done;
    assert.equal(result.code, 143, result.stderr);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('SIGTERM while restoring into a local scratch cluster: the cluster is stopped and its folder removed', async () => {
    await bigBackup();
    const temp = await scratchTemp('local-kill');
    const child = startPgkeep(['verify', bigId, '--repo', bigRepo, '--scratch', 'local'], { env: { PGKEEP_TEMP_DIR: temp } });
    const done = collect(child);
    await waitFor('pg_restore to run', async () => childrenOf(child.pid!).some((p) => p.command.includes('pg_restore --dbname')), 60_000).catch((error: Error) => {
      child.kill('SIGKILL');
      throw error;
    });
    const server = processes().find((p) => p.ppid === child.pid && p.command.includes(temp));
    assert.ok(server, `the scratch server runs as a child of pgkeep, in the temp folder: ${JSON.stringify(processes().filter((p) => p.ppid === child.pid))}`);
    child.kill('SIGTERM');
    const result = await done;
    assert.equal(result.code, 143, result.stderr);
    assert.deepEqual(await readdir(temp), [], 'the scratch cluster folder is removed');
    assert.deepEqual(processes().filter((p) => p.command.includes(temp)), [], 'no process of the scratch cluster is left');
  });

  test('a scratch database left by a killed (SIGKILL) test is dropped by the next one', async () => {
    // The awkward fixture's backup, not the big one: the kill comes once the scratch database exists (before
    // its restore ends, which for this backup takes far longer than a 10 ms look), and the next restore test
    // of the same backup then restores it in full, which for the big one costs seconds of CPU and says nothing more.
    const repo = await copyRepo();
    const child = startPgkeep(['verify', ids.custom!, '--repo', repo, '--restore-test'], { env: env() });
    const done = collect(child);
    await waitFor('the scratch database', async () => (await poll("SELECT 1 FROM pg_database WHERE datname LIKE 'pgkeep\\_verify\\_%'")).length > 0);
    child.kill('SIGKILL');
    await done;
    // Its pg_restore may still be finishing: wait until the leftover is idle.
    await waitFor('the killed test\'s sessions to end', async () => (await poll("SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'pgkeep\\_verify\\_%'")).length === 0, 60_000);
    assert.equal((await scratchDatabases()).length, 1, 'SIGKILL leaves the scratch database');
    const next = await pgkeep(['verify', ids.custom!, '--repo', repo, '--restore-test'], { env: env() });
    assert.equal(next.code, 0, next.stderr);
    assert.match(next.stderr, /dropping "pgkeep_verify_.*", left by an interrupted restore test/);
    assert.deepEqual(await scratchDatabases(), []);
  });
});
