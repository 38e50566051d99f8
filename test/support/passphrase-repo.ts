import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { decryptStream, encryptStream, formatIdentityFile, generateIdentity } from '../../src/pipeline/age.js';
import { WRAPPED_IDENTITY } from '../../src/repository/repository-keys.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream } from '../../src/storage/storage.js';
import { runCommand } from './run-command.js';

/**
 * A low scrypt work factor for wrapped identities in tests that are not about
 * the work factor: `init --encrypt` with a passphrase wraps at age's default
 * 18 (2^18 scrypt, about 0.75 s of CPU and 256 MiB), and every command that
 * opens the repository with its passphrase pays that again; 2^10 costs about a
 * millisecond. The work factor travels in the wrapped file, so readers pay
 * what it says, and age reads any.
 */
export const TEST_WORK_FACTOR = 10;

/** An identity file's bytes wrapped with the passphrase at TEST_WORK_FACTOR, through pgkeep's own age code. */
function wrapLight(identity: Buffer, passphrase: string): Promise<Buffer> {
  return collectStream(Readable.from([identity]).pipe(encryptStream([{ kind: 'passphrase', passphrase, workFactor: TEST_WORK_FACTOR }])));
}

/**
 * Creates, at the local folder `repo`, the passphrase repository that
 * `pgkeep init --repo REPO --encrypt` with PGKEEP_PASSPHRASE makes, but with
 * its identity wrapped at TEST_WORK_FACTOR: the real init with a fresh
 * identity's public key as recipient (a deduplicating repository unless
 * `plain`), then the two things a passphrase init does besides, done by hand:
 * the identity stored wrapped with the passphrase (keys/identity.age) and
 * pgkeep.json's `encryption.passphrase: true`. Tests of init itself, or of the
 * work factor, use the command (or lightenPassphrase after it).
 */
export async function initPassphraseRepo(repo: string, passphrase: string, options: { plain?: boolean; env?: Record<string, string | undefined> } = {}): Promise<void> {
  const keys = generateIdentity();
  const init = await runCommand(['init', '--repo', repo, '--encrypt', '--recipient', keys.publicKey, ...(options.plain ? ['--plain'] : [])], { env: options.env });
  assert.equal(init.code, 0, init.stderr);
  await mkdir(path.join(repo, path.dirname(WRAPPED_IDENTITY)), { recursive: true });
  await writeFile(path.join(repo, WRAPPED_IDENTITY), await wrapLight(Buffer.from(formatIdentityFile(keys)), passphrase), { flag: 'wx' });
  const infoFile = path.join(repo, 'pgkeep.json');
  const info = JSON.parse(await readFile(infoFile, 'utf8'));
  assert.deepEqual(info.encryption, { method: 'age', recipients: [keys.publicKey], passphrase: false });
  info.encryption.passphrase = true;
  await writeFile(infoFile, `${JSON.stringify(info, null, 2)}\n`);
}

/**
 * Re-wraps a passphrase repository's identity (keys/identity.age, on any
 * storage) with the same passphrase at TEST_WORK_FACTOR, for a repository the
 * real `init --passphrase` made: the product still wraps at 2^18 (init pays
 * that once, this pays one more unwrap), and every later command pays ~1 ms.
 * The identity inside is unchanged, so everything already encrypted to it,
 * and the content key sealed to it, still opens.
 */
export async function lightenPassphrase(repo: string, passphrase: string): Promise<void> {
  const storage = openStorage(repo);
  const wrapped = await collectStream(await storage.get(WRAPPED_IDENTITY));
  const identity = await collectStream(Readable.from([wrapped]).pipe(decryptStream([{ kind: 'passphrase', passphrase }], { what: WRAPPED_IDENTITY })));
  await storage.put(WRAPPED_IDENTITY, Readable.from([await wrapLight(identity, passphrase)]));
}
