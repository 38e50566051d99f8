import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Duplex, type Transform } from 'node:stream';
import { PgkeepError } from '../errors.js';

/**
 * zstd compression as a stream. The native binding (zstd-napi, multi-threaded
 * in-process) is used when it is installed; otherwise the `zstd` program.
 * Both write standard zstd frames, so `zstd -d` can always read what we store.
 */
export interface ZstdCodec {
  readonly name: 'zstd-napi' | 'zstd-cli';
  compressor(options?: { level?: number; threads?: number }): Transform | Duplex;
  decompressor(): Transform | Duplex;
}

export const DEFAULT_ZSTD_LEVEL = 3;

interface ZstdNapi {
  CompressStream: new (params: Record<string, unknown>) => Transform;
}

/** The part of zstd-napi's low-level binding (`zstd-napi/binding`) used here. */
interface ZstdBinding {
  CCtx: new () => CCtx;
  DCtx: new () => DCtx;
  CParameter: Record<'compressionLevel' | 'nbWorkers' | 'jobSize' | 'checksumFlag', number>;
  compressBound(size: number): number;
  EndDirective: Record<'continue' | 'end', number>;
  dStreamOutSize(): number;
}

interface CCtx {
  setParameter(parameter: number, value: number): void;
  /** ZSTD_compressCCtx: one whole frame of src into dst at `level`; bytes written. */
  compress(dst: Uint8Array, src: Uint8Array, level: number): number;
  /** ZSTD_compressStream2: [bytes still to flush (0 = done, for an end), bytes written to dst, bytes read from src]. */
  compressStream2(dst: Uint8Array, src: Uint8Array, endOp: number): [number, number, number];
}

interface DCtx {
  /** ZSTD_decompressStream: [hint (0 = a frame is complete and flushed), bytes written to dst, bytes read from src]. */
  decompressStream(dst: Uint8Array, src: Uint8Array): [number, number, number];
  /** ZSTD_decompressDCtx: one whole frame of src into dst; bytes written. Throws on corrupt input or too small a dst. */
  decompress(dst: Uint8Array, src: Uint8Array): number;
}

/** zstd's job size when multi-threaded: 4 MiB keeps the workers' buffers (and so pgkeep's RSS) small. */
const JOB_SIZE = 4 << 20;

let nativeBinding: ZstdBinding | null | undefined;

/**
 * The native binding alone, loaded once. Its stream classes (the package's
 * main module) are loaded only when a stream is made: wal-push does without
 * them, and every millisecond of its start-up counts.
 */
function loadBinding(): ZstdBinding | null {
  if (nativeBinding === undefined) {
    try {
      nativeBinding = createRequire(import.meta.url)('zstd-napi/binding') as ZstdBinding;
    } catch {
      nativeBinding = null;
    }
  }
  return nativeBinding;
}

function loadStreams(): ZstdNapi {
  return createRequire(import.meta.url)('zstd-napi') as ZstdNapi;
}

/**
 * Synchronous zstd compression with the caller's loop: `update` and `end`
 * hand output to `emit` as zstd produces it (views of `out`, valid only
 * during the call). Worker threads compress in the background while the
 * caller reads and hashes the next input; no stream machinery in between.
 */
export interface SyncCompressor {
  update(chunk: Buffer, emit: (compressed: Buffer) => void): void;
  end(emit: (compressed: Buffer) => void): void;
  /** The most bytes `size` input bytes can compress to. */
  bound(size: number): number;
}

