import { resolveHealthThresholds } from '../config/health-settings.js';
import { collectSourceStatus, DRILL_KINDS, DRILL_NAMES, type SourceStatus, type UsageCache } from '../status/health.js';
import type { CommandContext } from '../registry/command-context.js';
import { resolveSource, type ResolvedSource } from '../config/settings.js';
import { serverLabel, withDatabase } from '../postgres/connection-info.js';
import { withClient } from '../postgres/pg-client.js';
import { cleanRestoreLeftovers } from '../postgres/restore-leftovers.js';
import { staleTempFolders } from '../local/temp-folders.js';
import { sourcesWithRepositories } from '../repository/source-repositories.js';
import { z } from 'zod';
import { ERROR_CODES, PgkeepError } from '../errors.js';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { formatAge, formatBytes, formatDuration } from '../cli/format.js';
import type { RepositoryUsage } from '../status/repository-usage.js';

export interface StatusResult {
  healthy: boolean;
  sources: SourceStatus[];
  /**
   * What interrupted runs left on the sources' servers (marked temporary
   * databases) and in their temp folders, that the next restore or prune
   * removes, or could not remove. Read only when a connection is configured;
   * it does not change the verdict.
   */
  leftovers: string[];
}

/**
 * The state of every source (--source, the config's, or every source in the
 * repository), from its repositories alone (no database needed):
 *
 *  1. the sources and their health thresholds (config `health:`, defaults)
 *  2. per source, what every repository holds (src/status/health.ts reads it),
 *     and for a deduplicating repository its logical and stored bytes and ratio
 *  3. the verdict and findings (the same module: the daemon reuses it)
 */
export async function runStatus(ctx: CommandContext, options: { now?: Date; leftovers?: boolean } = {}): Promise<StatusResult> {
  const now = options.now ?? new Date();
  const sources: SourceStatus[] = [];
  // a deduplicating repository's size and ratio: read once per repository, whatever the number of its sources
  const usage: UsageCache = new Map();
  for (const { source, repositories } of await sourcesWithRepositories(ctx.settings)) {
    sources.push(await collectSourceStatus(source, repositories, resolveHealthThresholds(ctx.settings, source), now, usage));
  }
  const leftovers: string[] = [];
  if (options.leftovers !== false) {
    for (const { source } of await sourcesWithRepositories(ctx.settings).catch(() => [])) leftovers.push(...(await sourceLeftovers(ctx, source)));
  }
  return { healthy: sources.every((s) => s.healthy), sources, leftovers: [...new Set(leftovers)] };
}

/** A source's leftovers, looked up without changing anything; a server that does not answer within 5 s is skipped. */
async function sourceLeftovers(ctx: CommandContext, source: string): Promise<string[]> {
  let resolved: ResolvedSource;
  try {
    resolved = resolveSource({ ...ctx.settings, options: { ...ctx.settings.options, source } });
  } catch {
    return [];
  }
  const found: string[] = [];
  try {
    const report = await withClient(withDatabase(resolved.connection, 'postgres'), (client) => cleanRestoreLeftovers(client, { dryRun: true }), AbortSignal.any([ctx.signal, AbortSignal.timeout(5000)]));
    found.push(...report.kept.map((line) => `${serverLabel(resolved.connection)}: ${line}`));
  } catch {
    // no server to look at (down, no rights): status stays a repository report
  }
  for (const folder of await staleTempFolders(resolved.tempDir)) found.push(`temp folder ${folder} of a pgkeep process that no longer runs: the next restore, backup or prune removes it`);
  return found;
}

const StatusCommandRequest = z.object({ check: z.boolean(), leftovers: z.boolean() });

/** `pgkeep status [--check]`; the job `check` (fails when the source is unhealthy). */
export const statusCommand: CommandSpec<z.output<typeof StatusCommandRequest>, StatusResult> = {
  name: 'status',
  description: 'per source: last backup, last failure, verification, restore test, repositories, PITR, and a health verdict',
  options: [{ flags: '--check', description: `exit ${ERROR_CODES.UNHEALTHY.exit} with one line per problem (for cron, Nagios, Kubernetes probes)` }],
  help: { globals: ['config', 'repo', 'source'], examples: ['pgkeep status', 'pgkeep status --check   # exit 2 and one line per problem', 'pgkeep status --json'] },
  parse: requestParser(StatusCommandRequest, ({ options }) => ({ check: Boolean(options.check), leftovers: true })),
  run: (ctx, request) => runStatus(ctx, { leftovers: request.leftovers }),
  print(result, out, request) {
    if (!(out.quiet && request.check)) printStatus(result, out, request.check);
    if (request.check && !result.healthy) out.exitWith(ERROR_CODES.UNHEALTHY.exit);
  },
  jobs: [
    {
      kind: 'check',
      scheduled: true,
      request: () => ({ check: true, leftovers: false }),
      outcome({ sources }) {
        const status = sources[0]!;
        if (!status.healthy) throw new PgkeepError('UNHEALTHY', `${status.findings.length} problem(s): ${status.findings.map((f) => f.message).join('; ')}`);
        return { detail: 'healthy' };
      },
    },
  ],
};

