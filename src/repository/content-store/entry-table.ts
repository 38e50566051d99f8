import { CHUNK_ID_SIZE } from './pack-file.js';

/**
 * The bytes of one entry as the index keeps it outside memory (run files)
 * and as version 2 index files store it: id (32 bytes), then pack number,
 * offset, stored length and raw length (u32 little-endian each).
 */
export const RECORD_SIZE = 48;

/**
 * Index entries in memory, held compactly: the ids side by side in one
 * buffer, their pack, offset and lengths in typed arrays, and an
 * open-addressing hash table over the ids' first four bytes (ids are SHA-256
 * or HMAC output: uniform; bytes 4-7 kept beside, so a probe of another id
 * rarely costs a full compare). About 70 bytes per entry, where a Map of
 * objects took ~250. Every entry is kept (a pack's own blobs are listed with
 * it even when another pack holds the same chunk); the hash table finds the
 * first entry of an id.
 */
export class EntryTable {
  private ids: Buffer;
  private packOf: Uint32Array;
  private offsets: Uint32Array;
  private lengths: Uint32Array;
  private rawLengths: Uint32Array;
  /** Each id's bytes 4-7: a probe compares the whole id (a native call) only when they match. */
  private tags: Uint32Array;
  /** Slot -> entry number + 1 (0: empty); its size a power of two, at most half full. */
  private slots: Uint32Array;
  private count = 0;
  private tableCount = 0;

  constructor(initial = 1024) {
    this.ids = Buffer.alloc(CHUNK_ID_SIZE * initial);
    this.packOf = new Uint32Array(initial);
    this.offsets = new Uint32Array(initial);
    this.lengths = new Uint32Array(initial);
    this.rawLengths = new Uint32Array(initial);
    this.tags = new Uint32Array(initial);
    let slots = 2048;
    while (slots < initial * 2) slots *= 2;
    this.slots = new Uint32Array(slots);
  }

  get size(): number {
    return this.count;
  }

  /**
   * Appends the entry whose id is at `at` in `src`; returns its number in this table. It goes into the hash
   * table only when this table has no entry of that id yet (duplicates keep the first).
   */
  append(src: Buffer, at: number, pack: number, offset: number, length: number, rawLength: number): number {
    if (this.count === this.packOf.length) this.grow();
    const n = this.count++;
    // byte by byte: Buffer.copy's per-call cost was most of the time for 32 bytes
    const ids = this.ids;
    for (let k = 0, to = n * CHUNK_ID_SIZE; k < CHUNK_ID_SIZE; k++) ids[to + k] = src[at + k]!;
    this.packOf[n] = pack;
    this.offsets[n] = offset;
    this.lengths[n] = length;
    this.rawLengths[n] = rawLength;
    this.tags[n] = src.readUInt32LE(at + 4);
    if (this.lookupAt(ids, n * CHUNK_ID_SIZE) < 0) this.insert(n);
    return n;
  }

  /** The number of the first entry of the id at `at` in `bytes`, or -1. */
  lookupAt(bytes: Buffer, at: number): number {
    const mask = this.slots.length - 1;
    const tag = bytes.readUInt32LE(at + 4);
    for (let slot = bytes.readUInt32LE(at) & mask; ; slot = (slot + 1) & mask) {
      const held = this.slots[slot]!;
      if (held === 0) return -1;
      if (this.tags[held - 1] === tag && this.ids.compare(bytes, at, at + CHUNK_ID_SIZE, (held - 1) * CHUNK_ID_SIZE, held * CHUNK_ID_SIZE) === 0) return held - 1;
    }
  }

  packAt(n: number): number {
    return this.packOf[n]!;
  }

  offsetAt(n: number): number {
    return this.offsets[n]!;
  }

  lengthAt(n: number): number {
    return this.lengths[n]!;
  }

  rawLengthAt(n: number): number {
    return this.rawLengths[n]!;
  }

  /** A copy of entry n's id. */
  idAt(n: number): Buffer {
    return Buffer.from(this.ids.subarray(n * CHUNK_ID_SIZE, (n + 1) * CHUNK_ID_SIZE));
  }

  /** Writes entry n as a RECORD_SIZE record at `at` in `out`. */
  writeRecord(n: number, out: Buffer, at: number): void {
    const ids = this.ids;
    for (let k = 0, from = n * CHUNK_ID_SIZE; k < CHUNK_ID_SIZE; k++) out[at + k] = ids[from + k]!;
    out.writeUInt32LE(this.packOf[n]!, at + 32);
    out.writeUInt32LE(this.offsets[n]!, at + 36);
    out.writeUInt32LE(this.lengths[n]!, at + 40);
    out.writeUInt32LE(this.rawLengths[n]!, at + 44);
  }

  /** The entry numbers in the order of their ids (bytewise), entries of one id in the order they came. */
  sortedOrder(): Uint32Array {
    const order = new Uint32Array(this.count);
    // the first four bytes, big-endian, order most pairs without a native compare
    const keys = new Uint32Array(this.count);
    for (let n = 0; n < this.count; n++) {
      order[n] = n;
      keys[n] = this.ids.readUInt32BE(n * CHUNK_ID_SIZE);
    }
    const ids = this.ids;
    // ids.compare(target, targetStart, targetEnd, sourceStart, sourceEnd) compares the SOURCE (a) with the target (b):
    // with a and b the other way round, ids sharing their first four bytes were sorted backwards, and lookups missed them
    return order.sort((a, b) => keys[a]! - keys[b]! || ids.compare(ids, b * CHUNK_ID_SIZE, (b + 1) * CHUNK_ID_SIZE, a * CHUNK_ID_SIZE, (a + 1) * CHUNK_ID_SIZE) || a - b);
  }

  /** Makes room for this many entries in all (arrays and hash table sized once, not grown step by step). */
  reserve(entries: number): void {
    if (entries > this.packOf.length) this.resize(entries);
    let slots = this.slots.length;
    while (slots < entries * 2) slots *= 2;
    if (slots > this.slots.length) this.rehash(slots);
  }

  private grow(): void {
    // by half, not double: the old arrays and the new are both alive while copying
    this.resize(Math.ceil(this.packOf.length * 1.5));
  }

  private resize(size: number): void {
    const ids = Buffer.alloc(size * CHUNK_ID_SIZE);
    this.ids.copy(ids);
    this.ids = ids;
    const widen = (a: Uint32Array) => {
      const b = new Uint32Array(size);
      b.set(a);
      return b;
    };
    this.packOf = widen(this.packOf);
    this.offsets = widen(this.offsets);
    this.lengths = widen(this.lengths);
    this.rawLengths = widen(this.rawLengths);
    this.tags = widen(this.tags);
  }

  private insert(n: number): void {
    // at most half full: rehash into twice the slots
    if ((this.tableCount + 1) * 2 > this.slots.length) this.rehash(this.slots.length * 2);
    this.place(n, this.slots);
    this.tableCount++;
  }

  private place(n: number, slots: Uint32Array): void {
    const mask = slots.length - 1;
    let slot = this.ids.readUInt32LE(n * CHUNK_ID_SIZE) & mask;
    while (slots[slot] !== 0) slot = (slot + 1) & mask;
    slots[slot] = n + 1;
  }

  private rehash(size: number): void {
    const slots = new Uint32Array(size);
    for (const held of this.slots) if (held !== 0) this.place(held - 1, slots);
    this.slots = slots;
  }
}
