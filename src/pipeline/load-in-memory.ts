import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PgkeepError } from '../errors.js';
import { decryptStream, type AgeIdentity } from './age.js';
import { IN_MEMORY_LIMIT } from './encode-file-in-memory.js';
import { checkDigest, mismatch } from './hash-counter.js';
import { readError, requireIdentities, type ByteSource, type ObjectToLoad } from './load-stream.js';
import { nativeDecompressSync, nativeZstdAvailable } from './zstd.js';

/**
 * loadStream for a small object, in memory: read it whole (no more than the
 * recorded size), check the stored SHA-256, age -d when encrypted, zstd -d
 * into one buffer of the recorded raw size, check the raw SHA-256. The same
 * checks and errors as loadStream, without a stream per stage: the
 * counterpart of encodeFileInMemory, for wal-fetch (restore_command runs it
 * once per WAL segment during recovery).
 *
 * Resolves null when this path cannot be used (zstd-napi missing, or the
 * object recorded larger than IN_MEMORY_LIMIT): the caller streams.
 */
export async function loadInMemory(
  storage: ByteSource,
  key: string,
  object: ObjectToLoad,
  options: { identities?: AgeIdentity[] | undefined },
): Promise<Buffer | null> {
  if (object.stored.size > IN_MEMORY_LIMIT || object.raw.size > IN_MEMORY_LIMIT) return null;
  if (!nativeZstdAvailable()) return null;

  const what = `object ${object.name} (stored bytes)`;
  const stored = await readAtMost(storage, key, object.stored.size, what, object.name);
  checkDigest(stored, object.stored, what);
  const compressed = object.encryption ? await decrypt(stored, object.name, requireIdentities(object, options.identities)) : stored;
  let raw: Buffer;
  try {
    raw = nativeDecompressSync(compressed, object.raw.size)!;
  } catch (error) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `object ${object.name} is corrupt: zstd cannot decode it (${(error as Error).message})`, { cause: error });
  }
  checkDigest(raw, object.raw, `object ${object.name} (after decompression)`);
  return raw;
}

/** The object's bytes; an object longer than `expected` is corrupt, and is not read to its end. */
async function readAtMost(storage: ByteSource, key: string, expected: number, what: string, name: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  const input = await storage.get(key);
  try {
    for await (const chunk of input as AsyncIterable<Buffer>) {
      chunks.push(chunk);
      size += chunk.length;
      if (size > expected) {
        input.destroy();
        throw mismatch(what, `more than the ${expected} bytes recorded`);
      }
    }
  } catch (error) {
    if (error instanceof PgkeepError && error.code === 'CHECKSUM_MISMATCH') throw error;
    throw readError(name, error);
  }
  return Buffer.concat(chunks, size);
}

async function decrypt(stored: Buffer, name: string, identities: AgeIdentity[]): Promise<Buffer> {
  const chunks: Buffer[] = [];
  await pipeline(
    Readable.from([stored]),
    decryptStream(identities, { what: `object ${name}` }),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        callback();
      },
    }),
  );
  return Buffer.concat(chunks);
}
