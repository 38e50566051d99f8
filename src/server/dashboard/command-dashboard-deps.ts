import { configuredSources, keySettings, type Settings } from '../../config/settings.js';
import { resolveHealthThresholds } from '../../config/health-settings.js';
import type { CommandContext, Progress } from '../../registry/command-spec.js';
import { quietContext } from '../../registry/command-context.js';
import type { CommandRegistry } from '../../registry/command-registry.js';
import { runJobKind } from '../../registry/run-job.js';
import { sourcesWithRepositories, type SourceRepositories } from '../../repository/source-repositories.js';
import { dedupFigures } from '../../repository/manifest.js';
import { isPgkeepError, PgkeepError, toPgkeepError } from '../../errors.js';
import type { CatalogBackup } from '../../status/fleet-catalog.js';
import { collectSourceStatus, type UsageCache } from '../../status/health.js';
import type { BackupRow, DashboardDeps, JobKind, JobView, SourceOverview } from './dashboard-deps.js';

/** What a job does, given a context that reports its progress and a signal that cancels it. */
type JobWork = (ctx: CommandContext, job: JobView) => Promise<void>;

/**
 * A minimal in-memory job list: one running job per source and kind (a
 * second one is refused with LOCK_HELD, like the source lock would), the
 * last `keep` finished jobs, nothing persisted. `pgkeep serve`'s job runner
 * replaces it.
 */
export class JobList {
  private readonly all: JobView[] = [];
  private readonly controllers = new Map<string, AbortController>();
  private readonly running = new Set<Promise<void>>();
  private next = 1;

  /** `onEnd`: told of each job that ended (serve refreshes its catalog of the job's source). */
  constructor(
    private readonly keep = 50,
    private readonly onEnd?: (job: Readonly<JobView>) => void,
  ) {}

  list(): JobView[] {
    return this.all.map((job) => ({ ...job, ...(job.state === 'running' ? { rate: rateOf(job) } : {}) })).reverse();
  }

  start(settings: Settings, source: string, kind: JobKind, work: JobWork): string {
    const busy = this.all.find((j) => j.state === 'running' && j.source === source && j.kind === kind);
    if (busy) throw new PgkeepError('LOCK_HELD', `a ${kind} of ${source} is already running (job ${busy.id}): wait for it to finish`);
    const job: JobView = { id: String(this.next++), source, kind, state: 'running', startedAt: new Date().toISOString(), bytes: 0 };
    const controller = new AbortController();
    this.all.push(job);
    this.controllers.set(job.id, controller);
    const ctx: CommandContext = {
      settings,
      keys: keySettings(settings),
      signal: controller.signal,
      info: () => undefined,
      warn: () => undefined,
      progress: (p: Progress) => {
        job.phase = p.phase;
        job.bytes = p.bytes;
        job.totalBytes = p.totalBytes;
      },
      // nobody to ask: a job never confirms a destructive step
      confirm: async () => false,
    };
    const done = work(ctx, job).then(
      () => void (job.state = 'succeeded'),
      (error: unknown) => {
        const failure = toPgkeepError(error);
        job.state = 'failed';
        job.error = { code: failure.code, message: failure.message };
      },
    );
    const tracked = done.finally(() => {
      job.finishedAt = new Date().toISOString();
      this.controllers.delete(job.id);
      this.running.delete(tracked);
      const finished = this.all.filter((j) => j.state !== 'running');
      for (const old of finished.slice(0, Math.max(0, finished.length - this.keep))) this.all.splice(this.all.indexOf(old), 1);
      this.onEnd?.(job);
    });
    this.running.add(tracked);
    return job.id;
  }

  /** Cancels every running job and waits for them to stop (on shutdown). */
  async close(): Promise<void> {
    for (const controller of this.controllers.values()) controller.abort(new PgkeepError('ABORTED', 'the dashboard is shutting down'));
    await Promise.allSettled([...this.running]);
  }
}

function rateOf(job: JobView): number | undefined {
  const seconds = (Date.now() - Date.parse(job.startedAt)) / 1000;
  return seconds > 0 && job.bytes > 0 ? job.bytes / seconds : undefined;
}

/** One source's overview: its status (with `usage`, each deduplicating repository's size and ratio), and the measured restore time of its last restore test. */
async function overviewOf(settings: Settings, { source, repositories }: SourceRepositories, now: Date, usage?: UsageCache): Promise<SourceOverview> {
  const status = await collectSourceStatus(source, repositories, resolveHealthThresholds(settings, source), now, usage);
  let lastRestoreTestRestoreMs: number | undefined;
  const test = status.lastRestoreTest;
  const holder = test && repositories.find((r) => r.repository?.location === test.repository)?.repository;
  if (test && holder) {
    // the measured restore time is in the restore test's record
    const record = await holder.lastVerification(source, test.backupId, 'restore-test').catch(() => undefined);
    lastRestoreTestRestoreMs = record?.restore?.durationMs;
  }
  const labels = settings.config.sources?.[source]?.backup?.labels ?? settings.config.backup?.labels;
  return { status, lastRestoreTestRestoreMs, labels };
}

