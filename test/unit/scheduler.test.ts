import assert from 'node:assert/strict';
import { appendFileSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { ManualClock } from '../../src/scheduler/clock.js';
import { JobHistory, type JobRecord } from '../../src/scheduler/job-history.js';
import { Scheduler, type JobRunContext, type ScheduleEntry, type SchedulerOptions } from '../../src/scheduler/scheduler.js';
import { isPgkeepError } from '../../src/errors.js';

const dirs: string[] = [];
after(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));
const stateDir = () => {
  const d = mkdtempSync(path.join(tmpdir(), 'pgkeep-sched-'));
  dirs.push(d);
  return d;
};

/** A job the test finishes by hand, observing its signal. */
interface Pending {
  job: JobRecord;
  run: JobRunContext;
  resolve(): void;
  reject(error: unknown): void;
}

function harness(entries: ScheduleEntry[], options: Partial<SchedulerOptions> & { dir?: string; start?: string } = {}) {
  const clock = new ManualClock(options.start ?? '2026-11-21T01:59:00Z');
  const dir = options.dir ?? stateDir();
  const history = JobHistory.open(dir, { now: clock.now() });
  const pending: Pending[] = [];
  const logs: string[] = [];
  const ended: JobRecord[] = [];
  const scheduler = new Scheduler(entries, {
    clock,
    history,
    concurrency: 2,
    overlap: 'queue',
    stuckAfterMs: 10 * 60_000,
    log: (level, message) => logs.push(`${level}: ${message}`),
    onJobEnd: (job) => ended.push(job),
    runner: (job, run) =>
      new Promise((resolve, reject) => {
        const entry: Pending = { job, run, resolve: () => resolve({ bytes: 42, detail: 'ok' }), reject };
        // an honest runner: cancellation ends it
        run.signal.addEventListener('abort', () => reject(run.signal.reason), { once: true });
        pending.push(entry);
      }),
    ...options,
  });
  return { clock, history, scheduler, pending, logs, ended, dir };
}

