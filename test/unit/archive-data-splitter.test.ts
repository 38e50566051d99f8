import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ArchiveDataSplitter } from '../../src/restore/archive-data-splitter.js';

// The data blocks of a custom archive as pg_dump -Fc -Z0 writes them
// (pg_backup_custom.c): a block type byte and the entry's dump id, then
// length-prefixed chunks ended by a zero length; ints are a sign byte and
// intSize bytes, least significant first.

const INT_SIZE = 4;
const int = (n: number) => {
  const b = Buffer.alloc(1 + INT_SIZE);
  b[0] = n < 0 ? 1 : 0;
  b.writeUInt32LE(Math.abs(n), 1);
  return b;
};
const chunk = (text: string | Buffer) => {
  const data = typeof text === 'string' ? Buffer.from(text) : text;
  return Buffer.concat([int(data.length), data]);
};
const tableBlock = (id: number, rows: string[]) => Buffer.concat([Buffer.from([1]), int(id), ...rows.map(chunk), chunk('\\.\n\n\n'), int(0)]);
const blobsBlock = (id: number) => Buffer.concat([Buffer.from([3]), int(id), int(910001), chunk(Buffer.from([0, 10, 13, 92])), int(0), int(910002), int(0), int(0)]);

function split(archive: Buffer, piece: number, loads: (id: number) => boolean, batchBytes: number) {
  const rows = new Map<number, { text: string; count: number; batches: number }>();
  const passed: Buffer[] = [];
  const splitter = new ArchiveDataSplitter(INT_SIZE, loads, {
    pass: (b) => passed.push(Buffer.from(b)),
    rows: (id, data, count) => {
      const r = rows.get(id) ?? { text: '', count: 0, batches: 0 };
      rows.set(id, { text: r.text + data.toString(), count: r.count + count, batches: r.batches + 1 });
    },
  }, batchBytes);
  for (let i = 0; i < archive.length; i += piece) splitter.push(archive.subarray(i, i + piece));
  splitter.end();
  return { rows, passed: Buffer.concat(passed) };
}

const tableRows = Array.from({ length: 200 }, (_, i) => `${i}\tline\\nbreak \\\\ back\\tslash\t\\N\n`);
const archive = Buffer.concat([tableBlock(7, tableRows), blobsBlock(9), tableBlock(8, []), tableBlock(10, ['1\n', '2\n'])]);

test('rows come out whole, in order, without the COPY trailer, however the stream is cut; other blocks pass byte for byte', () => {
  for (const piece of [1, 2, 3, 5, 7, 64, 1000, archive.length]) {
    const { rows, passed } = split(archive, piece, (id) => id !== 10, 256);
    assert.equal(rows.get(7)!.text, tableRows.join(''), `piece ${piece}`);
    assert.equal(rows.get(7)!.count, 200);
    assert.ok(rows.get(7)!.batches > 10, 'a table bigger than a batch is cut into several');
    assert.equal(rows.get(8), undefined, 'an empty table hands on no batch');
    // the large objects and the entry not loaded here (10) pass on exactly
    assert.deepEqual(passed, Buffer.concat([blobsBlock(9), tableBlock(10, ['1\n', '2\n'])]));
  }
});

test('a row longer than a batch, or cut across chunks, still comes out whole', () => {
  const long = `${'x'.repeat(5000)}\n`;
  const block = Buffer.concat([Buffer.from([1]), int(3), chunk('a\tb'), chunk('c\n'), chunk(long), chunk('\\.\n\n\n'), int(0)]);
  const { rows } = split(block, 100, () => true, 64);
  assert.equal(rows.get(3)!.text, `a\tbc\n${long}`);
  assert.equal(rows.get(3)!.count, 2);
});

test('a 5-byte row is not taken for the trailer unless the block ends after it', () => {
  const block = Buffer.concat([Buffer.from([1]), int(4), chunk('1234\n'), chunk('\\.\n\n\n'), int(0), Buffer.from([1]), int(5), chunk('\\\\\n\n\n'), chunk('abcd\n'), chunk('\\.\n\n\n'), int(0)]);
  const { rows } = split(block, 3, () => true, 1024);
  assert.equal(rows.get(4)!.text, '1234\n');
  assert.equal(rows.get(5)!.text, '\\\\\n\n\nabcd\n');
  assert.equal(rows.get(5)!.count, 4);
});

