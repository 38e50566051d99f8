import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { ContentDefinedChunker, type ChunkSizes } from '../../src/pipeline/content-defined-chunker.js';
import { ReferenceChunker } from '../support/reference-chunker.js';

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

/** A seeded xorshift32 stream: fast pseudo-random numbers for many long inputs. */
function prng(seed: number): () => number {
  let x = seed | 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return x >>> 0;
  };
}

/**
 * Data of several kinds in turns, so every path of the chunker runs: random
 * bytes (cuts by the masks), runs of one byte (cuts at max: a constant byte
 * drives the hash to a fixed point), and repeated dump-like text.
 */
function mixed(length: number, random: () => number): Buffer {
  const out = Buffer.alloc(length);
  let at = 0;
  while (at < length) {
    const span = Math.min(length - at, 1 + (random() % 200_000));
    switch (random() % 3) {
      case 0:
        for (let i = 0; i < span; i++) out[at + i] = random() & 0xff;
        break;
      case 1:
        out.fill(random() & 0xff, at, at + span);
        break;
      default: {
        const line = Buffer.from(`${random()}\tcustomer ${random() % 1000}\tdelivered\t2026-12-05\n`);
        for (let i = 0; i < span; i++) out[at + i] = line[i % line.length]!;
      }
    }
    at += span;
  }
  return out;
}

describe('the WebAssembly chunker cuts exactly where the JavaScript reference does', () => {
  const SIZE_SETS: ChunkSizes[] = [
    { min: 64, average: 256, max: 1024 },
    { min: 100, average: 300, max: 5000 },
    { min: 2048, average: 8192, max: 32768 },
    { min: 4096, average: 16384, max: 65536 },
    { min: 4000, average: 16000, max: 16001 },
    { min: 65536, average: 262144, max: 1048576 },
  ];

  /** Feeds both chunkers the same writes and cuts; returns the chunks of each. */
  function both(data: Buffer, sizes: ChunkSizes, seed: Buffer, random: () => number): { wasm: Buffer[]; reference: Buffer[]; writes: number; cuts: number } {
    const wasm = new ContentDefinedChunker(sizes, seed);
    const reference = new ReferenceChunker(sizes, seed);
    const out = { wasm: [] as Buffer[], reference: [] as Buffer[], writes: 0, cuts: 0 };
    for (let at = 0; at < data.length; ) {
      // 1 byte, odd small sizes, around min and max, more than max, more than one window of the module
      const kind = random() % 6;
      const size = [1, 1 + (random() % 97), sizes.min - 1 + (random() % 3), sizes.max + 1 + (random() % 5000), 65536, 300_000 + (random() % 400_000)][kind]!;
      const piece = data.subarray(at, at + size);
      out.wasm.push(...wasm.write(piece));
      out.reference.push(...reference.write(piece));
      out.writes++;
      at += piece.length;
      // now and then the caller ends the chunk (a table's data starts)
      if (random() % 9 === 0) {
        const a = wasm.cut();
        const b = reference.cut();
        if (a) out.wasm.push(a);
        if (b) out.reference.push(b);
        out.cuts++;
      }
    }
    const a = wasm.cut();
    const b = reference.cut();
    if (a) out.wasm.push(a);
    if (b) out.reference.push(b);
    return out;
  }

  for (const sizes of SIZE_SETS) {
    test(`sizes ${sizes.min}/${sizes.average}/${sizes.max}: many seeds, data and splits`, () => {
      let chunks = 0;
      for (let round = 0; round < 6; round++) {
        const random = prng(0x9e3779b9 * (round + 1) + sizes.average);
        const data = mixed(1_500_000 + (random() % 1_000_000), random);
        const seed = Buffer.from(`seed ${round} ${sizes.average}`);
        const { wasm, reference, writes, cuts } = both(data, sizes, seed, random);
        assert.equal(wasm.length, reference.length, `round ${round}: ${wasm.length} chunks against ${reference.length} (${writes} writes, ${cuts} cuts)`);
        for (let k = 0; k < wasm.length; k++) assert.ok(wasm[k]!.equals(reference[k]!), `round ${round}: chunk ${k} differs (${wasm[k]!.length} against ${reference[k]!.length} bytes)`);
        assert.ok(Buffer.concat(wasm).equals(data));
        chunks += wasm.length;
      }
      assert.ok(chunks > 20, `${chunks} chunks compared`);
    });
  }

  test('a whole stream in one write, in 1-byte writes, and in windows of the module: the same cuts as the reference', () => {
    const random = prng(7);
    const data = mixed(700_000, random);
    const expected = (() => {
      const r = new ReferenceChunker(SIZES, SEED);
      const out = r.write(data);
      return [...out, r.cut()!].map((c) => c.length);
    })();
    for (const split of [data.length, 1, 262_144, 262_145, 3]) {
      const chunker = new ContentDefinedChunker(SIZES, SEED);
      const out: Buffer[] = [];
      for (let at = 0; at < data.length; at += split) out.push(...chunker.write(data.subarray(at, at + split)));
      const last = chunker.cut();
      if (last) out.push(last);
      assert.deepEqual(out.map((c) => c.length), expected, `writes of ${split} bytes`);
    }
  });

  test('writePieces/cutPieces: the same chunks as views of the written buffers, not joined', () => {
    const random = prng(23);
    const data = mixed(900_000, random);
    const reference = new ReferenceChunker(SIZES, SEED);
    const chunker = new ContentDefinedChunker(SIZES, SEED);
    const expected: Buffer[] = [];
    const got: Buffer[][] = [];
    for (let at = 0; at < data.length; ) {
      const size = 1 + (random() % 70_000);
      // each write a buffer of its own, as a pipe's pieces are
      const piece = Buffer.from(data.subarray(at, at + size));
      expected.push(...reference.write(piece));
      got.push(...chunker.writePieces(piece));
      at += size;
    }
    expected.push(reference.cut()!);
    got.push(chunker.cutPieces()!);
    assert.equal(got.length, expected.length);
    got.forEach((pieces, k) => assert.ok(Buffer.concat(pieces).equals(expected[k]!), `chunk ${k}`));
    assert.ok(got.some((pieces) => pieces.length > 1), 'some chunks span two writes');
    assert.equal(chunker.cutPieces(), undefined);
  });

  test('chunkers of different seeds side by side keep their own state', () => {
    const random = prng(11);
    const data = mixed(400_000, random);
    const a = new ContentDefinedChunker(SIZES, Buffer.from('one'));
    const b = new ContentDefinedChunker(SIZES, Buffer.from('two'));
    const ra = new ReferenceChunker(SIZES, Buffer.from('one'));
    const rb = new ReferenceChunker(SIZES, Buffer.from('two'));
    const out = { a: [] as number[], b: [] as number[], ra: [] as number[], rb: [] as number[] };
    for (let at = 0; at < data.length; at += 5000) {
      const piece = data.subarray(at, at + 5000);
      out.a.push(...a.write(piece).map((c) => c.length));
      out.b.push(...b.write(piece).map((c) => c.length));
      out.ra.push(...ra.write(piece).map((c) => c.length));
      out.rb.push(...rb.write(piece).map((c) => c.length));
    }
    assert.deepEqual(out.a, out.ra);
    assert.deepEqual(out.b, out.rb);
    assert.notDeepEqual(out.a, out.b);
  });
});
