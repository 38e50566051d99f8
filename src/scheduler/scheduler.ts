import { basename } from 'node:path';
import { randomBytes } from 'node:crypto';
import { Cron } from 'croner';
import type { JobKind } from '../config/serve-schema.js';
import type { ScheduleEntry } from '../config/serve-settings.js';
import { PgkeepError, toPgkeepError } from '../errors.js';
import type { Clock } from './clock.js';
import type { JobHistory, JobRecord, JobTrigger } from './job-history.js';

// The schedule's shape belongs to the config that declares it (config reads no one).
export type { ScheduleEntry } from '../config/serve-settings.js';

/** What a job runner gets: cancellation and a way to say it is still moving. */
export interface JobRunContext {
  readonly signal: AbortSignal;
  /** Reports progress (bytes so far); any call resets the stuck-job watchdog. */
  progress(bytes?: number): void;
}

/** What a finished job reports. */
export interface JobOutcome {
  bytes?: number | undefined;
  backupId?: string | undefined;
  detail?: string | undefined;
}

/** Runs one job to its end; throws (PgkeepError) when it fails, honours the signal. */
export type JobRunner = (job: Readonly<JobRecord>, run: JobRunContext) => Promise<JobOutcome>;

export interface SchedulerOptions {
  /** The config file the schedules come from, named in the error for a bad cron expression as other config errors do. */
  configFile?: string | undefined;
  clock: Clock;
  history: JobHistory;
  runner: JobRunner;
  /** Jobs running at once across sources. */
  concurrency: number;
  /** A job for a source that already has one running or queued: queue it, or skip it. */
  overlap: 'queue' | 'skip';
  /** No progress for this long → cancelled and failed (JOB_STUCK). */
  stuckAfterMs: number;
  /** Where the scheduler says what it does (the daemon's log). */
  log: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** Skipped runs are logged once when they start, then as one count per source and kind this often. Default 60 s. */
  skipReportMs?: number | undefined;
  /** Called with every job that reached an end state (alerts, metrics); for a skip, the aggregate record after it. */
  onJobEnd?: ((job: Readonly<JobRecord>) => void) | undefined;
}

/** A scheduled run that did not happen while the daemon was down. */
export interface MissedRun {
  source: string;
  kind: JobKind;
  /** How many runs were missed, and the newest of them. */
  count: number;
  latest: string;
  /** When this kind last ran (any result), per the history. */
  lastRunAt: string;
}

interface Running {
  record: JobRecord;
  controller: AbortController;
  lastProgressAt: number;
  done: Promise<void>;
}

/**
 * The daemon's job loop: cron schedules fire jobs; a source never runs two
 * jobs at once (the later one is queued or skipped, as configured, and
 * logged); at most `concurrency` jobs run across sources; a job that reports
 * no progress for `stuckAfterMs` is cancelled through its AbortSignal and
 * recorded as failed; every state change is written to the job history.
 *
 * Time comes from the injected clock only, so tests drive it without sleeping.
 */
export class Scheduler {
  private readonly crons: { entry: ScheduleEntry; cron: Cron }[];
  private readonly queue: JobRecord[] = [];
  private readonly running = new Map<string, Running>();
  private readonly cancelTimers: (() => void)[] = [];
  private accepting = true;
  private started = false;
  private idleWaiters: (() => void)[] = [];
  /** The aggregate history record of the skips of each source and kind. */
  private readonly skipRecords = new Map<string, JobRecord>();
  /** Skips not yet reported in the log, per source and kind, since the last report. */
  private readonly skipWindow = new Map<string, { source: string; kind: string; count: number; why: string }>();
  private cancelSkipReport: (() => void) | undefined;

  constructor(
    entries: readonly ScheduleEntry[],
    private readonly options: SchedulerOptions,
  ) {
    this.crons = entries.map((entry) => {
      try {
        return { entry, cron: new Cron(entry.cron, { paused: true, ...(entry.timeZone ? { timezone: entry.timeZone } : {}) }) };
      } catch (error) {
        throw new PgkeepError(
          'CONFIG_INVALID',
          `${options.configFile ? `${basename(options.configFile)}: ` : ''}sources.${entry.source}.schedule.${entry.kind}: "${entry.cron}" is not a valid cron expression${entry.timeZone ? ` in time zone ${entry.timeZone}` : ''} (${(error as Error).message}); e.g. "0 2 * * *" for 02:00 daily`,
          { cause: error },
        );
      }
    });
  }

  /** The schedules with their next run after now. */
  schedules(): (ScheduleEntry & { next: string | undefined })[] {
    const now = this.options.clock.now();
    return this.crons.map(({ entry, cron }) => ({ ...entry, next: cron.nextRun(now)?.toISOString() }));
  }

