import { BLK_BLOBS, BLK_DATA } from '../pipeline/custom-toc.js';
import { instantiatePgkeepWasm, WASM_FREE_FROM, WASM_PAGE, type PgkeepWasm } from '../pipeline/pgkeep-wasm.js';
import { BufferPool } from '../pipeline/buffer-pool.js';

/** The end of a table's COPY data in a custom archive (dumpTableData_copy writes it as its own chunk): not rows. */
const COPY_TRAILER = Buffer.from('\\.\n\n\n');
const MAX_CHUNK = 1 << 30;
/** Where the row copier reads its input in its WebAssembly memory, and how much at a time (16 bytes after it stay free: its newline count reads a vector past the end). */
const COPY_INPUT_AT = WASM_FREE_FROM;
const COPY_INPUT_BYTES = 1 << 20;

type State = 'type' | 'id' | 'length' | 'data' | 'lo-oid' | 'lo-length' | 'lo-data';

export interface SplitterOutput {
  /** Bytes of a data block the loader does not read (large objects, an entry without a COPY statement), verbatim, framing included. */
  pass(bytes: Buffer): void;
  /** A batch of whole COPY text rows of entry `dumpId` (each ends with a newline), and how many rows it holds. */
  rows(dumpId: number, data: Buffer, rows: number): void;
}

/**
 * Splits the data blocks of an uncompressed custom-format archive (the part
 * after the table of contents, pg_dump -Fc -Z0 as pgkeep runs it) while it
 * streams past: the COPY text of the tables the loader reads is cut into
 * batches of whole rows, every other block is passed on byte for byte.
 *
 * A table's data block is its COPY text in length-prefixed chunks
 * (_WriteData in pg_backup_custom.c), normally one row per chunk, ended by a
 * chunk holding just `\.` and two blank lines. A newline inside a value is
 * written as `\n`, so every newline byte ends a row: a batch is cut after
 * the last newline it holds, whatever the chunking. The trailer is dropped
 * (COPY FROM STDIN over the protocol needs no end marker). Large objects
 * (BLOBS blocks: an oid, then chunks, per object) are passed on.
 *
 * Rows are copied once, into a batch buffer of `batchBytes`; a batch is
 * handed on when the next row would not fit, and at the end of the block.
 * The consumer gives each batch back with recycle() once it is written.
 */
export class ArchiveDataSplitter {
  private state: State = 'type';
  private block: 'data' | 'blobs' = 'data';
  private readonly intBytes: Buffer;
  private intHave = 0;
  private remaining = 0;
  /** The block being read: its dump id when its rows are loaded here, else undefined (passed on). */
  private loading: number | undefined;
  /** Type byte and id of the block being read, kept until it is known whether the block is passed on. */
  private readonly header: Buffer;
  private headerLength = 0;
  /** A chunk of the trailer's length, held until it is known whether the block ends after it. */
  private held: Buffer | null = null;
  private heldFill = 0;
  /** The rows gathered for the next batch: the row copier's output in its memory, or (a row longer than that) a bigger buffer of its own. */
  private batch: Buffer;
  private fill = 0;
  private readonly wasm: { exports: PgkeepWasm; input: Uint8Array; batch: Buffer; batchAt: number } | undefined;
  /** The buffers batches leave in (with the row copier): reused once their COPY write is done, not one new buffer per batch. */
  private readonly pool: BufferPool;
  /** Newline bytes in batch[0, fill): the rows a flush hands on. */
  private newlines = 0;
  private ended = false;

  constructor(
    private readonly intSize: number,
    /** Whether the rows of this TABLE DATA entry are loaded here (else its block is passed on). */
    private readonly loads: (dumpId: number) => boolean,
    private readonly output: SplitterOutput,
    private readonly batchBytes = 1 << 20,
  ) {
    this.intBytes = Buffer.alloc(1 + intSize);
    this.header = Buffer.alloc(2 + intSize);
    // as many kept as were ever out at once (the connections' queues, a run's batches): a peak of batches is held anyway
    this.pool = new BufferPool(batchBytes, 64);
    // pg_dump writes 4-byte ints (sizeof(int)); the row copier reads only those
    if (intSize === 4) {
      const exports = instantiatePgkeepWasm();
      const batchAt = COPY_INPUT_AT + COPY_INPUT_BYTES + 64;
      const needed = Math.ceil((batchAt + batchBytes) / WASM_PAGE);
      const pages = exports.memory.buffer.byteLength / WASM_PAGE;
      if (needed > pages) exports.memory.grow(needed - pages);
      // views taken once the memory has grown (growing detaches the old buffer), and it never grows again
      const memory = exports.memory.buffer;
      this.wasm = { exports, input: new Uint8Array(memory, COPY_INPUT_AT, COPY_INPUT_BYTES), batch: Buffer.from(memory, batchAt, batchBytes), batchAt };
      this.batch = this.wasm.batch;
    } else {
      this.batch = Buffer.allocUnsafe(batchBytes);
    }
  }