test('an archive cut inside a block, or an unknown block type, is refused', () => {
  assert.throws(() => split(archive.subarray(0, archive.length - 3), 50, () => true, 256), /ended inside a data block/);
  assert.throws(() => split(Buffer.from([2, 0, 0, 0, 0, 0]), 10, () => true, 256), /unexpected data block type 2/);
  const unterminated = Buffer.concat([Buffer.from([1]), int(5), chunk('no newline'), int(0)]);
  assert.throws(() => split(unterminated, 10, () => true, 256), /does not end with a whole row/);
});

test('random tables, cut anywhere: the rows come out exactly (the WebAssembly row copier and the general path hand over at every kind of boundary)', () => {
  let seed = 12345;
  const random = (n: number) => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    return seed % n;
  };
  for (let round = 0; round < 40; round++) {
    const rows: string[] = [];
    const chunks: Buffer[] = [];
    for (let r = random(300); r > 0; r--) {
      // short rows, 5-byte rows (the trailer's length), rows past the copier's per-row loop, rows longer than a batch
      const length = [4, random(120) + 1, random(2000) + 1, random(9000) + 1][random(4)]!;
      const row = `${'x'.repeat(length - 1)}\n`.replace(/^x/, String(r % 10));
      rows.push(row);
      // a row in one chunk, or cut across two
      const at = random(3) === 0 ? 1 + random(row.length) : row.length; // never an empty chunk: a length of 0 ends the block
      chunks.push(chunk(row.slice(0, at)));
      if (at < row.length) chunks.push(chunk(row.slice(at)));
    }
    const block = Buffer.concat([Buffer.from([1]), int(7), ...chunks, chunk('\\.\n\n\n'), int(0), blobsBlock(9)]);
    const piece = [1, 7, 100, 4096, 65536, block.length][random(6)]!;
    const batch = [64, 1024, 4096][random(3)]!;
    const { rows: out, passed } = split(block, piece, (id) => id === 7, batch);
    assert.equal(out.get(7)?.text ?? '', rows.join(''), `round ${round}, piece ${piece}, batch ${batch}`);
    assert.equal(out.get(7)?.count ?? 0, rows.length);
    assert.deepEqual(passed, blobsBlock(9));
  }
});

test('a negative chunk length amid the rows is refused', () => {
  const bad = Buffer.concat([Buffer.from([1]), int(3), chunk('1\n'), chunk('2\n'), int(-7), chunk('3\n'), chunk('\\.\n\n\n'), int(0)]);
  for (const piece of [1, 1000]) assert.throws(() => split(bad, piece, () => true, 256), /data chunk length -7 out of range/);
});

test('batches given back with recycle() are reused, and a batch still held is never written into', () => {
  const held: { data: Buffer; copy: string }[] = [];
  const buffers = new Set<ArrayBufferLike>();
  let text = '';
  const splitter: ArchiveDataSplitter = new ArchiveDataSplitter(INT_SIZE, () => true, {
    pass: () => assert.fail('nothing passes'),
    rows: (_id, data) => {
      buffers.add(data.buffer);
      text += data.toString();
      // every other batch is held to the end (a connection still writing it), the rest given back at once
      if (held.length < 5 && buffers.size % 2 === 0) held.push({ data, copy: data.toString() });
      else splitter.recycle(data);
    },
  }, 256);
  const block = tableBlock(7, tableRows);
  for (let i = 0; i < block.length; i += 700) splitter.push(block.subarray(i, i + 700));
  splitter.end();
  assert.equal(text, tableRows.join(''));
  for (const h of held) assert.equal(h.data.toString(), h.copy, 'a held batch was overwritten');
  // 200 rows of ~40 bytes in 256-byte batches: ~35 batches in a handful of buffers
  assert.ok(buffers.size <= held.length + 2, `${buffers.size} buffers for the batches`);
});
