import { nativeDecompressSync, nativeSyncCompressor } from '../../pipeline/zstd.js';
import { PgkeepError } from '../../errors.js';
import { CHUNK_ID_SIZE, type PackEntry } from './pack-file.js';

/** A pack as an index file lists it. */
export interface IndexedPack {
  /** The pack's name: SHA-256 of its stored bytes. */
  pack: string;
  /** Its stored size. */
  size: number;
  /** What its blobs hold: stream data, or chunk lists. */
  kind: 'data' | 'list';
  /** One age file (data packs of an encrypted repository), or the plaintext layout as is. */
  sealed: boolean;
  entries: PackEntry[];
}

const INDEX_VERSION = 1;
/** An index file decompresses to at most this (a session's packs: ~100 bytes per chunk). */
const MAX_INDEX_BYTES = 1 << 30;

/**
 * Which pack holds each chunk, for every index file read, held compactly:
 * the ids side by side in one buffer, their pack, offset and lengths in typed
 * arrays, and an open-addressing hash table over the ids' first four bytes
 * (ids are SHA-256 or HMAC output: uniform). About 60 bytes per chunk, so a
 * repository of a million chunks (16 GB of distinct data in 16 KiB chunks)
 * needs ~60 MB, where a Map of objects took ~250 bytes per chunk. A chunk
 * stored twice (two writers at once) keeps its first entry; either is good.
 */
export class ContentIndex {
  private ids = Buffer.alloc(CHUNK_ID_SIZE * 1024);
  private packOf = new Uint32Array(1024);
  private offsets = new Uint32Array(1024);
  private lengths = new Uint32Array(1024);
  private rawLengths = new Uint32Array(1024);
  /** Slot -> entry number + 1 (0: empty); its size a power of two, at most half full. */
  private slots = new Uint32Array(2048);
  private count = 0;
  private readonly packNames: string[] = [];
  private readonly packInfo = new Map<string, { number: number; size: number; kind: 'data' | 'list'; sealed: boolean; entries: number[] }>();
  /** Index file name to the packs it names. */
  private readonly files = new Map<string, string[]>();

  has(id: Buffer): boolean {
    return this.lookup(id) >= 0;
  }

  find(id: Buffer): { pack: string; entry: PackEntry } | undefined {
    const n = this.lookup(id);
    return n < 0 ? undefined : { pack: this.packNames[this.packOf[n]!]!, entry: this.entry(n) };
  }

  get chunkCount(): number {
    return this.count;
  }

  /** The entry number of a chunk (the copy reads use), or -1: a key into a ChunkMarks of this index. */
  numberOf(id: Buffer): number {
    return this.lookup(id);
  }

  /** Every pack's name, stored size, kind, whether it is sealed, and the numbers of its own blobs' entries (nothing built: for prune). */
  *packNumbers(): IterableIterator<{ pack: string; size: number; kind: 'data' | 'list'; sealed: boolean; entries: readonly number[] }> {
    for (const [pack, info] of this.packInfo) yield { pack, size: info.size, kind: info.kind, sealed: info.sealed, entries: info.entries };
  }

  /** The entry of a number (see packNumbers). */
  entryAt(n: number): PackEntry {
    return this.entry(n);
  }

  /** The stored length of an entry's blob. */
  lengthAt(n: number): number {
    return this.lengths[n]!;
  }

  /** One pack as an index file lists it (its entries built now), or undefined. */
  indexedPack(pack: string): IndexedPack | undefined {
    const info = this.packInfo.get(pack);
    return info && { pack, size: info.size, kind: info.kind, sealed: info.sealed, entries: info.entries.map((n) => this.entry(n)) };
  }

  /** Every pack named by an index file: its stored size, kind, whether it is sealed, and its blobs (built on each call: for prune and check). */
  packEntries(): Map<string, Omit<IndexedPack, 'pack'>> {
    const out = new Map<string, Omit<IndexedPack, 'pack'>>();
    for (const [pack, info] of this.packInfo) out.set(pack, { size: info.size, kind: info.kind, sealed: info.sealed, entries: info.entries.map((n) => this.entry(n)) });
    return out;
  }

  /** Whether an index file read (or this process's session) names the pack. */
  hasPack(pack: string): boolean {
    return this.packInfo.has(pack);
  }

  /** The stored size of a pack (0 when no index file names it). */
  packSize(pack: string): number {
    return this.packInfo.get(pack)?.size ?? 0;
  }

  isSealed(pack: string): boolean {
    return this.packInfo.get(pack)?.sealed ?? false;
  }

  kindOf(pack: string): 'data' | 'list' {
    return this.packInfo.get(pack)?.kind ?? 'data';
  }

  get fileNames(): string[] {
    return [...this.files.keys()];
  }

  /** The packs one index file names. */
  packsOf(file: string): readonly string[] {
    return this.files.get(file) ?? [];
  }

