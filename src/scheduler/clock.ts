/**
 * Time as the scheduler sees it. The daemon uses the system clock; tests use
 * ManualClock and move time forward themselves, so no test sleeps on wall time.
 */
export interface Clock {
  now(): Date;
  /** Calls `fn` once after `ms`; returns a function that cancels it. */
  setTimer(ms: number, fn: () => void): () => void;
}

// setTimeout overflows above 2^31-1 ms (~24.8 days): longer waits are chained.
const MAX_TIMER_MS = 2 ** 31 - 1;

export const systemClock: Clock = {
  now: () => new Date(),
  setTimer(ms, fn) {
    let handle: NodeJS.Timeout;
    const due = Date.now() + ms;
    const arm = (wait: number) => {
      handle = setTimeout(() => {
        const left = due - Date.now();
        if (left > 0) arm(left);
        else fn();
      }, Math.min(Math.max(wait, 0), MAX_TIMER_MS));
      // a pending schedule must not keep a process alive on its own (the server and running jobs do)
      handle.unref();
    };
    arm(ms);
    return () => clearTimeout(handle);
  },
};

/** A clock that only moves when told to (tests). Timers fire in time order during advance(). */
export class ManualClock implements Clock {
  private current: number;
  private timers: { at: number; fn: () => void; seq: number }[] = [];
  private seq = 0;

  constructor(start: Date | string) {
    this.current = new Date(start).getTime();
  }

  now(): Date {
    return new Date(this.current);
  }

  setTimer(ms: number, fn: () => void): () => void {
    const timer = { at: this.current + Math.max(ms, 0), fn, seq: this.seq++ };
    this.timers.push(timer);
    return () => {
      this.timers = this.timers.filter((t) => t !== timer);
    };
  }

  /** Moves time forward by `ms`, firing due timers in order and letting promises settle after each. */
  async advance(ms: number): Promise<void> {
    const target = this.current + ms;
    for (;;) {
      await settle();
      const next = this.timers.filter((t) => t.at <= target).sort((a, b) => a.at - b.at || a.seq - b.seq)[0];
      if (!next) break;
      this.timers = this.timers.filter((t) => t !== next);
      this.current = Math.max(this.current, next.at);
      next.fn();
    }
    this.current = target;
    await settle();
  }

  /** Sets the time (forward only) the same way. */
  async advanceTo(when: Date | string): Promise<void> {
    await this.advance(Math.max(0, new Date(when).getTime() - this.current));
  }
}

/** Lets pending promise callbacks and I/O callbacks run. */
async function settle(): Promise<void> {
  for (let i = 0; i < 5; i++) await new Promise((resolve) => setImmediate(resolve));
}
