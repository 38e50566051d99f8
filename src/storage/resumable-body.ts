import { Readable } from 'node:stream';
import { abortError } from '../errors.js';

/** One response of a download: its body, and how many of its first bytes precede the position asked for. */
export interface BodyPart {
  stream: Readable;
  skip: number;
}

export interface ResumableBodyOptions {
  /** The first response, holding the bytes from `start`. */
  first: BodyPart;
  /** Absolute offset of the first byte this stream yields. */
  start: number;
  /** Absolute offset (exclusive) where it ends; undefined: wherever the responses end. */
  end: number | undefined;
  /** Opens a response holding the bytes from `from` (the caller pins it to the same object version). */
  reopen(from: number, signal: AbortSignal): Promise<BodyPart>;
  /** Failures in a row, without a new byte in between, before giving up. */
  attempts: number;
  /** Time without a new byte before giving up, whatever the attempts. */
  budgetMs: number;
  /** The running command's signal: aborting it destroys the stream at once. */
  signal: AbortSignal | undefined;
  /** False for a failure that another attempt cannot mend (the object changed or is gone): fail at once. */
  retryable(error: unknown): boolean;
  /** The error the stream fails with once the budget is spent (cause: the last failure). */
  fail(cause: unknown, position: number, failures: number, idleMs: number): Error;
}

/** Backoff before the n-th resume (n ≥ 1): exponential from 200 ms, capped at 10 s, with ±50 % jitter. */
export function resumeDelayMs(failure: number, random: () => number = Math.random): number {
  return Math.min(10_000, 200 * 2 ** (failure - 1)) * (0.5 + random());
}

/**
 * A download that survives a bad network: when the response it is reading
 * fails (reset, closed early, idle timeout), it asks for the rest from the
 * first byte it has not yet delivered, after a backoff with jitter, so what it
 * yields is the object's bytes exactly once, in order, or an error. It gives
 * up after `attempts` failures in a row without a new byte, or once
 * `budgetMs` passed without one (a reopening request is aborted at that
 * deadline too). A response that fails while this stream holds it paused
 * (the consumer is slow, and the server's socket timed out meanwhile) is not
 * the network's fault: it is reopened when the consumer reads again, without
 * counting a failure.
 *
 * A Readable with explicit state rather than an async generator: destroying it
 * must destroy the response it reads at once, even while that response is
 * stalled (a generator cannot be closed while it awaits).
 */
export class ResumableBody extends Readable {
  private source: Readable | undefined;
  private skip = 0;
  private position: number;
  private failures = 0;
  private lastProgress = Date.now();
  /** The source is paused because our buffer is full. */
  private paused = false;
  /** The source failed while paused: reopen on the next read. */
  private reopenOnRead = false;
  private reopening: AbortController | undefined;
  private timer: NodeJS.Timeout | undefined;
  private done = false;
  private readonly onAbort = () => this.destroy(abortError(this.options.signal!));

  constructor(private readonly options: ResumableBodyOptions) {
    super({ highWaterMark: 1 << 20 });
    this.position = options.start;
    if (options.signal?.aborted) {
      options.first.stream.destroy();
      this.destroy(abortError(options.signal));
      return;
    }
    options.signal?.addEventListener('abort', this.onAbort, { once: true });
    this.attach(options.first);
  }

  /** Absolute offset of the next byte to deliver. */
  get offset(): number {
    return this.position;
  }

  override _read(): void {
    if (this.reopenOnRead) {
      this.reopenOnRead = false;
      this.open(0);
    } else if (this.source && this.paused) {
      this.paused = false;
      this.source.resume();
    }
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.done = true;
    this.options.signal?.removeEventListener('abort', this.onAbort);
    clearTimeout(this.timer);
    this.reopening?.abort();
    this.source?.destroy();
    this.source = undefined;
    callback(error);
  }

  private attach(part: BodyPart): void {
    const source = part.stream;
    this.source = source;
    this.skip = part.skip;
    this.paused = false;
    const { end } = this.options;
    source.on('data', (data: Buffer) => {
      if (this.source !== source) return;
      let chunk = data;
      if (this.skip > 0) {
        if (chunk.length <= this.skip) {
          this.skip -= chunk.length;
          return;
        }
        chunk = chunk.subarray(this.skip);
        this.skip = 0;
      }
      if (end !== undefined && this.position + chunk.length > end) chunk = chunk.subarray(0, end - this.position);
      if (chunk.length > 0) {
        this.position += chunk.length;
        this.failures = 0;
        this.lastProgress = Date.now();
        if (!this.push(chunk) && this.source === source) {
          this.paused = true;
          source.pause();
        }
      }
      // a server that sends more than asked (a whole object for a range): stop at the end
      if (end !== undefined && this.position >= end) this.finish();
    });
    source.once('end', () => {
      if (this.source !== source) return;
      if (end === undefined || this.position >= end) return this.finish();
      // a clean end before the length the server announced: the connection was closed early
      this.broken(source, Object.assign(new Error(`the response ended early, at byte ${this.position} of ${end}`), { code: 'ECONNRESET' }));
    });
    source.once('error', (error: Error) => {
      if (this.source === source) this.broken(source, error);
    });
    source.once('close', () => {
      // destroyed without an error or an end: as a reset
      if (this.source === source && !this.done) this.broken(source, Object.assign(new Error('the response was closed early'), { code: 'ECONNRESET' }));
    });
  }

  private finish(): void {
    if (this.done) return;
    this.done = true;
    const source = this.source;
    this.source = undefined;
    source?.destroy();
    this.options.signal?.removeEventListener('abort', this.onAbort);
    this.push(null);
  }

  private broken(source: Readable | undefined, error: unknown): void {
    if (source) {
      source.destroy();
      if (this.source === source) this.source = undefined;
    }
    if (this.done || this.destroyed) return;
    if (this.options.signal?.aborted) return void this.destroy(abortError(this.options.signal));
    if (source && this.paused) {
      // We held it paused (a slow consumer): not a network failure; reopen when it reads again.
      this.paused = false;
      this.lastProgress = Date.now();
      this.reopenOnRead = true;
      return;
    }
    this.failures++;
    const idle = Date.now() - this.lastProgress;
    if (!this.options.retryable(error) || this.failures >= this.options.attempts || idle >= this.options.budgetMs) {
      this.destroy(this.options.fail(error, this.position, this.failures, idle));
      return;
    }
    this.lastError = error;
    this.open(Math.min(resumeDelayMs(this.failures), this.options.budgetMs - idle));
  }

  private lastError: unknown;

  /** Reopens from the current position after `delayMs`; the request is aborted when the budget runs out. */
  private open(delayMs: number): void {
    const reopening = new AbortController();
    this.reopening = reopening;
    this.timer = setTimeout(() => {
      const left = this.options.budgetMs - (Date.now() - this.lastProgress);
      const deadline = setTimeout(() => reopening.abort(this.lastError), Math.max(1, left));
      const signals = this.options.signal ? [reopening.signal, this.options.signal] : [reopening.signal];
      this.options.reopen(this.position, AbortSignal.any(signals)).then(
        (part) => {
          clearTimeout(deadline);
          if (this.done || this.destroyed || reopening.signal.aborted) return void part.stream.destroy();
          this.reopening = undefined;
          this.attach(part);
        },
        (error: unknown) => {
          clearTimeout(deadline);
          if (this.done || this.destroyed) return;
          this.reopening = undefined;
          // the budget's deadline aborted the request: the failure to report is the network's
          this.broken(undefined, reopening.signal.aborted && !this.options.signal?.aborted ? (this.lastError ?? error) : error);
        },
      );
    }, delayMs);
  }
}