  /**
   * Arms the schedules. Returns the runs missed since the history last saw
   * each schedule run; with `catchUp`, submits one job of each backup kind
   * whose last success is older than its schedule period.
   */
  start(options: { catchUp?: boolean } = {}): MissedRun[] {
    if (this.started) throw new Error('scheduler already started');
    this.started = true;
    const now = this.options.clock.now();
    const missed: MissedRun[] = [];
    for (const { entry, cron } of this.crons) {
      const last = this.options.history.latest(entry.source, entry.kind);
      if (last) {
        let count = 0;
        let latest: Date | undefined;
        for (let at = cron.nextRun(new Date(last.queuedAt)); at && at <= now && count < 10_000; at = cron.nextRun(at)) {
          count++;
          latest = at;
        }
        if (latest) {
          missed.push({ source: entry.source, kind: entry.kind, count, latest: latest.toISOString(), lastRunAt: last.queuedAt });
          this.options.log('warn', `missed ${count} scheduled ${entry.kind} run(s) of ${entry.source} while stopped (latest ${latest.toISOString()}, last run ${last.queuedAt})`);
        }
      }
      if (options.catchUp && (entry.kind === 'logical' || entry.kind === 'physical')) {
        const [a, b] = cron.nextRuns(2, now);
        const periodMs = a && b ? b.getTime() - a.getTime() : Infinity;
        const success = this.options.history.latest(entry.source, entry.kind, (r) => r.state === 'succeeded');
        if (!success || now.getTime() - new Date(success.finishedAt ?? success.queuedAt).getTime() > periodMs) {
          this.options.log('info', `catch-up: the last successful ${entry.kind} backup of ${entry.source} is ${success ? `from ${success.finishedAt}` : 'not in the history'}, older than the schedule period`);
          this.submit(entry.source, entry.kind, 'catch-up');
        }
      }
      this.arm(entry, cron, now);
    }
    this.armWatchdog();
    return missed;
  }

  /**
   * The schedules with a scheduled time in (their last run, now] (for
   * `serve --once`). A schedule that never ran counts from `since` (the
   * previous --once run), else from one minute ago.
   */
  due(since: Date | undefined): ScheduleEntry[] {
    const now = this.options.clock.now();
    return this.crons
      .filter(({ entry, cron }) => {
        const last = this.options.history.latest(entry.source, entry.kind);
        const from = last ? new Date(last.queuedAt) : (since ?? new Date(now.getTime() - 60_000));
        const next = cron.nextRun(from);
        return next !== null && next <= now;
      })
      .map(({ entry }) => entry);
  }

  /**
   * Starts (or queues) one job. A source that already has a job running or
   * queued: with overlap "skip" the new job is recorded as skipped; with
   * "queue" it waits, unless the same kind is already waiting (then it is
   * skipped too: one queued run covers both).
   */
  submit(source: string, kind: JobRecord['kind'], trigger: JobTrigger, extra: { target?: string } = {}): JobRecord {
    const now = this.options.clock.now();
    const record: JobRecord = { id: newJobId(now), source, kind, trigger, state: 'queued', queuedAt: now.toISOString(), bytes: 0, ...extra };
    const busy = [...this.running.values()].some((r) => r.record.source === source) || this.queue.some((q) => q.source === source);
    const sameQueued = this.queue.some((q) => q.source === source && q.kind === kind && q.target === extra.target);
    const skip = (why: string) => this.skip(record, why);
    if (!this.accepting) return skip('pgkeep serve is stopping');
    if (busy && (this.options.overlap === 'skip' || sameQueued)) {
      return skip(this.options.overlap === 'skip' ? 'a job of this source is still running (serve.overlap: skip)' : `a ${kind} job of this source is already queued`);
    }
    this.options.history.save(record);
    this.queue.push(record);
    if (busy) this.options.log('info', `queued ${kind} of ${source} (${trigger}, job ${record.id}): a job of this source is running`);
    this.pump();
    return this.job(record.id)!;
  }

