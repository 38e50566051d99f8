import { createHash } from 'node:crypto';
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

const JSON_INDEX_VERSION = 1;
/** A version 1 index file decompresses to at most this (a session's packs: ~100 bytes per chunk). */
const MAX_INDEX_BYTES = 1 << 30;

/**
 * Which pack holds each chunk, for every index file read, held compactly:
 * the ids side by side in one buffer, their pack, offset and lengths in typed
 * arrays, and an open-addressing hash table over the ids' first four bytes
 * (ids are SHA-256 or HMAC output: uniform; bytes 4-7 kept beside, so a
 * probe of another id rarely costs a full compare). About 70 bytes per
 * chunk, so a repository of a million chunks (16 GB of distinct data in 16
 * KiB chunks) needs ~70 MB, where a Map of objects took ~250 bytes per
 * chunk. Version 2 index files are read straight into it. A chunk
 * stored twice (two writers at once) keeps its first entry; either is good.
 */
export class ContentIndex {
  private ids = Buffer.alloc(CHUNK_ID_SIZE * 1024);
  private packOf = new Uint32Array(1024);
  private offsets = new Uint32Array(1024);
  private lengths = new Uint32Array(1024);
  private rawLengths = new Uint32Array(1024);
  /** Each id's bytes 4-7: a probe compares the whole id (a native call) only when they match. */
  private tags = new Uint32Array(1024);
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

  /**
   * Makes room for this many entries in all (arrays and hash table sized once, not grown step by step
   * while index files are read): ContentStore.open estimates it from the index files' sizes.
   */
  reserve(entries: number): void {
    if (entries > this.packOf.length) this.resize(entries);
    let slots = this.slots.length;
    while (slots < entries * 2) slots *= 2;
    if (slots > this.slots.length) this.rehash(slots);
  }