describe('scheduler', () => {
  test('fires cron schedules in their time zone, one job per occurrence', async () => {
    // 02:00 in Europe/Paris is 01:00Z in winter
    const h = harness([{ source: 'app', kind: 'logical', cron: '0 2 * * *', timeZone: 'Europe/Paris' }], { start: '2026-11-21T00:30:00Z' });
    h.scheduler.start();
    await h.clock.advanceTo('2026-11-21T00:59:59Z');
    assert.equal(h.pending.length, 0);
    await h.clock.advanceTo('2026-11-21T01:00:00Z');
    assert.equal(h.pending.length, 1);
    assert.equal(h.pending[0]!.job.kind, 'logical');
    assert.equal(h.scheduler.job(h.pending[0]!.job.id)!.state, 'running');
    h.pending[0]!.resolve();
    await h.clock.advance(1000);
    const done = h.scheduler.job(h.pending[0]!.job.id)!;
    assert.equal(done.state, 'succeeded');
    assert.equal(done.bytes, 42);
    await h.clock.advanceTo('2026-11-22T01:00:00Z');
    assert.equal(h.pending.length, 2, 'the next day fires again');
    await h.scheduler.stop(0);
  });

  test('overlap "queue": a second job of a busy source waits and runs after; duplicates of a queued kind are skipped', async () => {
    const h = harness([]);
    h.scheduler.start();
    const first = h.scheduler.submit('app', 'logical', 'api');
    const second = h.scheduler.submit('app', 'prune', 'api');
    const third = h.scheduler.submit('app', 'prune', 'api');
    assert.equal(first.state, 'running');
    assert.equal(second.state, 'queued');
    assert.equal(third.state, 'skipped');
    assert.equal(h.pending.length, 1, 'never two jobs of one source at once');
    h.pending[0]!.resolve();
    await h.clock.advance(1);
    assert.equal(h.pending.length, 2);
    assert.equal(h.pending[1]!.job.id, second.id);
    assert.ok(h.logs.some((l) => l.includes('queued prune of app')));
    h.pending[1]!.resolve();
    await h.scheduler.idle();
    await h.scheduler.stop(0);
  });

  test('overlap "skip": a job due while the source is busy is recorded as skipped and logged', async () => {
    const h = harness([], { overlap: 'skip' });
    h.scheduler.start();
    h.scheduler.submit('app', 'logical', 'schedule');
    const skipped = h.scheduler.submit('app', 'logical', 'schedule');
    assert.equal(skipped.state, 'skipped');
    assert.match(skipped.detail!, /still running/);
    assert.equal(h.history.get(skipped.id)!.state, 'skipped');
    assert.ok(h.logs.some((l) => l.startsWith('warn: skipped logical of app')));
    h.pending[0]!.resolve();
    await h.scheduler.idle();
    await h.scheduler.stop(0);
  });

  test('overload with overlap "skip": 1,000 skips are one history record with a count, logged once per interval, real jobs kept', async () => {
    const h = harness([], { overlap: 'skip', skipReportMs: 60_000, stuckAfterMs: 86_400_000 });
    h.scheduler.start();
    const real = h.scheduler.submit('app', 'logical', 'schedule');
    let last: JobRecord | undefined;
    for (let i = 0; i < 1000; i++) {
      await h.clock.advance(1000);
      last = h.scheduler.submit('app', 'logical', 'schedule');
    }
    assert.equal(last!.state, 'skipped');
    assert.equal(last!.skipped, 1000);
    const skipRecords = h.history.list().filter((r) => r.state === 'skipped');
    assert.equal(skipRecords.length, 1, 'one aggregate record, not 1,000');
    assert.equal(skipRecords[0]!.skipped, 1000);
    assert.equal(skipRecords[0]!.firstSkippedAt, '2026-11-21T01:59:01.000Z');
    assert.ok(h.history.get(real.id), 'the real job is still in the history');
    const warnings = h.logs.filter((l) => l.startsWith('warn: skipped'));
    // the first skip at once, then one count per 60 s window: 1,000 s → 17 lines, not 1,000
    assert.ok(warnings.length <= 18, `${warnings.length} warning lines`);
    assert.match(warnings[0]!, /further skips are counted/);
    assert.match(warnings[1]!, /skipped 59 more run\(s\) of logical of app in the last 60s/);
    // every skip reaches onJobEnd (the metric counts each)
    assert.equal(h.ended.filter((j) => j.state === 'skipped').length, 1000);
    h.scheduler.flushSkips();
    const total = h.logs.filter((l) => l.startsWith('warn: skipped')).reduce((n, l) => n + Number(/skipped (\d+) more/.exec(l)?.[1] ?? 1), 0);
    assert.equal(total, 1000, 'the log accounts for every skip');
    h.pending[0]!.resolve();
    await h.scheduler.idle();
    await h.scheduler.stop(0);
  });

  test('different sources run concurrently up to the limit', async () => {
    const h = harness([], { concurrency: 2 });
    h.scheduler.start();
    for (const source of ['a', 'b', 'c']) h.scheduler.submit(source, 'logical', 'api');
    assert.equal(h.pending.length, 2);
    assert.deepEqual(h.pending.map((p) => p.job.source), ['a', 'b']);
    h.pending[1]!.resolve();
    await h.clock.advance(1);
    assert.equal(h.pending.length, 3);
    assert.equal(h.pending[2]!.job.source, 'c');
    h.pending[0]!.resolve();
    h.pending[2]!.resolve();
    await h.scheduler.idle();
    await h.scheduler.stop(0);
  });

  test('a job with no progress for stuckAfter is cancelled through its signal and recorded as failed (JOB_STUCK)', async () => {
    const h = harness([], { stuckAfterMs: 10 * 60_000 });
    h.scheduler.start();
    const job = h.scheduler.submit('app', 'logical', 'api');
    const { run } = h.pending[0]!;
    // progress keeps it alive
    for (let i = 0; i < 4; i++) {
      await h.clock.advance(5 * 60_000);
      run.progress(1000 * (i + 1));
    }
    assert.equal(run.signal.aborted, false);
    assert.equal(h.scheduler.job(job.id)!.bytes, 4000);
    await h.clock.advance(11 * 60_000);
    assert.equal(run.signal.aborted, true);
    assert.ok(isPgkeepError(run.signal.reason, 'JOB_STUCK'));
    await h.scheduler.idle();
    const failed = h.history.get(job.id)!;
    assert.equal(failed.state, 'failed');
    assert.equal(failed.error!.code, 'JOB_STUCK');
    assert.match(failed.error!.message, /no progress for 10 min/);
    assert.equal(h.ended.at(-1)!.error!.code, 'JOB_STUCK');
    await h.scheduler.stop(0);
  });

  test('stop: queued jobs are cancelled, running ones get the grace period, then their signal', async () => {
    const h = harness([], { concurrency: 1 });
    h.scheduler.start();
    const a = h.scheduler.submit('a', 'logical', 'api');
    const b = h.scheduler.submit('b', 'logical', 'api');
    const stopped = h.scheduler.stop(60_000);
    let done = false;
    void stopped.then(() => (done = true));
    await h.clock.advance(59_000);
    assert.equal(done, false);
    assert.equal(h.pending[0]!.run.signal.aborted, false, 'still within the grace period');
    assert.equal(h.history.get(b.id)!.state, 'cancelled');
    await h.clock.advance(1_000);
    await stopped;
    assert.equal(h.pending[0]!.run.signal.aborted, true);
    assert.equal(h.history.get(a.id)!.state, 'cancelled');
    assert.equal(h.scheduler.submit('a', 'logical', 'api').state, 'skipped', 'no new job once stopping');
  });

  test('a job that finishes within the grace period succeeds', async () => {
    const h = harness([]);
    h.scheduler.start();
    const a = h.scheduler.submit('a', 'logical', 'api');
    const stopped = h.scheduler.stop(60_000);
    await h.clock.advance(10_000);
    h.pending[0]!.resolve();
    await stopped;
    assert.equal(h.history.get(a.id)!.state, 'succeeded');
  });

  test('history survives a restart; jobs left running are failed; missed runs are reported; catch-up runs one backup', async () => {
    const dir = stateDir();
    const entries: ScheduleEntry[] = [{ source: 'app', kind: 'logical', cron: '0 2 * * *', timeZone: 'UTC' }];
    const first = harness(entries, { dir, start: '2026-11-21T01:59:00Z' });
    first.scheduler.start();
    await first.clock.advanceTo('2026-11-21T02:00:00Z');
    first.pending[0]!.resolve();
    await first.scheduler.idle();
    await first.clock.advanceTo('2026-11-22T02:00:00Z');
    const left = first.pending[1]!.job;
    // the process dies here (no stop): the job stays "running" on disk; a torn line follows
    appendFileSync(path.join(dir, 'jobs.jsonl'), '{"id":"torn');

    const second = harness(entries, { dir, start: '2026-11-25T12:00:00Z' });
    const old = second.history.list();
    assert.equal(old.length, 2);
    assert.equal(old[0]!.state, 'succeeded');
    assert.equal(second.history.get(left.id)!.state, 'failed');
    assert.equal(second.history.get(left.id)!.error!.code, 'ABORTED');
    const missed = second.scheduler.start({ catchUp: true });
    assert.deepEqual(missed.map((m) => [m.source, m.kind, m.count, m.latest]), [['app', 'logical', 3, '2026-11-25T02:00:00.000Z']]);
    assert.ok(second.logs.some((l) => l.includes('missed 3 scheduled logical run(s) of app')));
    assert.equal(second.pending.length, 1, 'one catch-up backup');
    assert.equal(second.pending[0]!.job.trigger, 'catch-up');
    second.pending[0]!.resolve();
    await second.scheduler.idle();
    await second.scheduler.stop(0);
    // the file was compacted: one line per job, all parseable
    const lines = readFileSync(path.join(dir, 'jobs.jsonl'), 'utf8').trim().split('\n');
    assert.ok(lines.every((l) => JSON.parse(l).id));
  });

  test('due(): what serve --once runs', async () => {
    const h = harness(
      [
        { source: 'app', kind: 'logical', cron: '0 2 * * *', timeZone: 'UTC' },
        { source: 'app', kind: 'prune', cron: '0 4 * * *', timeZone: 'UTC' },
      ],
      { start: '2026-11-21T02:00:30Z' },
    );
    assert.deepEqual(h.scheduler.due(undefined).map((e) => e.kind), ['logical']);
    // the previous --once ran at 01:00: both 02:00 runs since then are due, 04:00 is not yet
    assert.deepEqual(h.scheduler.due(new Date('2026-11-21T01:00:00Z')).map((e) => e.kind), ['logical']);
    await h.clock.advanceTo('2026-11-21T04:10:00Z');
    assert.deepEqual(h.scheduler.due(new Date('2026-11-21T01:00:00Z')).map((e) => e.kind), ['logical', 'prune']);
    // once the logical ran (history), only what came due since
    h.history.save({ id: 'x', source: 'app', kind: 'logical', trigger: 'once', state: 'succeeded', queuedAt: '2026-11-21T02:00:30.000Z', bytes: 0 });
    assert.deepEqual(h.scheduler.due(new Date('2026-11-21T01:00:00Z')).map((e) => e.kind), ['prune']);
  });

  test('a bad cron expression names the key', () => {
    assert.throws(
      () => harness([{ source: 'app', kind: 'check', cron: '61 * * * *' }]),
      (error: unknown) => isPgkeepError(error, 'CONFIG_INVALID') && /sources\.app\.schedule\.check: "61 \* \* \* \*"/.test((error as Error).message),
    );
  });
});
