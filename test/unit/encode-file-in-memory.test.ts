import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable, Writable, type Duplex, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { decryptStream, generateIdentity } from '../../src/pipeline/age.js';
import { encodeFileInMemory, IN_MEMORY_LIMIT } from '../../src/pipeline/encode-file-in-memory.js';
import { cliZstd, nativeZstd, useZstdProgram } from '../../src/pipeline/zstd.js';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** ~3 MiB that zstd can and cannot compress, not aligned to age's 64 KiB chunks or zstd's 1 MiB jobs. */
function content(): Buffer {
  const parts: Buffer[] = [];
  for (let i = 0; i < 6; i++) {
    parts.push(randomBytes(200_000 + i * 777));
    parts.push(Buffer.from(`INSERT INTO t VALUES (${i}, 'row text that repeats');\n`.repeat(6000)));
  }
  return Buffer.concat(parts);
}

async function through(data: Buffer, ...stages: (Transform | Duplex)[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline([Readable.from([data]), ...stages, new Writable({ write: (chunk: Buffer, _e, cb) => (out.push(chunk), cb()) })]);
  return Buffer.concat(out);
}

describe('encodeFileInMemory (wal-push: one loop, no streams)', { skip: nativeZstd ? false : 'zstd-napi is not installed' }, () => {
  let dir: string;
  let file: string;
  const original = content();
  before(async () => {
    dir = await mkdtemp(path.join(tmpdir(), 'pgkeep-encode-'));
    file = path.join(dir, '000000010000000000000001');
    await writeFile(file, original);
  });
  after(() => rm(dir, { recursive: true, force: true }));

  it('stores a zstd frame the zstd program decodes, with the digests of the file and of the stored bytes', async () => {
    const encoded = (await encodeFileInMemory(file, { level: 1, encrypt: null, size: original.length }))!;
    assert.ok(encoded);
    assert.deepEqual(encoded.digests.raw, { size: original.length, sha256: sha(original) });
    assert.deepEqual(encoded.digests.stored, { size: encoded.data.length, sha256: sha(encoded.data) });
    assert.ok(encoded.data.length < original.length, `compressed: ${encoded.data.length} of ${original.length}`);
    assert.equal(sha(await through(encoded.data, cliZstd.decompressor())), sha(original));
  });

  it('encrypts with age after zstd: the identity opens it, and it decodes to the file', async () => {
    const keys = generateIdentity();
    const encoded = (await encodeFileInMemory(file, { level: 1, encrypt: [{ kind: 'x25519', publicKey: keys.publicKey }], size: original.length }))!;
    assert.match(encoded.data.subarray(0, 21).toString('latin1'), /^age-encryption\.org\/v1/);
    assert.equal(encoded.digests.raw.sha256, sha(original));
    assert.deepEqual(encoded.digests.stored, { size: encoded.data.length, sha256: sha(encoded.data) });
    const plain = await through(encoded.data, decryptStream([{ kind: 'x25519', secretKey: keys.secretKey }]), nativeZstd!.decompressor());
    assert.equal(sha(plain), sha(original));
  });

  it('declines (null) a file larger than the limit or larger than the size it was given, so the caller streams it', async () => {
    assert.equal(await encodeFileInMemory(file, { level: 1, encrypt: null, size: IN_MEMORY_LIMIT + 1 }), null);
    assert.equal(await encodeFileInMemory(file, { level: 1, encrypt: null, size: original.length - 1 }), null);
  });

  it('declines without zstd-napi (PGKEEP_ZSTD=cli, which the CLI turns into useZstdProgram)', async () => {
    useZstdProgram(true);
    try {
      assert.equal(await encodeFileInMemory(file, { level: 1, encrypt: null, size: original.length }), null);
    } finally {
      useZstdProgram(false);
    }
  });

  it('a missing file is FILE_NOT_FOUND naming it', async () => {
    const missing = path.join(dir, 'gone');
    await assert.rejects(encodeFileInMemory(missing, { level: 1, encrypt: null, size: 10 }), (error: unknown) => {
      assert.ok(error instanceof PgkeepError);
      assert.equal(error.code, 'FILE_NOT_FOUND');
      assert.match(error.message, /cannot read .*gone \(ENOENT\)/);
      return true;
    });
  });
});