// Printing for a terminal (moved from src/cli/print.ts)

/** A deduplicating repository as a whole: what its backups hold, what it stores, the ratio, what prune has marked. */
function usageLine(u: RepositoryUsage): string {
  const ratio = u.dedupRatio === null ? 'no ratio yet' : `ratio ${u.dedupRatio.toFixed(1)}x`;
  const marked = u.markedPacks > 0 ? `; ${formatBytes(u.markedBytes)} in ${u.markedPacks} pack(s) marked unused by prune (freed after the grace; prune --dry-run says exactly)` : '';
  return `${formatBytes(u.logicalBytes)} in ${u.backups} backup(s) of all sources, ${formatBytes(u.storedBytes)} stored (${u.packs} packs + index), ${ratio}${marked}`;
}

/** `status`: one block per source; `status --check`: one line per problem (or one line saying all is well). */
function printStatus(result: StatusResult, out: CommandOutput, check: boolean): void {
  if (out.json) return out.document(result);
  if (check) {
    const findings = result.sources.flatMap((s) => s.findings);
    if (findings.length === 0) out.line(`OK: ${result.sources.map((s) => s.source).join(', ') || 'nothing to check'} healthy`);
    for (const f of findings) out.line(`${f.source}: ${f.message}`);
    return;
  }
  for (const [i, s] of result.sources.entries()) {
    if (i > 0) out.line('');
    out.line(`${s.source}: ${s.healthy ? 'healthy' : `${s.findings.length} problem(s)`}`);
    const b = s.lastBackup;
    const verification = (v: StatusResult['sources'][number]['lastVerification']) =>
      v ? `${v.ok ? 'ok' : 'FAILED'} ${formatAge(new Date(v.finishedAt))} (${v.backupId}${v.problem ? `: ${v.problem}` : ''})` : 'none';
    const lines: [string, string][] = [
      [
        'last backup',
        b
          ? `${b.id} (${b.kind}), finished ${formatAge(new Date(b.finishedAt))}, ${b.addedBytes !== undefined ? `${formatBytes(b.rawBytes)}, ${formatBytes(b.addedBytes)} added` : `${formatBytes(b.storedBytes)} stored`}, took ${formatDuration(b.durationMs)}`
          : 'none',
      ],
      ['last failure', s.lastFailure ? `${formatAge(new Date(s.lastFailure.failedAt))}: ${s.lastFailure.message}` : 'none'],
      ['last verified', s.lastVerification ? `${s.lastVerification.kind} ${verification(s.lastVerification)}` : 'never'],
      ['restore test', verification(s.lastRestoreTest)],
      // each kind of drill on its own once more than logical restore tests ran
      ...(Object.keys(s.drills).some((k) => k !== 'logical-restore-test')
        ? DRILL_KINDS.flatMap((k): [string, string][] => {
            const d = s.drills[k];
            if (!d) return [];
            const measured = `${d.last.restoreMs !== undefined ? `, RTO ${formatDuration(d.last.restoreMs)}` : ''}${d.last.rpoMs !== undefined ? `, RPO ${formatDuration(d.last.rpoMs)}` : ''}`;
            return [[DRILL_NAMES[k], `${verification(d.last)}${measured}${!d.last.ok && d.lastSuccess ? `; last passed ${formatAge(new Date(d.lastSuccess.finishedAt))}` : ''}`]];
          })
        : []),
      ...s.repositories.flatMap((r): [string, string][] => [
        ['repository', `${r.location}: ${r.error ? `unreadable (${r.error})` : `${r.backups} backup(s), ${formatBytes(r.storedBytes)}${r.usage ? ' added' : ''}`}`],
        ...(r.usage ? [['deduplication', usageLine(r.usage)] as [string, string]] : []),
      ]),
      ['pitr', s.pitr.archiving ? `archiving, last WAL ${formatAge(new Date(s.pitr.lastArchivedAt!))}${s.pitr.window ? `, window ${s.pitr.window.from} → ${s.pitr.window.to}` : ''}` : 'not archiving'],
      ...s.findings.map((f): [string, string] => ['problem', f.message]),
    ];
    const width = Math.max(...lines.map(([k]) => k.length));
    for (const [key, value] of lines) out.line(`  ${key.padEnd(width)}  ${value}`);
  }
  if (result.sources.length === 0) out.line('no sources');
  if (result.leftovers.length > 0) out.line('');
  for (const line of result.leftovers) out.line(`leftover: ${line}`);
}
