import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { cp, mkdir, mkdtemp, open, readdir, readFile, truncate, writeFile, unlink } from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { json } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { rewriteManifest } from '../support/manifest-edit.js';

let cluster: PgCluster;
let work: string;
/** A repository with one good backup of each format; tests corrupt copies of it. */
let pristine: string;
const ids: Record<string, string> = {};

const env = () => ({ DATABASE_URL: cluster.url('app') });

useClusterAndWorkFolder('verify', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query('CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 50000) g', [], 'app');
  await cluster.query('CREATE TABLE customers (id int PRIMARY KEY, name text)', [], 'app');
  await cluster.query("INSERT INTO customers SELECT g, 'c' || g FROM generate_series(1, 300) g", [], 'app');
  pristine = path.join(work, 'pristine');
  // plain: the tests damage one stored object of a backup (a deduplicating repository's damaged packs: dedup.test.ts)
  assert.equal((await pgkeep(['init', '--repo', pristine, '--plain'])).code, 0);
  for (const format of ['custom', 'directory', 'plain']) {
    const result = await pgkeep(['backup', '--repo', pristine, '--format', format, '--name', format, '--json'], { env: env() });
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

const backupDir = (repo: string, format: string) => path.join(repo, 'sources', 'app', 'backups', ids[format]!);

async function flipByte(file: string, offset: number): Promise<void> {
  const handle = await open(file, 'r+');
  try {
    const buffer = Buffer.alloc(1);
    await handle.read(buffer, 0, 1, offset);
    buffer[0] = buffer[0]! ^ 0xff;
    await handle.write(buffer, 0, 1, offset);
  } finally {
    await handle.close();
  }
}

async function databases(): Promise<string[]> {
  return (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY 1')).map((r) => r.datname);
}

describe('verify', () => {
  for (const format of ['custom', 'directory', 'plain']) {
    test(`${format}: an intact backup verifies, with every table found in its contents`, async () => {
      const result = await pgkeep(['verify', ids[format]!, '--repo', pristine, '--json']);
      assert.equal(result.code, 0, result.stderr);
      const report = json(result);
      assert.equal(report.ok, true);
      assert.deepEqual(report.tables, { expected: 2, found: 2, missing: [] });
    });
  }

  test('one flipped byte fails verification, naming the object', async () => {
    const repo = await copyRepo();
    await flipByte(path.join(backupDir(repo, 'custom'), 'dump.zst'), 5000);
    const result = await pgkeep(['verify', ids.custom!, '--repo', repo]);
    assert.equal(result.code, 7);
    assert.match(result.stderr, /^pgkeep: backup .* failed verification: object dump\.zst is corrupt/m);
    assert.match(result.stdout, /FAILED {2}dump\.zst/);
  });

  test('a truncated object fails verification', async () => {
    const repo = await copyRepo();
    const file = path.join(backupDir(repo, 'plain'), 'dump.sql.zst');
    await truncate(file, 1000);
    const result = await pgkeep(['verify', ids.plain!, '--repo', repo]);
    assert.equal(result.code, 7);
    assert.match(result.stderr, /object dump\.sql\.zst \(stored bytes\) is corrupt: 1000 bytes where the manifest records \d+/);
  });

  test('a missing object of a directory dump fails verification, naming it', async () => {
    const repo = await copyRepo();
    const manifest = JSON.parse(await readFile(path.join(backupDir(repo, 'directory'), 'manifest.json'), 'utf8'));
    const victim = manifest.objects.find((o: { file: string }) => o.file !== 'toc.dat').name as string;
    await unlink(path.join(backupDir(repo, 'directory'), victim));
    const result = await pgkeep(['verify', ids.directory!, '--repo', repo]);
    assert.equal(result.code, 7);
    assert.match(result.stderr, new RegExp(`object ${victim.replace(/\./g, '\\.')} is missing`));
  });

  test('a manifest listing a table the dump does not hold fails verification', async () => {
    const repo = await copyRepo();
    const file = path.join(backupDir(repo, 'custom'), 'manifest.json');
    await rewriteManifest(file, (manifest) => manifest.tables.push({ schema: 'public', name: 'ghost', rows: 1 }));
    const result = await pgkeep(['verify', ids.custom!, '--repo', repo]);
    assert.equal(result.code, 7);
    assert.match(result.stderr, /holds no data for 1 table\(s\) the manifest lists: public\.ghost/);
  });
});

describe('restore leaves nothing half-restored', () => {
  test('a corrupt backup: the restore fails and its new database is dropped', async () => {
    const repo = await copyRepo();
    await flipByte(path.join(backupDir(repo, 'custom'), 'dump.zst'), 3000);
    const before = await databases();
    const result = await pgkeep(['restore', ids.custom!, '--repo', repo, '--to', 'from_corrupt'], { env: env() });
    assert.equal(result.code, 7, result.stderr);
    assert.match(result.stderr, /corrupt/);
    assert.deepEqual(await databases(), before);
  });

  test('row counts that differ from the manifest fail the restore, and it is dropped', async () => {
    const repo = await copyRepo();
    const file = path.join(backupDir(repo, 'custom'), 'manifest.json');
    await rewriteManifest(file, (manifest) => {
      manifest.tables.find((t: { name: string }) => t.name === 'customers').rows = 301;
    });
    const before = await databases();
    const result = await pgkeep(['restore', ids.custom!, '--repo', repo, '--to', 'miscounted'], { env: env() });
    assert.equal(result.code, 7, result.stderr);
    assert.match(result.stderr, /restored table public\.customers has 300 rows where the backup recorded 301/);
    assert.deepEqual(await databases(), before);
  });

  test('--jobs 2 with a corrupt backup also leaves nothing', async () => {
    const repo = await copyRepo();
    await flipByte(path.join(backupDir(repo, 'custom'), 'dump.zst'), 3000);
    const before = await databases();
    const result = await pgkeep(['restore', ids.custom!, '--repo', repo, '--to', 'from_corrupt_jobs', '--jobs', '2'], { env: env() });
    assert.equal(result.code, 7, result.stderr);
    assert.deepEqual(await databases(), before);
  });
});

describe('restore over an existing database', () => {
  test('refused without --overwrite, and without confirmation when there is no terminal', async () => {
    await cluster.query('CREATE DATABASE keepme');
    await cluster.query('CREATE TABLE precious (v text)', [], 'keepme');
    await cluster.query("INSERT INTO precious VALUES ('still here')", [], 'keepme');
    const refused = await pgkeep(['restore', ids.custom!, '--repo', pristine, '--to', 'keepme'], { env: env() });
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /database "keepme" already exists .* add --overwrite/);
    const unconfirmed = await pgkeep(['restore', ids.custom!, '--repo', pristine, '--to', 'keepme', '--overwrite'], { env: env() });
    assert.equal(unconfirmed.code, 8);
    assert.match(unconfirmed.stderr, /not replacing database "keepme": confirm by typing its name, or pass --force/);
    const [row] = await cluster.query<{ v: string }>('SELECT v FROM precious', [], 'keepme');
    assert.equal(row!.v, 'still here');
  });

  test('--overwrite --force takes a safety backup, replaces the database, and the safety backup restores the old one', async () => {
    const repo = await copyRepo();
    await cluster.query('CREATE DATABASE replaced');
    await cluster.query('CREATE TABLE old_stuff AS SELECT g FROM generate_series(1, 123) g', [], 'replaced');
    const before = await databases();
    const result = await pgkeep(['restore', ids.custom!, '--repo', repo, '--to', 'replaced', '--overwrite', '--force', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const restored = json(result);
    assert.equal(restored.replaced, true);
    assert.match(restored.safetyBackup, /^replaced\/\d{8}T\d{6}Z-pre-restore$/);
    const tables = await cluster.query<{ tablename: string }>("SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1", [], 'replaced');
    assert.deepEqual(tables.map((t) => t.tablename), ['customers', 'orders']);
    assert.deepEqual(await databases(), before, 'no temporary or old databases are left');

    const list = json(await pgkeep(['list', '--repo', repo, '--json']));
    const safety = list.find((b: { labels: string[] }) => b.labels.includes('pre-restore'));
    assert.ok(safety, 'the safety backup is listed');
    const back = await pgkeep(['restore', safety.id, '--repo', repo, '--source', 'replaced', '--to', 'old_again'], { env: env() });
    assert.equal(back.code, 0, back.stderr);
    const [count] = await cluster.query<{ n: string }>('SELECT count(*) AS n FROM old_stuff', [], 'old_again');
    assert.equal(Number(count!.n), 123);
  });
});

describe('restore --overwrite takes the lock of the source it replaces', () => {
  test('while another pgkeep holds it, the overwrite is refused with LOCK_HELD naming the holder, and nothing changes', async () => {
    const repo = await copyRepo();
    await cluster.query('CREATE DATABASE busy');
    await cluster.query("CREATE TABLE keep AS SELECT 'untouched' AS v", [], 'busy');
    // a live process on this host holds the lock of source "busy" (as a running backup of it would)
    const holder = spawn(process.execPath, ['-e', 'setTimeout(() => {}, 60000)'], { stdio: 'ignore' });
    try {
      const lockDir = path.join(repo, 'sources', 'busy', 'locks');
      await mkdir(lockDir, { recursive: true });
      await writeFile(path.join(lockDir, 'source.lock'), JSON.stringify({ pid: holder.pid, host: hostname(), command: 'backup', started: new Date().toISOString() }));
      const before = await databases();
      const result = await pgkeep(['restore', ids.custom!, '--repo', repo, '--to', 'busy', '--overwrite', '--force'], { env: env() });
      assert.equal(result.code, 5, result.stderr);
      assert.match(result.stderr, new RegExp(`^pgkeep: source busy is locked by "pgkeep backup" \\(pid ${holder.pid} on `, 'm'));
      assert.deepEqual(await databases(), before, 'no database created or dropped');
      const [row] = await cluster.query<{ v: string }>('SELECT v FROM keep', [], 'busy');
      assert.equal(row!.v, 'untouched');
      assert.ok(!existsSync(path.join(repo, 'sources', 'busy', 'backups')) || (await readdir(path.join(repo, 'sources', 'busy', 'backups'))).length === 0, 'no safety backup was started');
    } finally {
      holder.kill();
    }
    // once the holder is gone, its lock is stale and the overwrite goes through, releasing the lock after
    const result = await pgkeep(['restore', ids.custom!, '--repo', repo, '--to', 'busy', '--overwrite', '--force', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(json(result).replaced, true);
    assert.ok(!existsSync(path.join(repo, 'sources', 'busy', 'locks', 'source.lock')), 'the lock was released');
  });
});

describe('configuration file', () => {
  test('a pgkeep.yaml with two sources, env interpolation and a .env file', async () => {
    const dir = await mkdtemp(path.join(work, 'cfg-'));
    await cluster.query('CREATE DATABASE other');
    await cluster.query('CREATE TABLE t AS SELECT 1 AS x', [], 'other');
    await writeFile(
      path.join(dir, 'pgkeep.yaml'),
      [
        'repo: ./repo',
        'sources:',
        '  main:',
        `    db: postgresql://${cluster.superuser}@127.0.0.1:${cluster.port}/app`,
        '    password: ${APP_PASSWORD}',
        '  second:',
        '    host: 127.0.0.1',
        '    port: ${OTHER_PORT}',
        `    user: ${cluster.superuser}`,
        '    database: other',
        '    backup:',
        '      labels: [nightly]',
        '',
      ].join('\n'),
    );
    await writeFile(path.join(dir, '.env'), `APP_PASSWORD=${cluster.password}\nOTHER_PORT=${cluster.port}\nPGPASSWORD=${cluster.password}\n`);
    const ambiguous = await pgkeep(['backup'], { cwd: dir });
    assert.equal(ambiguous.code, 2);
    assert.match(ambiguous.stderr, /several sources: choose one with --source \(main, second\)/);
    for (const source of ['main', 'second']) {
      const result = await pgkeep(['backup', '--source', source], { cwd: dir });
      assert.equal(result.code, 0, result.stderr);
    }
    const list = json(await pgkeep(['list', '--json'], { cwd: dir }));
    assert.deepEqual(list.map((b: { source: string }) => b.source).sort(), ['main', 'second']);
    assert.deepEqual(list.find((b: { source: string }) => b.source === 'second').labels, ['nightly']);
    assert.equal(list.find((b: { source: string }) => b.source === 'main').database, 'app');
  });

  test('POSTGRES_* variables as docker images and scripts set them', async () => {
    const repo = path.join(work, 'repo-postgres-env');
    const result = await pgkeep(['backup', '--repo', repo, '--json'], {
      env: { POSTGRES_HOST: '127.0.0.1', POSTGRES_PORT: String(cluster.port), POSTGRES_USER: cluster.superuser, POSTGRES_PASSWORD: cluster.password, POSTGRES_DB: 'app' },
    });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(json(result).source, 'app');
    assert.equal(json(result).tables.length, 2);
  });
});

describe('restore reports the application migration version', () => {
  test('the restored schema_migrations is named with its version, as recorded at backup time', async () => {
    await cluster.query('CREATE DATABASE railsapp');
    await cluster.query('CREATE TABLE schema_migrations (version varchar PRIMARY KEY)', [], 'railsapp');
    await cluster.query("INSERT INTO schema_migrations VALUES ('20261001000000'), ('20261115093000')", [], 'railsapp');
    const repo = path.join(work, 'migrations-repo');
    const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: { DATABASE_URL: cluster.url('railsapp') } });
    assert.equal(backup.code, 0, backup.stderr);
    // a migration applied after the backup does not change what the backup restores
    await cluster.query("INSERT INTO schema_migrations VALUES ('20261120120000')", [], 'railsapp');
    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'railsapp_restored'], { env: { DATABASE_URL: cluster.url('railsapp') } });
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(restore.stdout, /^migrations: public\.schema_migrations at 20261115093000 \(2 rows\): as recorded at backup time$/m);
    const asJson = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'railsapp_restored2', '--json'], { env: { DATABASE_URL: cluster.url('railsapp') } });
    assert.equal(asJson.code, 0, asJson.stderr);
    assert.deepEqual(json(asJson).migrations.tables.map((t: { name: string; ok: boolean; actual: { latest: string } }) => [t.name, t.ok, t.actual.latest]), [['schema_migrations', true, '20261115093000']]);
  });
});
