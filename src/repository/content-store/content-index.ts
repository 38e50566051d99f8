import { createHash } from 'node:crypto';
import { nativeDecompressSync, nativeSyncCompressor } from '../../pipeline/zstd.js';
import { PgkeepError } from '../../errors.js';
import { EntryTable, RECORD_SIZE } from './entry-table.js';
import { CHUNK_ID_SIZE, type PackEntry } from './pack-file.js';
import { mergeRuns, RunWriter, type SortedRun } from './sorted-run.js';

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

/** What a pack's record in the index holds (its entries are found by a scan: see forEachEntry). */
export interface PackInfo {
  pack: string;
  /** Its number: what entries name (forEachEntry). */
  number: number;
  size: number;
  kind: 'data' | 'list';
  sealed: boolean;
}

/** How much of the index is held in memory (ContentIndex's constructor; setIndexMemory for a whole process). */
export interface IndexMemoryOptions {
  /**
   * Entries held in memory (~70 bytes each) before later ones spill to sorted
   * run files on local disk: 300,000 by default (~21 MB, and half as much again
   * for the tail: ~32 MB at most), a repository of ~4.5 GB of distinct data in
   * 16 KiB chunks; the bench's backup peaks at 176 MB with a 9 MB index, so a
   * bigger cap (1,000,000 was the first idea: 70 + 17 MB) would break its
   * 200 MB bound. Below it nothing is written to disk.
   */
  memoryEntries?: number;
  /** Where run files go (unlinked at once): os.tmpdir() by default. */
  directory?: string;
}

/** IndexMemoryOptions.memoryEntries unless set (a test that lowered it sets it back to this). */
export const DEFAULT_INDEX_MEMORY_ENTRIES = 300_000;

/** The defaults of this process (the CLI sets them from a test-only environment variable: PGKEEP_INDEX_MEMORY_ENTRIES). */
const defaults: Required<Omit<IndexMemoryOptions, 'directory'>> & Pick<IndexMemoryOptions, 'directory'> = { memoryEntries: DEFAULT_INDEX_MEMORY_ENTRIES, directory: undefined };

/** Sets the index memory of the indexes this process opens from now on (tests: a tiny cap forces spills). */
export function setIndexMemory(options: IndexMemoryOptions): void {
  if (options.memoryEntries !== undefined && Number.isFinite(options.memoryEntries) && options.memoryEntries > 0) defaults.memoryEntries = Math.max(16, Math.floor(options.memoryEntries));
  if (options.directory !== undefined) defaults.directory = options.directory;
}

/**
 * Runs are merged by tiers: when the newest MERGE_FANOUT runs are of one tier (tier 0: a spilled tail;
 * tier t+1: a merge of MERGE_FANOUT of tier t) they become one run of the next tier. Each entry is then
 * rewritten about log4(spilled / tail) times (merging every run each time was quadratic: 11 million records
 * written for 4 million spilled), and there are at most 3 runs per tier (a lookup reads a page of each, at most).
 */
const MERGE_FANOUT = 4;

/**
 * Each run has a Bloom filter of its ids (RunFilter) at 8 bits an entry (2% false positives), so a lookup
 * reads a page only of the run that holds the id, as a rule. All the runs' filters share FILTER_BUDGET
 * bytes: 4 MiB, so the index stays within ~35 MB (table, tail, summaries, filters). A run that would
 * overdraw it gets fewer bits (none below 2): 4.2 million spilled entries (~65 GiB of distinct chunks at
 * 16 KiB) have whole filters; past that memory stays bounded and lookups get slower.
 */
const FILTER_BITS_PER_ENTRY = 8;
const FILTER_BUDGET = 4 * 1024 * 1024;

/**
 * Which pack holds each chunk, for every index file read, in memory bounded
 * whatever the size of the repository (docs/content-store.md, "The index in
 * memory"):
 *
 * - the first `memoryEntries` entries in an EntryTable (~70 bytes each: ids
 *   side by side, typed arrays, a hash table), as before: below the cap this is all;
 * - past it, entries go to a second table of half the cap (the tail),
 *   which, when full, is sorted and written to a run file on local disk
 *   (SortedRun: unlinked at once, 0.5 bytes per entry stay in memory); runs
 *   are merged by tiers (MERGE_FANOUT), in bounded memory.
 *
 * A lookup tries the table, then each run (its Bloom filter; where that
 * says maybe, a binary search of its page summary and one read of a 4 KiB
 * page, from the page cache as a rule), then
 * the tail: the order entries came in, so a chunk indexed twice (two writers
 * at once) is found at its first entry, as before; either is good.
 *
 * Entries have dense numbers (0 .. chunkCount-1: the table's, then each
 * run's base plus position, then the tail's), the keys of prune's mark
 * bitset. A spill or a merge renumbers the entries it moves, so a number is
 * good until the index is next added to. Packs are held per pack (O(packs)),
 * their entries only found by a scan (forEachEntry, entriesOf).
 */
