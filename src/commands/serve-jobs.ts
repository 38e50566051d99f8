import { resolveRetention } from '../config/retention-settings.js';
import { resolveSource, type ResolvedSource, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import type { JobRecord } from '../scheduler/job-history.js';
import type { JobOutcome, JobRunContext } from '../scheduler/scheduler.js';
import { hasRetentionRules } from '../retention/retention-policy.js';
import { runBackup } from './backup.js';
import type { CommandContext } from './command-context.js';
import { keySettings } from '../config/settings.js';
import { openRepositories, openRepository } from './open-repository.js';
import { runPrune, type PruneResult } from './prune.js';
import { runStatus } from './status.js';
import { runPhysicalBackup } from './backup-physical.js';
import { runVerify } from './verify.js';
import type { SourceStatus } from '../status/health.js';

/**
 * Where the daemon's jobs meet work other issues build: the lead points these
 * at the physical backup (issue 5) and the restore test (issue 4,
 * `verify --restore-test`) when merging. The defaults are what exists today.
 */
export interface JobSeams {
  /** A physical backup of the source; resolves to the backup made. */
  physicalBackup(ctx: CommandContext, source: ResolvedSource): Promise<{ id: string; bytes: number }>;
  /** A restore test of backup `ref` (an id, or "latest"); throws when it fails. */
  restoreTest(ctx: CommandContext, ref: string): Promise<{ backupId: string; bytes: number }>;
}

export const defaultJobSeams: JobSeams = {
  // backup --physical: into the source's first repository, where its WAL archive is.
  physicalBackup: async (ctx, source) => {
    const repository = await openRepository(ctx.settings, { source: source.name, createIfEmpty: true });
    const manifest = await runPhysicalBackup(ctx, repository, source);
    return { id: manifest.id, bytes: manifest.totals.storedBytes };
  },
  // The restore test of `verify --restore-test`: scratch from the source's verify: config, evidence recorded.
  restoreTest: async (ctx, ref) => {
    const report = await runVerify(ctx, ref, { restoreTest: true });
    return { backupId: report.id, bytes: report.objects.reduce((sum, o) => sum + o.rawBytes, 0) };
  },
};

export interface JobEnvironment {
  settings: Settings;
  seams: JobSeams;
  pruneAfterBackup: boolean;
  log: (level: 'info' | 'warn' | 'error', message: string) => void;
  /** Receives the status read by `check` jobs (alerts, metrics). */
  onStatus?: ((status: SourceStatus) => void) | undefined;
}

/** The settings of one source, as `--source NAME` would give them. */
export function settingsForSource(settings: Settings, source: string): Settings {
  return { ...settings, options: { ...settings.options, source } };
}

/** A command context whose progress feeds the scheduler's stuck-job watchdog and whose lines go to the daemon's log. */
function jobContext(env: JobEnvironment, settings: Settings, job: Readonly<JobRecord>, run: JobRunContext): CommandContext {
  return {
    settings,
    keys: keySettings(settings),
    signal: run.signal,
    info: (message) => env.log('info', `job ${job.id}: ${message}`),
    warn: (message) => env.log('warn', `job ${job.id}: ${message}`),
    progress: (p) => run.progress(p.bytes),
    confirm: async () => false,
  };
}

/**
 * Runs one job of the daemon by calling the same commands as the CLI:
 * logical → backup (then prune, when the source has a retention policy and
 * serve.pruneAfterBackup is on); physical and restoreTest → the seams;
 * prune → prune; check → status (fails when the source is unhealthy);
 * verify → verify of one backup.
 */
export async function runJob(env: JobEnvironment, job: Readonly<JobRecord>, run: JobRunContext): Promise<JobOutcome> {
  const settings = settingsForSource(env.settings, job.source);
  const ctx = jobContext(env, settings, job, run);
  switch (job.kind) {
    case 'logical': {
      const source = resolveSource(settings);
      const repositories = await openRepositories(settings, { source: source.name, createIfEmpty: true });
      const manifest = await runBackup(ctx, repositories, source, {});
      const pruned = env.pruneAfterBackup ? await pruneAfterBackup(env, ctx, job.source) : undefined;
      return { backupId: manifest.id, bytes: manifest.totals.rawBytes, detail: `backup ${manifest.id}${pruned ? `; ${pruned}` : ''}` };
    }
    case 'physical': {
      const made = await env.seams.physicalBackup(ctx, resolveSource(settings));
      const pruned = env.pruneAfterBackup ? await pruneAfterBackup(env, ctx, job.source) : undefined;
      return { backupId: made.id, bytes: made.bytes, detail: `backup ${made.id}${pruned ? `; ${pruned}` : ''}` };
    }
    case 'restoreTest': {
      const tested = await env.seams.restoreTest(ctx, job.target ?? 'latest');
      return { backupId: tested.backupId, bytes: tested.bytes, detail: `restore test of ${tested.backupId} passed` };
    }
    case 'verify': {
      const report = await runVerify(ctx, job.target ?? 'latest');
      return { backupId: report.id, bytes: report.objects.reduce((sum, o) => sum + o.rawBytes, 0), detail: `backup ${report.id} verified` };
    }
    case 'prune':
      return { detail: summarizePrune(await runPrune(ctx, { dryRun: false, flags: {} })) };
    case 'check': {
      const { sources } = await runStatus(ctx, { leftovers: false });
      const status = sources[0]!;
      env.onStatus?.(status);
      if (!status.healthy) {
        throw new PgkeepError('UNHEALTHY', `${status.findings.length} problem(s): ${status.findings.map((f) => f.message).join('; ')}`);
      }
      return { detail: 'healthy' };
    }
  }
}

/** Prune after a backup, when the source has a policy; a prune failure is logged, the backup stands. */
async function pruneAfterBackup(env: JobEnvironment, ctx: CommandContext, source: string): Promise<string | undefined> {
  const policies = resolveRetention(ctx.settings, source);
  if (!hasRetentionRules(policies.logical) || !hasRetentionRules(policies.physical)) return undefined;
  try {
    return summarizePrune(await runPrune(ctx, { dryRun: false, flags: {} }));
  } catch (error) {
    env.log('warn', `prune after the backup of ${source} failed: ${(error as Error).message}`);
    return `prune failed: ${(error as Error).message}`;
  }
}

function summarizePrune(result: PruneResult): string {
  const deleted = result.reports.reduce((n, r) => n + r.backups.filter((b) => b.action === 'delete' && b.done).length, 0);
  const kept = result.reports.reduce((n, r) => n + r.backups.filter((b) => b.action === 'keep').length, 0);
  return `pruned ${deleted}, kept ${kept}`;
}
