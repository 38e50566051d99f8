import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { loadStream } from '../../src/pipeline/load-stream.js';
import { cliZstd, nativeZstd, type ZstdCodec } from '../../src/pipeline/zstd.js';
import type { ObjectToLoad } from '../../src/pipeline/load-stream.js';
import { PosixStorage } from '../../src/storage/posix-storage.js';

/**
 * Decompression memory must not depend on the compression ratio. Zeros are the
 * worst case: zstd stores 1 GiB of them in ~17 KB (~30,000×), so a decompressor
 * that expands a whole 1 MiB read before honouring backpressure would need
 * gigabytes. These tests bound memory, not time. 512 MiB of output is 2.5
 * times the bound: a decompressor that held its output would cross it (and
 * 1 GiB cost this file ~3 CPU-s more for no other finding).
 */

const MiB = 1 << 20;
const RAW_SIZE = 512 * MiB; // 512 MiB of zeros
const FRAME_RAW = 64 * MiB; // compressed once, the frame is repeated (a zstd stream may hold many frames)
const RSS_BOUND = 200 * MiB;

const codecs: ZstdCodec[] = [cliZstd, nativeZstd].filter((c): c is ZstdCodec => c !== null);

let work: string;
let storage: PosixStorage;
let object: ObjectToLoad & { role: string; compression: string };

async function compress(codec: ZstdCodec, data: Buffer): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    Readable.from([data]),
    codec.compressor(),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out.push(chunk);
        callback();
      },
    }),
  );
  return Buffer.concat(out);
}

/** Like a pipe into a child process: each write completes on a later turn of the event loop. */
function slowSink(): Writable {
  return new Writable({
    highWaterMark: MiB,
    write(_chunk, _encoding, callback) {
      setImmediate(callback);
    },
  });
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'pgkeep-decompress-memory-'));
  storage = new PosixStorage(work);
  const zeros = Buffer.alloc(FRAME_RAW);
  const frame = await compress(cliZstd, zeros);
  const stored = Buffer.concat(Array.from({ length: RAW_SIZE / FRAME_RAW }, () => frame));
  await writeFile(path.join(work, 'zeros.zst'), stored);
  const raw = createHash('sha256');
  for (let i = 0; i < RAW_SIZE / FRAME_RAW; i++) raw.update(zeros);
  object = {
    name: 'zeros.zst',
    role: 'dump',
    raw: { size: RAW_SIZE, sha256: raw.digest('hex') },
    stored: { size: stored.length, sha256: createHash('sha256').update(stored).digest('hex') },
    compression: 'zstd',
    encryption: null,
  };
});

after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

describe('decompression memory is bounded whatever the compression ratio', () => {
  for (const codec of codecs) {
    it(`${codec.name}: 512 MiB of zeros (~30,000×) through loadStream into a slow sink stays under ${RSS_BOUND / MiB} MB RSS`, async () => {
      let rawBytes = 0;
      await loadStream(storage, 'zeros.zst', object, slowSink(), { codec, onRawBytes: (n) => (rawBytes = n) });
      assert.equal(rawBytes, RAW_SIZE, 'every byte came through, with both checksums checked');
      const peak = process.resourceUsage().maxRSS * 1024;
      assert.ok(peak < RSS_BOUND, `peak RSS ${(peak / MiB).toFixed(0)} MB (bound ${RSS_BOUND / MiB} MB)`);
    });
  }

  if (nativeZstd) {
    it('zstd-napi: the decompressor stops producing output while nobody reads it', async () => {
      const stored = await compress(nativeZstd!, Buffer.alloc(FRAME_RAW));
      const decompressor = nativeZstd!.decompressor();
      // The whole 64 MiB frame (a few KB) in one write, and no reader.
      decompressor.write(stored);
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.ok(decompressor.readableLength <= 2 * MiB, `buffered ${decompressor.readableLength} bytes of output without a reader`);
      // Reading resumes it, and the output is complete.
      let total = 0;
      decompressor.on('data', (chunk: Buffer) => (total += chunk.length));
      decompressor.end();
      await new Promise<void>((resolve, reject) => decompressor.on('end', resolve).on('error', reject));
      assert.equal(total, FRAME_RAW);
    });
  }
});
