import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { createReadStream, createWriteStream } from 'node:fs';
import { copyFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { createGzip } from 'node:zlib';
import { describe, test } from 'node:test';
import { defaultZstd } from '../../src/pipeline/zstd.js';
import { json } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase, type DatabaseSnapshot } from '../support/db-compare.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/awkward.sql');

let cluster: PgCluster;
let work: string;
let source: DatabaseSnapshot;

function run(tool: string, args: string[]): void {
  const result = spawnSync(path.join(cluster.binDir, tool), ['-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, ...args], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, `${tool} ${args.join(' ')} failed: ${result.stderr}`);
}

const file = (name: string) => path.join(work, name);

useClusterAndWorkFolder('restore-file', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE awkward');
  run('psql', ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', 'awkward', '-f', FIXTURE]);
  source = await snapshotDatabase(cluster, 'awkward');
  // The dumps an old backup script would have made, with plain pg_dump.
  run('pg_dump', ['-Fc', '-d', 'awkward', '-f', file('app.dump')]);
  run('pg_dump', ['-Fd', '-d', 'awkward', '-f', file('app_dir')]);
  run('pg_dump', ['-Ft', '-d', 'awkward', '-f', file('app.tar')]);
  run('pg_dump', ['-Fp', '-d', 'awkward', '-f', file('app.sql')]);
  run('pg_dump', ['-Fp', '--create', '-d', 'awkward', '-f', file('with_create.sql')]);
  await pipeline(createReadStream(file('app.sql')), createGzip(), createWriteStream(file('app.sql.gz')));
  await pipeline(createReadStream(file('app.sql')), defaultZstd().compressor(), createWriteStream(file('app.sql.zst')));
  await pipeline(createReadStream(file('app.dump')), createGzip(), createWriteStream(file('app.dump.gz')));
  // The name says SQL, the content is a custom archive: the content decides.
  await copyFile(file('app.dump'), file('misnamed.sql'));
  await writeFile(file('noise.bin'), Buffer.from([0, 1, 2, 3, 255, 254, 0, 7, 8, 9]));
});

const env = () => ({ DATABASE_URL: cluster.url('awkward'), PGKEEP_REPO: path.join(work, 'repo') });

describe('restore --file: dumps made outside pgkeep', () => {
  for (const [name, format, compression] of [
    ['app.dump', 'custom', 'none'],
    ['app_dir', 'directory', 'none'],
    ['app.tar', 'tar', 'none'],
    ['app.sql', 'plain', 'none'],
    ['app.sql.gz', 'plain', 'gzip'],
    ['app.sql.zst', 'plain', 'zstd'],
    ['app.dump.gz', 'custom', 'gzip'],
    ['misnamed.sql', 'custom', 'none'],
  ] as const) {
    // app.sql.zst goes to the default target: a new database named after the file (one restore proves both)
    const defaultTarget = name === 'app.sql.zst';
    test(`${name}: detected as ${format}${compression === 'none' ? '' : ` (${compression})`}, restored identical into a new database${defaultTarget ? ' named after the file (the default target)' : ''}`, async () => {
      const result = await pgkeep(['restore', '--file', file(name), ...(defaultTarget ? [] : ['--to', `from_${name.replace(/\W/g, '_')}`]), '--json'], { env: env() });
      assert.equal(result.code, 0, result.stderr);
      const restored = json(result);
      assert.equal(restored.format, format);
      assert.equal(restored.compression, compression);
      const target = defaultTarget ? restored.database : `from_${name.replace(/\W/g, '_')}`;
      if (defaultTarget) assert.match(restored.database, /^app_restore_\d{8}t\d{6}z$/);
      assert.equal(restored.database, target);
      assert.equal(restored.replaced, false);
      const mixed = restored.tables.find((t: { name: string }) => t.name === 'Mixed Case');
      assert.equal(mixed?.rows, 25);
      assert.deepEqual(diffSnapshots(source, await snapshotDatabase(cluster, target)), []);
    });
  }

  for (const name of ['app.dump', 'app_dir', 'app.dump.gz']) {
    test(`${name}: --table restores only that table, with what it needs`, async () => {
      const target = `one_${name.replace(/\W/g, '_')}`;
      const result = await pgkeep(['restore', '--file', file(name), '--table', 'public."Mixed Case"', '--table', 'all_types', '--to', target, '--json'], { env: env() });
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(json(result).tables.map((t: { name: string; rows: number }) => [t.name, t.rows]).sort(), [['Mixed Case', 25], ['all_types', source.tables['public.all_types']!.rows]].sort());
      const tables = await cluster.query<{ t: string }>("SELECT tablename AS t FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1", [], target);
      assert.deepEqual(tables.map((r) => r.t), ['Mixed Case', 'all_types']);
    });
  }

  test('--table on a plain dump is refused, naming what works', async () => {
    const result = await pgkeep(['restore', '--file', file('app.sql'), '--table', 'orders'], { env: env() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /is a plain dump: --table, --schema and --schema-only need a custom or directory dump/);
  });

  test('--dry-run names the format and the target, lists what a --table restore takes, and creates nothing', async () => {
    // (app.sql.zst's restore above made one database named after the file: a dry run must make none more)
    const named = async () => (await cluster.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname = 'dry_file' OR datname LIKE 'app_restore_%' ORDER BY 1")).map((r) => r.datname);
    const before = await named();
    assert.ok(!before.includes('dry_file'));
    const result = await pgkeep(['restore', '--file', file('app.dump.gz'), '--table', 'orders', '--to', 'dry_file', '--dry-run', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const plan = json(result);
    assert.equal(plan.dryRun, true);
    assert.equal(plan.format, 'custom');
    assert.equal(plan.compression, 'gzip');
    assert.equal(plan.mode, 'new');
    const entries = plan.entries.map((e: { entry: string }) => e.entry);
    assert.ok(entries.includes('TABLE public.orders') && entries.includes('TABLE DATA public.orders'), entries.join('\n'));
    assert.ok(!entries.includes('TABLE DATA public.customers'));
    const text = await pgkeep(['restore', '--file', file('app.sql.zst'), '--dry-run'], { env: env() });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /plain dump, zstd-compressed/);
    assert.match(text.stdout, /dry run: nothing was changed/);
    assert.deepEqual(await named(), before);
  });

  test('an existing database is not replaced without consent; with --overwrite --force it is, after a safety backup', async () => {
    await cluster.query('CREATE DATABASE keep_me');
    await cluster.query('CREATE TABLE precious (id int)', [], 'keep_me');
    const refused = await pgkeep(['restore', '--file', file('app.dump'), '--to', 'keep_me'], { env: env() });
    assert.equal(refused.code, 3);
    assert.match(refused.stderr, /already exists.*--overwrite/);
    const unconfirmed = await pgkeep(['restore', '--file', file('app.dump'), '--to', 'keep_me', '--overwrite'], { env: env() });
    assert.equal(unconfirmed.code, 8);
    assert.equal((await cluster.query("SELECT 1 FROM pg_tables WHERE tablename = 'precious'", [], 'keep_me')).length, 1, 'untouched');

    const result = await pgkeep(['restore', '--file', file('app.dump'), '--to', 'keep_me', '--overwrite', '--force', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const restored = json(result);
    assert.equal(restored.replaced, true);
    assert.ok(restored.safetyBackup, 'a safety backup was taken');
    assert.deepEqual(diffSnapshots(source, await snapshotDatabase(cluster, 'keep_me')), []);
    const list = json(await pgkeep(['list', '--json'], { env: env() }));
    assert.ok(list.some((b: { labels: string[]; database: string }) => b.labels.includes('pre-restore') && b.database === 'keep_me'));
  });

  test('a dump that creates or switches databases is refused before anything is created', async () => {
    const result = await pgkeep(['restore', '--file', file('with_create.sql'), '--to', 'never_made'], { env: env() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^pgkeep: .*creates or switches databases/);
    assert.equal((await cluster.query("SELECT 1 FROM pg_database WHERE datname = 'never_made'")).length, 0);
  });

  test('something that is not a dump, and a missing file, are named clearly', async () => {
    const noise = await pgkeep(['restore', '--file', file('noise.bin')], { env: env() });
    assert.equal(noise.code, 2);
    assert.match(noise.stderr, /^pgkeep: .*noise\.bin is not a dump pgkeep can restore/);
    const missing = await pgkeep(['restore', '--file', file('nope.dump')], { env: env() });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /^pgkeep: cannot read .*nope\.dump: no such file/);
    const both = await pgkeep(['restore', 'latest', '--file', file('app.dump')], { env: env() });
    assert.equal(both.code, 2);
  });

  test('a truncated dump fails the restore and leaves no database behind', async () => {
    const full = createReadStream(file('app.sql.gz'));
    const chunks: Buffer[] = [];
    for await (const chunk of full) chunks.push(chunk as Buffer);
    const whole = Buffer.concat(chunks);
    await writeFile(file('cut.sql.gz'), whole.subarray(0, Math.floor(whole.length * 0.6)));
    const result = await pgkeep(['restore', '--file', file('cut.sql.gz'), '--to', 'cut_restore'], { env: env() });
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, /^pgkeep: .*cut\.sql\.gz is damaged or incomplete: gzip cannot decompress it/m);
    assert.equal((await cluster.query("SELECT 1 FROM pg_database WHERE datname = 'cut_restore'")).length, 0);
  });
});
