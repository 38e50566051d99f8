import { resolveHealthThresholds } from '../config/health-settings.js';
import { collectSourceStatus, type SourceStatus } from '../status/health.js';
import type { CommandContext } from './command-context.js';
import { sourcesWithRepositories } from './source-repositories.js';

export interface StatusResult {
  healthy: boolean;
  sources: SourceStatus[];
}

/**
 * The state of every source (--source, the config's, or every source in the
 * repository), from its repositories alone (no database needed):
 *
 *  1. the sources and their health thresholds (config `health:`, defaults)
 *  2. per source, what every repository holds (src/status/health.ts reads it)
 *  3. the verdict and findings (the same module: the daemon reuses it)
 */
export async function runStatus(ctx: CommandContext, options: { now?: Date } = {}): Promise<StatusResult> {
  const now = options.now ?? new Date();
  const sources: SourceStatus[] = [];
  for (const { source, repositories } of await sourcesWithRepositories(ctx.settings)) {
    sources.push(await collectSourceStatus(source, repositories, resolveHealthThresholds(ctx.settings, source), now));
  }
  return { healthy: sources.every((s) => s.healthy), sources };
}
