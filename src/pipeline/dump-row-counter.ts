import { BLK_BLOBS, BLK_DATA, CustomTocScanner, K_VERS_1_15, readArchiveToc } from './custom-toc.js';
import { instantiatePgkeepWasm, WASM_FREE_FROM, type PgkeepWasm } from './pgkeep-wasm.js';

export type DumpRowCount =
  /** Still reading. */
  | { state: 'counting' }
  /** Rows of every TABLE DATA entry of the archive, by tableKey(schema, name). */
  | { state: 'counted'; tables: Map<string, number> }
  /** Not an archive this counter understands (compressed, unexpected layout, cut short); `reason` says why. */
  | { state: 'unsupported'; reason: string };

/** The key of a table in DumpRowCount.tables. */
export const tableKey = (schema: string | null, name: string): string => JSON.stringify([schema, name]);

/** The end of every table's COPY data in a custom archive (dumpTableData_copy: `\.` and two blank lines), written as its own chunk. */
const COPY_TRAILER = Buffer.from('\\.\n\n\n');
const TRAILER_NEWLINES = 3;
/** Header and TOC are held in memory until parsed; past this the counter gives up (a schema of very many objects). */
const MAX_PREFIX = 64 << 20;
const MAX_CHUNK = 1 << 30;

/** 'rows': a data block walked in WebAssembly (rowsWalk), from its first length to its end. */
type State = 'type' | 'id' | 'rows' | 'length' | 'data' | 'lo-oid' | 'lo-length' | 'lo-data';

/** Bytes walked per call to the module: a buffer is copied into its memory this much at a time. */
const WINDOW = 256 * 1024;
const DATA_AT = WASM_FREE_FROM;
/** The newline count reads whole 16-byte vectors: up to 15 bytes past the data, masked off. */
const VECTOR_SLACK = 16;

/**
 * Counts the rows of every table in an uncompressed custom-format archive
 * (pg_dump -Fc -Z0, as pgkeep runs it) while it streams past, so a backup
 * gets exact row counts of what it holds without scanning every table a
 * second time on the server.
 *
 * A table's data block is its COPY text in length-prefixed chunks (_WriteData
 * in pg_backup_custom.c), one line per row (a newline inside a value is
 * written as `\n`), ended by a chunk holding just `\.` and two blank lines.
 * The header and TOC are parsed by custom-toc.ts once the scanner has found
 * where they end; the data blocks, which hold one chunk per row, by the
 * small state machine below (a generator step per chunk would cost seconds on
 * millions of rows). A table's data, almost every byte of a dump, is walked
 * in WebAssembly (rowsWalk in pgkeep-wasm.wat: the lengths, and the newlines
 * 16 bytes at a time): 0.12-0.14 s of CPU for a 575 MiB dump of 4.6 million
 * rows, copying included, against 0.19-0.24 s for the JavaScript walk. The
 * JavaScript states below still read the block headers, the large objects,
 * and a table's data where pg_dump's ints would be wider than 8 bytes.
 * Large objects are passed over. Anything unexpected makes it give up, and
 * the caller counts with SELECT count(*) instead.
 */
export class DumpRowCounter {
  private result: DumpRowCount = { state: 'counting' };
  // phase 1: the header and TOC
  private scanner: CustomTocScanner | undefined = new CustomTocScanner();
  private prefix: Buffer[] = [];
  private prefixLength = 0;
  // phase 2: the data blocks
  private intSize = 4;
  private readonly tables = new Map<number, { key: string; newlines: number }>();
  private readonly withData = new Set<number>();
  private state: State = 'type';
  private block: 'data' | 'blobs' = 'data';
  private readonly intBytes = Buffer.alloc(9);
  private intHave = 0;
  private remaining = 0;
  private current: { key: string; newlines: number } | undefined;
  /** The bytes of the chunk being read when it is short enough to be the trailer; else null. */
  private short: Buffer | null = null;
  private lastChunkWasTrailer = false;
  /** Bytes fed so far. */
  private fed = 0;
  /** Where data blocks started, as offsets in the archive, since the last takeBlockStarts(). */
  private blockStarts: number[] = [];
  /** The module walking table data ('rows'), made on the first data block. */
  private wasm: { module: PgkeepWasm; memory: Uint8Array } | undefined;