  /**
   * Records a skipped run: it is added to the one skip record of its source
   * and kind (a count, not a record per skip) and to the log window: the first
   * skip of a window is logged at once, the rest as one count when the window ends.
   */
  private skip(record: JobRecord, why: string): JobRecord {
    const key = `${record.source}\0${record.kind}`;
    const at = record.queuedAt;
    const was = this.skipRecords.get(key);
    const aggregate: JobRecord = was
      ? { ...was, trigger: record.trigger, queuedAt: at, finishedAt: at, detail: why, skipped: (was.skipped ?? 1) + 1 }
      : { ...record, state: 'skipped', finishedAt: at, detail: why, skipped: 1, firstSkippedAt: at };
    this.skipRecords.set(key, aggregate);
    try {
      this.options.history.save(aggregate);
    } catch (error) {
      this.options.log('error', `cannot record skipped job ${aggregate.id} in the history: ${(error as Error).message}`);
    }
    const window = this.skipWindow.get(key);
    if (window) {
      window.count++;
      window.why = why;
    } else {
      this.skipWindow.set(key, { source: record.source, kind: record.kind, count: 0, why });
      const every = this.options.skipReportMs ?? 60_000;
      this.options.log('warn', `skipped ${record.kind} of ${record.source} (${record.trigger}): ${why}; further skips are counted and reported every ${Math.round(every / 1000)}s`);
      this.armSkipReport();
    }
    try {
      this.options.onJobEnd?.({ ...aggregate });
    } catch (error) {
      this.options.log('error', `after job ${aggregate.id}: ${(error as Error).message}`);
    }
    return { ...aggregate };
  }

  private armSkipReport(): void {
    if (this.cancelSkipReport) return;
    this.cancelSkipReport = this.options.clock.setTimer(this.options.skipReportMs ?? 60_000, () => {
      this.cancelSkipReport = undefined;
      this.reportSkips(false);
      if (this.skipWindow.size > 0) this.armSkipReport();
    });
  }

  /** Logs the skips counted since the last report: one line per source and kind. */
  private reportSkips(final: boolean): void {
    const every = Math.round((this.options.skipReportMs ?? 60_000) / 1000);
    for (const [key, w] of this.skipWindow) {
      if (w.count > 0) this.options.log('warn', `skipped ${w.count} more run(s) of ${w.kind} of ${w.source} ${final ? 'since the last report' : `in the last ${every}s`}: ${w.why}`);
      // a window with no new skip closes: the next skip is logged at once again
      if (w.count === 0 || final) this.skipWindow.delete(key);
      else w.count = 0;
    }
  }

  /** Logs the skips not yet reported (on shutdown) and stops the report timer. */
  flushSkips(): void {
    this.cancelSkipReport?.();
    this.cancelSkipReport = undefined;
    this.reportSkips(true);
  }

  /** A job: running, queued, or from the history. */
  job(id: string): JobRecord | undefined {
    return this.running.get(id)?.record ?? this.queue.find((q) => q.id === id) ?? this.options.history.get(id);
  }

  /** Newest first: running and queued jobs, then the history. */
  jobs(): JobRecord[] {
    const live = new Map<string, JobRecord>();
    for (const r of this.options.history.list()) live.set(r.id, r);
    for (const q of this.queue) live.set(q.id, q);
    for (const r of this.running.values()) live.set(r.record.id, r.record);
    return [...live.values()].sort((a, b) => b.queuedAt.localeCompare(a.queuedAt) || b.id.localeCompare(a.id));
  }

  /** Resolves once nothing runs or waits. */
  idle(): Promise<void> {
    if (this.running.size === 0 && this.queue.length === 0) return Promise.resolve();
    return new Promise((resolve) => this.idleWaiters.push(resolve));
  }

  /**
   * Stops: no new jobs (schedules disarmed, queued jobs cancelled), running
   * jobs get `graceMs` to finish, then are cancelled through their signal;
   * resolves when every job has ended.
   */
  async stop(graceMs: number): Promise<void> {
    this.accepting = false;
    for (const cancel of this.cancelTimers.splice(0)) cancel();
    const now = this.options.clock.now().toISOString();
    for (const queued of this.queue.splice(0)) {
      this.end({ ...queued, state: 'cancelled', finishedAt: now, detail: 'pgkeep serve stopped before it started' });
    }
    if (this.running.size === 0) return;
    this.options.log('info', `stopping: waiting up to ${Math.round(graceMs / 1000)}s for ${this.running.size} running job(s)`);
    const all = Promise.all([...this.running.values()].map((r) => r.done));
    let cancelGrace = () => undefined as void;
    const graceOver = new Promise<void>((resolve) => {
      cancelGrace = this.options.clock.setTimer(graceMs, resolve);
    });
    if (graceMs > 0) await Promise.race([all, graceOver]);
    cancelGrace();
    for (const running of this.running.values()) {
      this.options.log('warn', `cancelling ${running.record.kind} of ${running.record.source} (job ${running.record.id}): the grace period is over`);
      running.controller.abort(new PgkeepError('ABORTED', 'cancelled: pgkeep serve is stopping'));
    }
    await all;
  }

  private arm(entry: ScheduleEntry, cron: Cron, from: Date): void {
    if (!this.accepting) return;
    const next = cron.nextRun(from);
    if (!next) return;
    const cancel = this.options.clock.setTimer(next.getTime() - this.options.clock.now().getTime(), () => {
      this.cancelTimers.splice(this.cancelTimers.indexOf(cancel), 1);
      this.submit(entry.source, entry.kind, 'schedule');
      // from the scheduled time, not the clock: a late timer must not skip or repeat a run
      this.arm(entry, cron, next);
    });
    this.cancelTimers.push(cancel);
  }

