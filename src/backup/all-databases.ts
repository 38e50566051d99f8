import { rm } from 'node:fs/promises';
import * as path from 'node:path';
import { sourceNameForDatabase, type ResolvedSource } from '../config/settings.js';
import { isPgkeepError, PgkeepError, toPgkeepError } from '../errors.js';
import { withDatabase } from '../postgres/connection-info.js';
import { dumpGlobals } from '../postgres/dump-globals.js';
import { withClient } from '../postgres/pg-client.js';
import { makeBackupId } from '../repository/backup-id.js';
import { globalsPlan, runBackup, type BackupRequest, type GlobalsPlan } from './logical-backup.js';
import type { CommandContext } from '../registry/command-context.js';
import { openRepositories } from '../repository/open-repository.js';
import { makeTempFolder } from '../local/temp-folders.js';

export interface AllDatabasesResult {
  /** Id of this run; the manifests of its backups record it as globals.run. */
  run: string;
  /** Whether the backups hold the (one, shared) globals dump. */
  globals: boolean;
  backups: { database: string; source: string; id: string; storedBytes: number; rows: number; tables: number }[];
  failed: { database: string; source: string; code: string; message: string }[];
}

/**
 * backup --all-databases: every database of the source's server that accepts
 * connections (templates excluded) becomes its own backup, one after the
 * other, in the source's repositories:
 *
 *  1. list the databases, and decide about globals (as for one backup)
 *  2. dump the globals once, into a temp file
 *  3. back up each database under the source named after it (the source's
 *     own database keeps the source's name), label all-databases; each
 *     stores the same globals dump as its globals object, and its manifest
 *     records the run (globals.run). A failing database does not stop the
 *     others.
 *
 * Each backup holds its own copy of the one globals dump (a few KB): every
 * backup stays self-contained, so it restores, copies and can be pruned on
 * its own; the identical SHA-256 and globals.run show they are the same dump.
 */
export async function runBackupAllDatabases(ctx: CommandContext, source: ResolvedSource, request: BackupRequest): Promise<AllDatabasesResult> {
  const selective = [request.tables, request.excludeTables, request.schemas, request.excludeSchemas].some((l) => (l?.length ?? 0) > 0);
  if (selective) throw new PgkeepError('USAGE', '--all-databases backs up whole databases: leave out --table, --exclude-table, --schema and --exclude-schema');
  const run = makeBackupId(new Date(), request.name);
  const repositories = await openRepositories(ctx.settings, { source: source.name, createIfEmpty: true });

  // 1. the databases, and the globals plan
  const { databases, plan } = await withClient(
    source.connection,
    async (client) => ({
      databases: (await client.query<{ name: string }>('SELECT datname AS name FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname')).rows.map((r) => r.name),
      plan: await globalsPlan(client, request.globals ?? source.backup.globals, repositories),
    }),
    ctx.signal,
  );
  ctx.info(`backing up ${databases.length} database(s) of ${source.connection.host}:${source.connection.port}: ${databases.join(', ')}`);

  const staging = await makeTempFolder(source.tempDir, 'globals');
  try {
    // 2. the globals, once for all
    let shared: GlobalsPlan | undefined;
    if (plan) {
      const file = path.join(staging, 'globals.sql');
      try {
        await dumpGlobals(source.connection, file, { passwords: plan.passwords, pgBin: source.pgBin, signal: ctx.signal });
        shared = { ...plan, file, run };
      } catch (error) {
        if (plan.explicit || ctx.signal.aborted) throw error;
        ctx.warn(`roles and tablespaces are not in these backups (pg_dumpall --globals-only failed: ${(error as Error).message}); pass --no-globals to skip them`);
      }
    }

    // 3. one backup per database
    const result: AllDatabasesResult = { run, globals: shared !== undefined, backups: [], failed: [] };
    for (const database of databases) {
      const name = database === source.connection.database ? source.name : sourceNameForDatabase(database);
      // found on the server: a failure of it is recorded even before its first backup
      const one: ResolvedSource = { ...source, name, connection: withDatabase(source.connection, database), configured: true };
      try {
        const manifest = await runBackup(ctx, repositories, one, {
          ...request,
          globals: shared !== undefined,
          sharedGlobals: shared,
          labels: [...(request.labels ?? []), 'all-databases'],
        });
        result.backups.push({ database, source: name, id: manifest.id, storedBytes: manifest.totals.storedBytes, rows: manifest.totals.rows, tables: manifest.tables.length });
      } catch (error) {
        if (isPgkeepError(error, 'ABORTED') || ctx.signal.aborted) throw error;
        const failure = toPgkeepError(error);
        ctx.warn(`backup of database "${database}" failed: ${failure.message}`);
        result.failed.push({ database, source: name, code: failure.code, message: failure.message });
      }
    }
    if (result.failed.length > 0) {
      throw new PgkeepError(
        'DATABASES_PARTIAL',
        `${result.failed.length} of ${databases.length} database(s) were not backed up: ${result.failed.map((f) => `${f.database} (${f.message})`).join('; ')}`,
        { details: { result } },
      );
    }
    return result;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
