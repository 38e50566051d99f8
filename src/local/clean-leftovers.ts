import type { ConnectionInfo } from '../postgres/connection-info.js';
import { withClient } from '../postgres/pg-client.js';
import { cleanRestoreLeftovers } from '../postgres/restore-leftovers.js';
import { throwIfAborted } from '../errors.js';
import { removeStaleTempFolders } from './temp-folders.js';

/** Where the cleanup reports (a command's context has these). */
export interface LeftoverReport {
  info(message: string): void;
  warn(message: string): void;
  signal: AbortSignal;
}

/**
 * What interrupted runs left: temporary databases on this server (only
 * those pgkeep marked as its own, see cleanRestoreLeftovers) and private temp
 * folders of dead pgkeep processes. Each removal is reported; what cannot be
 * removed is a warning, never a failure of the command that found it.
 */
export async function cleanLeftovers(ctx: LeftoverReport, admin: ConnectionInfo, tempDir: string | undefined): Promise<void> {
  try {
    const report = await withClient(admin, (client) => cleanRestoreLeftovers(client), ctx.signal);
    for (const line of report.done) ctx.info(`leftover of an interrupted run: ${line}`);
    for (const line of report.kept) ctx.warn(`leftover not removed: ${line}`);
  } catch (error) {
    throwIfAborted(ctx.signal);
    ctx.warn(`could not look for databases left by interrupted restores: ${(error as Error).message}`);
  }
  const folders = await removeStaleTempFolders(tempDir);
  for (const folder of folders.removed) ctx.info(`leftover of an interrupted run: removed temp folder ${folder}`);
  for (const { path: folder, error } of folders.failed) ctx.warn(`leftover not removed: temp folder ${folder} (${error})`);
}

