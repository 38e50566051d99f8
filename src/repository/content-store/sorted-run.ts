import { randomBytes } from 'node:crypto';
import { closeSync, openSync, readSync, unlinkSync, writeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { PgkeepError } from '../../errors.js';
import { RECORD_SIZE } from './entry-table.js';
import { CHUNK_ID_SIZE } from './pack-file.js';

/** Records per page: a page is what one lookup reads (4,080 bytes, within one 4 KiB block of the page cache). */
export const PAGE_RECORDS = Math.floor(4096 / RECORD_SIZE);
const PAGE_BYTES = PAGE_RECORDS * RECORD_SIZE;
/** Records a sequential reader or a writer buffers (~64 KiB). */
const BLOCK_RECORDS = PAGE_RECORDS * 16;

/**
 * A Bloom filter over a run's ids, in memory: a lookup reads a page of a run
 * only when the filter says the id may be there. Without it every run cost a
 * page read (a system call) for each id it does not hold, and a lookup tried
 * every run before the one holding the id: 11 µs of CPU a lookup over 5 runs
 * against ~1 µs in memory (docs/benchmarks.md, "Spilled lookups"). Ids are
 * SHA-256 or HMAC output, uniform, so their bytes 8-15 serve as the two hashes
 * of double hashing (bytes 0-7 are the hash table's and the page search's).
 */
export class RunFilter {
  private readonly words: Uint32Array;
  private readonly bits: number;

  constructor(
    entries: number,
    bitsPerEntry: number,
    /** Probes an id sets and tests: ~0.7 × bits per entry is best; 2.2% false positives at 8 bits and 5 probes. */
    private readonly probes = Math.max(1, Math.round(bitsPerEntry * 0.69)),
  ) {
    this.bits = Math.max(32, Math.ceil(entries * bitsPerEntry));
    this.words = new Uint32Array(Math.ceil(this.bits / 32));
  }

  /** Memory held, in bytes. */
  get bytes(): number {
    return this.words.byteLength;
  }

  add(src: Buffer, at: number): void {
    const h1 = src.readUInt32LE(at + 8);
    const h2 = src.readUInt32LE(at + 12) | 1;
    for (let i = 0; i < this.probes; i++) {
      const bit = ((h1 + Math.imul(i, h2)) >>> 0) % this.bits;
      this.words[bit >>> 5]! |= 1 << (bit & 31);
    }
  }

  /** False when the id is surely not in the run. */
  mayHold(src: Buffer, at: number): boolean {
    const h1 = src.readUInt32LE(at + 8);
    const h2 = src.readUInt32LE(at + 12) | 1;
    for (let i = 0; i < this.probes; i++) {
      const bit = ((h1 + Math.imul(i, h2)) >>> 0) % this.bits;
      if ((this.words[bit >>> 5]! & (1 << (bit & 31))) === 0) return false;
    }
    return true;
  }
}

/** A run's descriptor is closed when the run is dropped without close() (a store a long-lived process forgot): its disk space goes with it. */
const runFiles = new FinalizationRegistry<number>((fd) => {
  try {
    closeSync(fd);
  } catch {
    // closed already
  }
});

/**
 * Index entries spilled to local disk, sorted by id (entries of one id in
 * the order they were added): RECORD_SIZE records side by side in a
 * temporary file that is unlinked as soon as it is opened, so only the open
 * descriptor keeps it, and a killed process leaves nothing behind. In memory:
 * the first id of each page and its first four bytes again as a number (36
 * bytes per PAGE_RECORDS entries, ~0.45 byte an entry). A lookup is a binary search of those, then one read of a page (or
 * two when an id's entries straddle a page boundary).
 */
export class SortedRun {
  private closed = false;
  private readonly page = Buffer.allocUnsafe(PAGE_BYTES);
  /** The first four bytes of each page's first id, big-endian: the search compares numbers, and whole ids only where these are equal. */
  private readonly prefixes: Uint32Array;

  constructor(
    private readonly fd: number,
    readonly count: number,
    /** The first id of each page. */
    private readonly firsts: Buffer,
    /** Its ids' filter, when it has one. */
    private readonly filter?: RunFilter,
  ) {
    runFiles.register(this, fd, this);
    this.prefixes = new Uint32Array(firsts.length / CHUNK_ID_SIZE);
    for (let p = 0; p < this.prefixes.length; p++) this.prefixes[p] = firsts.readUInt32BE(p * CHUNK_ID_SIZE);
  }

  /** The position of the first entry of the id at `at` in `bytes`, or -1. */
  find(bytes: Buffer, at: number): number {
    if (this.filter && !this.filter.mayHold(bytes, at)) return -1;
    const pages = this.firsts.length / CHUNK_ID_SIZE;
    // the first page whose first id is not below the id
    const prefix = bytes.readUInt32BE(at);
    let lo = 0;
    let hi = pages;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const first = this.prefixes[mid]!;
      // firsts.compare(target, ...): the page's first id against the one sought
      if (first < prefix || (first === prefix && this.firsts.compare(bytes, at, at + CHUNK_ID_SIZE, mid * CHUNK_ID_SIZE, (mid + 1) * CHUNK_ID_SIZE) < 0)) lo = mid + 1;
      else hi = mid;
    }
    // the id's first entry is in the page before (its entries may run on into page lo), or starts page lo
    if (lo > 0) {
      const found = this.searchPage(lo - 1, bytes, at);
      if (found >= 0) return found;
    }
    if (lo < pages && this.firsts.compare(bytes, at, at + CHUNK_ID_SIZE, lo * CHUNK_ID_SIZE, (lo + 1) * CHUNK_ID_SIZE) === 0) return lo * PAGE_RECORDS;
    return -1;
  }

  /** Reads the record at a position into `into` (RECORD_SIZE bytes at `at`). */
  read(position: number, into: Buffer, at = 0): void {
    this.readAt(into, at, RECORD_SIZE, position * RECORD_SIZE);
  }

  /** Every record in order, a block of whole records at a time (the buffer is reused: read it before the next). */
  *blocks(): IterableIterator<Buffer> {
    const block = Buffer.allocUnsafe(BLOCK_RECORDS * RECORD_SIZE);
    for (let from = 0; from < this.count; from += BLOCK_RECORDS) {
      const records = Math.min(BLOCK_RECORDS, this.count - from);
      this.readAt(block, 0, records * RECORD_SIZE, from * RECORD_SIZE);
      yield block.subarray(0, records * RECORD_SIZE);
    }
  }

  /** Memory its filter holds, in bytes (0 without one). */
  get filterBytes(): number {
    return this.filter?.bytes ?? 0;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    runFiles.unregister(this);
    closeSync(this.fd);
  }

  private searchPage(page: number, bytes: Buffer, at: number): number {
    const from = page * PAGE_RECORDS;
    const records = Math.min(PAGE_RECORDS, this.count - from);
    this.readAt(this.page, 0, records * RECORD_SIZE, from * RECORD_SIZE);
    // the first record not below the id
    const prefix = bytes.readUInt32BE(at);
    let lo = 0;
    let hi = records;
    while (lo < hi) {
      const mid = (lo + hi) >> 1;
      const first = this.page.readUInt32BE(mid * RECORD_SIZE);
      if (first < prefix) lo = mid + 1;
      else if (first > prefix) hi = mid;
      else if (this.page.compare(bytes, at, at + CHUNK_ID_SIZE, mid * RECORD_SIZE, mid * RECORD_SIZE + CHUNK_ID_SIZE) < 0) lo = mid + 1;
      else hi = mid;
    }
    return lo < records && this.page.compare(bytes, at, at + CHUNK_ID_SIZE, lo * RECORD_SIZE, lo * RECORD_SIZE + CHUNK_ID_SIZE) === 0 ? from + lo : -1;
  }

  private readAt(into: Buffer, at: number, length: number, position: number): void {
    let done = 0;
    try {
      while (done < length) {
        const n = readSync(this.fd, into, at + done, length - done, position + done);
        if (n === 0) throw new Error(`ends at byte ${position + done}`);
        done += n;
      }
    } catch (error) {
      throw new PgkeepError('STORAGE_IO', `reading the chunk index's temporary run file failed: ${(error as Error).message}`, { cause: error });
    }
  }
}

