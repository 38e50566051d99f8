import { hostname, userInfo } from 'node:os';
import { configuredSourceName } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { isPinned, removePin, writePin } from '../repository/pins.js';
import type { CommandContext } from '../registry/command-context.js';
import { repositoriesWithBackup } from '../repository/open-repository.js';
import { z } from 'zod';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';

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


const PinCommandRequest = z.object({ ref: z.string(), reason: z.string().optional() });

/** `pgkeep pin ID|latest [--reason]`. */
export const pinCommand: CommandSpec<z.output<typeof PinCommandRequest>, PinResult> = {
  name: 'pin',
  description: 'keep a backup forever: prune never deletes a pinned backup',
  arguments: [{ name: '<backup>', description: 'backup id, or latest' }],
  options: [{ flags: '--reason <text>', description: 'why it is pinned (kept in the pin record)' }],
  help: { globals: ['config', 'repo', 'source'], examples: ['pgkeep pin 20261121T020000Z --reason "before the 2.0 migration"', 'pgkeep pin latest --source app'] },
  parse: requestParser(PinCommandRequest, ({ args: [ref], options }) => ({ ref, reason: options.reason })),
  run: (ctx, request) => runPin(ctx, request.ref, { reason: request.reason }),
  print: (result, out) => printPin(result, out),
};

/** `pgkeep unpin ID|latest`. */
export const unpinCommand: CommandSpec<{ ref: string }, PinResult> = {
  name: 'unpin',
  description: 'let the retention policy apply to a pinned backup again',
  arguments: [{ name: '<backup>', description: 'backup id, or latest' }],
  options: [],
  help: { globals: ['config', 'repo', 'source'], examples: ['pgkeep unpin 20261121T020000Z'] },
  parse: requestParser(z.object({ ref: z.string() }), ({ args: [ref] }) => ({ ref })),
  run: (ctx, request) => runUnpin(ctx, request.ref),
  print: (result, out) => printPin(result, out),
};

// Printing for a terminal (moved from src/cli/print.ts)

function printPin(result: PinResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (result.pinned) out.line(`pinned ${result.source}/${result.id} in ${result.repositories.join(', ')}: prune will never delete it (pgkeep unpin ${result.id} to undo)`);
  else if (result.changed) out.line(`unpinned ${result.source}/${result.id} in ${result.repositories.join(', ')}: the retention policy applies to it again`);
  else out.line(`${result.source}/${result.id} was not pinned (nothing changed)`);
}

// Callable by name through the registry (serve, the dashboard), typed: see NamedCommands.
declare module '../registry/command-registry.js' {
  interface NamedCommands {
    pin: typeof pinCommand;
    unpin: typeof unpinCommand;
  }
}