  /** Reads one stored index file: version 2 straight from its records into the arrays, version 1 through its JSON. */
  addIndexFile(name: string, stored: Buffer, key: string): void {
    const file = binaryIndexFile(stored, key);
    if (!file) return this.addFile(name, decodeIndexFile(stored, key));
    this.reserve(this.count + file.entryCount);
    const infos: ({ number: number; entries: number[] } | undefined)[] = [];
    const names: string[] = [];
    for (let i = 0; i < file.packCount; i++) {
      const { pack, size, kind, sealed } = file.pack(i);
      names.push(pack);
      // a pack another file named already keeps that file's entries (as addPack does)
      if (this.packInfo.has(pack)) continue;
      const info = { number: this.packNames.push(pack) - 1, size, kind, sealed, entries: [] as number[] };
      this.packInfo.set(pack, info);
      infos[i] = info;
    }
    const b = file.bytes;
    for (let i = 0; i < file.entryCount; i++) {
      const at = file.entryAt(i);
      const info = infos[b.readUInt32LE(at + 32)];
      if (!info) continue;
      const n = this.count++;
      // byte by byte: Buffer.copy's per-call cost was most of the time for 32 bytes
      const ids = this.ids;
      for (let k = 0, to = n * CHUNK_ID_SIZE; k < CHUNK_ID_SIZE; k++) ids[to + k] = b[at + k]!;
      this.packOf[n] = info.number;
      this.offsets[n] = b.readUInt32LE(at + 36);
      this.lengths[n] = b.readUInt32LE(at + 40);
      this.rawLengths[n] = b.readUInt32LE(at + 44);
      this.tags[n] = b.readUInt32LE(at + 4);
      info.entries.push(n);
      if (this.lookupAt(this.ids, n * CHUNK_ID_SIZE) < 0) this.insert(n);
    }
    this.files.set(name, names);
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
    this.tags[n] = entry.id.readUInt32LE(4);
    return n;
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

  /** The entry number of an id, or -1. */
  private lookup(id: Buffer): number {
    return this.lookupAt(id, 0);
  }

  /** The entry number of the id at `at` in `bytes`, or -1. */
  private lookupAt(bytes: Buffer, at: number): number {
    const mask = this.slots.length - 1;
    const tag = bytes.readUInt32LE(at + 4);
    for (let slot = bytes.readUInt32LE(at) & mask; ; slot = (slot + 1) & mask) {
      const held = this.slots[slot]!;
      if (held === 0) return -1;
      if (this.tags[held - 1] === tag && this.ids.compare(bytes, at, at + CHUNK_ID_SIZE, (held - 1) * CHUNK_ID_SIZE, held * CHUNK_ID_SIZE) === 0) return held - 1;
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
 * Index file version 2 (docs/content-store.md, "Index files"), everything
 * little-endian, never encrypted (see ContentSettings.recipients):
 *
 *   header   "PGKINDEX" | version u32 = 2 | packs u32 | entries u32 | 0 u32         (24 bytes)
 *   packs    name (32 bytes: the SHA-256) | stored size u64 | kind u8 (0 data, 1 list) | sealed u8 | 6 zero bytes   (48 bytes each)
 *   entries  id (32 bytes) | pack u32 (its number in this file) | offset u32 | length u32 | raw length u32          (48 bytes each)
 *   digest   SHA-256 of everything before it (32 bytes)
 *
 * Fixed-size records, read straight into the index's typed arrays: version
 * 1 (zstd-compressed JSON with hex ids) took 210-300 ms to open for 122,000
 * chunks, mostly JSON, hex and per-entry objects. Random ids do not compress,
 * so neither does this. Version 1 files are still read.
 */
const INDEX_MAGIC = Buffer.from('PGKINDEX');
const INDEX_VERSION = 2;
const HEAD_SIZE = 24;
const PACK_RECORD = 48;
const ENTRY_RECORD = 48;
/** The bytes of one entry in a version 2 index file: what an index file's size says of its entries. */
export const INDEX_ENTRY_BYTES = ENTRY_RECORD;
const DIGEST_SIZE = 32;
/** A well-formed index file has at most this many entries (a record is 48 bytes: 1 GiB of them). */
const MAX_ENTRIES = (1 << 30) / ENTRY_RECORD;

export function encodeIndexFile(packs: IndexedPack[]): Buffer {
  const entries = packs.reduce((n, p) => n + p.entries.length, 0);
  const out = Buffer.alloc(HEAD_SIZE + packs.length * PACK_RECORD + entries * ENTRY_RECORD + DIGEST_SIZE);
  INDEX_MAGIC.copy(out, 0);
  out.writeUInt32LE(INDEX_VERSION, 8);
  out.writeUInt32LE(packs.length, 12);
  out.writeUInt32LE(entries, 16);
  let at = HEAD_SIZE;
  for (const p of packs) {
    if (!/^[0-9a-f]{64}$/.test(p.pack)) throw new PgkeepError('INTERNAL', `pack name ${p.pack} is not a SHA-256`);
    out.write(p.pack, at, 'hex');
    out.writeBigUInt64LE(BigInt(p.size), at + 32);
    out[at + 40] = p.kind === 'list' ? 1 : 0;
    out[at + 41] = p.sealed ? 1 : 0;
    at += PACK_RECORD;
  }
  packs.forEach((p, number) => {
    for (const e of p.entries) {
      e.id.copy(out, at);
      out.writeUInt32LE(number, at + 32);
      out.writeUInt32LE(e.offset, at + 36);
      out.writeUInt32LE(e.length, at + 40);
      out.writeUInt32LE(e.rawLength, at + 44);
      at += ENTRY_RECORD;
    }
  });
  createHash('sha256').update(out.subarray(0, at)).digest().copy(out, at);
  return out;
}

/** A version 2 index file, checked whole (size, digest, every pack number and kind); undefined for a version 1 file. */
export function binaryIndexFile(stored: Buffer, key: string): BinaryIndexFile | undefined {
  if (stored.length < INDEX_MAGIC.length || !stored.subarray(0, INDEX_MAGIC.length).equals(INDEX_MAGIC)) return undefined;
  const damaged = (what: string) => new PgkeepError('CHECKSUM_MISMATCH', `index file ${key} cannot be read: ${what}`);
  if (stored.length < HEAD_SIZE + DIGEST_SIZE) throw damaged('cut short');
  const version = stored.readUInt32LE(8);
  if (version !== INDEX_VERSION) throw new PgkeepError('REPO_FORMAT', `index file ${key} has version ${version}; this pgkeep reads versions 1 and ${INDEX_VERSION}: upgrade pgkeep`);
  const packs = stored.readUInt32LE(12);
  const entries = stored.readUInt32LE(16);
  if (entries > MAX_ENTRIES || stored.length !== HEAD_SIZE + packs * PACK_RECORD + entries * ENTRY_RECORD + DIGEST_SIZE) throw damaged(`${stored.length} bytes do not hold ${packs} packs and ${entries} entries`);
  const end = stored.length - DIGEST_SIZE;
  if (!createHash('sha256').update(stored.subarray(0, end)).digest().equals(stored.subarray(end))) throw damaged('its digest does not match its bytes');
  const entriesAt = HEAD_SIZE + packs * PACK_RECORD;
  for (let at = HEAD_SIZE; at < entriesAt; at += PACK_RECORD) if (stored[at + 40]! > 1 || stored[at + 41]! > 1) throw damaged('a pack record of an unknown kind');
  for (let at = entriesAt + 32; at < end; at += ENTRY_RECORD) if (stored.readUInt32LE(at) >= packs) throw damaged('an entry names a pack the file does not list');
  return new BinaryIndexFile(stored, packs, entries);
}

/** The records of a checked version 2 index file (see binaryIndexFile). */
export class BinaryIndexFile {
  readonly entriesAt: number;

  constructor(
    readonly bytes: Buffer,
    readonly packCount: number,
    readonly entryCount: number,
  ) {
    this.entriesAt = HEAD_SIZE + packCount * PACK_RECORD;
  }

  pack(i: number): Omit<IndexedPack, 'entries'> {
    const at = HEAD_SIZE + i * PACK_RECORD;
    const b = this.bytes;
    return { pack: b.toString('hex', at, at + 32), size: Number(b.readBigUInt64LE(at + 32)), kind: b[at + 40] === 1 ? 'list' : 'data', sealed: b[at + 41] === 1 };
  }

  /** Where entry i's record starts: id (32 bytes), then pack, offset, length, raw length (u32 each). */
  entryAt(i: number): number {
    return this.entriesAt + i * ENTRY_RECORD;
  }

  toPacks(): IndexedPack[] {
    const packs: IndexedPack[] = Array.from({ length: this.packCount }, (_, i) => ({ ...this.pack(i), entries: [] }));
    const b = this.bytes;
    for (let i = 0; i < this.entryCount; i++) {
      const at = this.entryAt(i);
      packs[b.readUInt32LE(at + 32)]!.entries.push({ id: Buffer.from(b.subarray(at, at + 32)), offset: b.readUInt32LE(at + 36), length: b.readUInt32LE(at + 40), rawLength: b.readUInt32LE(at + 44) });
    }
    return packs;
  }
}

/** The packs an index file names, with their entries: version 2 (binary) or 1 (zstd-compressed JSON). */
export function decodeIndexFile(stored: Buffer, key: string): IndexedPack[] {
  return binaryIndexFile(stored, key)?.toPacks() ?? decodeJsonIndexFile(stored, key);
}

/**
 * Version 1, written by pgkeep before the binary format (repositories in the field hold them; prune rewrites
 * them as version 2): zstd-compressed JSON,
 * `{"version":1,"packs":[{"pack":"<sha256>","size":N,"kind":"data"|"list","sealed":bool,"chunks":[["<id hex>",offset,length,rawLength],...]}]}`.
 */
function decodeJsonIndexFile(stored: Buffer, key: string): IndexedPack[] {
  let parsed: { version?: unknown; packs?: unknown };
  try {
    const plain = nativeDecompressSync(stored, MAX_INDEX_BYTES);
    if (!plain) throw new Error('zstd-napi is not installed (run npm ci)');
    parsed = JSON.parse(plain.toString('utf8')) as typeof parsed;
  } catch (error) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `index file ${key} cannot be read: ${(error as Error).message}`, { cause: error });
  }
  if (parsed.version !== JSON_INDEX_VERSION || !Array.isArray(parsed.packs)) throw new PgkeepError('REPO_FORMAT', `index file ${key} has version ${String(parsed.version)}; this pgkeep reads versions 1 and ${INDEX_VERSION}`);
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

/** Writes a version 1 file (tests: what an older pgkeep left in a repository). */
export function encodeJsonIndexFile(packs: IndexedPack[]): Buffer {
  const json = JSON.stringify({
    version: JSON_INDEX_VERSION,
    packs: packs.map((p) => ({ pack: p.pack, size: p.size, kind: p.kind, sealed: p.sealed, chunks: p.entries.map((e) => [e.id.toString('hex'), e.offset, e.length, e.rawLength]) })),
  });
  const compressor = nativeSyncCompressor({ threads: 1 });
  if (!compressor) throw new PgkeepError('TOOL_MISSING', 'a deduplicating repository needs zstd-napi (run npm ci)');
  const parts: Buffer[] = [];
  compressor.update(Buffer.from(json), (c) => parts.push(Buffer.from(c)));
  compressor.end((c) => parts.push(Buffer.from(c)));
  return Buffer.concat(parts);
}
