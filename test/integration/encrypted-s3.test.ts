import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { json } from '../support/cli.js';
import { keygenInProcess as keygen, runCommand as pgkeep } from '../support/run-command.js';
import { lightenPassphrase } from '../support/passphrase-repo.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';

const MARKER = 'pgkeep-plaintext-marker-7f3a';
const hasAge = spawnSync('age', ['--version']).status === 0;

let cluster: PgCluster;
let work: string;
let s3: S3TestServer | undefined;

useClusterAndWorkFolder('encrypted', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query(`CREATE TABLE notes AS SELECT g AS id, '${MARKER}-' || g AS body FROM generate_series(1, 5000) g`, [], 'app');
});

after(async () => {
  await s3?.stop();
});

const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('app'), ...extra });

const newKey = (name: string) => keygen(path.join(work, `${name}.key`));

function storedObjects(repo: string): string[] {
  const found: string[] = [];
  const walk = (dir: string) => {
    for (const entry of readdirSync(dir, { withFileTypes: true })) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (!['manifest.json', 'pgkeep.json', 'source.json'].includes(entry.name)) found.push(full); // metadata stays readable
    }
  };
  walk(repo);
  return found;
}

async function databases(): Promise<string[]> {
  return (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY 1')).map((r) => r.datname);
}

describe('encrypted repositories (age)', () => {
  test('to two recipients: objects are age files with no plaintext; either key restores; no key fails before any database is touched', async () => {
    const ops = await newKey('ops');
    const escrow = await newKey('escrow');
    const repo = path.join(work, 'enc-x25519');
    const init = await pgkeep(['init', '--repo', repo, '--plain', '--encrypt', '--recipient', ops.publicKey, '--recipient', escrow.publicKey]); // plain: its objects are the age files checked below
    assert.equal(init.code, 0, init.stderr);

    for (const format of ['custom', 'directory']) {
      const backup = await pgkeep(['backup', '--repo', repo, '--format', format, '--json'], { env: env() });
      assert.equal(backup.code, 0, backup.stderr);
      const manifest = json(backup);
      for (const object of manifest.objects) {
        assert.match(object.name, /\.zst\.age$/);
        assert.deepEqual(object.encryption.recipients.sort(), [ops.publicKey, escrow.publicKey].sort());
      }
    }
    for (const file of storedObjects(repo)) {
      const bytes = readFileSync(file);
      assert.ok(bytes.subarray(0, 21).toString() === 'age-encryption.org/v1', `${file} is an age file`);
      assert.ok(!bytes.includes(Buffer.from(MARKER)), `${file} holds plaintext`);
    }

    const before = await databases();
    const noKey = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'never_created'], { env: env() });
    assert.equal(noKey.code, 2);
    assert.match(noKey.stderr, /is encrypted: pass --identity FILE or set PGKEEP_AGE_IDENTITY_FILE/);
    const stranger = await newKey('stranger');
    const wrongKey = await pgkeep(['verify', 'latest', '--repo', repo, '--identity', stranger.file]);
    assert.equal(wrongKey.code, 2);
    assert.match(wrongKey.stderr, /none of the given identities can decrypt/);
    assert.deepEqual(await databases(), before, 'no database was created without a key');

    const verify = await pgkeep(['verify', 'latest', '--repo', repo, '--identity', escrow.file]);
    assert.equal(verify.code, 0, verify.stderr);
    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'from_encrypted', '--json'], { env: env({ PGKEEP_AGE_IDENTITY_FILE: ops.file }) });
    assert.equal(restore.code, 0, restore.stderr);
    const [row] = await cluster.query<{ n: string }>(`SELECT count(*) AS n FROM notes WHERE body LIKE '${MARKER}%'`, [], 'from_encrypted');
    assert.equal(Number(row!.n), 5000);
  });

  test('the README recipe: age -d -i key | zstd -d | pg_restore, without pgkeep', { skip: !hasAge && 'the age program is not installed' }, async () => {
    const key = await newKey('recipe');
    const repo = path.join(work, 'enc-recipe');
    assert.equal((await pgkeep(['init', '--repo', repo, '--plain', '--encrypt', '--recipient', key.publicKey])).code, 0);
    const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const object = path.join(repo, 'sources', 'app', 'backups', json(backup).id, 'dump.zst.age');
    // pg_restore --list stops reading after the table of contents, so the others may end by SIGPIPE: judge by its output.
    const listing = spawnSync('bash', ['-c', 'age -d -i "$1" "$2" | zstd -d | "$3" --list', 'recipe', key.file, object, path.join(cluster.binDir, 'pg_restore')], { encoding: 'utf8' });
    assert.equal(listing.status, 0, listing.stderr);
    assert.match(listing.stdout, /TABLE DATA public notes/);
  });

  test('with a passphrase: backups need no secret, restore needs the passphrase, a wrong one is refused', async () => {
    const repo = path.join(work, 'enc-passphrase');
    const passFile = path.join(work, 'passphrase.txt');
    await writeFile(passFile, 'correct horse battery staple\n', { mode: 0o600 });
    const init = await pgkeep(['init', '--repo', repo, '--plain', '--passphrase-file', passFile]); // plain: a deduplicating one needs the key to write
    assert.equal(init.code, 0, init.stderr);
    // The init above is the real one (wrapped at the default work factor); the work factor is not what the rest
    // is about: re-wrapped light, the wrong passphrase's and the restore's unwraps cost ~1 ms, not ~0.75 CPU-s each.
    await lightenPassphrase(repo, 'correct horse battery staple');
    const backup = await pgkeep(['backup', '--repo', repo], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const wrong = await pgkeep(['verify', 'latest', '--repo', repo], { env: { PGKEEP_PASSPHRASE: 'not the passphrase' } });
    assert.equal(wrong.code, 2);
    assert.match(wrong.stderr, /the passphrase does not open this repository/);
    const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'from_passphrase'], { env: env({ PGKEEP_PASSPHRASE_FILE: passFile }) });
    assert.equal(restore.code, 0, restore.stderr);
    assert.ok(!(restore.stdout + restore.stderr).includes('correct horse'), 'the passphrase is never printed');
  });

  test('a flipped byte in an encrypted object fails verification, naming it', async () => {
    const key = await newKey('corrupt');
    const repo = path.join(work, 'enc-corrupt');
    assert.equal((await pgkeep(['init', '--repo', repo, '--plain', '--encrypt', '--recipient', key.publicKey])).code, 0);
    const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: env() });
    const object = path.join(repo, 'sources', 'app', 'backups', json(backup).id, 'dump.zst.age');
    const handle = await open(object, 'r+');
    const offset = Math.min(4000, (await handle.stat()).size - 20);
    const byte = Buffer.alloc(1);
    await handle.read(byte, 0, 1, offset);
    await handle.write(Buffer.from([byte[0]! ^ 0xff]), 0, 1, offset); // always a different byte
    await handle.close();
    const verify = await pgkeep(['verify', 'latest', '--repo', repo, '--identity', key.file]);
    assert.equal(verify.code, 7, verify.stderr);
    assert.match(verify.stderr, /dump\.zst\.age/);
  });

  test('an unencrypted repository cannot be turned into an encrypted one in place', async () => {
    const key = await newKey('late');
    const repo = path.join(work, 'plain-repo');
    assert.equal((await pgkeep(['init', '--repo', repo])).code, 0);
    const result = await pgkeep(['init', '--repo', repo, '--encrypt', '--recipient', key.publicKey]);
    assert.equal(result.code, 5);
    assert.match(result.stderr, /already an unencrypted pgkeep repository: encryption is chosen when a repository is created/);
  });

  test('init over a repository encrypted to other keys is an error naming the keys it has; the same keys change nothing', async () => {
    const a = await newKey('init-a');
    const b = await newKey('init-b');
    const repo = path.join(work, 'enc-to-a');
    assert.equal((await pgkeep(['init', '--repo', repo, '--encrypt', '--recipient', a.publicKey])).code, 0);
    const other = await pgkeep(['init', '--repo', repo, '--encrypt', '--recipient', b.publicKey]);
    assert.equal(other.code, 5, other.stderr);
    assert.ok(other.stderr.includes(`encrypted to the recipient(s) ${a.publicKey}, not to ${b.publicKey}`), other.stderr);
    assert.match(other.stderr, /cannot add a recipient .* create a new repository/);
    const passphrase = await pgkeep(['init', '--repo', repo, '--encrypt'], { env: { PGKEEP_PASSPHRASE: 'secret words' } });
    assert.equal(passphrase.code, 5, passphrase.stderr);
    assert.match(passphrase.stderr, /not with a passphrase/);
    const same = await pgkeep(['init', '--repo', repo, '--encrypt', '--recipient', a.publicKey]);
    assert.equal(same.code, 0, same.stderr);
    assert.match(same.stdout, /already a pgkeep repository, encrypted to 1 recipient\(s\).* \(nothing changed\)/);
  });
});

