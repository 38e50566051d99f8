import { resolveHealthThresholds } from '../config/health-settings.js';
import { collectSourceStatus, type SourceStatus } from '../status/health.js';
import type { CommandContext } from './command-context.js';
import { resolveSource, type ResolvedSource } from '../config/settings.js';
import { serverLabel, withDatabase } from '../postgres/connection-info.js';
import { withClient } from '../postgres/pg-client.js';
import { cleanRestoreLeftovers } from '../postgres/restore-leftovers.js';
import { staleTempFolders } from '../storage/temp-folders.js';
import { sourcesWithRepositories } from './source-repositories.js';

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
 *  2. per source, what every repository holds (src/status/health.ts reads it)
 *  3. the verdict and findings (the same module: the daemon reuses it)
 */
export async function runStatus(ctx: CommandContext, options: { now?: Date; leftovers?: boolean } = {}): Promise<StatusResult> {
  const now = options.now ?? new Date();
  const sources: SourceStatus[] = [];
  for (const { source, repositories } of await sourcesWithRepositories(ctx.settings)) {
    sources.push(await collectSourceStatus(source, repositories, resolveHealthThresholds(ctx.settings, source), now));
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
