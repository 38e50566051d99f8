import { resolveRetention } from '../config/retention-settings.js';
import { keySettings, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import type { JobRecord } from '../scheduler/job-history.js';
import type { JobOutcome, JobRunContext } from '../scheduler/scheduler.js';
import { hasRetentionRules } from '../retention/retention-policy.js';
import type { CommandContext } from './command-context.js';
import type { JobResult } from './command-spec.js';
import type { CommandRegistry } from './command-registry.js';

export interface JobEnvironment {
  settings: Settings;
  /** The commands; a job of kind K runs the command whose spec declares K (registry.byJobKind). */
  registry: CommandRegistry;
  pruneAfterBackup: boolean;
  log: (level: 'info' | 'warn' | 'error', message: string) => void;
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
    registry: env.registry,
  };
}

/**
 * Runs one job of the daemon through the command that declares its kind, as
 * the CLI would run that command: logical and physical → backup (then prune,
 * when the source has a retention policy and serve.pruneAfterBackup is on),
 * restoreTest → verify --restore-test, verify → verify of one backup,
 * prune → prune, check → status (fails when the source is unhealthy).
 */
export async function runJob(env: JobEnvironment, job: Readonly<JobRecord>, run: JobRunContext): Promise<JobOutcome> {
  const settings = settingsForSource(env.settings, job.source);
  const ctx = jobContext(env, settings, job, run);
  const outcome = await runJobKind(env.registry, ctx, job.kind, { source: job.source, target: job.target });
  if (env.registry.byJobKind(job.kind)?.job.backup !== true || !env.pruneAfterBackup) return outcome;
  const pruned = await pruneAfterBackup(env, ctx, job.source);
  return { ...outcome, detail: `${outcome.detail}${pruned ? `; ${pruned}` : ''}` };
}

/** Runs one job of `kind` through its command: the job's request, the command's run, what the history records. */
export async function runJobKind(registry: CommandRegistry, ctx: CommandContext, kind: string, job: { source: string; target?: string | undefined }): Promise<JobResult> {
  const registered = registry.byJobKind(kind);
  if (!registered) throw new PgkeepError('INTERNAL', `no command runs jobs of kind "${kind}"`);
  return registered.job.outcome(await registered.spec.run(ctx, registered.job.request(job)));
}

/** Prune after a backup, when the source has a policy; a prune failure is logged, the backup stands. */
async function pruneAfterBackup(env: JobEnvironment, ctx: CommandContext, source: string): Promise<string | undefined> {
  const policies = resolveRetention(ctx.settings, source);
  if (!hasRetentionRules(policies.logical) || !hasRetentionRules(policies.physical)) return undefined;
  if (!env.registry.byJobKind('prune')) return undefined;
  try {
    return (await runJobKind(env.registry, ctx, 'prune', { source })).detail;
  } catch (error) {
    env.log('warn', `prune after the backup of ${source} failed: ${(error as Error).message}`);
    return `prune failed: ${(error as Error).message}`;
  }
}