/** Writes a run's records in order (sorted by the caller), buffered; finish() gives the run. */
export class RunWriter {
  private readonly fd: number;
  private readonly block = Buffer.allocUnsafe(BLOCK_RECORDS * RECORD_SIZE);
  private inBlock = 0;
  private count = 0;
  private written = 0;
  private firsts: Buffer[] = [];
  private readonly filter: RunFilter | undefined;

  /** `filter`: the run's expected entries and the filter's bits per entry (none without). */
  constructor(directory = tmpdir(), filter?: { entries: number; bitsPerEntry: number }) {
    this.filter = filter && filter.bitsPerEntry >= 1 ? new RunFilter(filter.entries, filter.bitsPerEntry) : undefined;
    const path = join(directory, `pgkeep-index-${process.pid}-${randomBytes(8).toString('hex')}`);
    try {
      this.fd = openSync(path, 'wx+', 0o600);
      // unlinked at once: the descriptor keeps the file, and nothing is left behind whatever ends the process
      unlinkSync(path);
    } catch (error) {
      throw localError(error, `creating the chunk index's temporary run file in ${directory}`);
    }
  }

  /** Adds the record at `at` in `src`. */
  push(src: Buffer, at: number): void {
    if (this.count % PAGE_RECORDS === 0) this.firsts.push(Buffer.from(src.subarray(at, at + CHUNK_ID_SIZE)));
    this.filter?.add(src, at);
    src.copy(this.block, this.inBlock * RECORD_SIZE, at, at + RECORD_SIZE);
    this.count++;
    if (++this.inBlock === BLOCK_RECORDS) this.flush();
  }