  /** Feeds the next bytes of the archive's data blocks. Throws on a layout it does not understand. */
  push(buffer: Buffer): void {
    let i = 0;
    /** Where the bytes of a passed-on block start in this buffer. */
    let passFrom = this.passing() ? 0 : -1;
    const passUpTo = (end: number) => {
      if (passFrom >= 0 && end > passFrom) this.output.pass(buffer.subarray(passFrom, end));
    };
    while (i < buffer.length) {
      if (this.wasm && this.batch === this.wasm.batch && this.state === 'length' && this.loading !== undefined && this.intHave === 0 && this.held === null) {
        // the bulk of an archive: a loaded table's rows, a length then a row, over and over
        const from = i;
        i = this.copyRows(buffer, i);
        if (i > from) continue;
      }
      switch (this.state) {
        case 'type': {
          const type = buffer[i++]!;
          if (type !== BLK_DATA && type !== BLK_BLOBS) throw new Error(`unexpected data block type ${type}`);
          this.block = type === BLK_DATA ? 'data' : 'blobs';
          this.header[0] = type;
          this.headerLength = 1;
          this.state = 'id';
          break;
        }
        case 'data':
        case 'lo-data': {
          const n = Math.min(this.remaining, buffer.length - i);
          if (this.loading !== undefined) this.takeRows(buffer.subarray(i, i + n));
          i += n;
          this.remaining -= n;
          if (this.remaining === 0) this.state = this.state === 'data' ? 'length' : 'lo-length';
          break;
        }
        default: {
          // an int: a sign byte and intSize bytes, possibly split across buffers
          const want = 1 + this.intSize;
          const n = Math.min(want - this.intHave, buffer.length - i);
          buffer.copy(this.intBytes, this.intHave, i, i + n);
          this.intHave += n;
          i += n;
          if (this.intHave < want) break;
          this.intHave = 0;
          const value = this.decodeInt(this.intBytes);
          if (this.state === 'id') {
            this.intBytes.copy(this.header, this.headerLength);
            this.headerLength += want;
            this.loading = this.block === 'data' && this.loads(value) ? value : undefined;
            if (this.loading === undefined) {
              // Passed on: its header first, then everything up to its end.
              this.output.pass(Buffer.from(this.header.subarray(0, this.headerLength)));
              passFrom = i;
            }
            this.state = this.block === 'data' ? 'length' : 'lo-oid';
          } else if (this.onInt(value)) {
            // the block ended
            passUpTo(i);
            passFrom = -1;
            this.loading = undefined;
          }
        }
      }
    }
    passUpTo(buffer.length);
  }

  /** The archive ended: it must end between two blocks. Hands on the last batch. */
  end(): void {
    if (this.ended) return;
    this.ended = true;
    if (this.state !== 'type' || this.intHave !== 0) throw new Error('the archive ended inside a data block');
  }

  private passing(): boolean {
    return this.state !== 'type' && this.state !== 'id' && this.loading === undefined;
  }

  /** An int of the block's framing; true when it ends the block. */
  private onInt(value: number): boolean {
    switch (this.state) {
      case 'length':
        if (this.loading !== undefined && this.held) {
          // The held chunk is the trailer only if the block ends after it.
          const held = this.held;
          this.held = null;
          if (value !== 0 || !held.equals(COPY_TRAILER)) this.append(held);
        }
        if (value === 0) {
          if (this.loading !== undefined) this.flush(true);
          this.state = 'type';
          return true;
        }
        if (value < 0 || value > MAX_CHUNK) throw new Error(`data chunk length ${value} out of range`);
        this.remaining = value;
        if (this.loading !== undefined && value === COPY_TRAILER.length) {
          this.held = Buffer.alloc(value);
          this.heldFill = 0;
        }
        this.state = 'data';
        return false;
      case 'lo-oid':
        if (value === 0) {
          this.state = 'type';
          return true;
        }
        this.state = 'lo-length';
        return false;
      case 'lo-length':
        if (value === 0) {
          this.state = 'lo-oid';
          return false;
        }
        if (value < 0 || value > MAX_CHUNK) throw new Error(`large object chunk length ${value} out of range`);
        this.remaining = value;
        this.state = 'lo-data';
        return false;
      default:
        throw new Error(`unexpected state ${this.state}`);
    }
  }

