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
