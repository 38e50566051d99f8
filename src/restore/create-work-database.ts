import type { ConnectionInfo } from '../postgres/connection-info.js';
import { createDatabase, dropDatabase, fitIdentifier } from '../postgres/database-admin.js';
import { withClient } from '../postgres/pg-client.js';
import { describeLocale } from '../postgres/database-state.js';
import { timestampPart } from '../repository/backup-id.js';
import type { CommandContext } from '../registry/command-context.js';
import { faultPoint } from '../fault-points.js';
import { markDatabase, newMarker } from '../postgres/restore-leftovers.js';

/**
 * The empty database a restore loads into: `<target>_pgkeep_<time>`, marked
 * as pgkeep's (with, for an overwrite, the name the replaced database will
 * be moved to during the swap), so a kill at any later point leaves nothing
 * the next run cannot recognise and remove.
 */
export async function createWorkDatabase(
  ctx: CommandContext,
  admin: ConnectionInfo,
  target: string,
  exists: boolean,
  what: string,
  locale: Parameters<typeof createDatabase>[2],
  whose: 'backup' | 'dump' = 'backup',
): Promise<{ work: string; old: string | undefined; localeKept: boolean }> {
  const stamp = timestampPart(new Date()).toLowerCase();
  const work = fitIdentifier(target, `_pgkeep_${stamp}`);
  const old = exists ? fitIdentifier(target, `_pgkeep_old_${stamp}`) : undefined;
  const localeKept = await withClient(admin, async (client) => {
    const { localeKept } = await createDatabase(client, work, locale);
    if (locale && !localeKept) ctx.warn(`locale ${describeLocale(locale)} of the ${whose} is not available on this server: restored with the server's default locale`);
    await markDatabase(client, work, newMarker(work, target, what, old)).catch(async (error: unknown) => {
      await dropDatabase(client, work).catch(() => undefined);
      throw error;
    });
    return localeKept;
  });
  faultPoint('after-database-created');
  return { work, old, localeKept };
}

/** Drops a database a failed restore created; a failure to drop is a warning (the restore's own error is what counts). */
export async function dropPartialDatabase(ctx: CommandContext, admin: ConnectionInfo, database: string): Promise<void> {
  await withClient(admin, (client) => dropDatabase(client, database)).catch((dropError) =>
    ctx.warn(`could not drop the partly restored database "${database}": ${(dropError as Error).message}`),
  );
}
