import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { PgkeepError } from '../errors.js';
import { keepYoungGenerationSmallAgain } from './keep-young-generation-small.js';
import { DEFAULT_ZSTD_LEVEL, nativeZstdAvailable } from './zstd.js';

/**
 * The worker's whole program, evaluated as CommonJS (`eval: true`): no file of its own to find next to the
 * compiled module, the bundle (dist/cli/main.cjs) or the TypeScript sources the tests run. It loads the binding
 * from the path the main thread resolved, keeps one compression context, and compresses each job's chunks
 * one after the other into the job's output buffer, frames side by side, each with at least compressBound
 * bytes of room (the same call, level and room as ChunkCodec.compressInto: the same frames, byte for byte).
 */
const WORKER_SOURCE = `
const { parentPort, workerData } = require('node:worker_threads');
const binding = require(workerData.binding);
const cctx = new binding.CCtx();
parentPort.on('message', ({ id, input, output, lengths, level }) => {
  try {
    const src = Buffer.from(input);
    const dst = Buffer.from(output);
    const frames = new Array(lengths.length);
    let from = 0;
    let to = 0;
    for (let i = 0; i < lengths.length; i++) {
      const chunk = src.subarray(from, from + lengths[i]);
      const room = dst.subarray(to);
      if (room.length < binding.compressBound(chunk.length)) throw new RangeError('a job with ' + room.length + ' bytes of room for a frame of up to ' + binding.compressBound(chunk.length));
      frames[i] = cctx.compress(room, chunk, level);
      from += lengths[i];
      to += frames[i];
    }
    parentPort.postMessage({ id, frames });
  } catch (error) {
    parentPort.postMessage({ id, error: String((error && error.message) || error) });
  }
});
`;

/** The compression threads a session uses by default (see chunkCompressThreads). */
let defaultThreads: number | undefined;

/**
 * New bytes a session compresses on the main thread before it hands new chunks to the threads (then all of
 * them, so they stay in order). A daily backup adds a few MB: starting a thread for them cost more than it
 * saved (second backup of a 1 GB database: 4.4 s and 103-106 MB against 4.0-4.1 s and 92-93 MB).
 */
const COMPRESS_HERE_BYTES = 8 << 20;
let compressHereBytes = COMPRESS_HERE_BYTES;

/**
 * Threads that compress a deduplicating backup's new chunks: 0 compresses them on the main thread (the
 * code before session 13, still what copy and prune do). The CLI sets it from the test-only
 * PGKEEP_CHUNK_THREADS; undefined goes back to the default. `hereBytes` (tests): see COMPRESS_HERE_BYTES.
 */
export function setChunkCompressThreads(threads: number | undefined, hereBytes = COMPRESS_HERE_BYTES): void {
  defaultThreads = threads;
  compressHereBytes = hereBytes;
}

/** New bytes a session compresses on the main thread before its threads take over. */
export function chunkCompressHereBytes(): number {
  return compressHereBytes;
}

/**
 * One thread on up to 4 cores, two above: measured on 2 cores (docs/benchmarks.md, "First backup at the speed
 * of the pipe"), one worker takes zstd's 2.6 s a GB off the main thread and the three of pg_dump, the main
 * thread and the worker fill both cores; a second worker only competes with them.
 */
export function chunkCompressThreads(): number {
  return defaultThreads ?? (availableParallelism() > 4 ? 2 : 1);
}

interface Job {
  id: number;
  resolve(frames: number[]): void;
  reject(error: Error): void;
}

interface Thread {
  worker: Worker;
  /** Jobs sent and not answered, in the order sent (a worker answers in that order). */
  jobs: Job[];
}

/** How long a pool keeps its threads with no job in flight (as the buffer pools keep their buffers: BufferPool). */
const IDLE_MS = 5_000;

/**
 * A few worker threads compressing chunks with zstd (ZSTD_compressCCtx, one context each), so that a
 * backup's main thread reads pg_dump's pipe, chunks and hashes while they compress. A job is a batch of
 * chunks side by side in a SharedArrayBuffer (no copy between threads); the frames come back side by side
 * in another, with their lengths. Jobs go to the thread with the fewest in flight; the caller applies the
 * results in the order it wants (the content session: the order the chunks came in).
 *
 * Threads start at the first job and end at close(), when one fails, or after IDLE_MS with no job in
 * flight: a serve daemon running job after job keeps none between them, and a session dropped without
 * close() leaves none behind for long. Idle threads are unref'd: they never keep the process alive.
 */