  finish(): SortedRun {
    this.flush();
    const firsts = Buffer.concat(this.firsts);
    this.firsts = [];
    return new SortedRun(this.fd, this.count, firsts, this.filter);
  }

  /** Gives up the run (its file goes with the descriptor). */
  abandon(): void {
    closeSync(this.fd);
  }

  private flush(): void {
    const length = this.inBlock * RECORD_SIZE;
    let done = 0;
    try {
      while (done < length) done += writeSync(this.fd, this.block, done, length - done, this.written + done);
    } catch (error) {
      throw localError(error, "writing the chunk index's temporary run file");
    }
    this.written += length;
    this.inBlock = 0;
  }
}

/**
 * One run of the records of these runs, merged in id order; entries of one
 * id keep the order of the runs (the older run's first), so the first entry
 * of an id stays the one lookups find. Memory: one block per run and one for
 * the writer.
 */
export function mergeRuns(runs: readonly SortedRun[], directory?: string, filterBitsPerEntry = 0): SortedRun {
  const entries = runs.reduce((n, run) => n + run.count, 0);
  const writer = new RunWriter(directory, { entries, bitsPerEntry: filterBitsPerEntry });
  try {
    const cursors = runs.map((run) => ({ blocks: run.blocks(), block: Buffer.alloc(0) as Buffer, at: 0 }));
    const advance = (c: (typeof cursors)[number]): boolean => {
      c.at += RECORD_SIZE;
      if (c.at < c.block.length) return true;
      const next = c.blocks.next();
      if (next.done) return false;
      c.block = next.value;
      c.at = 0;
      return true;
    };
    const live = cursors.filter((c) => {
      c.at = -RECORD_SIZE;
      return advance(c);
    });
    while (live.length > 0) {
      // a few runs: a linear scan for the smallest head; the earlier run wins a tie
      let best = 0;
      for (let i = 1; i < live.length; i++) {
        const a = live[i]!;
        const b = live[best]!;
        const pa = a.block.readUInt32BE(a.at);
        const pb = b.block.readUInt32BE(b.at);
        if (pa < pb || (pa === pb && a.block.compare(b.block, b.at, b.at + CHUNK_ID_SIZE, a.at, a.at + CHUNK_ID_SIZE) < 0)) best = i;
      }
      const c = live[best]!;
      writer.push(c.block, c.at);
      if (!advance(c)) live.splice(best, 1);
    }
    return writer.finish();
  } catch (error) {
    writer.abandon();
    throw error;
  }
}

function localError(error: unknown, what: string): PgkeepError {
  const code = (error as NodeJS.ErrnoException).code === 'ENOSPC' ? 'STORAGE_FULL' : 'STORAGE_IO';
  return new PgkeepError(code, `${what} failed: ${(error as Error).message} (set TMPDIR to a directory with room)`, { cause: error });
}
