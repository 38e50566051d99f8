import { describePolicy, resolveRetention, type RetentionFlags } from '../config/retention-settings.js';
import { PgkeepError, toPgkeepError } from '../errors.js';
import { isPinned } from '../repository/pins.js';
import type { SourceLock } from '../repository/source-lock.js';
import { removeBackupFailure } from '../repository/backup-failures.js';
import { readSourceCatalog, removeBackupWithRecords, removeOrphanVerifications } from '../repository/source-catalog.js';
import { pitrRetention, planPrune, type PlannedBackup, type PlannedLeftover } from '../retention/plan-prune.js';
import { hasRetentionRules } from '../retention/retention-policy.js';
import type { CommandContext } from '../registry/command-context.js';
import { resolveSource, type ResolvedSource } from '../config/settings.js';
import { withDatabase } from '../postgres/connection-info.js';
import { cleanLeftovers } from '../local/clean-leftovers.js';
import { sourcesWithRepositories } from '../repository/source-repositories.js';
import { z } from 'zod';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { count, duration, labelPeriod } from '../registry/option-values.js';
import { validateTimeZone } from '../retention/calendar.js';
import { formatBytes, formatTable } from '../cli/format.js';
import { parseDuration } from '../retention/duration.js';
import { sweepRepositoryContent, type SweepOutcome } from '../repository/content-store/sweep-repository.js';

export interface PruneRequest {
  dryRun: boolean;
  /** --keep-* flags; they override the config key by key. */
  flags: RetentionFlags;
  /** Deduplicating repositories: how long a pack must have been found unused before it goes (default 1 hour). */
  sweepGraceMs?: number | undefined;
  /** The clock (tests); default now. */
  now?: Date;
}

/** What prune decided and did in one repository for one source. */
export interface PruneReport {
  source: string;
  repository: string;
  /** The policies in words, by kind. */
  policy: { logical: string; physical: string };
  backups: (Omit<PlannedBackup, 'time' | 'pinned'> & { startedAt: string; pinned: boolean; action: 'keep' | 'delete'; done: boolean })[];
  /** Backups whose manifest cannot be read: kept, and named. */
  unreadable: { id: string; reason: string }[];
  leftovers: (Omit<PlannedLeftover, 'lastActivity'> & { lastActivity: string; action: 'remove' | 'skip'; done: boolean })[];
  failureRecordsRemoved: number;
  wal: string | undefined;
  /** WAL files removed (records and objects). */
  walRemoved: number;
  /** Set when this repository was not (fully) pruned, e.g. LOCK_HELD. */
  error?: { code: string; message: string };
}

export interface PruneResult {
  dryRun: boolean;
  reports: PruneReport[];
  /** Deduplicating repositories: what the sweep of their content store freed (or would), or why it was skipped. */
  content: { repository: string; outcome: SweepOutcome }[];
}

/**
 * Applies the retention policy of each source to each of its repositories:
 *
 *  1. the sources (--source, the config's, or every source in the repository)
 *     and their policies (config < BACKUP_RETENTION_DAYS < flags); a source
 *     without any rule is refused before anything is touched
 *  2. per repository: take the source lock (unless --dry-run); a lock held by
 *     another process is reported (LOCK_HELD) and that repository is skipped
 *  3. read the catalog and plan (pure: src/retention/plan-prune.ts)
 *  4. unless --dry-run, oldest first: re-check the pin, remove the manifest,
 *     then the objects, then the backup's verification records; then
 *     leftovers older than an hour, verification records of backups that
 *     are gone, and failure records older than 30 days; release the lock
 *  5. WAL no retained backup needs
 *  6. each deduplicating repository: sweep its content store of chunks no
 *     backup references (sweep-repository.ts; a dry run says what it would free)
 *
 * Returns the reports; when a repository failed, throws its error with the
 * reports in `details.result`, after doing everything else.
 */
/** A pack found unused is removed by a prune at least this much later (docs/content-store.md, "Prune"). */
export const DEFAULT_SWEEP_GRACE_MS = 3_600_000;