  /** Checks running jobs for progress a few times per stuck period. */
  private armWatchdog(): void {
    if (!this.accepting) return;
    const every = Math.max(1000, Math.min(30_000, Math.floor(this.options.stuckAfterMs / 4)));
    const cancel = this.options.clock.setTimer(every, () => {
      this.cancelTimers.splice(this.cancelTimers.indexOf(cancel), 1);
      this.checkStuck();
      this.armWatchdog();
    });
    this.cancelTimers.push(cancel);
  }

  /** Cancels every running job whose last progress is older than the stuck limit. */
  checkStuck(): void {
    const now = this.options.clock.now().getTime();
    for (const running of this.running.values()) {
      if (running.controller.signal.aborted || now - running.lastProgressAt < this.options.stuckAfterMs) continue;
      const minutes = Math.round(this.options.stuckAfterMs / 60_000);
      const message = `${running.record.kind} of ${running.record.source} made no progress for ${minutes >= 1 ? `${minutes} min` : `${Math.round(this.options.stuckAfterMs / 1000)}s`}: cancelled (serve.stuckAfter)`;
      this.options.log('error', `job ${running.record.id}: ${message}`);
      running.controller.abort(new PgkeepError('JOB_STUCK', message));
    }
  }

  private pump(): void {
    while (this.running.size < this.options.concurrency) {
      const index = this.queue.findIndex((q) => ![...this.running.values()].some((r) => r.record.source === q.source));
      if (index < 0) break;
      const [next] = this.queue.splice(index, 1);
      this.launch(next!);
    }
    if (this.running.size === 0 && this.queue.length === 0) for (const resolve of this.idleWaiters.splice(0)) resolve();
  }

  private launch(queued: JobRecord): void {
    const { clock, history, runner, log } = this.options;
    const record: JobRecord = { ...queued, state: 'running', startedAt: clock.now().toISOString() };
    const controller = new AbortController();
    const running: Running = { record, controller, lastProgressAt: clock.now().getTime(), done: Promise.resolve() };
    this.running.set(record.id, running);
    history.save(record);
    log('info', `started ${record.kind} of ${record.source} (${record.trigger}, job ${record.id})`);
    const run: JobRunContext = {
      signal: controller.signal,
      progress: (bytes) => {
        running.lastProgressAt = clock.now().getTime();
        if (bytes !== undefined) record.bytes = bytes;
      },
    };
    running.done = (async () => {
      let ended: JobRecord;
      try {
        const outcome = await runner(record, run);
        ended = { ...record, state: 'succeeded', bytes: outcome.bytes ?? record.bytes, backupId: outcome.backupId, detail: outcome.detail };
      } catch (error) {
        // a stuck job fails with JOB_STUCK whatever the runner threw on its way out
        const reason = controller.signal.aborted ? controller.signal.reason : undefined;
        const failure = toPgkeepError(reason instanceof PgkeepError ? reason : error);
        ended = { ...record, state: failure.code === 'ABORTED' ? 'cancelled' : 'failed', error: { code: failure.code, message: failure.message } };
      }
      ended.finishedAt = clock.now().toISOString();
      this.running.delete(record.id);
      this.end(ended);
      this.pump();
    })();
  }

  private end(record: JobRecord): void {
    try {
      this.options.history.save(record);
    } catch (error) {
      // the state folder is full or gone: the job still ended; say so rather than crash the daemon
      this.options.log('error', `cannot record job ${record.id} in the history: ${(error as Error).message}`);
    }
    const took = record.startedAt && record.finishedAt ? ` in ${((Date.parse(record.finishedAt) - Date.parse(record.startedAt)) / 1000).toFixed(1)}s` : '';
    const level = record.state === 'failed' ? 'error' : record.state === 'succeeded' ? 'info' : 'warn';
    this.options.log(level, `${record.state} ${record.kind} of ${record.source} (job ${record.id})${took}${record.detail ? `: ${record.detail}` : ''}${record.error ? `: ${record.error.message}` : ''}`);
    try {
      this.options.onJobEnd?.(record);
    } catch (error) {
      this.options.log('error', `after job ${record.id}: ${(error as Error).message}`);
    }
  }
}

/** Job ids sort by time: 20261121T020000Z-1a2b3c. */
function newJobId(now: Date): string {
  return `${now.toISOString().replace(/[-:]/g, '').replace(/\.\d+/, '')}-${randomBytes(3).toString('hex')}`;
}