export class ContentIndex {
  private readonly memoryEntries: number;
  private readonly tailEntries: number;
  private readonly directory: string | undefined;
  private readonly table: EntryTable;
  private tail: EntryTable | undefined;
  private tailBase = 0;
  private runs: { run: SortedRun; base: number; tier: number }[] = [];
  private count = 0;
  private readonly packList: Omit<PackInfo, 'number'>[] = [];
  private readonly packInfo = new Map<string, PackInfo>();
  /** Index file name to the packs it names. */
  private readonly files = new Map<string, string[]>();
  /** One record read from a run. */
  private readonly record = Buffer.alloc(RECORD_SIZE);

  constructor(options: IndexMemoryOptions = {}) {
    this.memoryEntries = Math.max(16, Math.floor(options.memoryEntries ?? defaults.memoryEntries));
    this.tailEntries = Math.max(8, Math.floor(this.memoryEntries / 2));
    this.directory = options.directory ?? defaults.directory;
    this.table = new EntryTable(Math.min(1024, this.memoryEntries));
  }

  has(id: Buffer): boolean {
    return this.lookupAt(id, 0) >= 0;
  }

  find(id: Buffer): { pack: string; entry: PackEntry } | undefined {
    const n = this.lookupAt(id, 0);
    if (n < 0) return undefined;
    const entry = this.entry(n);
    return { pack: this.packList[entry.pack]!.pack, entry: entry.entry };
  }

  get chunkCount(): number {
    return this.count;
  }

  /** The entries a writing session may hold before it writes an index file: a share of the in-memory cap (ContentSession). */
  get sessionEntries(): number {
    return Math.max(1, Math.floor(this.memoryEntries / 4));
  }

  /** How many entries are on disk (in runs), and in how many runs. */
  get spilled(): { entries: number; runs: number } {
    return { entries: this.runs.reduce((n, r) => n + r.run.count, 0), runs: this.runs.length };
  }

  /** The entry number of a chunk (the copy reads use), or -1: a key into a mark bitset of this index (good until the index is next added to). */
  numberOf(id: Buffer): number {
    return this.lookupAt(id, 0);
  }

  /** The entry of a number (see numberOf). */
  entryAt(n: number): PackEntry {
    return this.entry(n).entry;
  }

  /** The stored length of an entry's blob. */
  lengthAt(n: number): number {
    return this.entry(n).entry.length;
  }

  /** Every pack's name, number, stored size, kind and whether it is sealed. */
  packs(): IterableIterator<PackInfo> {
    return this.packInfo.values();
  }

  /** The name of the pack of a number. */
  packName(number: number): string {
    return this.packList[number]!.pack;
  }

  get packCount(): number {
    return this.packList.length;
  }

  /**
   * Visits every entry, in number order: its number, and its record (id, pack
   * number, offset, length, raw length: RECORD_SIZE bytes at `at` in `record`,
   * a buffer reused for the next: copy what is kept). Runs are read a block
   * at a time: memory stays bounded.
   */
  forEachEntry(visit: (n: number, record: Buffer, at: number) => void): void {
    const scratch = Buffer.alloc(RECORD_SIZE);
    for (let n = 0; n < this.table.size; n++) {
      this.table.writeRecord(n, scratch, 0);
      visit(n, scratch, 0);
    }
    for (const { run, base } of this.runs) {
      let n = base;
      for (const block of run.blocks()) for (let at = 0; at < block.length; at += RECORD_SIZE) visit(n++, block, at);
    }
    if (this.tail) {
      for (let n = 0; n < this.tail.size; n++) {
        this.tail.writeRecord(n, scratch, 0);
        visit(this.tailBase + n, scratch, 0);
      }
    }
  }

