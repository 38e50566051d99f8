import { Readable } from 'node:stream';
import { decryptStream, encryptStream } from '../../src/pipeline/age.js';
import { WRAPPED_IDENTITY } from '../../src/repository/repository-keys.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream } from '../../src/storage/storage.js';

/**
 * The scrypt work factor of a test's re-wrapped identity: 2^10 costs about a
 * millisecond, where the product's 2^18 costs about 0.8 CPU-seconds for every
 * command that opens a passphrase repository.
 */
export const LIGHT_WORK_FACTOR = 10;

/**
 * Re-wraps a passphrase repository's identity (keys/identity.age) with the
 * same passphrase at a low scrypt work factor, through pgkeep's own age code.
 * For tests whose subject is what a passphrase repository does, not the work
 * factor: the product still wraps at 2^18 (init pays that once, this pays one
 * more unwrap), and every later command that unwraps pays ~1 ms instead.
 * The identity inside is unchanged, so everything already encrypted to it,
 * and the content key sealed to it, still opens; age reads any work factor.
 */
export async function lightenPassphrase(repo: string, passphrase: string): Promise<void> {
  const storage = openStorage(repo);
  const wrapped = await collectStream(await storage.get(WRAPPED_IDENTITY));
  const identity = await collectStream(Readable.from([wrapped]).pipe(decryptStream([{ kind: 'passphrase', passphrase }], { what: WRAPPED_IDENTITY })));
  const light = await collectStream(Readable.from([identity]).pipe(encryptStream([{ kind: 'passphrase', passphrase, workFactor: LIGHT_WORK_FACTOR }])));
  await storage.put(WRAPPED_IDENTITY, Readable.from([light]));
}
