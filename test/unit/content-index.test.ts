import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { binaryIndexFile, ContentIndex, decodeIndexFile, encodeIndexFile, encodeJsonIndexFile, type IndexedPack } from '../../src/repository/content-store/content-index.js';

const id = (n: number, salt = '') => createHash('sha256').update(`${salt}${n}`).digest();
/** Pack names are SHA-256 hex (the binary index stores them as 32 bytes). */
const packName = (name: string) => createHash('sha256').update(`pack ${name}`).digest('hex');

function pack(name: string, from: number, count: number, salt = ''): IndexedPack {
  return { pack: packName(name), size: count * 100, kind: 'data', sealed: false, entries: Array.from({ length: count }, (_, i) => ({ id: id(from + i, salt), offset: i * 100, length: 100, rawLength: 400 })) };
}

/** What an index holds, in a form to compare: every pack with its entries, and where each id is found. */
function contents(index: ContentIndex, ids: Buffer[]) {
  return { packs: [...index.packEntries()].sort(([a], [b]) => a.localeCompare(b)), found: ids.map((i) => index.find(i)) };
}

describe('ContentIndex', () => {
  test('finds every one of 200,000 chunks in 200 packs (through many rehashes), and nothing else', () => {
    const index = new ContentIndex();
    for (let p = 0; p < 200; p++) index.addPack(pack(`p${p}`, p * 1000, 1000));
    assert.equal(index.chunkCount, 200_000);
    for (let n = 0; n < 200_000; n += 997) {
      const found = index.find(id(n));
      assert.deepEqual(found && { pack: found.pack, offset: found.entry.offset, id: found.entry.id.toString('hex') }, { pack: packName(`p${Math.floor(n / 1000)}`), offset: (n % 1000) * 100, id: id(n).toString('hex') });
    }
    for (let n = 0; n < 1000; n++) assert.equal(index.has(id(n, 'absent')), false);
  });

  test('a chunk in two packs: found in the first; each pack still lists its own blobs', () => {
    const index = new ContentIndex();
    index.addPack(pack('a', 0, 10));
    index.addPack(pack('b', 5, 10));
    assert.equal(index.find(id(7))!.pack, packName('a'));
    assert.equal(index.find(id(12))!.pack, packName('b'));
    const packs = index.packEntries();
    assert.equal(packs.get(packName('a'))!.entries.length, 10);
    assert.equal(packs.get(packName('b'))!.entries.length, 10);
  });

  test('index files round-trip, and name their packs', () => {
    const packs = [pack('x', 0, 50), { ...pack('y', 50, 3), kind: 'list' as const, sealed: true, size: 2 ** 33 + 5 }];
    const stored = encodeIndexFile(packs);
    assert.equal(stored.subarray(0, 8).toString(), 'PGKINDEX');
    assert.equal(stored.length, 24 + 2 * 48 + 53 * 48 + 32);
    // the file's digest is its last 32 bytes
    assert.deepEqual(stored.subarray(-32), createHash('sha256').update(stored.subarray(0, -32)).digest());
    const decoded = decodeIndexFile(stored, 'test');
    assert.deepEqual(decoded, packs);
    const index = new ContentIndex();
    index.addIndexFile('f1', stored, 'test');
    assert.deepEqual(index.packsOf('f1'), [packName('x'), packName('y')]);
    assert.equal(index.isSealed(packName('y')), true);
    assert.equal(index.kindOf(packName('y')), 'list');
    assert.equal(index.packSize(packName('y')), 2 ** 33 + 5);
    assert.equal(index.chunkCount, 53);
  });

  test('version 1 (JSON) and version 2 files of the same packs build the same index, read together in any order', () => {
    const a = [pack('a', 0, 300), pack('b', 250, 300)];
    const b = [pack('c', 1000, 200), pack('a', 0, 300)];
    const ids = Array.from({ length: 1300 }, (_, n) => id(n));
    const built = new ContentIndex();
    built.addFile('f1', a);
    built.addFile('f2', b);
    for (const [first, second] of [
      [encodeJsonIndexFile(a), encodeIndexFile(b)],
      [encodeIndexFile(a), encodeJsonIndexFile(b)],
      [encodeIndexFile(a), encodeIndexFile(b)],
    ] as const) {
      assert.equal(binaryIndexFile(first, 'f1') === undefined, first[0] !== 0x50);
      const read = new ContentIndex();
      read.reserve(10);
      read.addIndexFile('f1', first, 'f1');
      read.addIndexFile('f2', second, 'f2');
      assert.deepEqual(contents(read, ids), contents(built, ids));
      assert.deepEqual(read.packsOf('f2'), [packName('c'), packName('a')]);
      assert.equal(read.has(id(5000)), false);
    }
  });

  test('a presized index holds 30,000 chunks read from 30 files', () => {
    const files = Array.from({ length: 30 }, (_, f) => encodeIndexFile([pack(`q${f}`, f * 1000, 1000)]));
    const index = new ContentIndex();
    index.reserve(files.reduce((n, s) => n + Math.floor(s.length / 48), 0));
    files.forEach((s, f) => index.addIndexFile(`f${f}`, s, `f${f}`));
    assert.equal(index.chunkCount, 30_000);
    for (let n = 0; n < 30_000; n += 1009) assert.equal(index.find(id(n))!.pack, packName(`q${Math.floor(n / 1000)}`));
    assert.equal(index.has(id(30_000)), false);
  });

  test('a damaged index file is CHECKSUM_MISMATCH naming it (either version); a newer version is REPO_FORMAT', () => {
    for (const encode of [encodeIndexFile, encodeJsonIndexFile]) {
      const bytes = encode([pack('x', 0, 5)]);
      bytes[bytes.length >> 1]! ^= 0xff;
      assert.throws(() => decodeIndexFile(bytes, 'content/index/abc'), (e: any) => e.code === 'CHECKSUM_MISMATCH' && e.message.includes('content/index/abc'));
      assert.throws(() => new ContentIndex().addIndexFile('abc', bytes, 'content/index/abc'), (e: any) => e.code === 'CHECKSUM_MISMATCH');
    }
    const cut = encodeIndexFile([pack('x', 0, 5)]).subarray(0, 100);
    assert.throws(() => decodeIndexFile(cut, 'content/index/cut'), (e: any) => e.code === 'CHECKSUM_MISMATCH' && e.message.includes('content/index/cut'));
    const newer = encodeIndexFile([pack('x', 0, 5)]);
    newer.writeUInt32LE(3, 8);
    assert.throws(() => decodeIndexFile(newer, 'content/index/new'), (e: any) => e.code === 'REPO_FORMAT' && /version 3/.test(e.message));
  });
});