  /** The entries of these packs (one scan of the index), each pack's in offset order; those of one pack the first file named. */
  entriesOf(packs: Iterable<string>): Map<string, PackEntry[]> {
    const byNumber = new Map<number, PackEntry[]>();
    const out = new Map<string, PackEntry[]>();
    for (const pack of packs) {
      const info = this.packInfo.get(pack);
      if (!info || out.has(pack)) continue;
      const entries: PackEntry[] = [];
      byNumber.set(info.number, entries);
      out.set(pack, entries);
    }
    if (byNumber.size === 0) return out;
    this.forEachEntry((_, r, at) => {
      const entries = byNumber.get(r.readUInt32LE(at + 32));
      if (entries) entries.push(recordEntry(r, at));
    });
    for (const entries of out.values()) entries.sort((a, b) => a.offset - b.offset);
    return out;
  }

  /** One pack as an index file lists it (its entries found by a scan), or undefined. */
  indexedPack(pack: string): IndexedPack | undefined {
    const info = this.packInfo.get(pack);
    return info && { pack, size: info.size, kind: info.kind, sealed: info.sealed, entries: this.entriesOf([pack]).get(pack)! };
  }

  /** Every pack with its entries, built now (tests, and small repositories: it holds every entry as an object). */
  packEntries(): Map<string, Omit<IndexedPack, 'pack'>> {
    const entries = this.entriesOf(this.packInfo.keys());
    const out = new Map<string, Omit<IndexedPack, 'pack'>>();
    for (const [pack, info] of this.packInfo) out.set(pack, { size: info.size, kind: info.kind, sealed: info.sealed, entries: entries.get(pack)! });
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
    const number = this.newPack(pack);
    if (number === undefined) return;
    // a pack's own blobs are listed with it even when another pack holds the same chunk: prune weighs each pack whole
    for (const entry of pack.entries) this.add(entry.id, 0, number, entry.offset, entry.length, entry.rawLength);
  }

  /**
   * Makes room for this many entries in all (the in-memory table sized once, up to the cap, not grown step
   * by step while index files are read): ContentStore.open estimates it from the index files' sizes.
   */
  reserve(entries: number): void {
    this.table.reserve(Math.min(entries, this.memoryEntries));
  }

  /** Reads one stored index file: version 2 straight from its records, version 1 through its JSON. */
  addIndexFile(name: string, stored: Buffer, key: string): void {
    const file = binaryIndexFile(stored, key);
    if (!file) return this.addFile(name, decodeIndexFile(stored, key));
    this.reserve(this.count + file.entryCount);
    const numbers: (number | undefined)[] = [];
    const names: string[] = [];
    for (let i = 0; i < file.packCount; i++) {
      const pack = file.pack(i);
      names.push(pack.pack);
      // a pack another file named already keeps that file's entries (as addPack does)
      numbers[i] = this.newPack(pack);
    }
    const b = file.bytes;
    for (let i = 0; i < file.entryCount; i++) {
      const at = file.entryAt(i);
      const number = numbers[b.readUInt32LE(at + 32)];
      if (number !== undefined) this.add(b, at, number, b.readUInt32LE(at + 36), b.readUInt32LE(at + 40), b.readUInt32LE(at + 44));
    }
    this.files.set(name, names);
  }

  addFile(name: string, packs: IndexedPack[]): void {
    for (const p of packs) this.addPack(p);
    this.markFile(name, packs);
  }

  /** Records that an index file names these packs (already added). */
  markFile(name: string, packs: readonly (IndexedPack | string)[]): void {
    this.files.set(
      name,
      packs.map((p) => (typeof p === 'string' ? p : p.pack)),
    );
  }

  /** Closes the run files (their disk space is freed with them); the index is not used after. Dropping the index without it frees them once it is collected. */
  close(): void {
    for (const { run } of this.runs) run.close();
    this.runs = [];
  }

  /** The number of a new pack, or undefined when one of that name is known already. */
  private newPack(pack: Omit<IndexedPack, 'entries'>): number | undefined {
    if (this.packInfo.has(pack.pack)) return undefined;
    const number = this.packList.push({ pack: pack.pack, size: pack.size, kind: pack.kind, sealed: pack.sealed }) - 1;
    this.packInfo.set(pack.pack, { pack: pack.pack, number, size: pack.size, kind: pack.kind, sealed: pack.sealed });
    return number;
  }

