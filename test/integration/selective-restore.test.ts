import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import pg from 'pg';
import { collect, json, startPgkeep } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase } from '../support/db-compare.js';
import { useFileS3Server } from '../support/each-storage.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/awkward.sql');

let cluster: PgCluster;
let work: string;
let bucket: string;
// The directory-format backup lives on S3 (this file's s3rver): its selective
// restores, --schema and --clean --data-only read a backup of many objects
// through the S3 driver; custom and plain stay on a folder (roundtrip covers
// the directory format on a folder).
const fileS3 = useFileS3Server();

useClusterAndWorkFolder('selective', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE awkward');
  const result = spawnSync(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', 'awkward', '-f', FIXTURE], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, `loading the fixture failed: ${result.stderr}`);
  bucket = await (await fileS3()).bucket('selective');
  for (const format of ['custom', 'directory', 'plain']) {
    const backup = await pgkeep(['backup', '--repo', repo(format), '--format', format], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
  }
});

const env = () => ({ DATABASE_URL: cluster.url('awkward') });
const repo = (format: string) => (format === 'directory' ? `s3://${bucket}/repo-directory` : path.join(work, `repo-${format}`));
const databases = async () => (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY 1')).map((r) => r.datname);
const userTables = async (database: string) =>
  (await cluster.query<{ t: string }>("SELECT schemaname || '.' || tablename AS t FROM pg_tables WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1", [], database)).map((r) => r.t);
const count = async (database: string, table: string) => Number((await cluster.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`, [], database))[0]!.n);
/**
 * "live": a whole restore of the custom backup, made once. The --clean dry run and the --clean tests each
 * change it a little first and compare with what they changed (counts, a snapshot, rows of a table they
 * emptied), so they share one copy instead of restoring the whole database twice.
 */
let liveRestored: Promise<void> | undefined;
const liveCopy = () =>
  (liveRestored ??= (async () => {
    const restore = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--to', 'live'], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
  })());

describe('restore --dry-run', () => {
  test('prints the plan of a --table restore and changes nothing', async () => {
    const before = await databases();
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--to', 'never_created', '--dry-run', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const plan = json(result);
    assert.equal(plan.dryRun, true);
    assert.equal(plan.database, 'never_created');
    assert.equal(plan.mode, 'new');
    const entries = plan.entries.map((e: { entry: string }) => e.entry);
    assert.ok(entries.includes('TABLE public.Mixed Case'), entries.join('\n'));
    assert.ok(entries.includes('TABLE DATA public.Mixed Case'));
    assert.ok(entries.includes('CONSTRAINT public.Mixed Case Mixed Case_pkey'), 'the primary key comes with its table');
    assert.ok(entries.some((e: string) => e.startsWith('COMMENT public.TABLE "Mixed Case"')), 'the comment comes with its table');
    assert.ok(!entries.some((e: string) => /^TABLE (DATA )?public\.(orders|customers)$/.test(e)), 'no other table');
    assert.deepEqual(plan.tables.map((t: { name: string }) => t.name), ['Mixed Case']);
    assert.equal(plan.tables[0].rows, 25);
    assert.ok(plan.estimatedBytes > 0);
    assert.deepEqual(await databases(), before, 'a dry run creates no database');

    const text = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--to', 'never_created', '--dry-run'], { env: env() });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /target: database "never_created"/);
    assert.match(text.stdout, /TABLE DATA public\.Mixed Case/);
    assert.match(text.stdout, /dry run: nothing was changed/);
  });

  test('of a --clean restore into an existing database lists what would be dropped, and changes nothing', async () => {
    await liveCopy();
    await cluster.query(`DELETE FROM "ünïcødé"."таблица" WHERE "ключ" = 1`, [], 'live');
    const snapshot = await snapshotDatabase(cluster, 'live');
    const before = await databases();
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', '"ünïcødé"."таблица"', '--to', 'live', '--clean', '--dry-run', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const plan = json(result);
    assert.equal(plan.mode, 'clean');
    assert.equal(plan.safetyBackup, true);
    assert.ok(plan.drops.includes('TABLE ünïcødé.таблица'), plan.drops.join('\n'));
    assert.ok(!plan.drops.some((d: string) => d.startsWith('SCHEMA')), 'the schema itself is not dropped');
    assert.deepEqual(await databases(), before);
    assert.deepEqual(diffSnapshots(snapshot, await snapshotDatabase(cluster, 'live')), [], 'the target is unchanged');
    const backups = json(await pgkeep(['list', '--repo', repo('custom'), '--json'], { env: env() }));
    assert.ok(!backups.some((b: { labels: string[] }) => b.labels.includes('pre-restore')), 'no safety backup was taken');
  });
});

describe('restore --table and --schema into a new database', () => {
  for (const format of ['custom', 'directory']) {
    test(`${format}: quoted and unicode names; only those tables, row counts checked for them only`, async () => {
      const target = `only_two_${format}`;
      const result = await pgkeep(['restore', 'latest', '--repo', repo(format), '--table', 'public."Mixed Case"', '--table', '"ünïcødé"."таблица"', '--to', target, '--json'], { env: env() });
      assert.equal(result.code, 0, result.stderr);
      const restored = json(result);
      assert.deepEqual(restored.tables.map((t: { name: string }) => t.name).sort(), ['Mixed Case', 'таблица']);
      assert.ok(restored.tables.every((t: { expected: number; actual: number }) => t.expected === t.actual && t.actual > 0));
      assert.deepEqual(await userTables(target), ['public.Mixed Case', 'ünïcødé.таблица']);
      assert.equal(await count(target, 'public."Mixed Case"'), 25);
      // The identity sequence came along with its value: a new row gets the next id.
      const [row] = await cluster.query<{ id: number }>(`INSERT INTO "Mixed Case" ("Column With Spaces") VALUES ('new') RETURNING "Id" AS id`, [], target);
      assert.equal(row!.id, 26);
    });
  }

  test('a table whose columns use custom types, domains and extensions gets them too', async () => {
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'all_types', '--to', 'types_only', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await userTables('types_only'), ['public.all_types']);
    assert.equal(await count('types_only', 'all_types'), await count('awkward', 'all_types'));
  });

  test('a foreign key to a table that is not restored is left out; with both tables it is kept', async () => {
    const one = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'orders', '--to', 'orders_only'], { env: env() });
    assert.equal(one.code, 0, one.stderr);
    const fks = async (db: string) => (await cluster.query<{ n: string }>("SELECT count(*) AS n FROM pg_constraint WHERE contype = 'f'", [], db))[0]!.n;
    assert.equal(Number(await fks('orders_only')), 0);
    const both = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'orders', '--table', 'customers', '--to', 'orders_customers'], { env: env() });
    assert.equal(both.code, 0, both.stderr);
    assert.equal(Number(await fks('orders_customers')), 2, 'orders → customers and customers → customers');
  });

  test('--schema restores every table of the schema', async () => {
    const result = await pgkeep(['restore', 'latest', '--repo', repo('directory'), '--schema', 'ünïcødé', '--to', 'unicode_schema', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const tables = await userTables('unicode_schema');
    assert.ok(tables.includes('ünïcødé.таблица') && tables.includes('ünïcødé.birds'), tables.join(', '));
    // The schema's view reads public.orders and public.customers: their definitions come along, without rows.
    assert.ok(tables.includes('public.orders'));
    assert.equal(await count('unicode_schema', 'public.orders'), 0);
    assert.ok(!tables.includes('public.all_types'));
    const names = json(result).tables.map((t: { schema: string }) => t.schema);
    assert.ok(names.length >= 2 && names.every((s: string) => s === 'ünïcødé'), 'only the schema\'s tables are counted');
  });

  test('--schema-only --table restores the definition without rows', async () => {
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--schema-only', '--to', 'shape_only'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    assert.deepEqual(await userTables('shape_only'), ['public.Mixed Case']);
    assert.equal(await count('shape_only', 'public."Mixed Case"'), 0);
  });

  test('a pattern that matches nothing is a usage error naming it, and creates nothing', async () => {
    const before = await databases();
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public.no_such_table', '--to', 'never'], { env: env() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /^pgkeep: --table "public\.no_such_table" matches no table in this backup/);
    assert.deepEqual(await databases(), before);
  });

  test('a plain backup refuses selective options with a clear message', async () => {
    const result = await pgkeep(['restore', 'latest', '--repo', repo('plain'), '--table', 'orders', '--to', 'never'], { env: env() });
    assert.equal(result.code, 2);
    assert.match(result.stderr, /plain SQL dump.*need a custom or directory backup/);
  });
});

describe('restore --clean into an existing database', () => {
  test('replaces only the selected table, after consent and a safety backup; other changes are kept', async () => {
    await liveCopy();
    await cluster.query('DELETE FROM "Mixed Case" WHERE "Id" > 5', [], 'live');
    await cluster.query(`INSERT INTO "we""ird" VALUES (99, 'kept', NULL, NULL)`, [], 'live');

    const refused = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--to', 'live', '--clean'], { env: env() });
    assert.equal(refused.code, 8, refused.stderr);
    assert.match(refused.stderr, /CONFIRMATION|confirm by typing/);
    assert.equal(await count('live', '"Mixed Case"'), 5, 'nothing changed without consent');

    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--to', 'live', '--clean', '--force', '--reindex', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const restored = json(result);
    assert.equal(restored.cleaned, true);
    assert.ok(restored.safetyBackup, 'a safety backup was taken');
    assert.deepEqual(restored.tables.map((t: { name: string; actual: number }) => [t.name, t.actual]), [['Mixed Case', 25]]);
    assert.equal(await count('live', '"Mixed Case"'), 25);
    assert.equal(await count('live', '"we""ird"'), 4, 'the other table keeps its new row');
    const comment = await cluster.query<{ c: string }>(`SELECT obj_description('"Mixed Case"'::regclass, 'pg_class') AS c`, [], 'live');
    assert.match(comment[0]!.c, /needs quoting/);
  });

  test('--data-only --clean empties the selected table and loads the backup\'s rows in one transaction', async () => {
    await cluster.query(`DELETE FROM "ünïcødé"."таблица"`, [], 'live');
    await cluster.query(`INSERT INTO "ünïcødé"."таблица" VALUES (42, 'stray', NULL)`, [], 'live');
    const result = await pgkeep(['restore', 'latest', '--repo', repo('directory'), '--table', '"ünïcødé"."таблица"', '--to', 'live', '--clean', '--data-only', '--force', '--json'], { env: env() });
    assert.equal(result.code, 0, result.stderr);
    const rows = await cluster.query<{ k: number }>(`SELECT "ключ" AS k FROM "ünïcødé"."таблица" ORDER BY 1`, [], 'live');
    assert.deepEqual(rows.map((r) => r.k), [1, 2, 3]);

    // The same from a custom backup, streamed into pg_restore.
    await cluster.query(`DELETE FROM "ünïcødé"."таблица" WHERE "ключ" = 2`, [], 'live');
    const custom = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', '"ünïcødé"."таблица"', '--to', 'live', '--clean', '--data-only', '--force'], { env: env() });
    assert.equal(custom.code, 0, custom.stderr);
    assert.equal(await count('live', '"ünïcødé"."таблица"'), 3);
  });

  test('--data-only --clean of a table another one references says so in one line, before any safety backup', async () => {
    const backups = async () => (await readdir(repo('custom'), { recursive: true })).sort();
    const before = await backups();
    const rows = await count('live', 'customers');
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public.customers', '--to', 'live', '--clean', '--data-only', '--force'], { env: env() });
    assert.equal(result.code, 9, result.stdout + result.stderr);
    assert.doesNotMatch(result.stderr, /Premature close/);
    assert.match(result.stderr, /cannot empty public\.customers: public\.orders references it \(foreign key orders_customer_id_fkey\).*--table public\.orders/);
    assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
    assert.deepEqual(await backups(), before, 'no safety backup was taken');
    assert.equal(await count('live', 'customers'), rows);

    // With the referencing tables selected too, TRUNCATE works; then the reload meets the fixture's NOT VALID
    // check constraint (old rows break it): psql's own error is reported, not the pipe that closed after it.
    const both = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public.customers', '--table', 'public.orders', '--table', 'public.order_notes', '--to', 'live', '--clean', '--data-only', '--force'], { env: env() });
    assert.equal(both.code, 9, both.stderr);
    assert.doesNotMatch(both.stderr, /Premature close|EPIPE/);
    assert.match(both.stderr, /nothing was changed in "live".*violates check constraint "orders_recent"/);
    assert.equal(await count('live', 'customers'), rows);

  });

  test('a --clean that cannot drop a table still referenced changes nothing', async () => {
    await cluster.query(`DELETE FROM order_notes`, [], 'live');
    const before = await count('live', 'order_notes');
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'orders', '--to', 'live', '--clean', '--force'], { env: env() });
    assert.equal(result.code, 9, result.stdout + result.stderr);
    assert.match(result.stderr, /nothing was changed in "live"/);
    assert.equal(await count('live', 'order_notes'), before);
    assert.equal(await count('live', 'orders'), await count('awkward', 'orders'));
  });

  test('interrupted (SIGINT) while it replaces objects, --clean leaves the database as it was', async () => {
    await cluster.query('DELETE FROM "Mixed Case" WHERE "Id" > 20', [], 'live');
    const before = await snapshotDatabase(cluster, 'live');
    // Another session reads the table: pg_restore's DROP TABLE waits for it, inside its transaction.
    const reader = new pg.Client({ connectionString: cluster.url('live') });
    await reader.connect();
    try {
      await reader.query('BEGIN');
      await reader.query('SELECT count(*) FROM "Mixed Case"');
      const child = startPgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'public."Mixed Case"', '--to', 'live', '--clean', '--force'], { env: env() });
      const done = collect(child);
      const deadline = Date.now() + 60_000;
      for (;;) {
        const waiting = await cluster.query("SELECT 1 FROM pg_stat_activity WHERE datname = 'live' AND wait_event_type = 'Lock' AND query ILIKE '%DROP%'");
        if (waiting.length > 0) break;
        assert.ok(Date.now() < deadline, 'the restore did not reach its DROP');
        await new Promise((r) => setTimeout(r, 100));
      }
      child.kill('SIGINT');
      const result = await done;
      assert.equal(result.code, 130, result.stderr);
    } finally {
      await reader.query('ROLLBACK').catch(() => undefined);
      await reader.end();
    }
    assert.deepEqual(diffSnapshots(before, await snapshotDatabase(cluster, 'live')), [], 'nothing changed');
    assert.equal(await count('live', '"Mixed Case"'), 20);
  });

  test('--clean into a database that does not exist is refused (a typo must not create a new one)', async () => {
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'orders', '--to', 'liev', '--clean', '--force'], { env: env() });
    assert.equal(result.code, 3);
    assert.match(result.stderr, /--clean replaces objects inside an existing database, and "liev" does not exist/);
    assert.equal((await cluster.query("SELECT 1 FROM pg_database WHERE datname = 'liev'")).length, 0);
  });

  test('without --clean or --overwrite an existing target is refused, naming both', async () => {
    const result = await pgkeep(['restore', 'latest', '--repo', repo('custom'), '--table', 'orders', '--to', 'live'], { env: env() });
    assert.equal(result.code, 3);
    assert.match(result.stderr, /--overwrite.*--clean/);
  });
});
