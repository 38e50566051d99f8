import { assertChunkSizes, gearTable, topBits, type ChunkSizes } from '../../src/pipeline/content-defined-chunker.js';

/**
 * The JavaScript chunker pgkeep used before the WebAssembly one
 * (src/pipeline/pgkeep-wasm.wat), kept unchanged as the reference its cuts
 * must match bit for bit: repositories written by it must go on
 * deduplicating against new backups (test/unit/content-defined-chunker.test.ts).
 *
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
 * The hash is 32-bit (JavaScript's bitwise operations are 32-bit): bit k of
 * it depends on the last k+1 bytes, so the masks take the top bits, which see
 * the most bytes. Normalized chunking: below `average` a cut needs two more
 * mask bits than the average asks for, above it two fewer, which pulls the
 * sizes towards the average.
 */
export class ReferenceChunker {
  private readonly gear: Uint32Array;
  private readonly maskSmall: number;
  private readonly maskLarge: number;
  /** The current chunk's pieces (views into the written buffers, copied on cut only when needed). */
  private pieces: Buffer[] = [];
  /** Bytes in the current chunk so far. */
  private length = 0;
  private hash = 0;

  constructor(
    readonly sizes: ChunkSizes,
    seed: Uint8Array,
  ) {
    assertChunkSizes(sizes);
    this.gear = gearTable(seed);
    const bits = Math.round(Math.log2(sizes.average));
    this.maskSmall = topBits(bits + 2);
    this.maskLarge = topBits(bits - 2);
  }

  /**
   * Takes the next bytes of the stream; returns the chunks completed by them,
   * in order. The buffer must not be changed afterwards: the chunks may be
   * views into it.
   */
  write(data: Buffer): Buffer[] {
    const chunks: Buffer[] = [];
    const { min, average, max } = this.sizes;
    const gear = this.gear;
    let start = 0;
    let i = 0;
    const n = data.length;
    while (i < n) {
      let length = this.length + (i - start);
      // the first `min` bytes of a chunk are never a cut: skip them without hashing
      if (length < min) {
        const skip = Math.min(min - length, n - i);
        i += skip;
        length += skip;
        if (length < min) break;
      }
      let hash = this.hash;
      let cut = -1;
      // below the average: the stricter mask
      const small = Math.min(n, i + Math.max(0, average - length));
      const maskSmall = this.maskSmall;
      for (; i < small; i++) {
        hash = ((hash << 1) + gear[data[i]!]!) | 0;
        if ((hash & maskSmall) === 0) {
          cut = i + 1;
          break;
        }
      }
      if (cut < 0 && i >= small) {
        const large = Math.min(n, i + Math.max(0, max - (this.length + (i - start))));
        const maskLarge = this.maskLarge;
        for (; i < large; i++) {
          hash = ((hash << 1) + gear[data[i]!]!) | 0;
          if ((hash & maskLarge) === 0) {
            cut = i + 1;
            break;
          }
        }
        if (cut < 0 && this.length + (i - start) >= max) cut = i;
      }
      if (cut < 0) {
        this.hash = hash;
        break;
      }
      this.pieces.push(data.subarray(start, cut));
      chunks.push(this.take());
      start = cut;
      i = cut;
    }
    if (start < n) {
      this.pieces.push(data.subarray(start, n));
      this.length += n - start;
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
    return this.length === 0 ? undefined : this.take();
  }

  private take(): Buffer {
    const chunk = this.pieces.length === 1 ? this.pieces[0]! : Buffer.concat(this.pieces);
    this.pieces = [];
    this.length = 0;
    this.hash = 0;
    return chunk;
  }
}
