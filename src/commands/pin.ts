import { hostname, userInfo } from 'node:os';
import { configuredSourceName } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { isPinned, removePin, writePin } from '../repository/pins.js';
import type { CommandContext } from './command-context.js';
import { repositoriesWithBackup } from './open-repository.js';

export interface PinResult {
  source: string;
  id: string;
  pinned: boolean;
  /** Repositories where the pin was written (pin) or removed (unpin). */
  repositories: string[];
  /** unpin of a backup that was not pinned. */
  changed: boolean;
}

/**
 * Pins a backup in every repository of its source that holds it: prune never
 * deletes it, whatever the policy. The pin is written, then the backup is
 * checked to still exist (a prune that deleted it meanwhile is reported).
 */
export async function runPin(ctx: CommandContext, ref: string, options: { reason?: string | undefined } = {}): Promise<PinResult> {
  const found = await repositoriesWithBackup(ctx.settings, ref, configuredSourceName(ctx.settings));
  const { source, id } = found[0]!.manifest;
  const by = `${safeUser()}@${hostname()}`;
  for (const { repository } of found) {
    await writePin(repository, { source, backupId: id, pinnedAt: new Date().toISOString(), by, reason: options.reason ?? null });
    try {
      await repository.readManifest(source, id);
    } catch (error) {
      await removePin(repository, source, id).catch(() => undefined);
      throw new PgkeepError('BACKUP_NOT_FOUND', `backup ${id} was deleted from ${repository.location} (by a prune running at the same time) before it could be pinned`, { cause: error });
    }
  }
  return { source, id, pinned: true, repositories: found.map((f) => f.repository.location), changed: true };
}

/** Removes the pin of a backup in every repository that holds it; prune may then delete it. */
export async function runUnpin(ctx: CommandContext, ref: string): Promise<PinResult> {
  const found = await repositoriesWithBackup(ctx.settings, ref, configuredSourceName(ctx.settings));
  const { source, id } = found[0]!.manifest;
  const removed: string[] = [];
  for (const { repository } of found) {
    if (await isPinned(repository, source, id)) {
      await removePin(repository, source, id);
      removed.push(repository.location);
    }
  }
  return { source, id, pinned: false, repositories: removed, changed: removed.length > 0 };
}

function safeUser(): string {
  try {
    return userInfo().username;
  } catch {
    return 'unknown';
  }
}

