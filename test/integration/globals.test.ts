import assert from 'node:assert/strict';
import { readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { defaultZstd } from '../../src/pipeline/zstd.js';
import { json } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { initPassphraseRepo } from '../support/passphrase-repo.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { startCluster, type PgCluster } from '../support/pg-cluster.js';

let source: PgCluster;
let fresh: PgCluster | undefined;
let work: string;
const PASSPHRASE = 'correct horse battery staple for globals';
const APP_PASSWORD = 'app-secret-do-not-leak-7d1f';

useClusterAndWorkFolder('globals', async (c, w) => {
  source = c;
  work = w;
  await source.query(`CREATE ROLE app LOGIN PASSWORD '${APP_PASSWORD}'`);
  await source.query('CREATE ROLE readers NOLOGIN');
  await source.query('CREATE ROLE "Odd ""Role""" NOLOGIN');
  await source.query('GRANT readers TO app');
  await source.query("ALTER ROLE app SET statement_timeout = '5s'");
  await source.query("COMMENT ON ROLE app IS 'the application'");
  await source.query('CREATE DATABASE shop OWNER app');
  await source.query('CREATE TABLE items (id int PRIMARY KEY, name text)', [], 'shop');
  await source.query('ALTER TABLE items OWNER TO app', [], 'shop');
  await source.query('GRANT SELECT ON items TO readers', [], 'shop');
  await source.query("INSERT INTO items VALUES (1, 'one'), (2, 'two')", [], 'shop');
  // The server the backup is restored to: a fresh cluster where one of the roles already exists, differently.
  fresh = await startCluster();
  await fresh.query('CREATE ROLE readers NOLOGIN CONNECTION LIMIT 3');
});

after(async () => {
  await fresh?.stop();
});

const plainRepo = () => path.join(work, 'repo-plain');
const encryptedRepo = () => path.join(work, 'repo-encrypted');
const env = (cluster: PgCluster, extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('shop'), PGKEEP_PASSPHRASE: PASSPHRASE, ...extra });

async function decompressed(file: string): Promise<string> {
  const chunks: Buffer[] = [];
  const stream = defaultZstd().decompressor();
  stream.on('data', (c: Buffer) => chunks.push(c));
  const done = new Promise((resolve, reject) => stream.on('end', resolve).on('error', reject));
  stream.end(await readFile(file));
  await done;
  return Buffer.concat(chunks).toString('utf8');
}

