import { BufferPool } from '../../pipeline/buffer-pool.js';

/**
 * A pack: many chunks in one stored object, so a repository of millions of
 * chunks holds thousands of objects, and a restore reads long runs of them
 * with one request.
 *
 * Plaintext layout (docs/content-store.md), everything little-endian:
 *
 *   blob 0 | blob 1 | ... | header | header length (u32) | "PGKPACK1"
 *
 * Each blob is one chunk, zstd-compressed on its own (so any one can be read
 * without the others). The header has one 44-byte entry per blob: its id (32
 * bytes), offset (u32), stored length (u32) and raw length (u32). The header
 * comes last because the blobs are written as they arrive. In an encrypted
 * repository the whole pack is one age file, so `age -d` opens it.
 */
export interface PackEntry {
  /** The chunk id: SHA-256 of the raw chunk, or HMAC-SHA256 with the content key in an encrypted repository. */
  id: Buffer;
  /** Where the compressed blob starts in the plaintext pack. */
  offset: number;
  /** Its length (compressed). */
  length: number;
  /** The chunk's length before compression. */
  rawLength: number;
}

export const PACK_MAGIC = Buffer.from('PGKPACK1');
export const CHUNK_ID_SIZE = 32;
const ENTRY_SIZE = CHUNK_ID_SIZE + 12;
const TRAILER_SIZE = 4 + PACK_MAGIC.length;
/** Packs stay well below 4 GiB (u32 offsets): the writer closes one at its target size, tens of MiB. */
const MAX_PACK = 0xffff_ffff;

/**
 * The buffers packs are built in, one pool per size (a repository's pack target plus room for one more blob),
 * shared by every session of the process. Why: a pack used to be its blobs, one buffer each (~3,000 for a
 * 16 MiB pack), dropped once written; V8 collected them late, and a first backup of a 340 MB database
 * peaked with ~50 MB of dead blobs and a malloc heap that kept its size (docs/benchmarks.md, "Backup memory,
 * session 12"). Reused, a pack's bytes stay in the same pages pack after pack.
 */
const packPools = new Map<number, BufferPool>();

/** Room past the pack target in a pooled pack buffer: a pack is closed after the blob that reaches its target, and a 64 KiB chunk (the largest of the default sizes) compresses to at most ~64.3 KiB. */
const PACK_SLACK = 256 << 10;

function packPool(target: number): BufferPool {
  const size = target + PACK_SLACK;
  let pool = packPools.get(size);
  // 4: a session fills one pack of each kind (data, list); one more of each may wait for its put
  if (!pool) packPools.set(size, (pool = new BufferPool(size, 4)));
  return pool;
}

/**
 * Where a pack starts while the pack before it is still being written (ContentSession's background writes):
 * a smaller buffer than a pack's, so writing one pack while filling the next does not hold two pack buffers
 * (16.25 MiB each, every page touched); once the write is done the pack moves to a pooled pack buffer
 * (unspill). Writing blocks the filling once this is full.
 */
export const SPILL_BYTES = 4 << 20;
const spillPool = new BufferPool(SPILL_BYTES, 2);

/**
 * Collects blobs into one pack in memory (a pack is tens of MiB: bounded), side by side in one buffer from
 * a pool: add() copies a blob in, addWith() has the caller write it in place (a chunk compressed straight
 * into the pack). A blob that does not fit the buffer (larger chunks than the pool's slack allows) moves the
 * pack to a larger buffer of its own: the pack's bytes are the same either way.
 */
export class PackBuilder {
  private buffer: Buffer | undefined;
  private readonly entries: PackEntry[] = [];
  private length = 0;
  private readonly pool: BufferPool | undefined;

  /**
   * `target`: the pack size its writer closes it at (the buffer is sized for it); undefined: buffers of their
   * own, grown as needed. `spill`: the blobs start in a spill buffer (SPILL_BYTES), until unspill().
   */
  constructor(target?: number, spill = false) {
    this.pool = target === undefined ? undefined : packPool(target);
    if (spill && this.pool) this.buffer = spillPool.take();
  }

  /** Whether a blob of up to `most` bytes fits the buffer the pack is in now (always, unless in the spill buffer: see unspill). */
  fits(most: number): boolean {
    return !this.spilled || this.length + most <= this.buffer!.length;
  }

  private get spilled(): boolean {
    return this.buffer !== undefined && spillPool.owns(this.buffer);
  }

  /** Moves the blobs from the spill buffer to a pooled pack buffer (the pack written before is done), and gives the spill buffer back. */
  unspill(): void {
    if (!this.spilled) return;
    const spill = this.buffer!;
    const buffer = this.pool!.take();
    spill.copy(buffer, 0, 0, this.length);
    this.buffer = buffer;
    spillPool.give(spill);
  }

  /** Bytes of blobs so far. */
  get size(): number {
    return this.length;
  }

  get count(): number {
    return this.entries.length;
  }

