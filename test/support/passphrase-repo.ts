import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { encryptStream, formatIdentityFile, generateIdentity } from '../../src/pipeline/age.js';
import { collectStream } from '../../src/storage/storage.js';
import { WRAPPED_IDENTITY } from '../../src/repository/repository-keys.js';
import { runCommand } from './run-command.js';

/**
 * A low scrypt work factor for wrapped identities in tests that are not about
 * the work factor: `init --encrypt` with a passphrase wraps at age's default
 * 18 (2^18 scrypt, about 0.75 s of CPU and 256 MiB), and every command that
 * opens the repository with its passphrase pays that again. The work factor
 * travels in the wrapped file, so readers pay what it says.
 */
export const TEST_WORK_FACTOR = 10;

/**
 * Creates, at the local folder `repo`, the passphrase repository that
 * `pgkeep init --repo REPO --encrypt` with PGKEEP_PASSPHRASE makes, but with
 * its identity wrapped at TEST_WORK_FACTOR: the real init with a fresh
 * identity's public key as recipient (a deduplicating repository unless
 * `plain`), then the two things a passphrase init does besides, done by hand:
 * the identity stored wrapped with the passphrase (keys/identity.age) and
 * pgkeep.json's `encryption.passphrase: true`. Tests of init itself, or of the
 * work factor, use the command.
 */
export async function initPassphraseRepo(repo: string, passphrase: string, options: { plain?: boolean; env?: Record<string, string | undefined> } = {}): Promise<void> {
  const keys = generateIdentity();
  const init = await runCommand(['init', '--repo', repo, '--encrypt', '--recipient', keys.publicKey, ...(options.plain ? ['--plain'] : [])], { env: options.env });
  assert.equal(init.code, 0, init.stderr);
  const wrapped = await collectStream(Readable.from([Buffer.from(formatIdentityFile(keys))]).pipe(encryptStream([{ kind: 'passphrase', passphrase, workFactor: TEST_WORK_FACTOR }])));
  await mkdir(path.join(repo, path.dirname(WRAPPED_IDENTITY)), { recursive: true });
  await writeFile(path.join(repo, WRAPPED_IDENTITY), wrapped, { flag: 'wx' });
  const infoFile = path.join(repo, 'pgkeep.json');
  const info = JSON.parse(await readFile(infoFile, 'utf8'));
  assert.deepEqual(info.encryption, { method: 'age', recipients: [keys.publicKey], passphrase: false });
  info.encryption.passphrase = true;
  await writeFile(infoFile, `${JSON.stringify(info, null, 2)}\n`);
}