  /**
   * The hot path of push(): while whole chunks of a loaded table lie in
   * `buffer`, the WebAssembly row copier (rowsCopy in pgkeep-wasm.wat) moves
   * their bytes into the batch and counts their newlines; returns where it
   * stopped. A chunk is normally one row (~100 bytes) and an archive holds
   * millions: a Buffer.copy, a subarray and an indexOf per row were most of
   * the splitter's CPU. It stops before what the general path handles: a
   * length of 0 (the block's end) or of the trailer (held), a bad one (the
   * general path throws), a chunk that continues in the next buffer, or a
   * row longer than a batch.
   */
  private copyRows(buffer: Buffer, at: number): number {
    const wasm = this.wasm!;
    let i = at;
    while (i < buffer.length) {
      const window = Math.min(buffer.length - i, COPY_INPUT_BYTES);
      wasm.input.set(buffer.subarray(i, i + window));
      const used = wasm.exports.rowsCopy(COPY_INPUT_AT, window, wasm.batchAt, this.fill, this.batch.length);
      this.fill = wasm.exports.rowsCopied();
      this.newlines += wasm.exports.rowsNewlines();
      i += used;
      if (used === window) continue;
      // It stopped at the int at i: go on past a full batch or the window's end, else leave it to the general path.
      if (i + 5 > buffer.length || buffer[i] !== 0) return i;
      const value = buffer.readUInt32LE(i + 1);
      if (value === 0 || value === COPY_TRAILER.length || value > MAX_CHUNK || i + 5 + value > buffer.length) return i;
      if (this.fill + value > this.batch.length) {
        this.flush(false);
        if (this.batch !== wasm.batch || this.fill + value > this.batch.length) return i;
      }
    }
    return i;
  }

  /** Payload bytes of a loaded table's chunk. */
  private takeRows(bytes: Buffer): void {
    if (this.held) {
      bytes.copy(this.held, this.heldFill);
      this.heldFill += bytes.length;
      return;
    }
    this.append(bytes);
  }

  private append(bytes: Buffer): void {
    if (this.fill + bytes.length > this.batch.length) {
      this.flush(false);
      if (this.fill + bytes.length > this.batch.length) {
        // A row longer than a batch (or a row cut across chunks): grow this batch to hold it.
        const bigger = Buffer.allocUnsafe(Math.max(this.batch.length * 2, this.fill + bytes.length));
        this.batch.copy(bigger, 0, 0, this.fill);
        this.batch = bigger;
      }
    }
    bytes.copy(this.batch, this.fill);
    this.fill += bytes.length;
    this.newlines += countNewlines(bytes, 0, bytes.length);
  }

  /** Hands on the whole rows gathered; at the block's end, all of it (which must end a row). */
  private flush(blockEnd: boolean): void {
    if (this.fill === 0) return;
    const cut = blockEnd ? this.fill : this.batch.lastIndexOf(10, this.fill - 1) + 1;
    if (blockEnd && this.batch[this.fill - 1] !== 10) throw new Error(`the data of entry ${this.loading} does not end with a whole row`);
    if (cut === 0) return; // no whole row yet: the caller grows the batch
    // every newline in the batch is at or before the cut (the cut follows the last one): each ends a row
    const rows = this.newlines;
    this.newlines = 0;
    const rest = this.fill - cut;
    let handed = this.batch.subarray(0, cut);
    if (this.wasm) {
      // the row copier's memory is reused: the batch leaves as a copy, in a pooled buffer when it fits (recycle() gives it back)
      const copy = cut <= this.pool.size ? this.pool.take().subarray(0, cut) : Buffer.allocUnsafe(cut);
      handed.copy(copy);
      handed = copy;
    }
    // the rest of a row moves to the start of the row copier's memory, or (longer than it, or no copier) to a new buffer
    if (this.wasm && rest <= this.wasm.batch.length) {
      this.batch.copy(this.wasm.batch, 0, cut, this.fill);
      this.batch = this.wasm.batch;
    } else {
      const next = Buffer.allocUnsafe(Math.max(this.batchBytes, rest));
      this.batch.copy(next, 0, cut, this.fill);
      this.batch = next;
    }
    this.fill = rest;
    this.output.rows(this.loading!, handed, rows);
  }

  /**
   * A batch handed to rows() is done with (its COPY write completed): its
   * buffer, when pooled, is reused for a later batch. A batch never given
   * back (a failed load) is left to the garbage collector.
   */
  recycle(batch: Buffer): void {
    if (this.pool.owns(batch)) this.pool.give(batch);
  }

  /** pg_dump's WriteInt: a sign byte, then intSize bytes, least significant first. */
  private decodeInt(bytes: Buffer): number {
    let value = 0;
    for (let i = this.intSize; i >= 1; i--) value = value * 256 + bytes[i]!;
    return bytes[0] ? -value : value;
  }
}

function countNewlines(bytes: Buffer, from: number, to: number): number {
  let n = 0;
  for (let at = bytes.indexOf(10, from); at !== -1 && at < to; at = bytes.indexOf(10, at + 1)) n++;
  return n;
}
