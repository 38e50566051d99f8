import type { Settings } from '../../config/settings.js';
import type { CommandRegistry } from '../../registry/registry.js';
import type { JobRecord } from '../../scheduler/job-history.js';
import type { Scheduler } from '../../scheduler/scheduler.js';
import { commandDashboardDeps } from './command-dashboard-deps.js';
import type { DashboardDeps, JobKind, JobView } from './dashboard-deps.js';

/**
 * The dashboard's deps inside `pgkeep serve`: views read the repositories as
 * `pgkeep dashboard` does, but jobs are serve's own. "Backup now" and "restore
 * test now" are submitted to the scheduler (no overlap with a scheduled run of
 * the same source, stuck-job watchdog, persistent history, alerts), the jobs
 * view lists the scheduler's jobs, and each source shows its next scheduled run.
 */
export function serveDashboardDeps(settings: Settings, registry: CommandRegistry, scheduler: Scheduler): DashboardDeps {
  const commands = commandDashboardDeps(settings, registry);
  const nextRuns = () => {
    const next = new Map<string, string>();
    for (const s of scheduler.schedules()) {
      if (s.next && (!next.has(s.source) || s.next < next.get(s.source)!)) next.set(s.source, s.next);
    }
    return next;
  };
  return {
    async sources() {
      const next = nextRuns();
      return (await commands.sources()).map((overview) => ({ ...overview, nextRunAt: next.get(overview.status.source) ?? overview.nextRunAt }));
    },
    async source(name) {
      const overview = await commands.source!(name);
      return { ...overview, nextRunAt: nextRuns().get(name) ?? overview.nextRunAt };
    },
    backups: (source) => commands.backups(source),
    async jobs() {
      // the scheduler's jobs (newest first), and the dashboard's own pin/unpin
      const scheduled = scheduler.jobs().map((job) => jobView(registry, job)).filter((j): j is JobView => j !== undefined);
      const own = (await commands.jobs()).filter((j) => j.kind === 'pin' || j.kind === 'unpin');
      return [...scheduled, ...own].sort((a, b) => (a.startedAt < b.startedAt ? 1 : a.startedAt > b.startedAt ? -1 : 0));
    },
    async startBackup(source) {
      return scheduler.submit(source, 'logical', 'api').id;
    },
    async startRestoreTest(source, backupId) {
      return scheduler.submit(source, 'restoreTest', 'api', { target: backupId }).id;
    },
    pin: (source, backupId) => commands.pin(source, backupId),
    unpin: (source, backupId) => commands.unpin(source, backupId),
  };
}

/**
 * A scheduler job as the dashboard shows it: the backup kinds (logical, physical: the registry's backup jobs)
 * as "backup", restore tests as restoreTest; jobs the dashboard has no view for (prune, check, verify) are left out.
 */
function jobView(registry: CommandRegistry, job: JobRecord): JobView | undefined {
  const kind: JobKind | undefined = registry.byJobKind(job.kind)?.job.backup ? 'backup' : job.kind === 'restoreTest' ? 'restoreTest' : undefined;
  if (!kind) return undefined;
  const state = job.state === 'succeeded' ? 'succeeded' : job.state === 'failed' || job.state === 'cancelled' || job.state === 'skipped' ? 'failed' : 'running';
  const startedAt = job.startedAt ?? job.queuedAt;
  const seconds = (Date.now() - Date.parse(startedAt)) / 1000;
  return {
    id: job.id,
    source: job.source,
    kind,
    state,
    startedAt,
    finishedAt: job.finishedAt,
    phase: job.state === 'queued' ? 'queued' : undefined,
    bytes: job.bytes,
    rate: state === 'running' && seconds > 0 ? job.bytes / seconds : undefined,
    backupId: job.backupId,
    error: job.error ?? (job.state === 'skipped' ? { code: 'SKIPPED', message: `${job.skipped && job.skipped > 1 ? `${job.skipped} runs skipped since ${job.firstSkippedAt ?? job.queuedAt}, the last: ` : ''}${job.detail ?? 'skipped'}` } : undefined),
  };
}
