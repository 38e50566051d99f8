import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { stat, readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { json } from '../support/cli.js';
import { eachStorage } from '../support/each-storage.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase, type DatabaseSnapshot } from '../support/db-compare.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/awkward.sql');

let cluster: PgCluster;
let work: string;

function loadFixture(database: string): void {
  const result = spawnSync(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', database, '-f', FIXTURE], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, `loading the fixture failed: ${result.stderr}`);
}

useClusterAndWorkFolder('roundtrip', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE awkward');
  loadFixture('awkward');
});

const env = () => ({ DATABASE_URL: cluster.url('awkward') });

/** The source's snapshot, taken once: no test of this file changes awkward, and eight restores are compared with it. */
let awkwardSnapshot: Promise<DatabaseSnapshot> | undefined;
const sourceSnapshot = () => (awkwardSnapshot ??= snapshotDatabase(cluster, 'awkward'));

/** The folder repository of the directory-format roundtrip (posix block), once made: the modes test walks it. */
let posixDirectoryRepo: Promise<string> | undefined;

// Every command runs in process (test/support/run-command.ts) over a folder and over S3;
// test/integration/terminal.test.ts and errors.test.ts keep the real CLI's output and exit codes.
eachStorage('backup and restore roundtrip of awkward content', (storage) => {
  /**
   * One backup per format, checked (format, tables counted, verify) once: both custom restores (streamed and
   * --jobs 2) read the same backup, as the restore, not the backup, is what differs between them.
   */
  const backups = new Map<string, Promise<string>>();
  const backupOf = (format: 'custom' | 'directory' | 'plain') => {
    let made = backups.get(format);
    if (!made) {
      made = (async () => {
        const repo = storage.repo(`repo-${format}`);
        const backupArgs = format === 'directory' ? ['--format', format, '--jobs', '2'] : ['--format', format];
        const backup = await pgkeep(['backup', '--repo', repo, ...backupArgs, '--json'], { env: env() });
        assert.equal(backup.code, 0, backup.stderr);
        const manifest = json(backup);
        assert.equal(manifest.options.format, format);
        assert.ok(manifest.tables.length >= 10, `expected the fixture's tables to be counted, got ${manifest.tables.length}`);
        const mixed = manifest.tables.find((t: { name: string }) => t.name === 'Mixed Case');
        assert.ok(mixed, 'the quoted table "Mixed Case" is counted');

        const verify = await pgkeep(['verify', 'latest', '--repo', repo, '--json'], { env: env() });
        assert.equal(verify.code, 0, verify.stderr);
        assert.equal(json(verify).tables.found, json(verify).tables.expected);
        return repo;
      })();
      backups.set(format, made);
      if (storage.kind === 'posix' && format === 'directory') posixDirectoryRepo = made;
    }
    return made;
  };

  for (const [format, restoreArgs] of [
    ['custom', []],
    ['custom', ['--jobs', '2']],
    ['directory', ['--jobs', '2']],
    ['plain', []],
  ] as const) {
    test(`${format} format, restore ${restoreArgs.join(' ') || 'streamed'}: schema and contents identical`, async () => {
      const repo = await backupOf(format);

      const target = `copy_${storage.kind}_${format}_${restoreArgs.length}`;
      const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', target, ...restoreArgs, '--json'], { env: env() });
      assert.equal(restore.code, 0, restore.stderr);
      const result = json(restore);
      assert.equal(result.database, target);
      assert.ok(result.tables.every((t: { expected: number; actual: number }) => t.expected === t.actual));
      assert.ok(!result.connection.includes(cluster.password), 'the connection string printed has no password');

      const differences = diffSnapshots(await sourceSnapshot(), await snapshotDatabase(cluster, target));
      assert.deepEqual(differences, []);
    });
  }

});

describe('posix repository files', () => {
  // The directory-format repository of the roundtrip above (made here when that block did not run): a backup
  // of many objects, and what the verify and restores of it wrote (locks, records) are walked too.
  test('the repository is private: folders 0700, files 0600', async () => {
    const repo = await (posixDirectoryRepo ??= (async () => {
      const made = path.join(work, 'repo-modes');
      const backup = await pgkeep(['backup', '--repo', made, '--format', 'directory'], { env: env() });
      assert.equal(backup.code, 0, backup.stderr);
      return made;
    })());
    const walk = async (dir: string): Promise<void> => {
      assert.equal((await stat(dir)).mode & 0o777, 0o700, `folder ${dir}`);
      for (const entry of await readdir(dir, { withFileTypes: true })) {
        const full = path.join(dir, entry.name);
        if (entry.isDirectory()) await walk(full);
        else assert.equal((await stat(full)).mode & 0o777, 0o600, `file ${full}`);
      }
    };
    await walk(repo);
  });
});

eachStorage('selective backups', (storage) => {
  const repo = () => storage.repo('repo-selective');

  test('--table with quoted and unicode names dumps and counts only those tables', async () => {
    const backup = await pgkeep(['backup', '--repo', repo(), '--table', 'public."Mixed Case"', '--table', '"ünïcødé"."таблица"', '--json'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const names = json(backup).tables.map((t: { schema: string; name: string }) => `${t.schema}.${t.name}`).sort();
    assert.deepEqual(names, ['public.Mixed Case', 'ünïcødé.таблица']);
    const restore = await pgkeep(['restore', 'latest', '--repo', repo(), '--to', `only_two_${storage.kind}`, '--json'], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
    const tables = await cluster.query<{ n: string }>("SELECT count(*) AS n FROM pg_tables WHERE schemaname NOT IN ('pg_catalog','information_schema')", [], `only_two_${storage.kind}`);
    assert.equal(Number(tables[0]!.n), 2);
  });

  test('--exclude-table leaves a table out of dump and counts', async () => {
    const backup = await pgkeep(['backup', '--repo', repo(), '--exclude-table', 'public."Mixed Case"', '--json'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const names = json(backup).tables.map((t: { name: string }) => t.name);
    assert.ok(!names.includes('Mixed Case'));
    assert.ok(names.length > 5);
    assert.equal((await pgkeep(['verify', 'latest', '--repo', repo()], { env: env() })).code, 0);
  });

  test('--schema-only records no row counts and restores empty tables', async () => {
    const backup = await pgkeep(['backup', '--repo', repo(), '--schema-only', '--json'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const tables = json(backup).tables as { rows: number | null }[];
    assert.ok(tables.length > 5);
    assert.ok(tables.every((t) => t.rows === null), 'a schema-only backup counts no rows');
    const restore = await pgkeep(['restore', 'latest', '--repo', repo(), '--to', `schema_copy_${storage.kind}`], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
    const [row] = await cluster.query<{ n: string }>('SELECT count(*) AS n FROM public."Mixed Case"', [], `schema_copy_${storage.kind}`);
    assert.equal(Number(row!.n), 0);
  });

  test('--data-only dumps rows that restore into an existing schema', async () => {
    const backup = await pgkeep(['backup', '--repo', repo(), '--data-only', '--table', 'public."Mixed Case"', '--json'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const manifest = json(backup);
    assert.equal(manifest.options.dataOnly, true);
    assert.ok(manifest.tables[0].rows > 0);
    assert.equal((await pgkeep(['verify', 'latest', '--repo', repo()], { env: env() })).code, 0);
  });
});