  /**
   * `walk: 'javascript'` reads every table's data with the JavaScript states
   * below, as the counter did before the WebAssembly walk. That is the
   * reference the tests hold the WebAssembly walk to (the same counts, block
   * starts and reasons: test/integration/custom-toc.test.ts); pgkeep itself
   * takes the default.
   */
  constructor(private readonly options: { walk?: 'webassembly' | 'javascript' } = {}) {}

  get count(): DumpRowCount {
    return this.result;
  }

  /** Feeds the next bytes of the archive. Cheap once the count has given up; never throws (it gives up). */
  push(chunk: Buffer): void {
    if (this.result.state !== 'counting') return;
    try {
      this.feed(chunk);
    } catch (error) {
      this.giveUp(`cannot parse the archive (${(error as Error).message})`);
    }
  }

  /**
   * The offsets in the archive where data blocks (one per table, or large
   * objects) started in the bytes pushed since the last call. A content store
   * cuts its chunks there, so a change in one table never moves the chunks of
   * the next. Empty once the counter has given up.
   */
  takeBlockStarts(): number[] {
    const starts = this.blockStarts;
    this.blockStarts = [];
    return this.result.state === 'unsupported' ? [] : starts;
  }

  private feed(chunk: Buffer): void {
    const base = this.fed;
    this.fed += chunk.length;
    if (!this.scanner) return this.walk(chunk, base);
    this.scanner.push(chunk);
    this.prefix.push(chunk);
    this.prefixLength += chunk.length;
    const scan = this.scanner.scan;
    if (scan.state === 'unsupported') return void this.giveUp(scan.reason);
    if (scan.state === 'scanning') {
      if (this.prefixLength > MAX_PREFIX) this.giveUp('the table of contents is larger than 64 MiB');
      return;
    }
    // The TOC ends at scan.end (the scanner has checked the block header after it): parse it, then walk on from there.
    const bytes = Buffer.concat(this.prefix, this.prefixLength);
    this.scanner = undefined;
    this.prefix = [];
    try {
      this.readHead(bytes.subarray(0, scan.end));
    } catch (error) {
      return void this.giveUp((error as Error).message);
    }
    this.walk(bytes.subarray(scan.end), scan.end);
  }

  /** The archive ended: counted only when it ended between two data blocks. */
  end(): Exclude<DumpRowCount, { state: 'counting' }> {
    if (this.result.state !== 'counting') return this.result;
    if (this.scanner || this.state !== 'type' || this.intHave !== 0) return this.giveUp('the archive ended before its last data block did');
    const tables = new Map<string, number>();
    for (const table of this.tables.values()) tables.set(table.key, table.newlines - TRAILER_NEWLINES);
    const result = { state: 'counted' as const, tables };
    this.result = result;
    return result;
  }

  private giveUp(reason: string): { state: 'unsupported'; reason: string } {
    const result = { state: 'unsupported' as const, reason };
    this.result = result;
    this.prefix = [];
    this.scanner = undefined;
    return result;
  }

  /** Integer size and compression from the header; the TABLE DATA entries from the TOC. */
  private readHead(head: Buffer): void {
    const archiveVersion = (head[5]! * 256 + head[6]!) * 256 + head[7]!;
    this.intSize = head[8]!;
    // 1.15 (PostgreSQL 16) and later: one byte naming the algorithm; before: the zlib level as an int. 0: none.
    const compression = archiveVersion >= K_VERS_1_15 ? head[11]! : this.decodeInt(head.subarray(11, 12 + this.intSize));
    if (compression !== 0) throw new Error('the archive is compressed');
    for (const entry of readArchiveToc(head)) {
      if (entry.hasData) this.withData.add(entry.dumpId);
      if (entry.desc === 'TABLE DATA') this.tables.set(entry.dumpId, { key: tableKey(entry.namespace, entry.tag), newlines: 0 });
    }
  }

  /** pg_dump's WriteInt: a sign byte, then intSize bytes, least significant first. */
  private decodeInt(bytes: Buffer, at = 0): number {
    let value = 0;
    for (let i = this.intSize; i >= 1; i--) value = value * 256 + bytes[at + i]!;
    return bytes[at] ? -value : value;
  }