export class ChunkCompressPool {
  private readonly threads: Thread[] = [];
  private nextId = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  private closed = false;

  constructor(
    readonly size: number,
    private readonly level = DEFAULT_ZSTD_LEVEL,
    /** IDLE_MS; shorter only in tests. */
    private readonly idleMs = IDLE_MS,
  ) {
    if (size < 1) throw new RangeError('a compression pool needs at least one thread');
  }

  /** Threads running now (started and not ended). */
  get running(): number {
    return this.threads.length;
  }

  /**
   * Compresses the chunks of `lengths`, side by side from the start of `input`, into `output` (which holds
   * at least the sum of their compressBound): the length of each frame, the frames side by side from the
   * start of `output`. Neither buffer may be touched until the promise settles.
   */
  compress(input: SharedArrayBuffer, lengths: number[], output: SharedArrayBuffer): Promise<number[]> {
    if (this.closed) return Promise.reject(new PgkeepError('ABORTED', 'chunk compression stopped: the content session was closed'));
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    const thread = this.pick();
    return new Promise<number[]>((resolve, reject) => {
      const id = this.nextId++;
      thread.jobs.push({ id, resolve, reject });
      if (thread.jobs.length === 1) thread.worker.ref();
      thread.worker.postMessage({ id, input, output, lengths, level: this.level });
    });
  }

  /** Ends every thread; jobs in flight fail. A later compress() fails: a closed pool is not used again. */
  close(): void {
    this.closed = true;
    this.stop(new PgkeepError('ABORTED', 'chunk compression stopped: the content session was closed'));
  }

  private stop(reason: Error): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    for (const thread of this.threads.splice(0)) this.end(thread, reason);
  }

  private end(thread: Thread, reason: Error): void {
    const index = this.threads.indexOf(thread);
    if (index >= 0) this.threads.splice(index, 1);
    thread.worker.removeAllListeners();
    // a late 'error' from a thread being ended is not an uncaught exception
    thread.worker.on('error', () => undefined);
    void thread.worker.terminate();
    for (const job of thread.jobs.splice(0)) job.reject(reason);
  }

  private pick(): Thread {
    if (this.threads.length < this.size) return this.start();
    return this.threads.reduce((a, b) => (b.jobs.length < a.jobs.length ? b : a));
  }

  private start(): Thread {
    if (!nativeZstdAvailable()) throw new PgkeepError('TOOL_MISSING', 'a deduplicating repository needs zstd-napi (run npm ci): chunks are compressed one by one');
    // resolved here, from this module: the worker's own require would look from the working directory
    const binding = createRequire(import.meta.url).resolve('zstd-napi/binding');
    const worker = new Worker(WORKER_SOURCE, { eval: true, workerData: { binding }, stdout: false, stderr: false });
    worker.unref();
    // its start-up set V8's flags back to the command line's: the backup's small young generation with them
    worker.once('online', keepYoungGenerationSmallAgain);
    const thread: Thread = { worker, jobs: [] };
    worker.on('message', (answer: { id: number; frames?: number[]; error?: string }) => {
      const job = thread.jobs.shift();
      if (!job || job.id !== answer.id) {
        this.end(thread, new PgkeepError('INTERNAL', `chunk compression: an answer to job ${answer.id}, job ${job?.id} expected`));
        return;
      }
      if (thread.jobs.length === 0) {
        thread.worker.unref();
        this.stopWhenIdle();
      }
      if (answer.error !== undefined) job.reject(new PgkeepError('INTERNAL', `compressing chunks failed: ${answer.error}`, { cause: new Error(answer.error) }));
      else job.resolve(answer.frames!);
    });
    worker.on('error', (error) => this.end(thread, new PgkeepError('INTERNAL', `a chunk compression thread failed: ${error.message}`, { cause: error })));
    worker.on('exit', (code) => this.end(thread, new PgkeepError('INTERNAL', `a chunk compression thread ended (exit code ${code})`)));
    this.threads.push(thread);
    return thread;
  }

  /** Ends the threads once no job was in flight for IDLE_MS. */
  private stopWhenIdle(): void {
    if (this.idleTimer || this.threads.some((t) => t.jobs.length > 0)) return;
    this.idleTimer = setTimeout(() => {
      this.idleTimer = undefined;
      if (!this.threads.some((t) => t.jobs.length > 0)) this.stop(new PgkeepError('INTERNAL', 'chunk compression: the pool went idle'));
    }, this.idleMs);
    this.idleTimer.unref();
  }
}