/** The settings of one source (as --source would give). */
function forSource(settings: Settings, source: string): Settings {
  return { ...settings, options: { ...settings.options, source } };
}

/**
 * DashboardDeps on top of the commands of the registry (list; the jobs
 * `logical` and `restoreTest`; pin, unpin), with jobs in an in-memory JobList.
 */
export function commandDashboardDeps(settings: Settings, registry: CommandRegistry, jobs: JobList = new JobList()): DashboardDeps & { jobList: JobList } {
  const known = async (source: string) => {
    // the config's names when it has sources: opening every source's repositories to check one name
    // made a source's page cost as much as the whole fleet's
    const configured = configuredSources(settings);
    const names = configured.length > 0 ? configured : (await sourcesWithRepositories(settings)).map((s) => s.source);
    if (!names.includes(source)) throw new PgkeepError('SOURCE_UNKNOWN', `no source "${source}": the sources are ${names.join(', ')}`);
    return forSource(settings, source);
  };
  return {
    jobList: jobs,

    async sources(): Promise<SourceOverview[]> {
      const now = new Date();
      const result: SourceOverview[] = [];
      for (const entry of await sourcesWithRepositories(settings)) result.push(await overviewOf(settings, entry, now));
      return result;
    },

    async source(name: string): Promise<SourceOverview> {
      // this source's repositories only: the cost of one source's page does not grow with the fleet
      const [entry] = await sourcesWithRepositories(await known(name));
      // the source page shows each deduplicating repository's ratio (the overview does not: it would list every store)
      return overviewOf(settings, entry!, new Date(), new Map());
    },

    async backups(source: string): Promise<BackupRow[]> {
      const settingsOfSource = await known(source);
      // before the first backup there may be no repository yet: no backup, not an error
      const listed = await registry
        .command('list')
        .run(quietContext(settingsOfSource), {})
        .catch((error: unknown) => {
        if (isPgkeepError(error, 'REPO_MISSING')) return undefined;
        throw error;
      });
      if (!listed) return [];
      return listed.backups.map((m, index) => {
        const v = listed.verifications.get(`${m.source}/${m.id}`);
        const repositories = listed.repositories ? listed.repositories.where[index]!.map((i) => listed.repositories!.locations[i]!) : [listed.location];
        return backupRow({ manifest: m, repositories, pinned: listed.pinned.has(`${m.source}/${m.id}`), verification: v });
      });
    },

    async jobs() {
      return jobs.list();
    },

    async runbook(source: string): Promise<string> {
      const result = await registry.command('runbook').run(quietContext(await known(source)), { format: 'md' });
      return result.sources.find((s) => s.source === source)?.markdown ?? '';
    },

    async startBackup(source) {
      const s = await known(source);
      return jobs.start(s, source, 'backup', async (ctx, job) => {
        job.backupId = (await runJobKind(registry, ctx, 'logical', { source })).backupId;
      });
    },

    async startRestoreTest(source, backupId) {
      const s = await known(source);
      return jobs.start(s, source, 'restoreTest', async (ctx, job) => {
        job.backupId = backupId;
        job.backupId = (await runJobKind(registry, ctx, 'restoreTest', { source, target: backupId })).backupId;
      });
    },

    async pin(source, backupId) {
      const s = await known(source);
      return jobs.start(s, source, 'pin', async (ctx, job) => {
        job.backupId = (await registry.command('pin').run(ctx, { ref: backupId, reason: 'pinned from the dashboard' })).id;
      });
    },

    async unpin(source, backupId) {
      const s = await known(source);
      return jobs.start(s, source, 'unpin', async (ctx, job) => {
        job.backupId = (await registry.command('unpin').run(ctx, { ref: backupId })).id;
      });
    },
  };
}

/** A backup, where it is held and its newest verification, as a row of the backups view (serve's catalog and `pgkeep dashboard` alike). */
export function backupRow({ manifest: m, repositories, pinned, verification: v }: CatalogBackup): BackupRow {
  return {
    id: m.id,
    kind: m.kind,
    name: m.name,
    labels: m.labels,
    startedAt: m.startedAt,
    finishedAt: m.finishedAt,
    durationMs: m.durationMs,
    rawBytes: m.totals.rawBytes,
    storedBytes: m.totals.storedBytes,
    ...(dedupFigures(m) ? { addedBytes: dedupFigures(m)!.addedBytes } : {}),
    database: m.kind === 'logical' ? m.database.name : '(whole cluster)',
    repositories,
    pinned,
    verification: v && { kind: v.kind, ok: v.ok, finishedAt: v.finishedAt, problem: v.problems[0], restoreMs: v.restore?.durationMs },
  };
}