describe('backup --globals and restore --globals', () => {
  test('by default a backup stores the roles beside the dump; without passwords in an unencrypted repository', async () => {
    // plain repositories here: the tests read and damage the stored globals object itself
    assert.equal((await pgkeep(['init', '--repo', plainRepo(), '--plain'], { env: env(source) })).code, 0);
    const backup = await pgkeep(['backup', '--repo', plainRepo(), '--json'], { env: env(source) });
    assert.equal(backup.code, 0, backup.stderr);
    const manifest = json(backup);
    const object = manifest.objects.find((o: { role: string }) => o.role === 'globals');
    assert.ok(object, 'a globals object');
    assert.equal(object.name, 'globals.sql.zst');
    assert.deepEqual(manifest.globals, { rolePasswords: false });
    const sql = await decompressed(path.join(plainRepo(), 'sources/shop/backups', manifest.id, object.name));
    assert.match(sql, /CREATE ROLE app;/);
    assert.doesNotMatch(sql, /PASSWORD|SCRAM-SHA-256/, 'no password hash in a clear repository');
    assert.equal((await pgkeep(['verify', 'latest', '--repo', plainRepo()], { env: env(source) })).code, 0);
  });

  test('into an encrypted repository the password hashes are kept, encrypted', async () => {
    // its identity wrapped at a low scrypt work factor (test/support/passphrase-repo.ts): every restore below opens it
    await initPassphraseRepo(encryptedRepo(), PASSPHRASE, { plain: true });
    const backup = await pgkeep(['backup', '--repo', encryptedRepo(), '--json'], { env: env(source) });
    assert.equal(backup.code, 0, backup.stderr);
    const manifest = json(backup);
    assert.deepEqual(manifest.globals, { rolePasswords: true });
    const object = manifest.objects.find((o: { role: string }) => o.role === 'globals');
    assert.equal(object.name, 'globals.sql.zst.age');
    const stored = await readFile(path.join(encryptedRepo(), 'sources/shop/backups', manifest.id, object.name));
    assert.ok(!stored.includes(Buffer.from('SCRAM-SHA-256')), 'stored encrypted');
  });

  test('roundtrip into a fresh cluster: missing roles created first, existing ones untouched, ownership restored, the password works', async () => {
    const plan = await pgkeep(['restore', 'latest', '--repo', encryptedRepo(), '--globals', '--to', 'shop', '--dry-run', '--json'], { env: env(fresh!) });
    assert.equal(plan.code, 0, plan.stderr);
    assert.deepEqual(json(plan).globals.created.sort(), ['Odd "Role"', 'app']);
    assert.equal((await fresh!.query("SELECT 1 FROM pg_roles WHERE rolname = 'app'")).length, 0, 'a dry run creates no role');

    const restore = await pgkeep(['restore', 'latest', '--repo', encryptedRepo(), '--globals', '--to', 'shop', '--json'], { env: env(fresh!) });
    assert.equal(restore.code, 0, restore.stderr);
    const result = json(restore);
    assert.deepEqual(result.globals.created.sort(), ['Odd "Role"', 'app']);
    assert.ok(result.globals.existing.includes('readers') && result.globals.existing.includes('postgres'));

    const [readers] = await fresh!.query<{ limit: number }>("SELECT rolconnlimit AS limit FROM pg_roles WHERE rolname = 'readers'");
    assert.equal(readers!.limit, 3, 'the existing role keeps its own attributes');
    const [member] = await fresh!.query<{ ok: boolean }>("SELECT pg_has_role('app', 'readers', 'MEMBER') AS ok");
    assert.equal(member!.ok, true, 'membership granted to the created role');
    const [owner] = await fresh!.query<{ owner: string }>("SELECT tableowner AS owner FROM pg_tables WHERE tablename = 'items'", [], 'shop');
    assert.equal(owner!.owner, 'app');
    const [config] = await fresh!.query<{ c: string[] }>("SELECT rolconfig AS c FROM pg_roles WHERE rolname = 'app'");
    assert.deepEqual(config!.c, ['statement_timeout=5s']);

    // The app logs in to the restored server with its old password.
    const client = new pg.Client({ connectionString: fresh!.url('shop', 'app', APP_PASSWORD) });
    await client.connect();
    try {
      const rows = await client.query('SELECT count(*)::int AS n FROM items');
      assert.equal(rows.rows[0].n, 2);
    } finally {
      await client.end();
    }

    const again = await pgkeep(['restore', 'latest', '--repo', encryptedRepo(), '--globals', '--to', 'shop_again', '--json'], { env: env(fresh!) });
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(json(again).globals.created, [], 'a second restore creates no role');
  });

  test('--no-globals stores none, and restore --globals of such a backup says so before touching anything', async () => {
    const backup = await pgkeep(['backup', '--repo', plainRepo(), '--no-globals', '--json'], { env: env(source) });
    assert.equal(backup.code, 0, backup.stderr);
    assert.ok(!json(backup).objects.some((o: { role: string }) => o.role === 'globals'));
    assert.equal(json(backup).globals, undefined);
    const restore = await pgkeep(['restore', 'latest', '--repo', plainRepo(), '--globals', '--to', 'never'], { env: env(source) });
    assert.equal(restore.code, 2);
    assert.match(restore.stderr, /holds no roles/);
    assert.equal((await source.query("SELECT 1 FROM pg_database WHERE datname = 'never'")).length, 0);
  });

  test('a damaged globals object creates no role at all', async () => {
    const backup = await pgkeep(['backup', '--repo', plainRepo(), '--json'], { env: env(source) });
    assert.equal(backup.code, 0, backup.stderr);
    const manifest = json(backup);
    const object = manifest.objects.find((o: { role: string }) => o.role === 'globals');
    const file = path.join(plainRepo(), 'sources/shop/backups', manifest.id, object.name);
    // Same length, and still valid zstd up to the damage: the checksum is what catches it.
    const sql = await decompressed(file);
    const damaged = sql.replace('CREATE ROLE app;', 'CREATE ROLE apq;');
    const chunks: Buffer[] = [];
    const compress = defaultZstd().compressor();
    compress.on('data', (c: Buffer) => chunks.push(c));
    const done = new Promise((resolve) => compress.on('end', resolve));
    compress.end(Buffer.from(damaged));
    await done;
    await writeFile(file, Buffer.concat(chunks));
    const restore = await pgkeep(['restore', manifest.id, '--repo', plainRepo(), '--globals', '--to', 'damaged_roles', '--db', fresh!.url('shop')], { env: env(fresh!) });
    assert.equal(restore.code, 7, restore.stderr);
    assert.match(restore.stderr, /^pgkeep: the backup's roles were not created .*globals\.sql\.zst .*corrupt/);
    assert.equal((await fresh!.query("SELECT 1 FROM pg_roles WHERE rolname = 'apq'")).length, 0, 'nothing committed');
  });

  test('--all-databases: one backup per database, under a source named after it, all holding the one globals dump of the run', async () => {
    await source.query('CREATE DATABASE inventory OWNER readers');
    await source.query("COMMENT ON DATABASE inventory IS 'stock levels'");
    await source.query('CREATE TABLE stock (sku text PRIMARY KEY, n int)', [], 'inventory');
    await source.query("INSERT INTO stock VALUES ('a', 1), ('b', 2), ('c', 3)", [], 'inventory');
    const repo = path.join(work, 'repo-all');
    const backup = await pgkeep(['backup', '--all-databases', '--repo', repo, '--json'], { env: env(source) });
    assert.equal(backup.code, 0, backup.stderr);
    const result = json(backup);
    assert.deepEqual(result.failed, []);
    assert.equal(result.globals, true);
    const byDatabase = Object.fromEntries(result.backups.map((b: { database: string }) => [b.database, b]));
    assert.deepEqual(Object.keys(byDatabase).sort(), ['inventory', 'postgres', 'shop']);
    assert.equal(byDatabase.inventory.source, 'inventory');
    assert.equal(byDatabase.inventory.rows, 3);

    const digests = new Set<string>();
    for (const b of result.backups) {
      const manifest = JSON.parse(await readFile(path.join(repo, 'sources', b.source, 'backups', b.id, 'manifest.json'), 'utf8'));
      assert.equal(manifest.globals.run, result.run);
      assert.ok(manifest.labels.includes('all-databases'));
      digests.add(manifest.objects.find((o: { role: string }) => o.role === 'globals').raw.sha256);
    }
    assert.equal(digests.size, 1, 'one globals dump, the same in every backup of the run');

    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--globals', '--db', fresh!.url('inventory'), '--to', 'inventory', '--json'], { env: { PGKEEP_PASSPHRASE: PASSPHRASE } });
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(json(restore).tables.map((t: { name: string; actual: number }) => [t.name, t.actual]), [['stock', 3]]);
    // Each backup of the run recorded its database's own state, and the restore reproduced it.
    assert.equal(json(restore).databaseState, 'reproduced');
    const [db] = await fresh!.query<{ owner: string; comment: string }>("SELECT pg_get_userbyid(datdba) AS owner, shobj_description(oid, 'pg_database') AS comment FROM pg_database WHERE datname = 'inventory'");
    assert.deepEqual(db, { owner: 'readers', comment: 'stock levels' });

    const refused = await pgkeep(['backup', '--all-databases', '--repo', repo, '--table', 'stock'], { env: env(source) });
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /--all-databases backs up whole databases/);
  });
});