export async function runPrune(ctx: CommandContext, request: PruneRequest): Promise<PruneResult> {
  const now = request.now ?? new Date();
  // 1. sources and policies, all checked first
  const sources = await sourcesWithRepositories(ctx.settings);
  const planned = sources.map((s) => {
    const policies = resolveRetention(ctx.settings, s.source, request.flags);
    if (!hasRetentionRules(policies.logical) || !hasRetentionRules(policies.physical)) {
      throw new PgkeepError(
        'USAGE',
        `no retention policy for source ${s.source}: set retention: (keepLast, keepDaily, …, keepWithin, maxAge) in pgkeep.yaml, BACKUP_RETENTION_DAYS, or give --keep-last/--keep-daily/--keep-within/--max-age; nothing was deleted`,
      );
    }
    return { ...s, policies };
  });

  const reports: PruneReport[] = [];
  const errors: PgkeepError[] = [];
  for (const { source, repositories, policies } of planned) {
    for (const opened of repositories) {
      const report: PruneReport = {
        source,
        repository: opened.repository?.location ?? opened.url,
        policy: { logical: describePolicy(policies.logical), physical: describePolicy(policies.physical) + (policies.pitrWindow ? `, pitr-window ${policies.pitrWindow.text}` : '') },
        backups: [],
        unreadable: [],
        leftovers: [],
        failureRecordsRemoved: 0,
        wal: undefined,
        walRemoved: 0,
      };
      reports.push(report);
      let lock: SourceLock | undefined;
      try {
        // a repository no backup has created yet holds nothing to prune
        if (!opened.repository && opened.error instanceof PgkeepError && opened.error.code === 'REPO_MISSING') continue;
        if (!opened.repository) throw opened.error;
        const repository = opened.repository;
        // 2. one writer per source
        if (!request.dryRun) {
          lock = await repository.lockSource(source, 'prune');
          if (!repository.locksExcludeOtherHosts) {
            ctx.warn(`${repository.location} ignores conditional writes (If-None-Match), so the lock of ${source} cannot exclude other hosts: make sure no backup or prune of ${source} runs elsewhere now`);
          }
        }
        // 3. the plan (the WAL archive's names only matter once physical backups exist)
        const catalog = await readSourceCatalog(repository, source);
        const wal = repository.walArchive(source);
        const archivedWal = catalog.backups.some((m) => m.kind === 'physical') ? await wal.listNames() : [];
        const plan = planPrune(
          {
            backups: catalog.backups.map((m) => ({
              id: m.id,
              kind: m.kind,
              time: new Date(m.startedAt),
              labels: m.name ? [...m.labels, m.name] : m.labels,
              pinned: catalog.pins.has(m.id),
              storedBytes: m.totals.storedBytes,
              walStart: m.kind === 'physical' ? m.physical.walStart : undefined,
            })),
            leftovers: catalog.leftovers,
            failureRecords: catalog.failures,
          },
          policies,
          now,
          pitrRetention(policies.pitrWindow, archivedWal),
        );
        report.backups = plan.backups.map(({ time, ...b }) => ({ ...b, startedAt: time.toISOString(), action: b.keep ? 'keep' : 'delete', done: false }));
        report.unreadable = catalog.unreadable.map((u) => ({ id: u.id, reason: `kept: ${u.error.message}` }));
        report.leftovers = plan.leftovers.map(({ lastActivity, ...l }) => ({ ...l, lastActivity: lastActivity.toISOString(), action: l.remove ? 'remove' : 'skip', done: false }));
        report.wal = plan.wal.summary;
        if (request.dryRun) continue;

        // 4. delete, oldest first
        for (const entry of [...report.backups].reverse()) {
          if (entry.action !== 'delete') continue;
          if (await isPinned(repository, source, entry.id)) {
            Object.assign(entry, { action: 'keep', keep: true, pinned: true, reasons: ['pinned (while prune ran)'] });
            continue;
          }
          await removeBackupWithRecords(repository, source, entry.id);
          entry.done = true;
          ctx.info(`deleted ${source}/${entry.id} from ${repository.location}`);
        }
        for (const entry of report.leftovers) {
          if (entry.action !== 'remove') continue;
          await repository.removeIncompleteBackup(source, entry.id);
          entry.done = true;
        }
        // verification records of backups that no longer exist (a prune killed between the two removals)
        await removeOrphanVerifications(repository, source);
        for (const key of plan.failureRecords) {
          await removeBackupFailure(repository, key);
          report.failureRecordsRemoved++;
        }
        // 5. WAL no retained backup needs: the record first (then the file is no longer archived), then its bytes
        for (const name of plan.wal.remove) {
          await wal.remove(name);
          report.walRemoved++;
        }
      } catch (error) {
        const failure = toPgkeepError(error, 'STORAGE_IO');
        report.error = { code: failure.code, message: failure.message };
        errors.push(failure);
      } finally {
        await lock?.release().catch(() => undefined);
      }
    }
  }
  // 6. deduplicating repositories: sweep the chunks no backup of any source references any more
  const content: PruneResult['content'] = [];
  const swept = new Set<string>();
  for (const { repositories } of planned) {
    for (const { repository } of repositories) {
      if (!repository?.info.content || swept.has(repository.location)) continue;
      swept.add(repository.location);
      const deleting = new Set(reports.filter((r) => r.repository === repository.location).flatMap((r) => r.backups.filter((b) => b.action === 'delete').map((b) => `${r.source}/${b.id}`)));
      try {
        content.push({ repository: repository.location, outcome: await sweepRepositoryContent(repository, ctx.keys, { dryRun: request.dryRun, graceMs: request.sweepGraceMs ?? DEFAULT_SWEEP_GRACE_MS, now, deleting }) });
      } catch (error) {
        const failure = toPgkeepError(error, 'STORAGE_IO');
        content.push({ repository: repository.location, outcome: { skipped: failure.message } });
        errors.push(failure);
      }
    }
  }
  // What interrupted restores left on the sources' servers and in their temp folders.
  if (!request.dryRun) {
    for (const { source } of planned) await cleanSourceLeftovers(ctx, source);
  }
  const result = { dryRun: request.dryRun, reports, content };
  if (errors.length > 0) {
    const first = errors[0]!;
    throw new PgkeepError(first.code, first.message, { cause: first, details: { ...first.details, result } });
  }
  return result;
}

