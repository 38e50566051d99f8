// Self-test of the integration harness: if this fails, every roundtrip test
// built on it would be meaningless, so it proves both that identical databases
// compare equal and that a one-row change is caught and attributed.

import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { fileURLToPath } from 'node:url';
import { diffSnapshots, snapshotDatabase } from '../support/db-compare.js';
import { startCluster, type PgCluster } from '../support/pg-cluster.js';

const FIXTURE = fileURLToPath(new URL('../support/fixtures/awkward.sql', import.meta.url));

let cluster: PgCluster;

before(async () => {
  cluster = await startCluster();
});

after(async () => {
  await cluster?.stop();
});

function psqlFile(database: string, file: string): Promise<void> {
  const env = { ...process.env, PGPASSWORD: cluster.password };
  const args = ['-v', 'ON_ERROR_STOP=1', '-X', '-q', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', database, '-f', file];
  return new Promise((resolve, reject) => {
    execFile(join(cluster.binDir, 'psql'), args, { env, encoding: 'utf8', maxBuffer: 64 * 1024 * 1024 }, (error, _stdout, stderr) => {
      if (error) reject(new Error(`psql -f ${file} failed: ${stderr}`));
      else resolve();
    });
  });
}

test('a template copy of the awkward fixture compares equal, and a one-row change is reported', { timeout: 180_000 }, async () => {
  await cluster.query('CREATE DATABASE a');
  await psqlFile('a', FIXTURE);
  await cluster.query('CREATE DATABASE b TEMPLATE a');

  const snapA = await snapshotDatabase(cluster, 'a');
  const snapB = await snapshotDatabase(cluster, 'b');

  // Guard against a vacuous pass (e.g. the fixture silently loading nothing).
  assert.ok(snapA.tables['public."Mixed Case"'], 'snapshot should contain the quoted-identifier table');
  assert.equal(snapA.tables['public.bulk_rows']?.rows, 2500);
  assert.equal(snapA.tables['public.unpopulated_mv']?.populated, false);
  assert.equal(snapA.largeObjects.count, 4);
  assert.ok(snapA.schema.includes('CREATE TABLE public."Mixed Case"'));
  assert.doesNotMatch(snapA.schema, /^(--|SET |\\restrict|\\unrestrict)/m);
  assert.ok(Object.keys(snapA.sequences).length >= 4);
  // Snapshots are meant to be stored/compared as JSON.
  assert.deepEqual(JSON.parse(JSON.stringify(snapA)), snapA);

  assert.deepEqual(diffSnapshots(snapA, snapB), []);

  await cluster.query(`UPDATE "ünïcødé"."таблица" SET "значение" = 'changed' WHERE "ключ" = 2`, [], 'b');
  const changed = diffSnapshots(snapA, await snapshotDatabase(cluster, 'b'));
  assert.equal(changed.length, 1, changed.join('\n'));
  assert.match(changed[0] ?? '', /"ünïcødé"\."таблица"/);
  assert.match(changed[0] ?? '', /contents differ/);
});

test('clusters copied from the initdb template are distinct clusters: own system identifier, own password, fresh WAL', { timeout: 60_000 }, async () => {
  const second = await startCluster();
  try {
    const id = async (c: PgCluster) => (await c.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!.id;
    const [a, b] = [await id(cluster), await id(second)];
    assert.notEqual(a, b, 'each cluster has its own system identifier');
    // the identifier is also the one in the WAL: a segment switch and a checkpoint go through
    await second.query('CREATE TABLE t AS SELECT generate_series(1, 1000) AS n');
    await second.query('SELECT pg_switch_wal()');
    await second.query('CHECKPOINT');
    assert.equal((await second.query<{ n: string }>('SELECT count(*) AS n FROM t'))[0]!.n, '1000');
    assert.notEqual(cluster.password, second.password);
    // the password is the cluster's own: the other cluster's is refused
    const wrong = { ...second, password: cluster.password };
    await assert.rejects(() => connectWith(wrong), /password authentication failed/);
  } finally {
    await second.stop();
  }
});

async function connectWith(c: { host: string; port: number; superuser: string; password: string }): Promise<void> {
  const { default: pg } = await import('pg');
  const client = new pg.Client({ host: c.host, port: c.port, user: c.superuser, password: c.password, database: 'postgres' });
  await client.connect();
  await client.end();
}

test('cluster.query keeps one session on postgres, and every statement starts from a clean one', { timeout: 60_000 }, async () => {
  const pid = async () => (await cluster.query<{ pid: number }>('SELECT pg_backend_pid() AS pid'))[0]!.pid;
  const first = await pid();
  assert.equal(await pid(), first, 'the session is reused');

  // what one statement sets, the next does not see
  await cluster.query("SET work_mem = '77MB'");
  assert.notEqual((await cluster.query<{ work_mem: string }>('SHOW work_mem'))[0]!.work_mem, '77MB');
  await cluster.query('CREATE TEMP TABLE scratch (id int)');
  assert.equal((await cluster.query<{ t: string | null }>("SELECT to_regclass('scratch')::text AS t"))[0]!.t, null);
  await cluster.query('SET ROLE pg_monitor');
  assert.equal((await cluster.query<{ u: string }>('SELECT current_user AS u'))[0]!.u, cluster.superuser);
  await cluster.query('SELECT pg_advisory_lock(4242)');
  const other = (await cluster.query<{ got: boolean }>('SELECT pg_try_advisory_lock(4242) AS got', [], 'template1'))[0]!.got;
  assert.equal(other, true, 'a session-level advisory lock is released after its statement');
  assert.equal(await pid(), first, 'resetting did not cost the session');

  // a statement that leaves a transaction open closes the session rather than hand the transaction on
  await cluster.query('BEGIN; CREATE TABLE half_done (id int)');
  assert.notEqual(await pid(), first);
  assert.equal((await cluster.query<{ t: string | null }>("SELECT to_regclass('half_done')::text AS t"))[0]!.t, null);

  // a failed statement leaves the session usable and the error the caller's
  await assert.rejects(() => cluster.query('SELECT * FROM no_such_table'), /no_such_table/);

  // the server ends the kept session while it is idle: the next statement runs on a new one
  const kept = await pid();
  await cluster.query('SELECT pg_terminate_backend($1)', [kept], 'template1');
  await new Promise((resolve) => setTimeout(resolve, 100));
  assert.notEqual(await pid(), kept);

  // concurrent callers each get a session
  const pids = await Promise.all([1, 2, 3].map(() => cluster.query<{ pid: number }>('SELECT pg_backend_pid() AS pid, pg_sleep(0.1)')));
  assert.equal(new Set(pids.map((rows) => rows[0]!.pid)).size, 3);
});