/** A SyncCompressor over the native binding, or null when zstd-napi is not installed (or useZstdProgram(true), PGKEEP_ZSTD=cli). */
export function nativeSyncCompressor({ level = DEFAULT_ZSTD_LEVEL, threads = availableParallelism(), out = Buffer.allocUnsafe(1 << 20) } = {}): SyncCompressor | null {
  if (!nativeZstdAvailable()) return null;
  const binding = loadBinding()!;
  const cctx = new binding.CCtx();
  cctx.setParameter(binding.CParameter.compressionLevel, level);
  cctx.setParameter(binding.CParameter.nbWorkers, threads > 1 ? threads : 0);
  // 1 MiB jobs (zstd's least is 512 KiB): its callers encode small files, and with 4 MiB jobs a 16 MB
  // WAL segment waits longer for its last job; measured: 16 MB in 38 ms instead of 44, same size.
  cctx.setParameter(binding.CParameter.jobSize, 1 << 20);
  cctx.setParameter(binding.CParameter.checksumFlag, 1);
  const run = (input: Buffer, endOp: number, emit: (compressed: Buffer) => void) => {
    for (;;) {
      const [remaining, produced, consumed] = cctx.compressStream2(out, input, endOp);
      if (produced > 0) emit(out.subarray(0, produced));
      input = input.subarray(consumed);
      if (input.length === 0 && (endOp === binding.EndDirective.continue || remaining === 0)) return;
    }
  };
  return {
    update: (chunk, emit) => run(chunk, binding.EndDirective.continue, emit),
    end: (emit) => run(Buffer.alloc(0), binding.EndDirective.end, emit),
    bound: (size) => binding.compressBound(size),
  };
}

/**
 * Set by the entry points from PGKEEP_ZSTD=cli (the pipeline reads no
 * environment): use the zstd program even where the native binding loads.
 */
let programOnly = false;

/** Makes every later codec choice use the zstd program (true) or the native binding where it loads (false, the default). */
export function useZstdProgram(on: boolean): void {
  programOnly = on;
}

/** Whether the native binding is there to use (and not turned off with useZstdProgram, PGKEEP_ZSTD=cli). */
export function nativeZstdAvailable(): boolean {
  return !programOnly && loadBinding() !== null;
}

/**
 * Decompresses all of `input` (one or more zstd frames) into one buffer of at
 * most `limit` bytes, synchronously: the counterpart of SyncCompressor for a
 * small object whose size is recorded (wal-fetch). Null without zstd-napi.
 * Throws when the bytes are not zstd, end inside a frame, or would exceed
 * `limit`.
 */
export function nativeDecompressSync(input: Buffer, limit: number): Buffer | null {
  if (!nativeZstdAvailable()) return null;
  const binding = loadBinding()!;
  const dctx = new binding.DCtx();
  // One byte of room past the limit tells "exactly the limit" from "more than the limit". The
  // output grows as it fills, never past that: a limit is a bound (an index file may be up to
  // 1 GiB), and reserving it whole for every small object kept that much address space alive.
  const room = limit + 1;
  let output = Buffer.allocUnsafeSlow(Math.min(room, Math.max(1 << 16, input.length * 8)));
  let produced = 0;
  let hint = 0;
  while (input.length > 0 || hint !== 0) {
    if (produced === output.length && output.length < room) {
      const grown = Buffer.allocUnsafeSlow(Math.min(room, output.length * 2));
      output.copy(grown, 0, 0, produced);
      output = grown;
    }
    const [next, written, consumed] = dctx.decompressStream(output.subarray(produced), input);
    produced += written;
    input = input.subarray(consumed);
    hint = next;
    if (produced > limit) throw new Error(`more than the ${limit} bytes expected`);
    // Input used up inside a frame, and nothing more came out: the data ends early.
    if (input.length === 0 && hint !== 0 && written === 0) throw new Error('the data ends in the middle of a zstd frame');
  }
  return output.subarray(0, produced);
}

/**
 * Streaming zstd decompression that produces output only as fast as it is
 * consumed. zstd-napi's own DecompressStream expands each input chunk in full
 * before looking at backpressure: at a compression ratio of 100× a 1 MiB read
 * becomes 100 MB in memory, and a stored run of zeros (~30,000×) gigabytes.
 * Here one input chunk is decoded piecewise into output buffers of `outSize`
 * (zstd's recommended 128 KiB), and decoding pauses whenever the readable
 * side is full, until it is read. Memory is bounded by one input chunk, the
 * readable buffer and zstd's window, whatever the ratio.
 */
