import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, afterEach, describe, test } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { ChunkCompressPool, setChunkCompressThreads } from '../../src/pipeline/chunk-compress-pool.js';
import { ContentStore, type ContentSettings } from '../../src/repository/content-store/content-store.js';
import { ContentStreamWriter } from '../../src/repository/content-store/store-content-stream.js';
import { openStorage } from '../../src/storage/open-storage.js';

const folder = mkdtempSync(join(tmpdir(), 'pgkeep-compress-pool-'));
after(() => rmSync(folder, { recursive: true, force: true }));
afterEach(() => setChunkCompressThreads(undefined));
let repos = 0;

/** Deterministic bytes, some of them compressible (runs of a few letters), some not (SHA-256 blocks). */
function input(length: number, label: string): Buffer {
  const out = Buffer.alloc(length);
  for (let block = 0, at = 0; at < length; block++, at += 32) {
    const digest = createHash('sha256').update(`${label} ${block}`).digest();
    if (digest[0]! < 160) out.fill(97 + (digest[1]! % 4), at, at + 32);
    else digest.copy(out, at);
  }
  return out;
}

/** Every file of a repository folder, with the SHA-256 of its bytes, sorted. */
function files(root: string): string[] {
  const walk = (dir: string): string[] => readdirSync(dir).flatMap((name) => (statSync(join(dir, name)).isDirectory() ? walk(join(dir, name)) : [join(dir, name)]));
  return walk(root)
    .map((file) => `${file.slice(root.length)} ${createHash('sha256').update(readFileSync(file)).digest('hex')}`)
    .sort();
}

/**
 * Stores the same streams in a fresh repository with `threads` compression threads (0: on the main thread,
 * chunk after chunk, the code before the threads): what every file holds, the refs, and the totals.
 */
async function storeWith(threads: number, settings: ContentSettings, streams: Buffer[], hereBytes = 0): Promise<{ files: string[]; results: unknown[] }> {
  setChunkCompressThreads(threads, hereBytes);
  const root = join(folder, `r${repos++}`);
  // a small index cap: the session writes index files as it goes (every 100 entries), not only at commit
  const store = await ContentStore.open(openStorage(root), settings, { memoryEntries: 400 });
  const session = store.session();
  const results: unknown[] = [];
  try {
    for (const data of streams) {
      const writer = new ContentStreamWriter(session);
      // writes of 64 KiB, and a cut every 300,000 bytes (a table's data starting)
      for (let at = 0; at < data.length; at += 65_536) await writer.write(data.subarray(at, at + 65_536), [Math.ceil((at + 1) / 300_000) * 300_000]);
      results.push(await writer.end());
    }
    results.push(await session.commit());
  } finally {
    session.close();
    store.close();
  }
  return { files: files(root), results };
}

describe('chunks compressed on worker threads', () => {
  test('store the same bytes as compressed on the main thread: packs, index files, refs and totals', async () => {
    const first = input(3_000_000, 'first');
    // the second stream repeats most of the first (chunks found in the packs being filled, or still being compressed)
    const second = Buffer.concat([input(500_000, 'second'), first.subarray(200_000, 2_600_000)]);
    const configs: ContentSettings[] = [
      // small packs: many of them, written in the background, and index files as they go
      { sizes: { min: 1024, average: 4096, max: 16_384 }, seed: Buffer.from('pool seed'), idKey: undefined, recipients: [], identities: [], packTarget: 64 << 10, level: 3 },
      // keyed ids and a pack larger than the spill buffer's share of it; level 1
      { sizes: { min: 2048, average: 8192, max: 32_768 }, seed: Buffer.from('other seed'), idKey: Buffer.alloc(32, 5), recipients: [], identities: [], packTarget: 1 << 20, level: 1 },
    ];
    for (const settings of configs) {
      const reference = await storeWith(0, settings, [first, second]);
      assert.ok(reference.files.filter((f) => f.includes('/packs/')).length > 2, 'several packs');
      assert.ok(reference.files.filter((f) => f.includes('/index/')).length > 1, 'several index files');
      // [threads, new bytes compressed on the main thread before the threads take over]
      for (const [threads, hereBytes] of [[1, 0], [2, 0], [1, 700_000]] as const) {
        const threaded = await storeWith(threads, settings, [first, second], hereBytes);
        assert.deepEqual(threaded.files, reference.files, `${threads} thread(s), ${hereBytes} bytes first here: the files differ from those compressed on the main thread`);
        assert.deepEqual(threaded.results, reference.results, `${threads} thread(s), ${hereBytes} bytes first here: refs or totals differ`);
      }
    }
  });

  test('a failure in a thread is a PgkeepError with the cause; the pool goes on', async () => {
    const pool = new ChunkCompressPool(1, 3);
    try {
      const chunk = new SharedArrayBuffer(1000);
      // no room for the frame: the thread's compress throws
      await assert.rejects(pool.compress(chunk, [1000], new SharedArrayBuffer(10)), (error: unknown) => {
        assert.ok(error instanceof PgkeepError);
        assert.equal(error.code, 'INTERNAL');
        assert.match(error.message, /compressing chunks failed/);
        assert.ok(error.cause instanceof Error);
        return true;
      });
      const [frame] = await pool.compress(chunk, [1000], new SharedArrayBuffer(2000));
      assert.ok(frame! > 0 && frame! < 100);
    } finally {
      pool.close();
    }
  });

  test('close() ends the threads at once and fails what was in flight; idle threads end by themselves', async () => {
    const pool = new ChunkCompressPool(2, 3, 200);
    const big = new SharedArrayBuffer(8 << 20);
    Buffer.from(big).fill(1);
    const jobs = [pool.compress(big, [8 << 20], new SharedArrayBuffer(9 << 20)), pool.compress(big, [8 << 20], new SharedArrayBuffer(9 << 20))];
    assert.equal(pool.running, 2);
    pool.close();
    assert.equal(pool.running, 0);
    for (const job of jobs) await assert.rejects(job, (error: unknown) => error instanceof PgkeepError && error.code === 'ABORTED');
    await assert.rejects(pool.compress(big, [1], new SharedArrayBuffer(100)), PgkeepError);

    const idle = new ChunkCompressPool(1, 3, 200);
    await idle.compress(new SharedArrayBuffer(100), [100], new SharedArrayBuffer(200));
    assert.equal(idle.running, 1);
    await new Promise((resolve) => setTimeout(resolve, 400));
    assert.equal(idle.running, 0, 'the idle thread ended');
    // and starts again when needed
    await idle.compress(new SharedArrayBuffer(100), [100], new SharedArrayBuffer(200));
    idle.close();
  });

  test('a session closed while chunks are compressed (a backup given up) fails its writer and leaves no thread', async () => {
    setChunkCompressThreads(1, 0);
    const settings: ContentSettings = { sizes: { min: 1024, average: 4096, max: 16_384 }, seed: Buffer.from('close seed'), idKey: undefined, recipients: [], identities: [], packTarget: 1 << 20, level: 3 };
    const store = await ContentStore.open(openStorage(join(folder, `r${repos++}`)), settings);
    const session = store.session();
    const writer = new ContentStreamWriter(session);
    await writer.write(input(2_000_000, 'closed'));
    session.close();
    await assert.rejects(writer.end(), (error: unknown) => error instanceof PgkeepError && error.code === 'ABORTED');
    store.close();
  });
});