/**
 * Removes what interrupted restores of a source left: marked temporary
 * databases on its server and stale temp folders (cleanLeftovers). A source
 * without a usable connection has no server to look at: skipped quietly.
 */
async function cleanSourceLeftovers(ctx: CommandContext, source: string): Promise<void> {
  let resolved: ResolvedSource;
  try {
    resolved = resolveSource({ ...ctx.settings, options: { ...ctx.settings.options, source } });
  } catch {
    return;
  }
  const admin = withDatabase(resolved.connection, 'postgres');
  await cleanLeftovers(ctx, admin, resolved.tempDir);
}

const PruneCommandRequest = z.object({
  dryRun: z.boolean(),
  sweepGraceMs: z.number().nonnegative().optional(),
  flags: z.object({
    keepLast: z.number().int().nonnegative().optional(),
    keepHourly: z.number().int().nonnegative().optional(),
    keepDaily: z.number().int().nonnegative().optional(),
    keepWeekly: z.number().int().nonnegative().optional(),
    keepMonthly: z.number().int().nonnegative().optional(),
    keepYearly: z.number().int().nonnegative().optional(),
    keepWithin: z.string().optional(),
    maxAge: z.string().optional(),
    keepLabels: z.record(z.string(), z.string()).optional(),
    timeZone: z.string().optional(),
  }),
});

/** `pgkeep prune`; the job `prune` (and prune after a backup job, serve.pruneAfterBackup). */
export const pruneCommand: CommandSpec<z.output<typeof PruneCommandRequest>, PruneResult> = {
  name: 'prune',
  description: 'apply the retention policy: print every backup with keep or delete and why, then delete',
  options: [
    { flags: '--dry-run', description: 'print the plan only; change nothing' },
    { flags: '--keep-last <n>', description: 'keep the N newest backups', parse: count('--keep-last') },
    { flags: '--keep-hourly <n>', description: 'keep the newest backup of each of the N newest hours with backups', parse: count('--keep-hourly') },
    { flags: '--keep-daily <n>', description: 'the same per day', parse: count('--keep-daily') },
    { flags: '--keep-weekly <n>', description: 'the same per ISO week', parse: count('--keep-weekly') },
    { flags: '--keep-monthly <n>', description: 'the same per month', parse: count('--keep-monthly') },
    { flags: '--keep-yearly <n>', description: 'the same per year', parse: count('--keep-yearly') },
    { flags: '--keep-within <duration>', description: 'keep every backup younger than this, e.g. 14d', parse: duration('--keep-within') },
    { flags: '--max-age <duration>', description: 'keep nothing older than this (pins, labels and the newest backup excepted), e.g. 30d', parse: duration('--max-age') },
    { flags: '--keep-label <label=duration>', description: 'keep backups with this label or name for a duration or forever (repeatable)', parse: labelPeriod },
    { flags: '--time-zone <zone>', description: "IANA time zone of the calendar rules (default: the config's, else this machine's)" },
    { flags: '--sweep-grace <duration>', description: 'deduplicating repositories: remove a chunk pack only once found unused this long ago (default 1h; 0 at once)', parse: duration('--sweep-grace') },
  ],
  help: { globals: ['config', 'repo', 'source'], examples: ['pgkeep prune --dry-run --keep-daily 7 --keep-weekly 4', 'pgkeep prune --source app'] },
  parse: requestParser(PruneCommandRequest, ({ options }) => {
    if (options.timeZone !== undefined) validateTimeZone(options.timeZone as string, '--time-zone');
    return {
      dryRun: Boolean(options.dryRun),
      sweepGraceMs: options.sweepGrace === undefined ? undefined : parseDuration(options.sweepGrace as string, '--sweep-grace').ms,
      flags: {
        keepLast: options.keepLast,
        keepHourly: options.keepHourly,
        keepDaily: options.keepDaily,
        keepWeekly: options.keepWeekly,
        keepMonthly: options.keepMonthly,
        keepYearly: options.keepYearly,
        keepWithin: options.keepWithin,
        maxAge: options.maxAge,
        keepLabels: options.keepLabel,
        timeZone: options.timeZone,
      },
    };
  }),
  run: (ctx, request) => runPrune(ctx, request),
  print: (result, out) => printPrune(result, out),
  printFailure(error, out) {
    // what was pruned before the failure
    const result = error.details?.result;
    if (result && !out.json) printPrune(result as PruneResult, out);
  },
  jobs: [{ kind: 'prune', scheduled: true, request: () => ({ dryRun: false, flags: {} }), outcome: (result) => ({ detail: summarizePrune(result) }) }],
};

