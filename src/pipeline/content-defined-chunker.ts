import { createHash } from 'node:crypto';
import { instantiatePgkeepWasm, WASM_FREE_FROM, type PgkeepWasm } from './pgkeep-wasm.js';

/** Chunk sizes, in bytes: a cut is never before `min` nor after `max`, and lands near `average`. */
export interface ChunkSizes {
  min: number;
  average: number;
  max: number;
}

/**
 * A content-defined chunker: FastCDC with normalized chunking (Xia et al.,
 * 2016/2020), over a stream of buffers.
 *
 * Why content-defined: a cut depends only on the bytes just before it, so
 * rows inserted or deleted in the middle of a dump move the cuts near the
 * change and nowhere else, and every chunk after it is found again.
 *
 * The gear table is derived from a per-repository seed (like restic's
 * per-repository polynomial): without it, the chunk sizes of a stored stream
 * would say something about its content to whoever can see the sizes.
 *
 * The hash is 32-bit: bit k of it depends on the last k+1 bytes, so the masks
 * take the top bits, which see the most bytes. Normalized chunking: below
 * `average` a cut needs two more mask bits than the average asks for, above
 * it two fewer, which pulls the sizes towards the average.
 *
 * The loop over the bytes is WebAssembly (chunkerScan in pgkeep-wasm.wat): in
 * JavaScript it was the largest piece of a daily backup's CPU (0.9 s a GB).
 * Its cuts are those of the JavaScript chunker it replaced, bit for bit
 * (test/support/reference-chunker.ts; existing repositories go on
 * deduplicating). Each write is copied into the instance's memory a window
 * at a time and scanned in one call, which returns the cut offsets; the
 * chunks are views into the caller's buffers, as before.
 */
export class ContentDefinedChunker {
  private readonly wasm: PgkeepWasm;
  private readonly memory: Uint8Array;
  private readonly cutOffsets: Int32Array;
  /** The current chunk's pieces (views into the written buffers, copied on cut only when needed). */
  private pieces: Buffer[] = [];
  /** Bytes in the current chunk so far. */
  private length = 0;

  constructor(
    readonly sizes: ChunkSizes,
    seed: Uint8Array,
  ) {
    assertChunkSizes(sizes);
    const bits = Math.round(Math.log2(sizes.average));
    this.wasm = instantiatePgkeepWasm();
    // the module's memory is never grown here, so these views stay valid
    const buffer = this.wasm.memory.buffer;
    if (buffer.byteLength < CUTS_AT + 4 * CUTS_ROOM) throw new RangeError('the WebAssembly module has too little memory for the chunker');
    const table = new DataView(buffer, 0, 1024);
    gearTable(seed).forEach((word, i) => table.setUint32(i * 4, word, true));
    this.memory = new Uint8Array(buffer);
    this.cutOffsets = new Int32Array(buffer, CUTS_AT, CUTS_ROOM);
    this.wasm.chunkerInit(sizes.min, sizes.average, sizes.max, topBits(bits + 2), topBits(bits - 2));
  }

  /**
   * Takes the next bytes of the stream; returns the chunks completed by them,
   * in order. The buffer must not be changed afterwards: the chunks may be
   * views into it.
   */
  write(data: Buffer): Buffer[] {
    return this.writePieces(data).map(joined);
  }

  /**
   * write(), with each chunk as the pieces of the written buffers it spans
   * (views, in order), not joined: a caller that only hashes a chunk it
   * already holds copies nothing. About a quarter of the chunks of a dump
   * read from a pipe span two of its 64 KiB pieces.
   */
  writePieces(data: Buffer): Buffer[][] {
    const chunks: Buffer[][] = [];
    let start = 0;
    for (let at = 0; at < data.length; at += WINDOW) {
      const n = Math.min(WINDOW, data.length - at);
      this.memory.set(data.subarray(at, at + n), DATA_AT);
      const count = this.wasm.chunkerScan(DATA_AT, n, CUTS_AT);
      for (let k = 0; k < count; k++) {
        const cut = at + this.cutOffsets[k]!;
        this.pieces.push(data.subarray(start, cut));
        chunks.push(this.take());
        start = cut;
      }
    }
    if (start < data.length) {
      this.pieces.push(data.subarray(start));
      this.length += data.length - start;
    }
    return chunks;
  }

  /**
   * Ends the current chunk here, whatever its size (undefined when it is
   * empty). Used at the end of the stream, and at boundaries the caller knows
   * matter, such as the start of each table's data in a dump: a change in one
   * table then never disturbs the chunks of another.
   */
  cut(): Buffer | undefined {
    const pieces = this.cutPieces();
    return pieces && joined(pieces);
  }

  /** cut(), the chunk as its pieces (see writePieces). */
  cutPieces(): Buffer[] | undefined {
    if (this.length === 0) return undefined;
    this.wasm.chunkerReset();
    return this.take();
  }

  private take(): Buffer[] {
    const pieces = this.pieces;
    this.pieces = [];
    this.length = 0;
    return pieces;
  }
}

/** A chunk's pieces as one buffer (copied only when there are several). */
export function joined(pieces: readonly Buffer[]): Buffer {
  return pieces.length === 1 ? pieces[0]! : Buffer.concat(pieces);
}

/** Bytes scanned per call: a write is copied into the module's memory this much at a time (a pipe's pieces are 64 KiB). */
const WINDOW = 256 * 1024;
const DATA_AT = WASM_FREE_FROM;
/** Room for the cuts of one window: at most one per `min` (>= 64) bytes, plus one. */
const CUTS_AT = DATA_AT + WINDOW;
const CUTS_ROOM = WINDOW / 64 + 1;

/** The mask of the top `count` bits of a 32-bit hash. */
export function topBits(count: number): number {
  return count >= 32 ? -1 : ~((1 << (32 - count)) - 1) | 0;
}

/** 256 pseudo-random 32-bit words from the seed (SHA-256 in counter mode: the same seed, the same table, everywhere). */
export function gearTable(seed: Uint8Array): Uint32Array {
  const table = new Uint32Array(256);
  for (let block = 0; block < 32; block++) {
    const digest = createHash('sha256').update('pgkeep gear table').update(seed).update(Buffer.from([block])).digest();
    for (let j = 0; j < 8; j++) table[block * 8 + j] = digest.readUInt32LE(j * 4);
  }
  return table;
}

export function assertChunkSizes({ min, average, max }: ChunkSizes): void {
  if (!(Number.isInteger(min) && Number.isInteger(average) && Number.isInteger(max) && min >= 64 && min < average && average < max)) {
    throw new RangeError(`chunk sizes must be integers with 64 <= min < average < max: ${min}/${average}/${max}`);
  }
}
