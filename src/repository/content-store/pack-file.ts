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

/** Collects blobs into one pack in memory (a pack is tens of MiB: bounded). */
export class PackBuilder {
  private readonly blobs: Buffer[] = [];
  private readonly entries: PackEntry[] = [];
  private length = 0;

  /** Bytes of blobs so far. */
  get size(): number {
    return this.length;
  }

  get count(): number {
    return this.entries.length;
  }

  add(id: Buffer, compressed: Buffer, rawLength: number): PackEntry {
    if (id.length !== CHUNK_ID_SIZE) throw new RangeError(`a chunk id is ${CHUNK_ID_SIZE} bytes, not ${id.length}`);
    if (this.length + compressed.length + (this.entries.length + 1) * ENTRY_SIZE + TRAILER_SIZE > MAX_PACK) throw new RangeError('pack too large');
    const entry = { id, offset: this.length, length: compressed.length, rawLength };
    this.blobs.push(compressed);
    this.entries.push(entry);
    this.length += compressed.length;
    return entry;
  }

  /** The plaintext pack as its pieces in order (the blobs, then the header: never joined, a pack is tens of MiB), and its entries. The builder is spent. */
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
    return { parts: [...this.blobs, header], entries: this.entries };
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