/** One line for the job history: "pruned 2, kept 9". */
export function summarizePrune(result: PruneResult): string {
  const deleted = result.reports.reduce((n, r) => n + r.backups.filter((b) => b.action === 'delete' && b.done).length, 0);
  const kept = result.reports.reduce((n, r) => n + r.backups.filter((b) => b.action === 'keep').length, 0);
  return `pruned ${deleted}, kept ${kept}`;
}

// Printing for a terminal (moved from src/cli/print.ts)

/**
 * Prune's plan, one line per backup: "<action>  <id>  <kind>  <size>  <reasons>".
 * The format is stable (scripts and tests read it line by line).
 */
function printPrune(result: PruneResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  for (const report of result.reports) {
    out.line(`${report.source} in ${report.repository}${result.dryRun ? ' (dry run)' : ''}: ${report.policy.logical}`);
    if (report.backups.some((b) => b.kind === 'physical') && report.policy.physical !== report.policy.logical) out.line(`  physical backups: ${report.policy.physical}`);
    if (report.backups.length > 0) {
      const lines = formatTable(
        ['', 'ID', 'KIND', 'SIZE', 'WHY'],
        report.backups.map((b) => [b.action, b.id, b.kind, formatBytes(b.storedBytes), b.reasons.join(', ')]),
        [3],
      ).split('\n');
      for (const line of lines.slice(1)) out.line(`  ${line}`);
    }
    for (const u of report.unreadable) out.line(`  keep    ${u.id}  ${u.reason}`);
    for (const l of report.leftovers) out.line(`  ${l.action.padEnd(6)}  ${l.id}  ${l.reason} (last written ${l.lastActivity})`);
    if (report.wal) out.line(`  wal     ${report.wal}${!result.dryRun && report.walRemoved > 0 ? `: removed ${report.walRemoved}` : ''}`);
    if (report.error) {
      out.line(`  not pruned: ${report.error.message}`);
      continue;
    }
    const deleting = report.backups.filter((b) => b.action === 'delete');
    const removing = report.leftovers.filter((l) => l.action === 'remove');
    const bytes = deleting.reduce((n, b) => n + b.storedBytes, 0);
    const what = `${deleting.length} backup(s) (${formatBytes(bytes)}), ${removing.length} leftover(s)`;
    out.line(result.dryRun ? `  dry run: would delete ${what}; nothing was changed` : `  deleted ${what}; kept ${report.backups.length - deleting.length} backup(s)`);
  }
  for (const { repository, outcome } of result.content) {
    if ('skipped' in outcome) {
      out.line(`content store of ${repository}: not swept: ${outcome.skipped}`);
      continue;
    }
    const s = outcome.swept;
    const freed = s.deletedBytes + s.repackFreedBytes + s.orphanBytes;
    const parts = [
      `${result.dryRun ? 'would free' : 'freed'} ${formatBytes(freed)} (${s.deletedPacks} pack(s) deleted, ${s.repackedPacks} repacked, ${s.orphanPacks} left by interrupted backups)`,
      s.markedPacks > 0 ? `${formatBytes(s.markedBytes)} in ${s.markedPacks} pack(s) unused since this or a recent prune, freed by a prune after the grace` : '',
      s.repackSkippedForKey > 0 ? `${s.repackSkippedForKey} pack(s) to repack wait for the identity` : '',
    ].filter(Boolean);
    out.line(`content store of ${repository}: ${parts.join('; ')}`);
  }
  if (result.reports.length === 0) out.line('no sources to prune');
}