  /** Walks the data blocks in `buffer`, which starts at offset `base` of the archive. */
  private walk(buffer: Buffer, base: number): void {
    let i = 0;
    while (i < buffer.length && this.result.state === 'counting') {
      switch (this.state) {
        case 'type': {
          this.blockStarts.push(base + i);
          const type = buffer[i++];
          if (type !== BLK_DATA && type !== BLK_BLOBS) return void this.giveUp(`unexpected data block type ${type}`);
          this.block = type === BLK_DATA ? 'data' : 'blobs';
          this.state = 'id';
          break;
        }
        case 'rows': {
          const { module, memory } = this.wasm!;
          const n = Math.min(WINDOW, buffer.length - i);
          memory.set(buffer.subarray(i, i + n), DATA_AT);
          i += module.rowsWalk(DATA_AT, n);
          if (this.current) this.current.newlines += module.rowsNewlines();
          const status = module.rowsStatus();
          if (status === 2) return void this.giveUp(`data chunk length ${module.rowsBadLength()} out of range`);
          if (status === 1) {
            // A table's data must end with the COPY trailer, whose newlines are not rows.
            if (this.current && !module.rowsLastWasTrailer()) return void this.giveUp('a table data block does not end with the COPY trailer');
            this.state = 'type';
          }
          break;
        }
        case 'data':
        case 'lo-data': {
          const n = Math.min(this.remaining, buffer.length - i);
          const end = i + n;
          if (this.state === 'data' && this.current) {
            // A chunk is usually one row ending in its only newline: one search, not one past the end.
            for (let at = buffer.indexOf(10, i); at !== -1 && at < end; at = at + 1 < end ? buffer.indexOf(10, at + 1) : -1) this.current.newlines++;
            if (this.short) buffer.copy(this.short, this.short.length - this.remaining, i, end);
          }
          i = end;
          this.remaining -= n;
          if (this.remaining === 0) {
            if (this.state === 'data') this.lastChunkWasTrailer = this.short !== null && this.short.equals(COPY_TRAILER);
            this.state = this.state === 'data' ? 'length' : 'lo-length';
          }
          break;
        }
        default: {
          // an int: a sign byte and intSize bytes, possibly split across buffers
          const want = 1 + this.intSize;
          if (this.intHave === 0 && i + want <= buffer.length) {
            i += want;
            this.onInt(this.decodeInt(buffer, i - want));
            break;
          }
          const n = Math.min(want - this.intHave, buffer.length - i);
          buffer.copy(this.intBytes, this.intHave, i, i + n);
          this.intHave += n;
          i += n;
          if (this.intHave === want) {
            this.intHave = 0;
            this.onInt(this.decodeInt(this.intBytes));
          }
        }
      }
    }
  }

  private onInt(value: number): void {
    switch (this.state) {
      case 'id':
        if (!this.withData.has(value)) return void this.giveUp(`a data block names entry ${value}, which has no data in the TOC`);
        this.current = this.block === 'data' ? this.tables.get(value) : undefined;
        this.lastChunkWasTrailer = false;
        if (this.block === 'data' && this.intSize <= 8 && this.options.walk !== 'javascript') {
          this.wasm ??= rowWalker();
          this.wasm.module.rowsBegin(this.intSize);
          this.state = 'rows';
        } else {
          this.state = this.block === 'data' ? 'length' : 'lo-oid';
        }
        return;
      case 'length':
        if (value === 0) {
          // A table's data must end with the COPY trailer, whose newlines are not rows.
          if (this.current && !this.lastChunkWasTrailer) return void this.giveUp('a table data block does not end with the COPY trailer');
          this.state = 'type';
          return;
        }
        if (value < 0 || value > MAX_CHUNK) return void this.giveUp(`data chunk length ${value} out of range`);
        this.remaining = value;
        this.short = this.current && value === COPY_TRAILER.length ? Buffer.alloc(value) : null;
        this.state = 'data';
        return;
      case 'lo-oid':
        this.state = value === 0 ? 'type' : 'lo-length';
        return;
      case 'lo-length':
        if (value === 0) {
          this.state = 'lo-oid';
          return;
        }
        if (value < 0 || value > MAX_CHUNK) return void this.giveUp(`large object chunk length ${value} out of range`);
        this.remaining = value;
        this.state = 'lo-data';
        return;
      default:
        this.giveUp(`unexpected state ${this.state}`);
    }
  }
}

/** An instance of the module for one counter, with room for a window and the vector slack after it. */
function rowWalker(): { module: PgkeepWasm; memory: Uint8Array } {
  const module = instantiatePgkeepWasm();
  const memory = new Uint8Array(module.memory.buffer);
  if (memory.length < DATA_AT + WINDOW + VECTOR_SLACK) throw new RangeError('the WebAssembly module has too little memory for the row counter');
  return { module, memory };
}
