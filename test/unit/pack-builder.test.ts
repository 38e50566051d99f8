import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { describe, test } from 'node:test';
import { nativeChunkCodec } from '../../src/pipeline/zstd.js';
import { PackBuilder, readPackEntries } from '../../src/repository/content-store/pack-file.js';

const id = (n: number) => createHash('sha256').update(String(n)).digest();
const joinedParts = (parts: Buffer[]) => Buffer.concat(parts);

/** The pack layout as the builder wrote it before it had a buffer: the blobs one after the other, then the header. */
function expectedPack(blobs: { id: Buffer; blob: Buffer; raw: number }[]): Buffer {
  const header = Buffer.alloc(blobs.length * 44 + 12);
  let offset = 0;
  blobs.forEach((b, i) => {
    b.id.copy(header, i * 44);
    header.writeUInt32LE(offset, i * 44 + 32);
    header.writeUInt32LE(b.blob.length, i * 44 + 36);
    header.writeUInt32LE(b.raw, i * 44 + 40);
    offset += b.blob.length;
  });
  header.writeUInt32LE(blobs.length * 44, header.length - 12);
  Buffer.from('PGKPACK1').copy(header, header.length - 8);
  return Buffer.concat([...blobs.map((b) => b.blob), header]);
}

describe('PackBuilder', () => {
  test('blobs added or compressed in place make the same pack, byte for byte', () => {
    const codec = nativeChunkCodec(3)!;
    const chunks = Array.from({ length: 40 }, (_, i) => (i % 2 ? randomBytes(1000 + i * 97) : Buffer.alloc(5000 + i, i)));
    const byCopy = new PackBuilder(1 << 16);
    const inPlace = new PackBuilder(1 << 16);
    const blobs = chunks.map((chunk, i) => {
      const room = Buffer.alloc(codec.bound(chunk.length));
      const blob = room.subarray(0, codec.compressInto(room, chunk));
      byCopy.add(id(i), blob, chunk.length);
      const entry = inPlace.addWith(id(i), chunk.length, codec.bound(chunk.length), (room) => codec.compressInto(room, chunk));
      assert.equal(entry.length, blob.length);
      return { id: id(i), blob, raw: chunk.length };
    });
    const expected = expectedPack(blobs);
    const a = joinedParts(byCopy.finish().parts);
    const b = joinedParts(inPlace.finish().parts);
    assert.deepEqual(a, expected);
    assert.deepEqual(b, expected);
    assert.deepEqual(
      readPackEntries(b).map((e) => e.rawLength),
      chunks.map((c) => c.length),
    );
  });

  test('a released buffer serves the next pack; one not released is never shared', () => {
    const target = 4096 + 13; // a size of its own: no other test's pool
    const first = new PackBuilder(target);
    first.add(id(1), Buffer.alloc(100, 1), 100);
    const held = first.finish().parts[0]!;
    // the first pack is still being written: a second builder must get other memory
    const second = new PackBuilder(target);
    second.add(id(2), Buffer.alloc(100, 2), 100);
    const other = second.finish().parts[0]!;
    assert.notEqual(other.buffer, held.buffer);
    assert.deepEqual(held, Buffer.alloc(100, 1), 'the pack not yet released was overwritten');
    first.release();
    const third = new PackBuilder(target);
    third.add(id(3), Buffer.alloc(100, 3), 100);
    assert.equal(third.finish().parts[0]!.buffer, held.buffer, 'the released buffer was not reused');
    // released twice is harmless: the builder forgets its buffer
    first.release();
    assert.deepEqual(other, Buffer.alloc(100, 2));
  });

  test('a blob larger than the pooled buffer moves the pack to a larger buffer, blobs kept', () => {
    const builder = new PackBuilder(1024);
    const small = randomBytes(900);
    const large = randomBytes(600 << 10);
    builder.add(id(1), small, 900);
    builder.add(id(2), large, large.length);
    const { parts, entries } = builder.finish();
    assert.deepEqual(joinedParts(parts), expectedPack([
      { id: id(1), blob: small, raw: 900 },
      { id: id(2), blob: large, raw: large.length },
    ]));
    assert.equal(entries[1]!.offset, 900);
    builder.release();
  });

  test('a write that throws leaves the pack as it was', () => {
    const builder = new PackBuilder(1 << 12);
    builder.add(id(1), Buffer.alloc(10, 7), 10);
    assert.throws(() => builder.addWith(id(2), 10, 64, () => {
      throw new Error('compression failed');
    }));
    assert.throws(() => builder.addWith(id(3), 10, 8, () => 9), RangeError);
    assert.equal(builder.count, 1);
    assert.deepEqual(joinedParts(builder.finish().parts), expectedPack([{ id: id(1), blob: Buffer.alloc(10, 7), raw: 10 }]));
  });
});
