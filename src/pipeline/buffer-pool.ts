import { PgkeepError } from '../errors.js';

/**
 * A free list of buffers of one size, handed out and given back, so a hot
 * path that needs a fresh buffer for every unit of work (the restore's row
 * batches: one per 256 KiB of rows, 4,000 per GiB) reuses a few instead.
 *
 * Why: a buffer dropped is only freed when V8 collects its wrapper, and
 * with little JavaScript garbage that happens late: a 1 GB restore held
 * 30-50 MB of dead batch and run buffers at a time, and the malloc heap
 * they were carved from kept its size (docs/benchmarks.md, "Restore memory,
 * session 12").
 *
 * A buffer given back must no longer be used by whoever had it: give()
 * refuses one the pool did not hand out, or one already given back, so a
 * slip cannot hand the same memory to two users.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];
  /**
   * The memory of the buffers handed out and not given back (a subarray of one identifies it too). Weak: a
   * buffer its holder drops without giving it back (a failed load, a consumer that does not recycle) is
   * collected as any other.
   */
  private readonly out = new WeakSet<ArrayBufferLike>();
  private taken = 0;
  private lastTake = 0;
  private trimTimer: NodeJS.Timeout | undefined;

  constructor(
    readonly size: number,
    /**
     * Buffers kept for reuse at most: more given back are dropped. Never more are kept than were out at once, so
     * a bound near the most a user has out costs nothing: one too low drops buffers that the next takes make anew.
     */
    private readonly keep = 16,
    /**
     * The buffers kept are dropped once none was taken for this long: a long-lived process (serve) does not
     * hold a finished job's pools (the pack pool alone is 4 x 16.25 MiB) until its next job. The timer does
     * not keep the process alive.
     */
    private readonly idleMs = 5_000,
  ) {}

  /** A buffer of `size` bytes (contents undefined), the pool's own memory until given back. */
  take(): Buffer {
    // allocUnsafeSlow: its own memory, never a slice of Node's shared pool (which give() could not tell apart)
    this.lastTake = Date.now();
    const buffer = this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
    this.out.add(buffer.buffer);
    this.taken++;
    return buffer;
  }

  /** Whether `view` (a buffer from take(), or a part of one) is out of the pool now. */
  owns(view: Uint8Array): boolean {
    return this.out.has(view.buffer);
  }

  /** Gives back a buffer from take() (or any part of it); its holder must not touch it afterwards. */
  give(view: Uint8Array): void {
    if (!this.out.delete(view.buffer)) throw new PgkeepError('INTERNAL', 'a buffer given back to a pool that did not hand it out, or given back twice');
    this.taken--;
    if (this.free.length < this.keep) this.free.push(Buffer.from(view.buffer, 0, this.size));
    this.trimWhenIdle();
  }

  /** Drops the kept buffers once no take() came for idleMs (checked again while takes keep coming). */
  private trimWhenIdle(): void {
    if (this.trimTimer) return;
    const wait = Math.max(1, this.lastTake + this.idleMs - Date.now());
    this.trimTimer = setTimeout(() => {
      this.trimTimer = undefined;
      if (Date.now() - this.lastTake >= this.idleMs) this.free.length = 0;
      else if (this.free.length > 0) this.trimWhenIdle();
    }, wait);
    this.trimTimer.unref();
  }

  /** Buffers handed out and not given back (dropped ones included). */
  get outstanding(): number {
    return this.taken;
  }

  /** Buffers waiting to be reused. */
  get idle(): number {
    return this.free.length;
  }
}