  addPack(pack: IndexedPack): void {
    if (this.packInfo.has(pack.pack)) return;
    const number = this.packNames.push(pack.pack) - 1;
    const info = { number, size: pack.size, kind: pack.kind, sealed: pack.sealed, entries: [] as number[] };
    this.packInfo.set(pack.pack, info);
    for (const entry of pack.entries) {
      // a pack's own blobs are listed with it even when another pack holds the same chunk: prune weighs each pack whole
      const n = this.append(entry, number);
      info.entries.push(n);
      if (this.lookup(entry.id) < 0) this.insert(n);
    }
  }

  addFile(name: string, packs: IndexedPack[]): void {
    for (const p of packs) this.addPack(p);
    this.markFile(name, packs);
  }

  /** Records that an index file names these packs (already added). */
  markFile(name: string, packs: IndexedPack[]): void {
    this.files.set(name, packs.map((p) => p.pack));
  }

  private entry(n: number): PackEntry {
    return { id: Buffer.from(this.ids.subarray(n * CHUNK_ID_SIZE, (n + 1) * CHUNK_ID_SIZE)), offset: this.offsets[n]!, length: this.lengths[n]!, rawLength: this.rawLengths[n]! };
  }

  private append(entry: PackEntry, pack: number): number {
    if (this.count === this.packOf.length) this.grow();
    const n = this.count++;
    entry.id.copy(this.ids, n * CHUNK_ID_SIZE);
    this.packOf[n] = pack;
    this.offsets[n] = entry.offset;
    this.lengths[n] = entry.length;
    this.rawLengths[n] = entry.rawLength;
    return n;
  }

  private grow(): void {
    // by half, not double: the old arrays and the new are both alive while copying
    const size = Math.ceil(this.packOf.length * 1.5);
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
  }

  /** The entry number of an id, or -1. */
  private lookup(id: Buffer): number {
    const mask = this.slots.length - 1;
    for (let slot = id.readUInt32LE(0) & mask; ; slot = (slot + 1) & mask) {
      const held = this.slots[slot]!;
      if (held === 0) return -1;
      if (this.ids.compare(id, 0, CHUNK_ID_SIZE, (held - 1) * CHUNK_ID_SIZE, held * CHUNK_ID_SIZE) === 0) return held - 1;
    }
  }

  private insert(n: number): void {
    // at most half full: rehash into twice the slots
    if ((this.tableCount + 1) * 2 > this.slots.length) this.rehash(this.slots.length * 2);
    this.place(n, this.slots);
    this.tableCount++;
  }

  private tableCount = 0;

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

/**
 * An index file: zstd-compressed JSON, never encrypted (see ContentSettings.recipients):
 * `{"version":1,"packs":[{"pack":"<sha256>","size":N,"kind":"data"|"list","sealed":bool,"chunks":[["<id hex>",offset,length,rawLength],...]}]}`.
 */
export function encodeIndexFile(packs: IndexedPack[]): Buffer {
  const json = JSON.stringify({
    version: INDEX_VERSION,
    packs: packs.map((p) => ({ pack: p.pack, size: p.size, kind: p.kind, sealed: p.sealed, chunks: p.entries.map((e) => [e.id.toString('hex'), e.offset, e.length, e.rawLength]) })),
  });
  const compressor = nativeSyncCompressor({ threads: 1 });
  if (!compressor) throw new PgkeepError('TOOL_MISSING', 'a deduplicating repository needs zstd-napi (run npm ci)');
  const parts: Buffer[] = [];
  compressor.update(Buffer.from(json), (c) => parts.push(Buffer.from(c)));
  compressor.end((c) => parts.push(Buffer.from(c)));
  return Buffer.concat(parts);
}

export function decodeIndexFile(stored: Buffer, key: string): IndexedPack[] {
  let parsed: { version?: unknown; packs?: unknown };
  try {
    const plain = nativeDecompressSync(stored, MAX_INDEX_BYTES);
    if (!plain) throw new Error('zstd-napi is not installed (run npm ci)');
    parsed = JSON.parse(plain.toString('utf8')) as typeof parsed;
  } catch (error) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `index file ${key} cannot be read: ${(error as Error).message}`, { cause: error });
  }
  if (parsed.version !== INDEX_VERSION || !Array.isArray(parsed.packs)) throw new PgkeepError('REPO_FORMAT', `index file ${key} has version ${String(parsed.version)}; this pgkeep reads version ${INDEX_VERSION}`);
  return (parsed.packs as { pack: string; size: number; kind: string; sealed: boolean; chunks: [string, number, number, number][] }[]).map((p) => ({
    pack: p.pack,
    size: p.size,
    kind: p.kind === 'list' ? ('list' as const) : ('data' as const),
    sealed: p.sealed === true,
    entries: p.chunks.map(([id, offset, length, rawLength]) => {
      const bytes = Buffer.from(id, 'hex');
      if (bytes.length !== CHUNK_ID_SIZE) throw new PgkeepError('CHECKSUM_MISMATCH', `index file ${key} holds a malformed chunk id`);
      return { id: bytes, offset, length, rawLength };
    }),
  }));
}