export class BoundedDecompressStream extends Duplex {
  private readonly dctx: DCtx;
  private readonly outSize: number;
  /** The input chunk being decoded (possibly empty: output still to flush) and its write callback. */
  private input: Buffer | null = null;
  private inputDone: ((error?: Error | null) => void) | null = null;
  /** Whether the reader wants more output (set by _read, cleared when push() says stop). */
  private wanted = false;
  private pumping = false;
  /** Inside a frame that is not yet complete (its end would be truncated data). */
  private inFrame = false;

  constructor(binding: ZstdBinding) {
    super({ readableHighWaterMark: 1 << 20, writableHighWaterMark: 1 << 16 });
    this.dctx = new binding.DCtx();
    this.outSize = binding.dStreamOutSize();
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    this.input = chunk;
    this.inputDone = callback;
    this.pump();
  }

  override _read(): void {
    this.wanted = true;
    this.pump();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.inFrame) {
      callback(new Error('Stream ended in middle of compressed data frame'));
      return;
    }
    this.push(null);
    callback();
  }

  private pump(): void {
    if (this.pumping) return;
    this.pumping = true;
    try {
      while (this.wanted && this.input) {
        const out = Buffer.allocUnsafe(this.outSize);
        const [hint, produced, consumed] = this.dctx.decompressStream(out, this.input);
        this.input = this.input.subarray(consumed);
        if (produced > 0 && !this.push(out.subarray(0, produced))) this.wanted = false;
        // The chunk is done once all of it is read and zstd has nothing left to flush
        // (an output buffer not filled to the brim, or the end of a frame).
        if (this.input.length === 0 && (produced < out.length || hint === 0)) {
          this.inFrame = hint !== 0;
          this.finishChunk();
        }
      }
    } catch (error) {
      this.finishChunk(error as Error);
    } finally {
      this.pumping = false;
    }
  }

  private finishChunk(error?: Error): void {
    const done = this.inputDone;
    this.input = null;
    this.inputDone = null;
    if (done) done(error ?? null);
    else if (error) this.destroy(error);
  }
}

export const nativeZstd: ZstdCodec | null = (() => {
  const binding = loadBinding();
  if (!binding) return null;
  return {
    name: 'zstd-napi',
    compressor: ({ level = DEFAULT_ZSTD_LEVEL, threads = availableParallelism() } = {}) =>
      new (loadStreams().CompressStream)({ compressionLevel: level, nbWorkers: threads > 1 ? threads : 0, jobSize: JOB_SIZE, checksumFlag: true }),
    decompressor: () => new BoundedDecompressStream(binding),
  };
})();

export const cliZstd: ZstdCodec = {
  name: 'zstd-cli',
  compressor: ({ level = DEFAULT_ZSTD_LEVEL, threads = 0 } = {}) => zstdProcess(['-q', '-c', `-${level}`, `-T${threads}`]),
  decompressor: () => zstdProcess(['-q', '-d', '-c']),
};

/** The codec pgkeep uses: native when available, else the zstd program. */
export function defaultZstd(): ZstdCodec {
  if (programOnly) return cliZstd;
  return nativeZstd ?? cliZstd;
}

let programProbe: Promise<boolean> | undefined;

/**
 * The codec for compressing one long stream, a backup's dump: the zstd
 * program where it is installed, else defaultZstd(). zstd-napi's stream
 * calls ZSTD_compressStream2 on the main thread, and when zstd's workers are
 * busy that call blocks until one is free: meanwhile nothing reads pg_dump's
 * pipe, hashes or writes, so pg_dump waits too. The program compresses beside
 * pgkeep, as in the shell pipe `pg_dump | zstd`; interleaved on the same 200 MB
 * databases it measured 3.7-3.8 s against 5.4 s in process (docs/benchmarks.md,
 * "Backup overhead"). The frames are the same standard zstd (with checksums),
 * read by either decompressor. The probe (`zstd --version`) runs once per process.
 */
