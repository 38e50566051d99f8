import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { generateIdentity } from '../../src/pipeline/age.js';
import { encodeFileInMemory, type EncodedFile } from '../../src/pipeline/encode-file-in-memory.js';
import { loadInMemory } from '../../src/pipeline/load-in-memory.js';
import { nativeChunkCodec, nativeDecompressSync, nativeZstd } from '../../src/pipeline/zstd.js';
import { PosixStorage } from '../../src/storage/posix-storage.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const original = Buffer.concat([randomBytes(300_000), Buffer.from('WAL record text\n'.repeat(100_000)), randomBytes(77_777)]);

function rejectsWith(code: string, pattern: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof PgkeepError, String(error));
    assert.equal(error.code, code);
    assert.match(error.message, pattern);
    return true;
  };
}

describe('loadInMemory (wal-fetch: checked, in memory)', { skip: nativeZstd ? false : 'zstd-napi is not installed' }, () => {
  let dir: string;
  let storage: PosixStorage;
  const keys = generateIdentity();
  let plain: EncodedFile;
  let sealed: EncodedFile;
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'pgkeep-load-'));
    storage = new PosixStorage(path.join(dir, 'repo'));
    const file = path.join(dir, 'segment');
    await writeFile(file, original);
    plain = (await encodeFileInMemory(file, { level: 1, encrypt: null, size: original.length }))!;
    sealed = (await encodeFileInMemory(file, { level: 1, encrypt: [{ kind: 'x25519', publicKey: keys.publicKey }], size: original.length }))!;
    await storage.putIfAbsent('plain.zst', plain.data);
    await storage.putIfAbsent('sealed.zst.age', sealed.data);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  const object = (encoded: EncodedFile, encrypted: boolean) => ({
    name: 'seg',
    raw: encoded.digests.raw,
    stored: encoded.digests.stored,
    encryption: encrypted ? { method: 'age' as const, recipients: [keys.publicKey] } : null,
  });

  it('returns the original bytes, plain and encrypted', async () => {
    assert.equal(sha((await loadInMemory(storage, 'plain.zst', object(plain, false), {}))!), sha(original));
    const identities = [{ kind: 'x25519' as const, secretKey: keys.secretKey }];
    assert.equal(sha((await loadInMemory(storage, 'sealed.zst.age', object(sealed, true), { identities }))!), sha(original));
  });

  it('a damaged stored byte is CHECKSUM_MISMATCH on the stored bytes', async () => {
    const damaged = Buffer.from(plain.data);
    damaged[damaged.length >> 1] = damaged[damaged.length >> 1]! ^ 0x01;
    await storage.putIfAbsent('damaged.zst', damaged);
    await assert.rejects(loadInMemory(storage, 'damaged.zst', object(plain, false), {}), rejectsWith('CHECKSUM_MISMATCH', /object seg \(stored bytes\) is corrupt: SHA-256/));
  });

  it('an object longer than recorded is corrupt, and is not read to its end', async () => {
    await storage.putIfAbsent('longer.zst', Buffer.concat([plain.data, randomBytes(5 << 20)]));
    await assert.rejects(loadInMemory(storage, 'longer.zst', object(plain, false), {}), rejectsWith('CHECKSUM_MISMATCH', new RegExp(`object seg \\(stored bytes\\) is corrupt: more than the ${plain.data.length} bytes recorded`)));
  });

  it('stored bytes that match their record but are not a whole zstd frame: zstd cannot decode it', async () => {
    const truncated = plain.data.subarray(0, plain.data.length - 100);
    await storage.putIfAbsent('truncated.zst', truncated);
    const record = { ...object(plain, false), stored: { size: truncated.length, sha256: sha(truncated) } };
    await assert.rejects(loadInMemory(storage, 'truncated.zst', record, {}), rejectsWith('CHECKSUM_MISMATCH', /zstd cannot decode it/));
  });

  it('more raw bytes than recorded: zstd cannot decode it into the recorded size', async () => {
    const record = { ...object(plain, false), raw: { size: original.length - 1, sha256: sha(original) } };
    await assert.rejects(loadInMemory(storage, 'plain.zst', record, {}), rejectsWith('CHECKSUM_MISMATCH', /more than the \d+ bytes expected/));
  });

  it('an encrypted object without identities names what to pass', async () => {
    await assert.rejects(loadInMemory(storage, 'sealed.zst.age', object(sealed, true), {}), rejectsWith('CONFIG_INVALID', /encrypted: pass --identity/));
  });

  it('nativeDecompressSync: several frames in a row decode to their concatenation; bytes that are not zstd throw', () => {
    const twice = nativeDecompressSync(Buffer.concat([plain.data, plain.data]), original.length * 2)!;
    assert.equal(sha(twice), sha(Buffer.concat([original, original])));
    assert.throws(() => nativeDecompressSync(Buffer.from('not zstd at all'), 100));
  });

  it('nativeDecompressSync: the output grows to what the data holds, not to the limit; past the limit it throws', () => {
    // 8 MiB of zeros compress to a few hundred bytes: far past the first guess, far below the limit
    const zeros = Buffer.alloc(8 << 20);
    const codec = nativeChunkCodec(3)!;
    const room = Buffer.alloc(codec.bound(zeros.length));
    const compressed = room.subarray(0, codec.compressInto(room, zeros));
    const out = nativeDecompressSync(compressed, 1 << 30)!;
    assert.equal(out.length, zeros.length);
    assert.ok(out.equals(zeros));
    assert.ok(out.buffer.byteLength <= 2 * zeros.length, `the output reserved ${out.buffer.byteLength} bytes for ${zeros.length}`);
    assert.throws(() => nativeDecompressSync(compressed, zeros.length - 1), /more than the/);
    assert.equal(nativeDecompressSync(compressed, zeros.length)!.length, zeros.length);
  });
});