describe('S3 repositories', () => {
  const awsEnv = () => ({
    AWS_ACCESS_KEY_ID: s3!.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3!.secretAccessKey,
    AWS_REGION: s3!.region,
    AWS_ENDPOINT_URL: s3!.endpoint,
  });

  test('backup, list, verify and restore through s3://bucket/prefix, plain and encrypted', async () => {
    s3 ??= await startS3Server();
    const bucket = await s3.bucket('pgkeep-e2e');
    const key = await newKey('s3');
    for (const [prefix, encrypted] of [['plain', false], ['secret', true]] as const) {
      const repo = `s3://${bucket}/${prefix}`;
      const all = env({ ...awsEnv(), PGKEEP_AGE_IDENTITY_FILE: key.file });
      if (encrypted) assert.equal((await pgkeep(['init', '--repo', repo, '--encrypt', '--recipient', key.publicKey], { env: all })).code, 0);
      const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env: all });
      assert.equal(backup.code, 0, backup.stderr);
      assert.equal(backup.stderr.trim(), '', 'nothing on stderr (no SDK warnings)');
      const list = await pgkeep(['list', '--repo', repo, '--json'], { env: all });
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(json(list).map((b: { id: string }) => b.id), [json(backup).id]);
      const verify = await pgkeep(['verify', 'latest', '--repo', repo], { env: all });
      assert.equal(verify.code, 0, verify.stderr);
      const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', `from_s3_${prefix}`], { env: all });
      assert.equal(restore.code, 0, restore.stderr);
      const [row] = await cluster.query<{ n: string }>('SELECT count(*) AS n FROM notes', [], `from_s3_${prefix}`);
      assert.equal(Number(row!.n), 5000);
    }
  });

  test('a missing bucket and bad credentials are clear one-line errors', async () => {
    s3 ??= await startS3Server();
    const missing = await pgkeep(['list', '--repo', 's3://no-such-bucket/x'], { env: awsEnv() });
    assert.equal(missing.code, 5);
    assert.match(missing.stderr, /bucket no-such-bucket does not exist/);
    const bucket = await s3.bucket('pgkeep-creds');
    const denied = await pgkeep(['list', '--repo', `s3://${bucket}/x`], { env: { ...awsEnv(), AWS_ACCESS_KEY_ID: 'NOT-A-KEY' } });
    assert.equal(denied.code, 5);
    assert.equal(denied.stderr.trim().split('\n').length, 1, denied.stderr);
    assert.ok(!denied.stderr.includes(s3.secretAccessKey));
  });
});