  add(id: Buffer, compressed: Buffer, rawLength: number): PackEntry {
    return this.addWith(id, rawLength, compressed.length, (room) => compressed.copy(room));
  }

  /**
   * Adds a blob that `write` puts at the start of `room` (at least `most` bytes), returning its length (at
   * most `most`). If write throws, the pack is as it was.
   */
  addWith(id: Buffer, rawLength: number, most: number, write: (room: Buffer) => number): PackEntry {
    if (id.length !== CHUNK_ID_SIZE) throw new RangeError(`a chunk id is ${CHUNK_ID_SIZE} bytes, not ${id.length}`);
    if (this.length + most + (this.entries.length + 1) * ENTRY_SIZE + TRAILER_SIZE > MAX_PACK) throw new RangeError('pack too large');
    const buffer = this.room(most);
    const length = write(buffer.subarray(this.length, this.length + most));
    if (!(length >= 0 && length <= most)) throw new RangeError(`a blob of ${length} bytes written into ${most} bytes of room`);
    const entry = { id, offset: this.length, length, rawLength };
    this.entries.push(entry);
    this.length += length;
    return entry;
  }

  /** The buffer, with at least `more` bytes free past the blobs. */
  private room(more: number): Buffer {
    const need = this.length + more;
    if (this.buffer && this.buffer.length >= need) return this.buffer;
    if (!this.buffer && this.pool && this.pool.size >= need) return (this.buffer = this.pool.take());
    // grown (rare with a pool: a blob larger than its slack): a buffer of its own, the blobs so far copied over
    const grown = Buffer.allocUnsafeSlow(Math.max(need, 2 * (this.buffer?.length ?? 0), 64 << 10));
    if (this.buffer) {
      this.buffer.copy(grown, 0, 0, this.length);
      this.release();
    }
    return (this.buffer = grown);
  }

  /** Gives the pooled buffer back: once the pack's parts are no longer read (written to storage, or given up). */
  release(): void {
    if (this.buffer && this.pool?.owns(this.buffer)) this.pool.give(this.buffer);
    else if (this.buffer && spillPool.owns(this.buffer)) spillPool.give(this.buffer);
    this.buffer = undefined;
  }

  /**
   * The plaintext pack as its pieces in order (the blobs, then the header: never joined, a pack is tens of MiB),
   * and its entries. The blobs are a view of the builder's buffer: valid until release(). No more blobs may be added.
   */
  finish(): { parts: Buffer[]; entries: PackEntry[] } {
    const header = Buffer.alloc(this.entries.length * ENTRY_SIZE + TRAILER_SIZE);
    this.entries.forEach((e, i) => {
      const at = i * ENTRY_SIZE;
      e.id.copy(header, at);
      header.writeUInt32LE(e.offset, at + CHUNK_ID_SIZE);
      header.writeUInt32LE(e.length, at + CHUNK_ID_SIZE + 4);
      header.writeUInt32LE(e.rawLength, at + CHUNK_ID_SIZE + 8);
    });
    header.writeUInt32LE(this.entries.length * ENTRY_SIZE, header.length - TRAILER_SIZE);
    PACK_MAGIC.copy(header, header.length - PACK_MAGIC.length);
    const blobs = this.buffer && this.length > 0 ? [this.buffer.subarray(0, this.length)] : [];
    return { parts: [...blobs, header], entries: this.entries };
  }
}

/**
 * The entries of a plaintext pack, read from its header; every entry is
 * checked to lie inside the blob area. Throws (a plain Error; the caller
 * names the pack) when the pack is cut short or not a pack.
 */
export function readPackEntries(pack: Buffer): PackEntry[] {
  if (pack.length < TRAILER_SIZE || !pack.subarray(pack.length - PACK_MAGIC.length).equals(PACK_MAGIC)) throw new Error('not a pack (no PGKPACK1 trailer): cut short or not pgkeep data');
  const headerLength = pack.readUInt32LE(pack.length - TRAILER_SIZE);
  const blobArea = pack.length - TRAILER_SIZE - headerLength;
  if (headerLength % ENTRY_SIZE !== 0 || blobArea < 0) throw new Error(`the pack header length ${headerLength} does not fit the pack`);
  const entries: PackEntry[] = [];
  for (let at = blobArea; at < pack.length - TRAILER_SIZE; at += ENTRY_SIZE) {
    const entry = {
      id: Buffer.from(pack.subarray(at, at + CHUNK_ID_SIZE)),
      offset: pack.readUInt32LE(at + CHUNK_ID_SIZE),
      length: pack.readUInt32LE(at + CHUNK_ID_SIZE + 4),
      rawLength: pack.readUInt32LE(at + CHUNK_ID_SIZE + 8),
    };
    if (entry.offset + entry.length > blobArea) throw new Error(`a pack entry points past the blobs (${entry.offset}+${entry.length} > ${blobArea})`);
    entries.push(entry);
  }
  return entries;
}