export async function streamZstd(): Promise<ZstdCodec> {
  if (programOnly) return cliZstd;
  programProbe ??= new Promise<boolean>((resolve) => {
    const { execFile } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
    execFile('zstd', ['--version'], { timeout: 10_000 }, (error) => resolve(error === null));
  });
  return (await programProbe) ? cliZstd : (nativeZstd ?? cliZstd);
}

/** Wraps a `zstd` child process as a duplex stream that fails if zstd fails. */
function zstdProcess(args: string[]): Duplex {
  // Required here: most runs use the native binding, and wal-push's start-up should not pay for child_process.
  const { spawn } = createRequire(import.meta.url)('node:child_process') as typeof import('node:child_process');
  const child = spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'] });
  let stderr = '';
  child.stderr.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-2000);
  });
  const exit = new Promise<Error | undefined>((resolve) => {
    child.on('error', (error) => {
      const missing = (error as NodeJS.ErrnoException).code === 'ENOENT';
      resolve(
        missing
          ? new PgkeepError('TOOL_MISSING', 'zstd is not installed: install the zstd package (apt-get install zstd) or run npm ci to build zstd-napi', { cause: error })
          : error,
      );
    });
    child.on('close', (code, signal) => {
      resolve(code === 0 ? undefined : new PgkeepError('TOOL_FAILED', `zstd failed (${signal ?? `exit ${code}`}): ${stderr.trim() || 'no message'}`));
    });
  });
  child.stdin.on('error', () => undefined); // EPIPE surfaces through the exit status instead

  const duplex = new Duplex({
    readableHighWaterMark: 1 << 20,
    writableHighWaterMark: 1 << 20,
    write(chunk, _encoding, callback) {
      if (child.stdin.write(chunk)) callback();
      else child.stdin.once('drain', () => callback());
    },
    final(callback) {
      child.stdin.end();
      callback();
    },
    read() {
      child.stdout.resume();
    },
    destroy(error, callback) {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      callback(error);
    },
  });
  child.stdout.on('data', (chunk: Buffer) => {
    if (!duplex.push(chunk)) child.stdout.pause();
  });
  // End our readable side only once zstd has exited cleanly, so a failed zstd
  // never looks like a complete stream downstream.
  child.stdout.on('end', () => void exit.then((error) => (error ? duplex.destroy(error) : duplex.push(null))));
  void exit.then((error) => {
    if (error) duplex.destroy(error);
  });
  return duplex;
}

/**
 * Whole-frame compression of many small buffers (the content store's chunks),
 * with one context reused, into buffers the caller owns: a stream per chunk, or a
 * fresh buffer per call, cost more than the work (measured: 3 s of 12 in a
 * 150 MB restore were allocations and their garbage). Null without zstd-napi.
 */
export interface ChunkCodec {
  /**
   * src as one zstd frame written at the start of dst, which must hold at least bound(src.length) bytes; the
   * frame's length. No buffer is made: the content store compresses new chunks straight into the pack being
   * filled (a buffer per chunk was most of a first backup's garbage).
   */
  compressInto(dst: Buffer, src: Buffer): number;
  /** The most bytes `size` input bytes can compress to (ZSTD_compressBound). */
  bound(size: number): number;
  /** Decompresses one whole frame into dst (exactly its size); throws when the frame is corrupt or not dst's size. */
  decompressInto(dst: Buffer, src: Buffer): void;
}

export function nativeChunkCodec(level: number = DEFAULT_ZSTD_LEVEL): ChunkCodec | null {
  if (!nativeZstdAvailable()) return null;
  const binding = loadBinding()!;
  const cctx = new binding.CCtx();
  const dctx = new binding.DCtx();
  return {
    compressInto(dst, src) {
      if (dst.length < binding.compressBound(src.length)) throw new RangeError(`compressInto: ${dst.length} bytes of room, ${binding.compressBound(src.length)} needed`);
      return cctx.compress(dst, src, level);
    },
    bound: (size) => binding.compressBound(size),
    decompressInto(dst, src) {
      const n = dctx.decompress(dst, src);
      if (n !== dst.length) throw new Error(`the frame holds ${n} bytes, ${dst.length} expected`);
    },
  };
}
