import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { before, describe, test } from 'node:test';
import { json } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase, type DatabaseSnapshot } from '../support/db-compare.js';
import { useFileS3Server } from '../support/each-storage.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { initPassphraseRepo } from '../support/passphrase-repo.js';
import type { PgCluster } from '../support/pg-cluster.js';

// WAL-G's kind of fidelity test: after a backup and a restore, the source and
// the restored database compare equal through `pg_dump --create` WITH owners
// and privileges (so the database itself: locale, owner, ACL, comment,
// settings) and a content hash of every table.

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/awkward.sql');

// The directory-format backup is stored on S3 (this file's s3rver): its
// restore, and the restore test that proves schema and database state, read a
// many-object backup through the S3 driver. The other repositories are folders.
const fileS3 = useFileS3Server();
let bucket: string;
before(async () => {
  bucket = await (await fileS3()).bucket('fidelity');
});
const repoOf = (name: string) => (name === 'directory' ? `s3://${bucket}/repo-directory` : path.join(work, `repo-${name}`));

let cluster: PgCluster;
let work: string;

/** Database-level state of the kind issue 13 found lost, on top of the awkward fixture. */
const DATABASE_STATE = (db: string) => [
  `ALTER DATABASE ${db} OWNER TO owner_role`,
  `REVOKE CONNECT, TEMPORARY ON DATABASE ${db} FROM PUBLIC`,
  `GRANT CONNECT ON DATABASE ${db} TO app_reader`,
  `GRANT TEMPORARY ON DATABASE ${db} TO app_reader WITH GRANT OPTION`,
  `COMMENT ON DATABASE ${db} IS 'db comment, with ''quotes'''`,
  `ALTER DATABASE ${db} SET work_mem = '7MB'`,
  `ALTER DATABASE ${db} SET search_path = "$user", public, "odd, one"`,
  `ALTER DATABASE ${db} CONNECTION LIMIT 17`,
  `ALTER ROLE app_reader IN DATABASE ${db} SET statement_timeout = '5s'`,
];

function psql(database: string, sql: string): void {
  const result = spawnSync(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', database, ...(sql.startsWith('-f ') ? ['-f', sql.slice(3)] : ['-c', sql])], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(result.status, 0, `psql failed: ${result.stderr}`);
}

useClusterAndWorkFolder('fidelity', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE ROLE owner_role');
  await cluster.query('CREATE ROLE app_reader');
  await cluster.query('CREATE DATABASE awkward');
  psql('awkward', `-f ${FIXTURE}`);
  // Objects owned by another role, with grants, so owners and privileges are part of the comparison.
  psql('awkward', 'ALTER TABLE public."Mixed Case" OWNER TO owner_role; GRANT SELECT ON ALL TABLES IN SCHEMA public TO app_reader; GRANT USAGE ON SCHEMA "ünïcødé" TO app_reader');
  for (const statement of DATABASE_STATE('awkward')) await cluster.query(statement);

  await cluster.query("CREATE DATABASE icu TEMPLATE template0 ENCODING 'UTF8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'");
  psql('icu', "CREATE TABLE words (w text); INSERT INTO words VALUES ('Z'), ('a'), ('B'), ('ä')");
  for (const statement of DATABASE_STATE('icu')) await cluster.query(statement);
});

const env = (database = 'awkward') => ({ DATABASE_URL: cluster.url(database) });

/**
 * The source's snapshot, taken once for awkward: no test changes that
 * database after the setup, and four restores are compared with it. icu's is
 * taken once too, for the restores of it as set up; the one test that gives
 * icu a setting for a while compares with a snapshot of its own (`changed`).
 */
let awkwardSnapshot: Promise<DatabaseSnapshot> | undefined;
let icuSnapshot: Promise<DatabaseSnapshot> | undefined;
const sourceSnapshot = (source: string, changed: boolean) =>
  source === 'awkward'
    ? (awkwardSnapshot ??= snapshotDatabase(cluster, source, { full: true }))
    : source === 'icu' && !changed
      ? (icuSnapshot ??= snapshotDatabase(cluster, source, { full: true }))
      : snapshotDatabase(cluster, source, { full: true });

async function sameAsSource(source: string, restored: string, changed = false): Promise<void> {
  const differences = diffSnapshots(await sourceSnapshot(source, changed), await snapshotDatabase(cluster, restored, { full: true }));
  assert.deepEqual(differences, [], `${restored} differs from ${source}`);
}