  private add(src: Buffer, at: number, pack: number, offset: number, length: number, rawLength: number): void {
    this.count++;
    if (this.runs.length === 0 && !this.tail && this.table.size < this.memoryEntries) {
      this.table.append(src, at, pack, offset, length, rawLength);
      return;
    }
    if (!this.tail) {
      this.tail = new EntryTable(this.tailEntries);
      this.tailBase = this.count - 1;
    }
    this.tail.append(src, at, pack, offset, length, rawLength);
    if (this.tail.size >= this.tailEntries) this.spill();
  }

  /** Writes the tail, sorted, to a new run (then merges the runs when there are too many). */
  private spill(): void {
    const tail = this.tail!;
    const writer = new RunWriter(this.directory, { entries: tail.size, bitsPerEntry: this.filterBits(tail.size, this.runs) });
    const record = Buffer.alloc(RECORD_SIZE);
    try {
      for (const n of tail.sortedOrder()) {
        tail.writeRecord(n, record, 0);
        writer.push(record, 0);
      }
    } catch (error) {
      writer.abandon();
      throw error;
    }
    this.runs.push({ run: writer.finish(), base: this.tailBase, tier: 0 });
    this.tail = undefined;
    for (;;) {
      const newest = this.runs.slice(-MERGE_FANOUT);
      if (newest.length < MERGE_FANOUT || newest.some((r) => r.tier !== newest[0]!.tier)) break;
      // adjacent runs, oldest first: their numbers stay one range, and an id's first entry stays first
      const entries = newest.reduce((n, r) => n + r.run.count, 0);
      const merged = mergeRuns(
        newest.map((r) => r.run),
        this.directory,
        this.filterBits(entries, this.runs.slice(0, -MERGE_FANOUT)),
      );
      for (const { run } of newest) run.close();
      this.runs.splice(-MERGE_FANOUT, MERGE_FANOUT, { run: merged, base: newest[0]!.base, tier: newest[0]!.tier + 1 });
    }
  }

  /** Bits per entry for a new run's filter of `entries`, beside the filters of the runs kept (FILTER_BUDGET). */
  private filterBits(entries: number, kept: readonly { run: SortedRun }[]): number {
    const left = FILTER_BUDGET - kept.reduce((n, r) => n + r.run.filterBytes, 0);
    const bits = Math.min(FILTER_BITS_PER_ENTRY, Math.floor((left * 8) / entries));
    return bits >= 2 ? bits : 0;
  }

  /** The number of the first entry of the id at `at` in `bytes`, or -1. */
  private lookupAt(bytes: Buffer, at: number): number {
    const n = this.table.lookupAt(bytes, at);
    if (n >= 0) return n;
    for (const { run, base } of this.runs) {
      const position = run.find(bytes, at);
      if (position >= 0) return base + position;
    }
    if (this.tail) {
      const t = this.tail.lookupAt(bytes, at);
      if (t >= 0) return this.tailBase + t;
    }
    return -1;
  }

  private entry(n: number): { pack: number; entry: PackEntry } {
    if (n < this.table.size) return { pack: this.table.packAt(n), entry: { id: this.table.idAt(n), offset: this.table.offsetAt(n), length: this.table.lengthAt(n), rawLength: this.table.rawLengthAt(n) } };
    if (this.tail && n >= this.tailBase) {
      const t = n - this.tailBase;
      return { pack: this.tail.packAt(t), entry: { id: this.tail.idAt(t), offset: this.tail.offsetAt(t), length: this.tail.lengthAt(t), rawLength: this.tail.rawLengthAt(t) } };
    }
    for (const { run, base } of this.runs) {
      if (n < base || n >= base + run.count) continue;
      run.read(n - base, this.record);
      return { pack: this.record.readUInt32LE(32), entry: recordEntry(this.record, 0) };
    }
    throw new PgkeepError('INTERNAL', `index entry ${n} does not exist (${this.count} entries)`);
  }
}

/** The entry of a record (id, pack, offset, length, raw length) at `at`. */
export function recordEntry(r: Buffer, at: number): PackEntry {
  return { id: Buffer.from(r.subarray(at, at + CHUNK_ID_SIZE)), offset: r.readUInt32LE(at + 36), length: r.readUInt32LE(at + 40), rawLength: r.readUInt32LE(at + 44) };
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
const ENTRY_RECORD = RECORD_SIZE;
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
