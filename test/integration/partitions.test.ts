import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { json } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { useFileS3Server } from '../support/each-storage.js';
import { snapshotDatabase, type DatabaseSnapshot } from '../support/db-compare.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

// Partitioned tables in selective restores and extracts: `events` has a
// partitioned primary key and index (its partitions' indexes are attached to
// them), `logs` has none and a sub-partitioned partition.
export const PARTITIONS_SQL = `
  CREATE TABLE events (id int NOT NULL, at date NOT NULL, note text, PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
  CREATE TABLE events_2024 PARTITION OF events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
  CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
  CREATE INDEX events_note ON events (note);
  INSERT INTO events SELECT i, date '2024-03-01' + i, 'note ' || i FROM generate_series(1, 500) i;
  CREATE TABLE logs (at date NOT NULL, kind text NOT NULL, line text) PARTITION BY LIST (kind);
  CREATE TABLE logs_app PARTITION OF logs FOR VALUES IN ('app');
  CREATE TABLE logs_db PARTITION OF logs FOR VALUES IN ('db') PARTITION BY RANGE (at);
  CREATE TABLE logs_db_2024 PARTITION OF logs_db FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
  CREATE TABLE logs_db_2025 PARTITION OF logs_db FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
  INSERT INTO logs SELECT date '2024-06-01' + i, CASE WHEN i % 3 = 0 THEN 'app' ELSE 'db' END, 'line ' || i FROM generate_series(1, 300) i;`;

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('partitions', async (c, w) => {
  cluster = c;
  work = w;
  bucket = await (await fileS3()).bucket('partitions');
  await cluster.query('CREATE DATABASE parts');
  await cluster.query(PARTITIONS_SQL, [], 'parts');
  for (const format of ['custom', 'directory', 'plain']) {
    const backup = await pgkeep(['backup', '--repo', repo(format), '--format', format], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
  }
});

const env = () => ({ DATABASE_URL: cluster.url('parts') });
// The directory-format backup is stored on S3 (this file's s3rver): its
// selective restores and extracts read a many-object backup through the S3
// driver; custom and plain stay on a folder.
const fileS3 = useFileS3Server();
let bucket: string;
const repo = (format: string) => (format === 'directory' ? `s3://${bucket}/repo-directory` : path.join(work, `repo-${format}`));
const count = async (database: string, table: string) => Number((await cluster.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`, [], database))[0]!.n);
/** Each partition of the database with its parent, and the partitioned indexes with whether every partition has its index attached. */
async function layout(database: string): Promise<{ partitions: string[]; indexes: string[] }> {
  const partitions = await cluster.query<{ p: string }>(
    "SELECT c.relname || ' of ' || p.relname AS p FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent WHERE c.relkind IN ('r', 'p') ORDER BY 1",
    [],
    database,
  );
  const indexes = await cluster.query<{ i: string }>(
    "SELECT c.relname || CASE WHEN x.indisvalid THEN ' valid' ELSE ' INVALID' END AS i FROM pg_index x JOIN pg_class c ON c.oid = x.indexrelid WHERE c.relkind = 'I' ORDER BY 1",
    [],
    database,
  );
  return { partitions: partitions.map((r) => r.p), indexes: indexes.map((r) => r.i) };
}
async function restore(format: string, table: string, to: string): Promise<any> {
  const result = await pgkeep(['restore', 'latest', '--repo', repo(format), '--table', table, '--to', to, '--json'], { env: env() });
  assert.equal(result.code, 0, result.stderr);
  return json(result);
}
/**
 * `public.events` of the custom backup restored into pevents_custom, once: one test checks that copy, and the
 * --clean test then changes it and cleans a partition of it (it needs a database holding the whole table).
 */
let eventsRestored: Promise<any> | undefined;
const eventsCopy = () => (eventsRestored ??= restore('custom', 'public.events', 'pevents_custom'));
/** The source's snapshot, taken once: no test changes parts after the setup, and seven restores compare with it. */
let partsSnapshot: Promise<DatabaseSnapshot> | undefined;
/** Content hashes of the named tables, source and restored. */
async function sameRows(database: string, tables: string[]): Promise<void> {
  const [a, b] = [await (partsSnapshot ??= snapshotDatabase(cluster, 'parts')), await snapshotDatabase(cluster, database)];
  for (const t of tables) {
    assert.ok(a.tables[t] && a.tables[t]!.rows > 0, `${t} has rows in the source`);
    assert.deepEqual(b.tables[t], a.tables[t], `${t} restored with the same rows`);
  }
}

describe('partitioned tables, selective restore', () => {
  for (const format of ['custom', 'directory']) {
    test(`${format}: a partition comes attached to its (new, empty) parent, with the partitioned key and index`, async () => {
      const to = `p2024_${format}`;
      const result = await restore(format, 'public.events_2024', to);
      assert.deepEqual(result.tables.map((t: { name: string }) => t.name), ['events_2024']);
      assert.deepEqual(await layout(to), { partitions: ['events_2024 of events'], indexes: ['events_note valid', 'events_pkey valid'] });
      assert.equal(await count(to, 'public.events'), await count('parts', 'public.events_2024'), 'the parent shows the partition\'s rows');
      assert.ok((await count(to, 'public.events')) > 0);
      await sameRows(to, ['public.events_2024']);
      // The key works through the parent: a duplicate is refused.
      await assert.rejects(cluster.query("INSERT INTO events VALUES (1, '2024-03-02', 'dup')", [], to), /duplicate key/);
      // A row for a partition that was not restored has nowhere to go.
      await assert.rejects(cluster.query("INSERT INTO events VALUES (1, '2025-06-01', 'x')", [], to), /no partition/);
    });
  }

  test('a partition without partitioned indexes, below a sub-partitioned parent: attached all the way up', async () => {
    await restore('custom', 'public.logs_db_2024', 'plogs');
    assert.deepEqual((await layout('plogs')).partitions, ['logs_db of logs', 'logs_db_2024 of logs_db']);
    assert.equal(await count('plogs', 'public.logs'), await count('parts', 'public.logs_db_2024'));
    await sameRows('plogs', ['public.logs_db_2024']);
  });

  for (const format of ['custom', 'directory']) {
    test(`${format}: a partitioned table comes with all its partitions and their rows`, async () => {
      const to = `pevents_${format}`;
      const result = await (format === 'custom' ? eventsCopy() : restore(format, 'public.events', to));
      assert.deepEqual(result.tables.map((t: { name: string }) => t.name).sort(), ['events_2024', 'events_2025']);
      assert.equal(result.tables.reduce((n: number, t: { actual: number }) => n + t.actual, 0), 500);
      assert.deepEqual(await layout(to), { partitions: ['events_2024 of events', 'events_2025 of events'], indexes: ['events_note valid', 'events_pkey valid'] });
      assert.equal(await count(to, 'public.events'), 500);
      await sameRows(to, ['public.events_2024', 'public.events_2025']);
    });
  }

  test('a sub-partitioned table without partitioned indexes comes whole', async () => {
    const result = await restore('custom', 'public.logs', 'plogsall');
    assert.deepEqual(result.tables.map((t: { name: string }) => t.name).sort(), ['logs_app', 'logs_db_2024', 'logs_db_2025']);
    assert.deepEqual((await layout('plogsall')).partitions, ['logs_app of logs', 'logs_db of logs', 'logs_db_2024 of logs_db', 'logs_db_2025 of logs_db']);
    assert.equal(await count('plogsall', 'public.logs'), 300);
    await sameRows('plogsall', ['public.logs_app', 'public.logs_db_2024', 'public.logs_db_2025']);
  });

  test('--dry-run shows the parent, the attachment and the partitions', async () => {
    const partition = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public.events_2024', '--to', 'never', '--dry-run', '--json'], { env: env() });
    assert.equal(partition.code, 0, partition.stderr);
    const entries = json(partition).entries.map((e: { entry: string }) => e.entry);
    for (const wanted of ['TABLE public.events', 'TABLE public.events_2024', 'TABLE ATTACH public.events_2024', 'TABLE DATA public.events_2024', 'INDEX ATTACH public.events_2024_pkey']) assert.ok(entries.includes(wanted), `${wanted} in ${entries.join(', ')}`);
    assert.ok(!entries.some((e: string) => e.includes('events_2025')), 'no other partition');

    const parent = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public.events', '--to', 'never', '--dry-run'], { env: env() });
    assert.equal(parent.code, 0, parent.stderr);
    assert.match(parent.stdout, /TABLE ATTACH public\.events_2025/);
    assert.match(parent.stdout, /events_2024/);
    assert.match(parent.stdout, /events_2025/);
  });

  test('--clean of a partition inside the database replaces its rows and keeps it attached', async () => {
    await eventsCopy();
    const db = 'pevents_custom';
    await cluster.query("DELETE FROM events WHERE id <= 100; UPDATE events SET note = 'changed'", [], db);
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public.events_2024', '--to', db, '--clean', '--force', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await layout(db), { partitions: ['events_2024 of events', 'events_2025 of events'], indexes: ['events_note valid', 'events_pkey valid'] });
    await sameRows(db, ['public.events_2024']);
    assert.equal(await count(db, "public.events_2025 WHERE note = 'changed'"), await count('parts', 'public.events_2025'), 'the other partition is left alone');
  });
});

describe('partitioned tables, extract', () => {
  const sorted = (csv: string) => {
    const [header, ...rows] = csv.trim().split('\n');
    return [header, ...rows.sort()];
  };
  for (const format of ['custom', 'directory']) {
    test(`${format}: extract of a partitioned table gives the rows of all its partitions`, async () => {
      const output = path.join(work, `events-${format}.csv`);
      const result = await pgkeep(['extract', 'latest', '--repo', repo(format), '--table', 'public.events', '--where', 'id % 2 = 0', '--output', output, '--json'], { env: env() });
      assert.equal(result.code, 0, result.stderr);
      assert.equal(json(result).rows, 250);
      const csv = await readFile(output, 'utf8');
      assert.equal(csv.trim().split('\n').length, 251);
      const source = await cluster.query<{ id: number; at: string; note: string }>("SELECT id, to_char(at, 'YYYY-MM-DD') AS at, note FROM events WHERE id % 2 = 0", [], 'parts');
      assert.deepEqual(sorted(csv), ['id,at,note', ...source.map((r) => `${r.id},${r.at},${r.note}`).sort()]);
    });
  }

  test('extract of a sub-partitioned table, as SQL, loads back into the parent', async () => {
    const output = path.join(work, 'logs.sql');
    const result = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'logs', '--format', 'sql', '--output', output, '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    assert.equal(json(result).rows, 300);
    const sql = await readFile(output, 'utf8');
    assert.equal(sql.match(/^INSERT INTO public\.logs /gm)?.length, 300, 'INSERTs into the parent');
    await cluster.query('CREATE DATABASE plogsql');
    await cluster.query(PARTITIONS_SQL.replace(/INSERT INTO [^;]*;/g, ''), [], 'plogsql');
    await cluster.query(sql.replace(/^\\(un)?restrict .*$/gm, ''), [], 'plogsql');
    await sameRows('plogsql', ['public.logs_app', 'public.logs_db_2024', 'public.logs_db_2025']);
  });

  test('plain backup: a partitioned table is found in the restored copy; a name that is nowhere is one line, and no scratch is left', async () => {
    const result = await pgkeep(['extract', 'latest', '--repo', repo('plain'), '--table', 'logs', '--where', "kind = 'db'"], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const expected = await cluster.query<{ n: string }>("SELECT count(*) AS n FROM logs WHERE kind = 'db'", [], 'parts');
    assert.equal(result.stdout.trim().split('\n').length - 1, Number(expected[0]!.n));
    const missing = await pgkeep(['extract', 'latest', '--repo', repo('plain'), '--table', 'public.nope'], { env: env() });
    assert.equal(missing.code, 2, missing.stderr);
    assert.match(missing.stderr, /--table "public\.nope" matches no table of backup/);
    assert.deepEqual(await cluster.query("SELECT datname FROM pg_database WHERE datname LIKE 'pgkeep_extract_%'"), []);
  });

  test('extract of a partition gives its rows only', async () => {
    const result = await pgkeep(['extract', 'latest', '--repo', repo('custom'), '--table', 'public.events_2025'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const rows = result.stdout.trim().split('\n');
    assert.equal(rows.length - 1, await count('parts', 'public.events_2025'));
    assert.ok(rows.length > 100);
    assert.ok(rows.slice(1).every((r) => r.split(',')[1]!.startsWith('2025-')), 'only 2025 rows');
  });
});
