import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { ContentIndex, decodeIndexFile, encodeIndexFile, type IndexedPack } from '../../src/repository/content-store/content-index.js';

const id = (n: number, salt = '') => createHash('sha256').update(`${salt}${n}`).digest();

function pack(name: string, from: number, count: number, salt = ''): IndexedPack {
  return { pack: name, size: count * 100, kind: 'data', sealed: false, entries: Array.from({ length: count }, (_, i) => ({ id: id(from + i, salt), offset: i * 100, length: 100, rawLength: 400 })) };
}

describe('ContentIndex', () => {
  test('finds every one of 200,000 chunks in 200 packs (through many rehashes), and nothing else', () => {
    const index = new ContentIndex();
    for (let p = 0; p < 200; p++) index.addPack(pack(`p${p}`, p * 1000, 1000));
    assert.equal(index.chunkCount, 200_000);
    for (let n = 0; n < 200_000; n += 997) {
      const found = index.find(id(n));
      assert.deepEqual(found && { pack: found.pack, offset: found.entry.offset, id: found.entry.id.toString('hex') }, { pack: `p${Math.floor(n / 1000)}`, offset: (n % 1000) * 100, id: id(n).toString('hex') });
    }
    for (let n = 0; n < 1000; n++) assert.equal(index.has(id(n, 'absent')), false);
  });

  test('a chunk in two packs: found in the first; each pack still lists its own blobs', () => {
    const index = new ContentIndex();
    index.addPack(pack('a', 0, 10));
    index.addPack(pack('b', 5, 10));
    assert.equal(index.find(id(7))!.pack, 'a');
    assert.equal(index.find(id(12))!.pack, 'b');
    const packs = index.packEntries();
    assert.equal(packs.get('a')!.entries.length, 10);
    assert.equal(packs.get('b')!.entries.length, 10);
  });

  test('index files round-trip, and name their packs', () => {
    const packs = [pack('x', 0, 50), { ...pack('y', 50, 3), kind: 'list' as const, sealed: true }];
    const decoded = decodeIndexFile(encodeIndexFile(packs), 'test');
    assert.deepEqual(decoded, packs);
    const index = new ContentIndex();
    index.addFile('f1', decoded);
    assert.deepEqual(index.packsOf('f1'), ['x', 'y']);
    assert.equal(index.isSealed('y'), true);
    assert.equal(index.kindOf('y'), 'list');
  });

  test('a damaged index file is CHECKSUM_MISMATCH naming it', () => {
    const bytes = encodeIndexFile([pack('x', 0, 5)]);
    bytes[bytes.length >> 1]! ^= 0xff;
    assert.throws(() => decodeIndexFile(bytes, 'content/index/abc'), (e: any) => e.code === 'CHECKSUM_MISMATCH' && e.message.includes('content/index/abc'));
  });
});
