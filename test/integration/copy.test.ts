import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { open, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { json } from '../support/cli.js';
import { useFileS3Server } from '../support/each-storage.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { keygenInProcess as keygen, runCommand as pgkeep } from '../support/run-command.js';
import { initPassphraseRepo } from '../support/passphrase-repo.js';
import type { S3TestServer } from '../support/s3-server.js';

let cluster: PgCluster;
let work: string;
let s3: S3TestServer | undefined;
const fileS3 = useFileS3Server();

useClusterAndWorkFolder('copy', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query(`CREATE TABLE notes AS SELECT g AS id, 'note ' || g AS body FROM generate_series(1, 5000) g`, [], 'app');
  await cluster.query(`CREATE TABLE tags AS SELECT g AS id FROM generate_series(1, 123) g`, [], 'app');
});

const awsEnv = () => ({
  AWS_ACCESS_KEY_ID: s3!.accessKeyId,
  AWS_SECRET_ACCESS_KEY: s3!.secretAccessKey,
  AWS_REGION: s3!.region,
  AWS_ENDPOINT_URL: s3!.endpoint,
});
const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('app'), ...(s3 ? awsEnv() : {}), ...extra });

const newKey = (name: string) => keygen(path.join(work, `${name}.key`));

/**
 * A backup, into a plain repository unless one is there: this file is about
 * copies between repositories without deduplication, object by object as
 * stored (dedup-copy.test.ts covers deduplicating ones).
 */
async function backup(repo: string, extra: Record<string, string> = {}): Promise<string> {
  if (!existsSync(path.join(repo, 'pgkeep.json'))) assert.equal((await pgkeep(['init', '--repo', repo, '--plain'])).code, 0);
  const result = await pgkeep(['backup', '--repo', repo, '--json'], { env: env(extra) });
  assert.equal(result.code, 0, result.stderr);
  return json(result).id;
}

async function assertRestored(database: string): Promise<void> {
  const [notes] = await cluster.query<{ n: string }>('SELECT count(*) AS n FROM notes', [], database);
  const [tags] = await cluster.query<{ n: string }>('SELECT count(*) AS n FROM tags', [], database);
  assert.equal(Number(notes!.n), 5000);
  assert.equal(Number(tags!.n), 123);
}

function files(dir: string): string[] {
  if (!existsSync(dir)) return [];
  const found: string[] = [];
  const walk = (d: string) => {
    for (const entry of readdirSync(d, { withFileTypes: true })) {
      const full = path.join(d, entry.name);
      if (entry.isDirectory()) walk(full);
      else found.push(path.relative(dir, full));
    }
  };
  walk(dir);
  return found.sort();
}

