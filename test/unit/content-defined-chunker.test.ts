import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { ContentDefinedChunker, type ChunkSizes } from '../../src/pipeline/content-defined-chunker.js';

const SIZES: ChunkSizes = { min: 2048, average: 8192, max: 32768 };
const SEED = Buffer.from('a repository seed');

/** Deterministic pseudo-random bytes (a fixed-key counter stream). */
function bytes(length: number, label: string): Buffer {
  const out = Buffer.alloc(length);
  for (let block = 0, at = 0; at < length; block++, at += 32) createHash('sha256').update(label).update(String(block)).digest().copy(out, at);
  return out;
}

/** Chunks a buffer written in pieces of the given sizes (cycled), then the final cut. */
function chunk(data: Buffer, pieces: number[] = [65536], sizes = SIZES, seed: Uint8Array = SEED): Buffer[] {
  const chunker = new ContentDefinedChunker(sizes, seed);
  const out: Buffer[] = [];
  for (let at = 0, k = 0; at < data.length; k++) {
    const size = pieces[k % pieces.length]!;
    out.push(...chunker.write(data.subarray(at, at + size)));
    at += size;
  }
  const last = chunker.cut();
  if (last) out.push(last);
  return out;
}

const ids = (chunks: Buffer[]) => chunks.map((c) => createHash('sha256').update(c).digest('hex'));

describe('ContentDefinedChunker', () => {
  const data = bytes(4 << 20, 'data');

  test('the chunks put together are the stream; every size within min..max (the last may be shorter)', () => {
    const chunks = chunk(data);
    assert.ok(Buffer.concat(chunks).equals(data));
    for (const c of chunks.slice(0, -1)) assert.ok(c.length >= SIZES.min && c.length <= SIZES.max, `size ${c.length}`);
    const mean = data.length / chunks.length;
    assert.ok(mean > SIZES.average * 0.7 && mean < SIZES.average * 1.5, `mean chunk size ${mean.toFixed(0)} near ${SIZES.average}`);
  });

  test('the cuts do not depend on how the stream was split into writes', () => {
    const whole = ids(chunk(data, [data.length]));
    assert.deepEqual(ids(chunk(data, [1, 7, 4093, 65536, 3])), whole);
    assert.deepEqual(ids(chunk(data, [SIZES.max])), whole);
  });

  test('bytes inserted in the middle change only the chunks near them', () => {
    const edited = Buffer.concat([data.subarray(0, 2_000_000), bytes(300, 'insert'), data.subarray(2_000_000)]);
    const before = new Set(ids(chunk(data)));
    const after = ids(chunk(edited));
    const fresh = after.filter((id) => !before.has(id));
    assert.ok(fresh.length >= 1 && fresh.length <= 3, `${fresh.length} new chunk(s) of ${after.length}`);
  });

  test('another seed cuts elsewhere (sizes reveal nothing across repositories)', () => {
    const a = chunk(data).map((c) => c.length);
    const b = chunk(data, undefined, SIZES, Buffer.from('another seed')).map((c) => c.length);
    assert.notDeepEqual(a, b);
  });

  test('cut() ends a chunk where the caller says, and chunking after it starts afresh', () => {
    const tableA = bytes(100_000, 'a');
    const tableB = bytes(100_000, 'b');
    const run = (prefix: Buffer) => {
      const chunker = new ContentDefinedChunker(SIZES, SEED);
      const out = [...chunker.write(prefix), chunker.cut()!, ...chunker.write(tableB)];
      const last = chunker.cut();
      return ids(last ? [...out, last] : out);
    };
    // whatever happens to table A, table B's chunks are the same
    const one = run(tableA);
    const two = run(Buffer.concat([tableA, bytes(5, 'x')]));
    const tail = (list: string[]) => list.slice(list.length - ids(chunk(tableB)).length);
    assert.deepEqual(tail(one), ids(chunk(tableB)));
    assert.deepEqual(tail(two), ids(chunk(tableB)));
    assert.equal(new ContentDefinedChunker(SIZES, SEED).cut(), undefined, 'nothing written: no chunk');
  });

  test('a stream of one repeated byte is cut at max', () => {
    const chunks = chunk(Buffer.alloc(100_000, 0));
    assert.deepEqual(chunks.slice(0, -1).map((c) => c.length), [SIZES.max, SIZES.max, SIZES.max]);
  });

  test('bad sizes are refused', () => {
    assert.throws(() => new ContentDefinedChunker({ min: 10, average: 8, max: 100 }, SEED), RangeError);
  });
});