describe('a restore gives back the database itself (pg_dump --create with owners and privileges, table hashes)', () => {
  for (const [format, backupArgs, restoreArgs] of [
    ['custom', [], []],
    ['directory', ['--jobs', '2'], ['--jobs', '2']],
    ['plain', [], []],
  ] as const) {
    test(`${format}: a new database has the source's owner, privileges, comment, settings, connection limit, schema and rows`, async () => {
      const repo = repoOf(format);
      const backup = await pgkeep(['backup', '--repo', repo, '--format', format, ...backupArgs, '--json'], { env: env() });
      assert.equal(backup.code, 0, backup.stderr);
      const state = json(backup).database.state;
      assert.equal(state.owner, 'owner_role');
      assert.equal(state.comment, "db comment, with 'quotes'");
      assert.deepEqual(state.roleSettings, [{ role: 'app_reader', settings: ['statement_timeout=5s'] }]);

      const target = `fidelity_${format}`;
      const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', target, ...restoreArgs, '--json'], { env: env() });
      assert.equal(restore.code, 0, restore.stderr);
      const result = json(restore);
      assert.equal(result.databaseState, 'reproduced');
      assert.equal(result.schema.compared, true);
      assert.ok(result.schema.objects > 50, `the whole schema was compared (${result.schema.objects} objects)`);
      await sameAsSource('awkward', target);
    });
  }

  test('--overwrite: the replaced database gets the backup\'s state, not the server\'s defaults', async () => {
    const repo = path.join(work, 'repo-custom');
    await cluster.query('CREATE DATABASE fidelity_overwrite');
    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'fidelity_overwrite', '--overwrite', '--force', '--json'], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
    assert.equal(json(restore).replaced, true);
    await sameAsSource('awkward', 'fidelity_overwrite');
    const [db] = await cluster.query<{ acl: string }>("SELECT datacl::text AS acl FROM pg_database WHERE datname = 'fidelity_overwrite'");
    assert.equal(db!.acl, '{owner_role=CTc/owner_role,app_reader=T*c/owner_role}');
  });

  test('an ICU database (de-DE) keeps its provider and locale: ORDER BY still gives a,ä,B,Z', async () => {
    const repo = path.join(work, 'repo-icu');
    const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: env('icu') });
    assert.equal(backup.code, 0, backup.stderr);
    assert.equal(json(backup).database.state.localeProvider, 'icu');
    assert.equal(json(backup).database.state.locale, 'de-DE');
    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'icu_copy', '--json'], { env: env('icu') });
    assert.equal(restore.code, 0, restore.stderr);
    const [row] = await cluster.query<{ sorted: string }>("SELECT string_agg(w, ',' ORDER BY w) AS sorted FROM words", [], 'icu_copy');
    assert.equal(row!.sorted, 'a,ä,B,Z');
    await sameAsSource('icu', 'icu_copy');

    const verify = await pgkeep(['verify', 'latest', '--repo', repo, '--restore-test', '--json'], { env: env('icu') });
    assert.equal(verify.code, 0, verify.stderr);
    const report = json(verify).restoreTest;
    assert.deepEqual(report.databaseState.differences, []);
    assert.equal(report.schemaDump.compared, true);
  });

  test('an encrypted repository keeps the state (settings may be secrets) only in the encrypted object, and restores it', async () => {
    const repo = path.join(work, 'repo-encrypted');
    const secret = { ...env('icu'), PGKEEP_PASSPHRASE: 'fidelity passphrase, long enough' };
    await cluster.query("ALTER DATABASE icu SET app.jwt_secret = 'jwt-secret-do-not-leak-5c1e'");
    try {
      // the identity wrapped at a low scrypt work factor: this test is about where the state is kept, not the work factor
      await initPassphraseRepo(repo, secret.PGKEEP_PASSPHRASE);
      const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: secret });
      assert.equal(backup.code, 0, backup.stderr);
      const manifest = json(backup);
      assert.equal(manifest.database.state, undefined, 'no state in the manifest, which is stored in clear');
      assert.ok(manifest.objects.some((o: { role: string; encryption: unknown }) => o.role === 'database-state' && o.encryption !== null));
      const grep = spawnSync('grep', ['-r', '-l', 'jwt-secret-do-not-leak', repo], { encoding: 'utf8' });
      assert.equal(grep.stdout, '', 'the secret setting is nowhere in clear');
      const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'icu_encrypted', '--json'], { env: secret });
      assert.equal(restore.code, 0, restore.stderr);
      assert.equal(json(restore).databaseState, 'reproduced');
      await sameAsSource('icu', 'icu_encrypted', true);
    } finally {
      await cluster.query('ALTER DATABASE icu RESET app.jwt_secret');
    }
  });

  test('restore --file of a pg_dump -Fc made outside pgkeep: its DATABASE entries give the locale, owner, privileges and settings', async () => {
    const file = path.join(work, 'icu.dump');
    const dumped = spawnSync(path.join(cluster.binDir, 'pg_dump'), ['-Fc', '-f', file, '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, 'icu'], { env: { ...process.env, PGPASSWORD: cluster.password }, encoding: 'utf8' });
    assert.equal(dumped.status, 0, dumped.stderr);
    const restore = await pgkeep(['restore', '--file', file, '--to', 'icu_from_file', '--json'], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
    assert.equal(json(restore).databaseState, 'reproduced');
    const [row] = await cluster.query<{ sorted: string }>("SELECT string_agg(w, ',' ORDER BY w) AS sorted FROM words", [], 'icu_from_file');
    assert.equal(row!.sorted, 'a,ä,B,Z');
    await sameAsSource('icu', 'icu_from_file');
  });

  test('--no-owner --no-acl: the restoring role owns the database, default privileges, the rest as recorded', async () => {
    const repo = path.join(work, 'repo-custom');
    const plan = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'fidelity_plan', '--dry-run'], { env: env() });
    assert.equal(plan.code, 0, plan.stderr);
    assert.match(plan.stdout, /database state:\n  locale libc C\.UTF-8, encoding UTF8\n  owner owner_role\n  privileges \{owner_role=CTc\/owner_role,app_reader=T\*c\/owner_role\}\n  comment "db comment, with 'quotes'"\n  connection limit 17\n  setting work_mem=7MB\n/);
    assert.match(plan.stdout, /setting statement_timeout=5s for role app_reader/);
    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'fidelity_noowner', '--no-owner', '--no-acl', '--json'], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
    const [db] = await cluster.query<{ owner: string; acl: string | null; comment: string; limit: number }>(
      "SELECT pg_get_userbyid(datdba) AS owner, datacl::text AS acl, shobj_description(oid, 'pg_database') AS comment, datconnlimit AS limit FROM pg_database WHERE datname = 'fidelity_noowner'",
    );
    assert.deepEqual(db, { owner: 'postgres', acl: null, comment: "db comment, with 'quotes'", limit: 17 });
    const [table] = await cluster.query<{ owner: string; acl: string | null }>("SELECT tableowner AS owner, (SELECT relacl::text FROM pg_class WHERE oid = 'public.\"Mixed Case\"'::regclass) AS acl FROM pg_tables WHERE tablename = 'Mixed Case'", [], 'fidelity_noowner');
    assert.deepEqual(table, { owner: 'postgres', acl: null });
  });

  test('the restore test proves the schema and the database state, and fails naming what differs', async () => {
    const repo = repoOf('directory');
    const ok = await pgkeep(['verify', 'latest', '--repo', repo, '--restore-test', '--json'], { env: env() });
    assert.equal(ok.code, 0, ok.stderr);
    const report = json(ok).restoreTest;
    assert.equal(report.schemaDump.compared, true);
    assert.ok(report.schemaDump.objects > 50);
    assert.deepEqual(report.databaseState.differences, []);

    // A polluted template0 gives every new database an object the backup does not have.
    await cluster.query('ALTER DATABASE template0 ALLOW_CONNECTIONS true');
    try {
      await cluster.query('CREATE TABLE public.intruder (id int)', [], 'template0');
      const polluted = await pgkeep(['verify', 'latest', '--repo', repo, '--restore-test'], { env: env() });
      assert.equal(polluted.code, 7, polluted.stderr);
      assert.match(polluted.stderr, /restored schema differs from the backup's: TABLE public\.intruder is in the restored database but not in the backup/);
      // The restore itself fails the same way, and leaves nothing behind.
      const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'fidelity_polluted'], { env: env() });
      assert.equal(restore.code, 7, restore.stderr);
      assert.match(restore.stderr, /TABLE public\.intruder is in the restored database but not in the backup/);
      assert.equal((await cluster.query("SELECT 1 FROM pg_database WHERE datname = 'fidelity_polluted'")).length, 0);
    } finally {
      await cluster.query('DROP TABLE IF EXISTS public.intruder', [], 'template0');
      await cluster.query('ALTER DATABASE template0 ALLOW_CONNECTIONS false');
    }
  });

  test('a role the state names that the server lacks: one line offering --globals; with --globals the restore reproduces it', async () => {
    await cluster.query('CREATE ROLE gone_role');
    await cluster.query('CREATE DATABASE owned_by_gone OWNER gone_role');
    const repo = path.join(work, 'repo-gone');
    const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: env('owned_by_gone') });
    assert.equal(backup.code, 0, backup.stderr);
    await cluster.query('DROP DATABASE owned_by_gone');
    await cluster.query('DROP ROLE gone_role');

    const refused = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'gone_copy'], { env: env('owned_by_gone') });
    assert.equal(refused.code, 3, refused.stderr);
    assert.equal(refused.stderr.trim().split('\n').length, 1, refused.stderr);
    assert.match(refused.stderr, /role "gone_role" of backup .* does not exist on .*: add --globals to create them from the backup, or leave them out with --no-owner \/ --no-acl/);
    assert.equal((await cluster.query("SELECT 1 FROM pg_database WHERE datname = 'gone_copy'")).length, 0, 'nothing was created');

    const restored = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'gone_copy', '--globals', '--json'], { env: env('owned_by_gone') });
    assert.equal(restored.code, 0, restored.stderr);
    const [db] = await cluster.query<{ owner: string }>("SELECT pg_get_userbyid(datdba) AS owner FROM pg_database WHERE datname = 'gone_copy'");
    assert.equal(db!.owner, 'gone_role');
  });
});
