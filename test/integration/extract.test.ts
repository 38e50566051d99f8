import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import { collect, json, startPgkeep } from '../support/cli.js';
import { eachStorage } from '../support/each-storage.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/awkward.sql');

let cluster: PgCluster;
let work: string;

function psql(database: string, args: string[]): string {
  const result = spawnSync(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', database, ...args], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, `psql failed: ${result.stderr}`);
  return result.stdout;
}

const repo = (format: string) => path.join(work, `repo-${format}`);
const env = () => ({ DATABASE_URL: cluster.url('shop') });
const scratchDatabases = async () => (await cluster.query<{ datname: string }>("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep_extract_%'")).map((r) => r.datname);

useClusterAndWorkFolder('extract', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE shop');
  psql('shop', ['-f', FIXTURE]);
  for (const format of ['custom', 'plain']) {
    const backup = await pgkeep(['backup', '--repo', repo(format), '--format', format], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
  }
});

// What reads the backup runs over a folder and over S3; the checks of the WHERE and the output file once.
eachStorage('extract: rows of one table out of a backup', (storage) => {
  // over a folder, the backups the setup made (no test writes to a repository): the same two again would only cost their time
  const repo = (format: string) => (storage.kind === 'posix' ? path.join(work, `repo-${format}`) : storage.repo(`repo-${format}`));
  const file = (name: string) => path.join(work, `${storage.kind}-${name}`);
  before(async () => {
    if (storage.kind === 'posix') return;
    for (const format of ['custom', 'plain']) {
      const backup = await pgkeep(['backup', '--repo', repo(format), '--format', format], { env: env() });
      assert.equal(backup.code, 0, backup.stderr);
    }
  });

  test('CSV of a WHERE subset equals the same query on the source, and the scratch database is gone', async () => {
    const where = `customer_id = 2 AND amount > 500`;
    const expected = psql('shop', ['-c', `COPY (SELECT * FROM ONLY public.orders WHERE ${where}) TO STDOUT WITH (FORMAT csv, HEADER)`]);
    const output = file('orders.csv');
    const result = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'orders', '--where', where, '--output', output, '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const extracted = json(result);
    const csv = await readFile(output, 'utf8');
    assert.equal(csv, expected);
    assert.equal(extracted.rows, expected.trim().split('\n').length - 1);
    assert.ok(extracted.rows > 10 && extracted.rows < 301, `a real subset (${extracted.rows} rows)`);
    assert.match(extracted.scratch, /^pgkeep_extract_/);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('without --output the rows go to stdout and the summary to stderr; a plain backup works too', async () => {
    const result = await pgkeep(['extract', 'latest', '--repo', repo('plain'), '--table', '"ünïcødé"."таблица"'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const expected = psql('shop', ['-c', 'COPY (SELECT * FROM ONLY "ünïcødé"."таблица") TO STDOUT WITH (FORMAT csv, HEADER)']);
    assert.equal(result.stdout, expected);
    assert.match(result.stderr, /extracted 3 row\(s\) of ünïcødé\.таблица/);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('cat writes the dump as pg_dump made it (the stored object, decompressed), and pg_restore reads it; never over a file; a missing object is named', async () => {
    const output = file('cat.dump');
    const result = await pgkeep(['cat', 'latest', '--repo', repo('custom'), '--output', output], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const list = spawnSync(path.join(cluster.binDir, 'pg_restore'), ['--list', output], { encoding: 'utf8' });
    assert.equal(list.status, 0, list.stderr);
    assert.match(list.stdout, /TABLE DATA public orders/);
    const shown = json(await pgkeep(['show', 'latest', '--repo', repo('custom'), '--json'], { env: env() }));
    const dump = shown.objects.find((o: any) => o.role === 'dump');
    const { createHash } = await import('node:crypto');
    const bytes = await readFile(output);
    assert.equal(bytes.length, dump.raw.size);
    // a plain repository records the stream's SHA-256; a deduplicating one (the default) checks each chunk against its id as cat reads it
    if (dump.raw.sha256 !== undefined) assert.equal(createHash('sha256').update(bytes).digest('hex'), dump.raw.sha256, 'byte for byte what the manifest recorded before compression');
    const again = await pgkeep(['cat', 'latest', '--repo', repo('custom'), '--output', output], { env: env() });
    assert.equal(again.code, 2);
    assert.match(again.stderr, /already exists/);
    const missing = await pgkeep(['cat', 'latest', '--repo', repo('custom'), '--object', 'nothing'], { env: env() });
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /has no object nothing: it has dump(\.zst)? \(dump\)/);
  });

  test('--format sql gives INSERT statements that put deleted rows back', async () => {
    const before = psql('shop', ['-c', 'COPY (SELECT * FROM "Mixed Case" ORDER BY "Id") TO STDOUT']);
    await cluster.query('DELETE FROM "Mixed Case" WHERE "Id" BETWEEN 3 AND 7', [], 'shop');
    const output = file('mixed.sql');
    const result = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--where', '"Id" BETWEEN 3 AND 7', '--format', 'sql', '--output', output, '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(json(result).rows, 5);
    const sql = await readFile(output, 'utf8');
    assert.equal(sql.match(/^INSERT INTO /gm)?.length, 5, 'one INSERT per selected row');
    psql('shop', ['-f', output]);
    assert.equal(psql('shop', ['-c', 'COPY (SELECT * FROM "Mixed Case" ORDER BY "Id") TO STDOUT']), before);
    assert.deepEqual(await scratchDatabases(), []);
  });

});

describe('extract: the WHERE and the output file', () => {
  test('a bad WHERE is named, writes no file, and drops the scratch database', async () => {
    const output = path.join(work, 'bad.csv');
    const result = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'orders', '--where', 'no_such_column = 1', '--output', output], { env: env() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^pgkeep: --where "no_such_column = 1" does not work on public\.orders: column "no_such_column" does not exist/m);
    assert.ok(!existsSync(output));
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('the WHERE runs read-only: it cannot change the scratch copy', async () => {
    const result = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--where', `pg_catalog.nextval('public."Mixed Case_Id_seq"') > 0`], { env: env() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /read-only transaction/);
    assert.deepEqual(await scratchDatabases(), []);
  });

  test('an existing --output is never overwritten; an unknown table is a usage error', async () => {
    const output = path.join(work, 'exists.csv');
    await writeFile(output, 'keep');
    const exists = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'orders', '--output', output], { env: env() });
    assert.equal(exists.code, 2);
    assert.match(exists.stderr, /already exists/);
    assert.equal(await readFile(output, 'utf8'), 'keep');
    const unknown = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'nope'], { env: env() });
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /--table "nope" matches no table/);
  });

  test('interrupted (SIGINT) while it works, it still drops the scratch database', async () => {
    const child = startPgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'orders', '--where', '(SELECT pg_sleep(20)) IS NOT NULL', '--output', path.join(work, 'never.csv')], { env: env() });
    const done = collect(child);
    const deadline = Date.now() + 30_000;
    // Wait until the scratch database exists and the slow WHERE runs.
    for (;;) {
      const busy = await cluster.query("SELECT 1 FROM pg_stat_activity WHERE datname LIKE 'pgkeep_extract_%' AND query LIKE '%pg_sleep%'");
      if (busy.length > 0) break;
      assert.ok(Date.now() < deadline, 'the extract did not reach its WHERE');
      await new Promise((r) => setTimeout(r, 100));
    }
    child.kill('SIGINT');
    const result = await done;
    assert.equal(result.code, 130, result.stderr);
    assert.deepEqual(await scratchDatabases(), []);
    assert.ok(!existsSync(path.join(work, 'never.csv')));
  });
});
