import type { Settings } from '../../config/settings.js';
import type { CommandRegistry } from '../../registry/command-registry.js';
import type { JobRecord } from '../../scheduler/job-history.js';
import type { Scheduler } from '../../scheduler/scheduler.js';
import { PgkeepError } from '../../errors.js';
import type { CatalogBackup } from '../../status/fleet-catalog.js';
import type { SourceStatus } from '../../status/health.js';
import { backupRow, commandDashboardDeps, JobList } from './command-dashboard-deps.js';
import type { BackupRow, DashboardDeps, JobKind, JobView, SourceOverview } from './dashboard-deps.js';

/** What the dashboard reads of serve's catalog (src/status/fleet-catalog.ts). */
export interface CatalogView {
  readonly sources: readonly string[];
  has(source: string): boolean;
  whenLoaded(source?: string): Promise<void>;
  status(source: string): SourceStatus | undefined;
  backups(source: string): readonly CatalogBackup[];
  /** After a pin or unpin: one listing of the source. */
  refresh(source: string): Promise<void>;
}

/**
 * The dashboard's deps inside `pgkeep serve`: views read serve's in-memory
 * catalog (no page reads a manifest; a source's page costs the same with 1 or
 * 500 sources, and with 10 or 10,000 backups), and jobs are serve's own. "Backup now" and "restore
 * test now" are submitted to the scheduler (no overlap with a scheduled run of
 * the same source, stuck-job watchdog, persistent history, alerts), the jobs
 * view lists the scheduler's jobs, and each source shows its next scheduled run.
 */
export function serveDashboardDeps(settings: Settings, registry: CommandRegistry, scheduler: Scheduler, catalog: CatalogView): DashboardDeps {
  // pin and unpin run as the dashboard's own jobs; what they changed is in the catalog once they end
  const commands = commandDashboardDeps(settings, registry, new JobList(50, (job) => void catalog.refresh(job.source)));
  const labelsOf = (source: string) => settings.config.sources?.[source]?.backup?.labels ?? settings.config.backup?.labels;
  const overview = (source: string, next: Map<string, string>): SourceOverview | undefined => {
    const status = catalog.status(source);
    return status && { status, nextRunAt: next.get(source), labels: labelsOf(source), lastRestoreTestRestoreMs: status.lastRestoreTest?.restoreMs };
  };
  const known = (source: string) => {
    if (!catalog.has(source)) throw new PgkeepError('SOURCE_UNKNOWN', `no source "${source}": the sources are ${catalog.sources.join(', ')}`);
    return source;
  };
  const nextRuns = () => {
    const next = new Map<string, string>();
    for (const s of scheduler.schedules()) {
      if (s.next && (!next.has(s.source) || s.next < next.get(s.source)!)) next.set(s.source, s.next);
    }
    return next;
  };
  return {
    async sources() {
      await catalog.whenLoaded();
      const next = nextRuns();
      return catalog.sources.flatMap((source) => overview(source, next) ?? []);
    },
    async source(name) {
      await catalog.whenLoaded(known(name));
      const found = overview(name, nextRuns());
      if (!found) throw new PgkeepError('SOURCE_UNKNOWN', `source "${name}" could not be read: pgkeep is stopping`);
      return found;
    },
    async backups(source) {
      await catalog.whenLoaded(known(source));
      return catalog.backups(source).map(backupRow);
    },
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
    // read afresh from the repositories (a page asked for rarely; the catalog keeps no manifests' tables)
    runbook: (source) => commands.runbook!(known(source)),
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

