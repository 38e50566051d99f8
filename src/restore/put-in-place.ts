import { PgkeepError } from '../errors.js';
import type { ConnectionInfo } from '../postgres/connection-info.js';
import { dropDatabase, fitIdentifier, renameDatabase } from '../postgres/database-admin.js';
import { withClient } from '../postgres/pg-client.js';
import { timestampPart } from '../repository/backup-id.js';
import type { CommandContext } from '../registry/command-context.js';
import { faultPoint } from '../fault-points.js';
import { unmarkDatabase } from '../postgres/restore-leftovers.js';

/**
 * The checked copy takes the requested name: renamed (a new database;
 * refused if a database took the name meanwhile) or swapped in (overwrite).
 * Then pgkeep's marker is removed: the database is the user's from here.
 */
export async function putInPlace(
  ctx: CommandContext,
  admin: ConnectionInfo,
  target: string,
  work: string,
  old: string | undefined,
  safetyBackup: string | undefined,
  comment: string | null = null,
): Promise<void> {
  if (old !== undefined) {
    await swapDatabases(admin, target, work, safetyBackup!, old);
  } else {
    faultPoint('before-rename');
    await withClient(admin, async (client) => {
      try {
        await renameDatabase(client, work, target);
      } catch (error) {
        if ((error as { code?: string }).code === '42P04') throw new PgkeepError('DB_EXISTS', `database "${target}" was created by someone else during the restore: the restored copy was dropped`, { cause: error });
        throw error;
      }
    });
  }
  await withClient(admin, (client) => unmarkDatabase(client, target, comment)).catch((error: unknown) =>
    ctx.warn(`restored "${target}", but could not remove pgkeep's temporary marker (its COMMENT): ${(error as Error).message}`),
  );
}

export async function swapDatabases(admin: ConnectionInfo, target: string, work: string, safetyBackup: string, oldName?: string): Promise<void> {
  const old = oldName ?? fitIdentifier(target, `_pgkeep_old_${timestampPart(new Date()).toLowerCase()}`);
  await withClient(admin, async (client) => {
    await renameDatabase(client, target, old);
    faultPoint('between-renames');
    try {
      await renameDatabase(client, work, target);
      faultPoint('after-swap');
    } catch (error) {
      await renameDatabase(client, old, target).catch(() => undefined);
      throw new PgkeepError('RESTORE_FAILED', `could not put the restored database in place of "${target}" (${(error as Error).message}); the original is unchanged, the restored copy is "${work}", safety backup ${safetyBackup}`, { cause: error });
    }
    try {
      await dropDatabase(client, old);
    } catch (error) {
      throw new PgkeepError('RESTORE_FAILED', `restored "${target}", but could not drop the replaced database, now named "${old}": drop it by hand (${(error as Error).message})`, { cause: error });
    }
  });
}