// Commands run in process (test/support/run-command.ts); keygen is the CLI's.
describe('pgkeep copy', () => {
  test('local → S3: objects then manifest, verified at the destination; list, verify and restore there; a second run skips', async () => {
    s3 ??= await fileS3();
    const bucket = await s3.bucket('pgkeep-copy');
    const local = path.join(work, 'local');
    const id = await backup(local);
    const offsite = `s3://${bucket}/offsite`;

    const copy = await pgkeep(['copy', 'latest', '--from', local, '--to', offsite, '--json'], { env: env() });
    assert.equal(copy.code, 0, copy.stderr);
    const result = json(copy);
    assert.equal(result.id, id);
    assert.equal(result.copied, true);
    assert.equal(result.createdDestination, true);
    assert.equal(result.objects, 3, 'the dump, the globals object and the database state');
    assert.ok(result.bytes > 0);
    assert.equal(result.verification.mode, 'full');
    assert.equal(result.verification.ok, true);

    const list = await pgkeep(['list', '--repo', offsite, '--json'], { env: env() });
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(json(list).map((b: { id: string }) => b.id), [id]);
    const show = await pgkeep(['show', id, '--repo', offsite, '--json'], { env: env() });
    const original = await pgkeep(['show', id, '--repo', local, '--json'], { env: env() });
    assert.deepEqual(json(show), json(original), 'the manifest is copied as it is');
    const verify = await pgkeep(['verify', 'latest', '--repo', offsite], { env: env() });
    assert.equal(verify.code, 0, verify.stderr);
    const restore = await pgkeep(['restore', 'latest', '--repo', offsite, '--to', 'from_offsite'], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
    await assertRestored('from_offsite');

    const again = await pgkeep(['copy', 'latest', '--source', 'app', '--from', local, '--to', offsite], { env: env() });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /already in .*: nothing copied/);
    const againJson = await pgkeep(['copy', id, '--from', local, '--to', offsite, '--json'], { env: env() });
    assert.equal(json(againJson).copied, false);

    // the human summary
    const second = await backup(local);
    const human = await pgkeep(['copy', second, '--from', local, '--to', offsite], { env: env() });
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, new RegExp(`copied app/${second} to s3://${bucket}/offsite in .*: 3 object\\(s\\), .*; verified there`));
    const listed = await pgkeep(['list', '--repo', offsite, '--json'], { env: env() });
    assert.deepEqual(json(listed).map((b: { id: string }) => b.id), [id, second]);
  });

  test('an encrypted source into an empty destination: same encryption, integrity-only check without a key, restore with the key', async () => {
    const key = await newKey('ops');
    const source = path.join(work, 'enc-source');
    const init = await pgkeep(['init', '--repo', source, '--plain', '--encrypt', '--recipient', key.publicKey]);
    assert.equal(init.code, 0, init.stderr);
    await backup(source);
    const destination = path.join(work, 'enc-destination');

    const copy = await pgkeep(['copy', 'latest', '--from', source, '--to', destination, '--json'], { env: env() });
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(json(copy).verification.mode, 'integrity');
    assert.equal(json(copy).verification.ok, true);
    const info = (repo: string) => JSON.parse(readFileSync(path.join(repo, 'pgkeep.json'), 'utf8'));
    assert.deepEqual(info(destination).encryption, info(source).encryption);
    assert.notEqual(info(destination).id, info(source).id, 'a repository of its own');

    const restore = await pgkeep(['restore', 'latest', '--repo', destination, '--to', 'from_encrypted_copy'], { env: env({ PGKEEP_AGE_IDENTITY_FILE: key.file }) });
    assert.equal(restore.code, 0, restore.stderr);
    await assertRestored('from_encrypted_copy');

    // with the key, the destination is verified in full; the human output says which check ran
    const id = await backup(source);
    const full = await pgkeep(['copy', id, '--from', source, '--to', destination, '--identity', key.file, '--json'], { env: env() });
    assert.equal(full.code, 0, full.stderr);
    assert.equal(json(full).verification.mode, 'full');
    const third = await backup(source);
    const human = await pgkeep(['copy', third, '--from', source, '--to', destination], { env: env() });
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /integrity checked there .*not decrypted/);
  });

  test('a passphrase source into an empty destination takes its wrapped key along', async () => {
    const passFile = path.join(work, 'passphrase.txt');
    await writeFile(passFile, 'correct horse battery staple\n', { mode: 0o600 });
    const source = path.join(work, 'pass-source');
    // the identities wrapped at a low scrypt work factor (test/support/passphrase-repo.ts): copying is the subject, not the work factor
    await initPassphraseRepo(source, 'correct horse battery staple', { plain: true });
    await backup(source);
    const destination = path.join(work, 'pass-destination');
    const copy = await pgkeep(['copy', 'latest', '--from', source, '--to', destination, '--json'], { env: env({ PGKEEP_PASSPHRASE_FILE: passFile }) });
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(json(copy).verification.mode, 'full');
    assert.deepEqual(readFileSync(path.join(destination, 'keys', 'identity.age')), readFileSync(path.join(source, 'keys', 'identity.age')));
    const restore = await pgkeep(['restore', 'latest', '--repo', destination, '--to', 'from_passphrase_copy'], { env: env({ PGKEEP_PASSPHRASE_FILE: passFile }) });
    assert.equal(restore.code, 0, restore.stderr);
    await assertRestored('from_passphrase_copy');

    // another passphrase repository holds other keys: refused
    const other = path.join(work, 'pass-other');
    await initPassphraseRepo(other, 'correct horse battery staple', { plain: true });
    const before = files(other);
    const refused = await pgkeep(['copy', 'latest', '--from', source, '--to', other], { env: env() });
    assert.equal(refused.code, 5);
    assert.match(refused.stderr, /different passphrase keys.*does not re-encrypt/);
    assert.deepEqual(files(other), before);
  });

  test('a destination with different encryption is refused with one clear line, and nothing is written', async () => {
    const key = await newKey('mismatch');
    const other = await newKey('other');
    const plainSource = path.join(work, 'mismatch-plain');
    await backup(plainSource);
    const encrypted = path.join(work, 'mismatch-encrypted');
    assert.equal((await pgkeep(['init', '--repo', encrypted, '--plain', '--encrypt', '--recipient', key.publicKey])).code, 0);
    const otherEncrypted = path.join(work, 'mismatch-other');
    assert.equal((await pgkeep(['init', '--repo', otherEncrypted, '--plain', '--encrypt', '--recipient', other.publicKey])).code, 0);
    await backup(encrypted);
    const plainDestination = path.join(work, 'mismatch-plain-destination');
    assert.equal((await pgkeep(['init', '--repo', plainDestination, '--plain'])).code, 0);

    for (const [from, to, why] of [
      [plainSource, encrypted, /the source is unencrypted, the destination encrypted to 1 recipient/],
      [encrypted, plainDestination, /the source is encrypted to 1 recipient\(s\) .*, the destination unencrypted/],
      [encrypted, otherEncrypted, /encrypted to 1 recipient.*the destination encrypted to 1 recipient/],
    ] as const) {
      const before = files(to);
      const result = await pgkeep(['copy', 'latest', '--from', from, '--to', to, '--json'], { env: env() });
      assert.equal(result.code, 5, result.stderr);
      assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
      assert.match(result.stderr, why);
      assert.match(result.stderr, /does not re-encrypt/);
      assert.equal(json(result).error.code, 'REPO_EXISTS');
      assert.deepEqual(files(to), before, `nothing written to ${to}`);
    }
  });

  test('a corrupted source object fails with CHECKSUM_MISMATCH naming it, and leaves no backup at the destination', async () => {
    s3 ??= await fileS3();
    const bucket = await s3.bucket('pgkeep-copy-corrupt');
    const local = path.join(work, 'corrupt-source');
    const id = await backup(local);
    const object = path.join(local, 'sources', 'app', 'backups', id, 'dump.zst');
    const handle = await open(object, 'r+');
    await handle.write(Buffer.from([0x42]), 0, 1, 100);
    await handle.close();

    for (const destination of [path.join(work, 'corrupt-destination'), `s3://${bucket}/corrupt`]) {
      const result = await pgkeep(['copy', id, '--from', local, '--to', destination, '--json'], { env: env() });
      assert.equal(result.code, 7, result.stderr);
      assert.equal(json(result).error.code, 'CHECKSUM_MISMATCH');
      assert.match(result.stderr, /object dump\.zst \(stored bytes\) .*is corrupt: SHA-256/);
      const list = await pgkeep(['list', '--repo', destination, '--json'], { env: env() });
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(json(list), []);
      if (!destination.startsWith('s3://')) {
        assert.deepEqual(files(destination).filter((f) => f.includes('/backups/')), [], 'the partial copy was removed');
        assert.ok(!existsSync(path.join(destination, 'sources', 'app', 'locks', 'source.lock')), 'the lock was released');
      }
    }
  });
});
