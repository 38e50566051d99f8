import { createWriteStream } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as path from 'node:path';
import type { ResolvedSource } from '../config/settings.js';
import { sourceNameForDatabase } from '../config/settings.js';
import { isPgkeepError, PgkeepError, throwIfAborted } from '../errors.js';
import { readBackupToc } from '../repository/read-backup-toc.js';
import { tocStagingSink, type TocEntry } from '../pipeline/custom-toc.js';
import { childStdinSink, loadStream, teeSink } from '../pipeline/load-stream.js';
import { defaultZstd, type ZstdCodec } from '../pipeline/zstd.js';
import { describeConnection, libpqEnv, serverLabel, withDatabase, type ConnectionInfo } from '../postgres/connection-info.js';
import { createDatabase, dropDatabase, fitIdentifier, renameDatabase } from '../postgres/database-admin.js';
import { quoteIdent, withClient, type PgClient } from '../postgres/pg-client.js';
import { assertArchiveReadable, serverMajor, toolInfo } from '../postgres/pg-tools.js';
import { settleAll, startProcess, type RunningProcess } from '../postgres/run-process.js';
import { databaseExists, readServerInfo } from '../postgres/server-info.js';
import { describeEntry, planSelection, schemasToCreate, tocListFile, type SelectionPlan } from '../postgres/restore-plan.js';
import { compareTables } from '../verify/restore-checks.js';
import { checkRestoredSchema, describeSchemaDifferences, SchemaCapture, selectionArgs, type SchemaCheck } from '../verify/schema-compare.js';
import { applyDatabaseState, describeLocale, formatAcl, missingRoles, rolesNamed, type DatabaseState, type StateParts } from '../postgres/database-state.js';
import { timestampPart } from '../repository/backup-id.js';
import { databaseStateOf, requireLogical, type LogicalManifest as Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { runBackup } from '../backup/logical-backup.js';
import { acquireSourceLock, type SourceLock } from '../repository/source-lock.js';
import { applyGlobals } from './restore-globals.js';
import type { GlobalsReport } from '../postgres/globals-sql.js';
import { repositoriesWithBackup } from '../repository/open-repository.js';
import { compareMigrations, type MigrationComparison } from '../verify/migrations.js';
import { identitiesFor, manifestKeysOf } from '../repository/repository-keys.js';
import type { AgeIdentity } from '../pipeline/age.js';
import type { CommandContext } from './command-context.js';
import { makeTempFolder } from '../local/temp-folders.js';
import { faultPoint } from '../fault-points.js';
import { markDatabase, newMarker, unmarkDatabase } from '../postgres/restore-leftovers.js';
import { cleanLeftovers } from '../local/clean-leftovers.js';
import { z } from 'zod';
import { resolveSource } from '../config/settings.js';
import { listOf, requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { collect, positiveInt } from '../registry/option-values.js';
import { formatBytes, formatCount, formatDuration, formatTable } from '../cli/format.js';
import { openRepository } from '../repository/open-repository.js';
import { planRestoreFile, runRestoreFile, type FileRestorePlan, type FileRestoreResult } from './restore-file.js';

export interface RestoreRequest {
  /** Backup id or "latest". */
  backup: string;
  /** Target database; default a new <db>_restore_<timestamp>. */
  to?: string | undefined;
  overwrite?: boolean | undefined;
  /** Confirms an overwrite without asking (for scripts). */
  force?: boolean | undefined;
  jobs?: number | undefined;
  noOwner?: boolean | undefined;
  /** pg_restore --no-privileges: for a server without the source's roles (restore tests elsewhere). */
  noAcl?: boolean | undefined;
  /** Only these tables (pg_dump patterns, repeatable), with what belongs to them. */
  tables?: readonly string[] | undefined;
  /** Only these schemas (patterns). */
  schemas?: readonly string[] | undefined;
  schemaOnly?: boolean | undefined;
  dataOnly?: boolean | undefined;
  /**
   * Into the existing --to database: drop and recreate only the restored
   * objects (with --data-only: empty the selected tables, then load their
   * rows), in one transaction. Asks to confirm; a safety backup is taken first.
   */
  clean?: boolean | undefined;
  /** Run the restore as this role (pg_restore --role, SET ROLE for plain dumps). */
  role?: string | undefined;
  /** REINDEX what was restored, after it was loaded. */
  reindex?: boolean | undefined;
  /** Create the backup's roles that do not exist on the server first (its globals object). */
  globals?: boolean | undefined;
  /**
   * A throwaway copy (extract's scratch database): the database-level state
   * (owner, privileges, settings) is not applied and the schema not compared.
   */
  scratch?: boolean | undefined;
}

/** What a restore would do; printed by --dry-run, which changes nothing. */
export interface RestorePlan {
  backup: { id: string; source: string; format: string };
  database: string;
  server: string;
  /** new: a database is created; overwrite: the existing one is replaced whole; clean: the selected objects are replaced inside it. */
  mode: 'new' | 'overwrite' | 'clean';
  exists: boolean;
  safetyBackup: boolean;
  /** What is dropped before anything is created. */
  drops: string[];
  /** The TOC entries restored (every entry of a plain dump: it has none). */
  entries: { id: number; entry: string }[];
  /** Tables whose rows are restored, with the counts the backup recorded. */
  tables: { schema: string; name: string; rows: number | null }[];
  /** Dump bytes the restore loads (exact for a whole restore, estimated from row counts for a selection). */
  estimatedBytes: number;
  options: string[];
  /** With --globals: the roles that would be created, and those that exist already. */
  globals?: GlobalsReport | undefined;
  /** The database-level state the new database is given (owner, privileges, comment, settings, locale); empty when none is applied. */
  databaseState: string[];
}

export interface TableCheck {
  schema: string;
  name: string;
  expected: number;
  actual: number;
}

export interface RestoreResult {
  backup: { id: string; source: string };
  database: string;
  /** Connection string of the restored database, without the password. */
  connection: string;
  replaced: boolean;
  /** The selected objects were replaced inside an existing database (--clean). */
  cleaned: boolean;
  /** Id of the backup taken of the replaced database, when one was replaced. */
  safetyBackup: string | undefined;
  tables: TableCheck[];
  /** With --globals: the roles created first, and those that existed. */
  globals?: GlobalsReport | undefined;
  /** The restored schema (definitions, owners, privileges) compared with the backup's; undefined when not compared (--clean, a selection). */
  schema?: { compared: boolean; objects: number; ms: number; note?: string | undefined } | undefined;
  /** Whether the database-level state was given and checked: reproduced, or why not. */
  databaseState?: 'reproduced' | 'not recorded in this backup' | undefined;
  /**
   * The application's migration table (schema_migrations, flyway_schema_history, …)
   * in the restored database against what the backup recorded, so a user knows
   * the schema version before starting the app; undefined when the backup recorded none.
   */
  migrations?: MigrationComparison | undefined;
  durationMs: number;
}

/**
 * Restores a backup into a database on the source's server:
 *
 *  1. find the backup, choose the target name, check pg_restore can read it;
 *     for --table/--schema, read the backup's table of contents and choose
 *     the entries (prepareRestore; --dry-run stops here)
 *  2. if the target exists: refuse, unless --overwrite or --clean and
 *     confirmed; then take the lock of the source whose database is replaced
 *     (one writer per source, held to the end) and a safety backup of it
 *     (label pre-restore).
 *     With --globals, create the backup's missing roles
 *  3. create a new empty database under a temporary name, marked as
 *     pgkeep's (what interrupted runs left was removed first: cleanLeftovers)
 *  4. stream the backup into it, checking every checksum on the way
 *  5. ANALYZE, and compare the row count of every restored table with the manifest
 *  6. rename it to the requested name; for an overwrite, swap: the old
 *     database is renamed away, the new one takes its name, the old one is
 *     dropped; then remove the marker
 *
 * Any failure before the swap drops the database this restore created and
 * leaves an existing database untouched. --clean instead loads into the
 * existing database in one transaction (steps 3-5 in place).
 */
export async function runRestore(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: RestoreRequest): Promise<RestoreResult> {
  const started = Date.now();
  const { signal } = ctx;

  // 0. what interrupted runs left (before the target's existence is read: an
  // overwrite killed between its renames is put back under the target's name)
  await cleanLeftovers(ctx, withDatabase(source.connection, 'postgres'), source.tempDir);

  // 1. the backup, the target, the tools, what to restore
  const { manifest, identities, target, admin, exists, plan, selection, state, parts } = await prepareRestore(ctx, repository, source, request);

  // 2. never replace a database or objects in it without consent, and never without a copy
  let safetyBackup: string | undefined;
  let lock: SourceLock | undefined;
  if (exists) {
    const what = plan.mode === 'clean' ? `replaces ${plan.entries.length} object(s) of backup ${manifest.id} inside database "${target}"` : `replaces database "${target}"`;
    if (!request.force && !(await ctx.confirm(`This ${what} on ${serverLabel(source.connection)} with backup ${manifest.id}. Type the database name to confirm:`, target))) {
      throw new PgkeepError('CONFIRMATION_REQUIRED', `not ${plan.mode === 'clean' ? 'changing' : 'replacing'} database "${target}": confirm by typing its name, or pass --force when running without a terminal`);
    }
    // One writer per source: no backup or prune of the database being replaced
    // while it is replaced; the safety backup runs under this same lock.
    const replaced = safetySource(source, target);
    lock = await acquireSourceLock(repository.storage, replaced.name, `restore --${plan.mode === 'clean' ? 'clean' : 'overwrite'}`);
  }
  try {
    return await restoreUnderLock();
  } finally {
    await lock?.release().catch(() => undefined);
  }

  async function restoreUnderLock(): Promise<RestoreResult> {
    if (exists) {
      ctx.info(`taking a safety backup of "${target}" before ${plan.mode === 'clean' ? 'changing' : 'replacing'} it`);
      const safety = await runBackup(ctx, repository, safetySource(source, target), { name: 'pre-restore', labels: ['pre-restore'], lockHeld: true });
      safetyBackup = `${safety.source}/${safety.id}`;
      ctx.info(`safety backup ${safety.id} (source ${safety.source}) written`);
    }

    // Roles first: the restored objects may be owned by them.
    let globals: GlobalsReport | undefined;
    if (request.globals) {
      globals = await applyGlobals(ctx, repository, manifest, identities, source, true);
      ctx.info(`roles: created ${globals.created.length}${globals.created.length > 0 ? ` (${globals.created.join(', ')})` : ''}, ${globals.existing.length} existed already and were left as they are`);
      if (state) await withClient(admin, (client) => assertRolesExist(client, manifest, state, parts, source), signal);
    }

    if (plan.mode === 'clean') {
      // 3-5 in place: one transaction replaces the selected objects, or changes nothing.
      const into = withDatabase(source.connection, target);
      ctx.info(`restoring ${plan.entries.length} object(s) of ${manifest.id} into "${target}" (--clean)`);
      await createSelectedSchemas(manifest, into, schemasToCreate(selection));
      try {
        await loadBackup(ctx, repository, manifest, into, request, source, identities, selection);
      } catch (error) {
        // Damage and interruption keep their codes (a restore from several repositories retries on damage).
        const code = isPgkeepError(error, 'CHECKSUM_MISMATCH') || isPgkeepError(error, 'ABORTED') ? error.code : 'RESTORE_FAILED';
        throw new PgkeepError(code, `nothing was changed in "${target}" (the restore ran in one transaction): ${(error as Error).message}`, { cause: error });
      }
      const tables = await checkRestored(into, plan, request, signal, false);
      return { backup: { id: manifest.id, source: manifest.source }, database: target, connection: describeConnection(source.connection, target), replaced: false, cleaned: true, safetyBackup, tables, globals, durationMs: Date.now() - started };
    }

    // 3. a new, empty database, always under a temporary name and marked as
    // pgkeep's until it is complete and in place: the requested name never
    // shows a half-loaded database, and whatever a kill leaves is found and
    // removed by the next run (cleanRestoreLeftovers)
    const { work, old, localeKept } = await createWorkDatabase(ctx, admin, target, exists, manifest.id, state ?? manifest.database);

    let placed = false;
    // A whole restore is proven whole: the backup's schema is kept while it streams, for the comparison.
    const captureDir = !selection && !request.scratch ? await makeTempFolder(source.tempDir, 'schema') : undefined;
    try {
      // 4. load, checking checksums while streaming
      ctx.info(`restoring ${manifest.id} into "${work}" (becomes "${target}" once checked)`);
      const into = withDatabase(source.connection, work);
      const capture = captureDir ? new SchemaCapture(captureDir) : undefined;
      await createSelectedSchemas(manifest, into, schemasToCreate(selection));
      await loadBackup(ctx, repository, manifest, into, request, source, identities, selection, capture);
      faultPoint('after-load');

      // 5. prove it: ANALYZE, then exact row counts against the manifest; the whole schema
      //    (definitions, owners, privileges) against the backup's; the database-level state; the app's migration version
      const tables = await checkRestored(into, plan, request, signal, true);
      const schema = capture ? await proveSchema(ctx, capture, into, manifest, request, source) : undefined;
      let databaseState: RestoreResult['databaseState'];
      let comment: string | null = null;
      if (state && !request.scratch) {
        // The backup's own comment replaces pgkeep's marker for the comparison, and again once the database is in place.
        comment = state.comment;
        const differences = await withClient(
          admin,
          async (client) => {
            await unmarkDatabase(client, work, null);
            const found = await applyDatabaseState(client, work, state, parts, { locale: localeKept });
            // best effort: the state may have given the database to a role the admin connection cannot act for
            await markDatabase(client, work, newMarker(work, target, manifest.id, old)).catch(() => undefined);
            return found;
          },
          signal,
        );
        if (differences.length > 0) {
          throw new PgkeepError('VERIFY_FAILED', `the restored database's own state differs from the backup: ${differences.slice(0, 3).join('; ')}${differences.length > 3 ? ` (and ${differences.length - 3} more)` : ''}`, { details: { differences } });
        }
        databaseState = 'reproduced';
      } else if (!state && !request.scratch) {
        databaseState = 'not recorded in this backup';
        ctx.warn(`backup ${manifest.id} was made by an older pgkeep that did not record the database's owner, privileges and settings: the restored database has the defaults`);
      }
      const migrations = await checkMigrations(ctx, into, manifest);

      // 6. put it in place: a new database is renamed; an overwrite swaps
      throwIfAborted(signal);
      await putInPlace(ctx, admin, target, work, old, safetyBackup, comment);
      placed = true;
      // A scratch database (extract) is dropped by its caller; marked again, a kill before that leaves nothing the next run cannot remove.
      if (request.scratch) await withClient(admin, (client) => markDatabase(client, target, newMarker(target, null, manifest.id)));
      return {
        backup: { id: manifest.id, source: manifest.source },
        database: target,
        connection: describeConnection(source.connection, target),
        replaced: exists,
        cleaned: false,
        migrations,
        safetyBackup,
        tables,
        globals,
        schema: schema && { compared: schema.compared, objects: schema.objects, ms: schema.ms, note: schema.note },
        databaseState,
        durationMs: Date.now() - started,
      };
    } catch (error) {
      if (!placed) await dropPartialDatabase(ctx, admin, work);
      throw error;
    } finally {
      if (captureDir) await rm(captureDir, { recursive: true, force: true });
    }
  }
}

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

/** Drops a database a failed restore created; a failure to drop is a warning (the restore's own error is what counts). */
export async function dropPartialDatabase(ctx: CommandContext, admin: ConnectionInfo, database: string): Promise<void> {
  await withClient(admin, (client) => dropDatabase(client, database)).catch((dropError) =>
    ctx.warn(`could not drop the partly restored database "${database}": ${(dropError as Error).message}`),
  );
}

/** The plan of a restore, as --dry-run prints it: reads the backup's table of contents and the target's existence, changes nothing. */
export async function planRestore(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: RestoreRequest): Promise<RestorePlan> {
  const { plan, manifest, identities } = await prepareRestore(ctx, repository, source, request, true);
  if (request.globals) plan.globals = await applyGlobals(ctx, repository, manifest, identities, source, false);
  return plan;
}

interface PreparedRestore {
  manifest: Manifest;
  identities: AgeIdentity[];
  target: string;
  admin: ConnectionInfo;
  exists: boolean;
  plan: RestorePlan;
  /** Set for a selective restore of a custom or directory backup: the pg_restore -L entries. */
  selection: SelectionPlan | undefined;
  /** The database-level state to give the new database; undefined for --clean, extract's scratch copy, and older backups. */
  state: DatabaseState | undefined;
  parts: StateParts;
}

/** Step 1 of a restore, shared with --dry-run: everything is checked and planned, nothing is changed. */
async function prepareRestore(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: RestoreRequest, dryRun = false): Promise<PreparedRestore> {
  const { signal } = ctx;
  // "latest" is the newest logical backup; a physical one is recovered with pgkeep pitr.
  const manifest = requireLogical(await repository.resolveBackup(request.backup, source.name, 'logical', ctx.warn), 'restore');
  const format = manifest.options.format;
  const selective = (request.tables?.length ?? 0) > 0 || (request.schemas?.length ?? 0) > 0;
  checkRestoreOptions(request, manifest, selective);
  // Keys first: a missing or wrong identity must fail before any database is touched.
  const identities = await identitiesFor(repository, manifest, ctx.keys);
  // An encrypted repository's manifest must not have been changed by someone without its key.
  repository.authenticateManifest(manifest, manifestKeysOf(repository, identities));
  const target = request.to ?? fitIdentifier(`${manifest.database.name}_restore_`, timestampPart(new Date()).toLowerCase());
  if (target === '' || Buffer.byteLength(target) > 63) {
    throw new PgkeepError('INVALID_NAME', `database name "${target}" is invalid: use 1 to 63 bytes`);
  }
  // Administrative statements run from another database than the one being replaced.
  const admin = withDatabase(source.connection, target === 'postgres' ? 'template1' : 'postgres');
  const { exists, server } = await withClient(admin, async (client) => ({ exists: await databaseExists(client, target), server: await readServerInfo(client) }), signal);
  const loader = format === 'plain' ? 'psql' : 'pg_restore';
  const tool = await toolInfo(loader, source.pgBin);
  // The version policy (README, "Versions"): pg_restore must read the archive, so it is at least as new as the
  // pg_dump that wrote it; the server it loads into may be newer than the tool (pg_restore only sends the SQL
  // pg_dump wrote), as verify --restore-test has always done. Into an older server than the backup's, newer
  // syntax may fail: said up front, the restore still tries.
  assertArchiveReadable(tool, loader, manifest.tools.pgDump);
  const sourceMajor = serverMajor(manifest.server.versionNum);
  if (serverMajor(server.versionNum) < sourceMajor) {
    ctx.warn(`the target server (PostgreSQL ${server.version}) is older than the backup's (${manifest.server.version}): objects or syntax new in PostgreSQL ${Math.floor(sourceMajor)} may fail to restore`);
  }

  if (exists && !request.overwrite && !request.clean) {
    throw new PgkeepError('DB_EXISTS', `database "${target}" already exists on ${serverLabel(source.connection)}: choose another --to, add --overwrite to replace it, or --clean to replace only the restored objects inside it (a safety backup is taken first)`);
  }
  if (request.clean && !exists) {
    throw new PgkeepError('DB_MISSING', `--clean replaces objects inside an existing database, and "${target}" does not exist on ${serverLabel(source.connection)}: check --to, or leave out --clean to restore into a new database`);
  }
  if (request.dataOnly && !(exists && request.clean)) {
    throw new PgkeepError('USAGE', `--data-only loads rows into tables that exist: name an existing database with --to and add --clean (the selected tables are emptied first, in the same transaction)`);
  }
  const mode: RestorePlan['mode'] = !exists ? 'new' : request.clean ? 'clean' : 'overwrite';

  // The database-level state: a new database (also under --overwrite) gets the backup's; --clean keeps the existing one's.
  const state = mode !== 'clean' && !request.scratch ? await recordedState(repository, manifest, identities, signal) : undefined;
  const parts = stateParts(request, manifest);
  if (state && !request.globals) await withClient(admin, (client) => assertRolesExist(client, manifest, state, parts, source), signal);

  // The table of contents: needed to select, and to show a plan.
  const toc = format !== 'plain' && (selective || dryRun) ? await readBackupToc(repository, manifest, { codec: defaultZstd(), identities, signal }) : undefined;
  const selection = toc && selective ? planSelection(toc, { tables: request.tables, schemas: request.schemas, newDatabase: mode !== 'clean' }) : undefined;
  const entries = selection?.entries ?? toc ?? [];
  const restored = (e: TocEntry) => !(request.schemaOnly && DATA_DESCS.has(e.desc)) && !(request.dataOnly && !DATA_DESCS.has(e.desc));
  const counted = selection ? manifest.tables.filter((t) => selection.dataTables.some((d) => d.schema === t.schema && d.name === t.name)) : manifest.tables;
  const tables = request.schemaOnly ? [] : counted;
  const totalRows = manifest.totals.rows;
  const estimatedBytes = !selection
    ? manifest.totals.rawBytes
    : estimateBytes(manifest, selection, totalRows > 0 ? Math.round((manifest.totals.rawBytes * tables.reduce((n, t) => n + (t.rows ?? 0), 0)) / totalRows) : 0);
  if (mode === 'clean' && request.dataOnly && selection) await checkTruncatable(withDatabase(source.connection, target), selection.dataTables, signal);
  const droppable = entries.filter((e) => restored(e) && !DATA_DESCS.has(e.desc) && e.desc !== 'COMMENT' && e.desc !== 'ACL' && !SETTINGS_DESCS.has(e.desc));
  const plan: RestorePlan = {
    backup: { id: manifest.id, source: manifest.source, format },
    database: target,
    server: serverLabel(source.connection),
    mode,
    exists,
    safetyBackup: exists,
    drops:
      mode === 'overwrite'
        ? [`DATABASE ${target} (after the restored copy is complete)`]
        : mode === 'clean'
          ? request.dataOnly
            ? tables.map((t) => `ROWS OF ${t.schema}.${t.name} (TRUNCATE)`)
            : selection || toc
              ? droppable.map(describeEntry)
              : ['every object of the backup that exists in the database']
          : [],
    entries: entries.filter(restored).filter((e) => !SETTINGS_DESCS.has(e.desc)).map((e) => ({ id: e.dumpId, entry: describeEntry(e) })),
    tables,
    estimatedBytes,
    options: [
      request.schemaOnly && 'schema only',
      request.dataOnly && 'data only',
      request.noOwner && 'no owner',
      request.role && `as role ${request.role}`,
      request.reindex && 'reindex',
      request.globals && 'roles first (--globals)',
      (request.jobs ?? 1) > 1 && `${request.jobs} jobs`,
      request.noAcl && 'no privileges',
    ].filter((o): o is string => typeof o === 'string'),
    databaseState: state ? describeState(state, parts) : [],
  };
  return { manifest, identities, target, admin, exists, plan, selection, state, parts };
}

/**
 * --clean --data-only empties the selected tables with TRUNCATE, which
 * PostgreSQL refuses for a table another table references by a foreign key
 * (unless that one is emptied too). Checked before anything happens (no
 * safety backup is taken for a restore that cannot work), naming the
 * referencing tables and the ways out.
 */
async function checkTruncatable(target: ConnectionInfo, tables: readonly { schema: string; name: string }[], signal: AbortSignal): Promise<void> {
  if (tables.length === 0) return;
  const references = await withClient(
    target,
    async (client) =>
      (
        await client.query<{ referenced: string; referencing: string; constraint: string }>(
          `WITH selected AS (
             SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
              JOIN unnest($1::text[], $2::text[]) AS t(schema, name) ON t.schema = n.nspname AND t.name = c.relname)
           SELECT DISTINCT ON (con.conrelid, con.confrelid)
                  format('%s.%s', rn.nspname, r.relname) AS referenced, format('%s.%s', fn.nspname, f.relname) AS referencing, con.conname AS constraint
             FROM pg_catalog.pg_constraint con
             JOIN pg_catalog.pg_class r ON r.oid = con.confrelid JOIN pg_catalog.pg_namespace rn ON rn.oid = r.relnamespace
             JOIN pg_catalog.pg_class f ON f.oid = con.conrelid JOIN pg_catalog.pg_namespace fn ON fn.oid = f.relnamespace
            WHERE con.contype = 'f' AND con.confrelid IN (SELECT oid FROM selected) AND con.conrelid NOT IN (SELECT oid FROM selected)
              AND f.relkind = 'r'
            ORDER BY con.conrelid, con.confrelid`,
          [tables.map((t) => t.schema), tables.map((t) => t.name)],
        )
      ).rows,
    signal,
  );
  const first = references[0];
  if (!first) return;
  const others = references.length > 1 ? ` (and ${references.length - 1} more: ${references.slice(1, 4).map((r) => `${r.referencing} → ${r.referenced}`).join(', ')})` : '';
  throw new PgkeepError(
    'RESTORE_FAILED',
    `--clean --data-only cannot empty ${first.referenced}: ${first.referencing} references it (foreign key ${first.constraint}), and PostgreSQL does not TRUNCATE a referenced table alone${others}; add --table ${first.referencing} to reload both, or restore without --data-only. Nothing was changed.`,
  );
}

const DATA_DESCS = new Set(['TABLE DATA', 'SEQUENCE SET', 'MATERIALIZED VIEW DATA', 'BLOBS', 'BLOB', 'LARGE OBJECT']);
const SETTINGS_DESCS = new Set(['ENCODING', 'STDSTRINGS', 'SEARCHPATH', 'DATABASE', 'DATABASE PROPERTIES']);

/** A directory backup knows each table's data size exactly (<dumpId>.dat); a custom one is estimated from its row counts. */
function estimateBytes(manifest: Manifest, selection: SelectionPlan, byRows: number): number {
  if (manifest.options.format !== 'directory') return byRows;
  const ids = new Set(selection.entries.map((e) => `${e.dumpId}.dat`));
  return manifest.objects.filter((o) => o.file === 'toc.dat' || (o.file !== undefined && ids.has(o.file))).reduce((n, o) => n + o.raw.size, 0);
}

function checkRestoreOptions(request: RestoreRequest, manifest: Manifest, selective: boolean): void {
  if (request.schemaOnly && request.dataOnly) throw new PgkeepError('USAGE', '--schema-only and --data-only cannot be used together');
  if (request.clean && request.overwrite) {
    throw new PgkeepError('USAGE', '--clean replaces the restored objects inside the database, --overwrite replaces the whole database: choose one');
  }
  if (request.clean && (request.jobs ?? 1) > 1) throw new PgkeepError('USAGE', '--clean restores in one transaction, which pg_restore cannot split over --jobs: leave out --jobs');
  if (request.clean && !request.to) throw new PgkeepError('USAGE', '--clean changes an existing database: name it with --to');
  if (manifest.options.format === 'plain' && (selective || request.schemaOnly || request.dataOnly || request.clean)) {
    throw new PgkeepError(
      'USAGE',
      `backup ${manifest.id} is a plain SQL dump, which restores only whole into a new database: --table, --schema, --schema-only, --data-only and --clean need a custom or directory backup (use pgkeep extract to take rows out of this one)`,
    );
  }
  if (request.globals && !manifest.objects.some((o) => o.role === 'globals')) {
    throw new PgkeepError('USAGE', `backup ${manifest.id} holds no roles (taken with --no-globals, or before pgkeep stored them): restore without --globals`);
  }
  if (request.dataOnly && manifest.options.schemaOnly) throw new PgkeepError('USAGE', `backup ${manifest.id} is schema-only: it has no rows for --data-only`);
  if (request.role !== undefined && !/^[^\0]{1,63}$/.test(request.role)) throw new PgkeepError('INVALID_NAME', `role name "${request.role}" is invalid: use 1 to 63 bytes`);
}

/**
 * The restored migration tables against the backup's record. A difference is
 * a warning, not a failure: the row counts already prove the data; this says
 * which schema version the app will find.
 */
async function checkMigrations(ctx: CommandContext, restored: ConnectionInfo, manifest: Manifest): Promise<MigrationComparison | undefined> {
  if (!manifest.migrations || manifest.migrations.length === 0) return undefined;
  const comparison = await withClient(restored, (client) => compareMigrations(client, manifest.migrations), ctx.signal);
  for (const problem of comparison.problems) ctx.warn(problem);
  return comparison;
}

/**
 * ANALYZE what was restored, REINDEX it if asked, and compare the exact row
 * count of every restored table with the manifest (as a restore test does).
 * A whole new database is analyzed whole; inside an existing one only the
 * restored tables are.
 */
async function checkRestored(into: ConnectionInfo, plan: RestorePlan, request: RestoreRequest, signal: AbortSignal, wholeDatabase: boolean): Promise<TableCheck[]> {
  const { tables, problems } = await withClient(into, async (client) => {
    const names = plan.tables.map((t) => `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`);
    if (wholeDatabase) await client.query('ANALYZE');
    else for (const name of names) await client.query(`ANALYZE ${name}`);
    if (request.reindex) {
      if (wholeDatabase) await client.query(`REINDEX DATABASE ${quoteIdent(into.database)}`);
      else for (const name of names) await client.query(`REINDEX TABLE ${name}`);
    }
    return compareTables(client, plan.tables, { deep: false, signal });
  });
  const first = problems[0];
  if (first) throw new PgkeepError(first.code, first.message, { details: { tables: tables.filter((t) => t.expected !== t.actual) } });
  return tables.map(({ schema, name, expected, actual }) => ({ schema, name, expected, actual }));
}

/** The backup's database-level state: from its manifest, or its (encrypted) database-state object. */
export function recordedState(repository: Repository, manifest: Manifest, identities: AgeIdentity[], signal: AbortSignal): Promise<DatabaseState | undefined> {
  return databaseStateOf(manifest, async (object) => {
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        callback();
      },
    });
    await loadStream(repository.storage, repository.objectKey(manifest.source, manifest.id, object.name), object, sink, { codec: defaultZstd(), identities, signal });
    return Buffer.concat(chunks);
  });
}

/** What the restore reproduces of the database-level state: --no-owner and --no-acl (at backup or restore time) leave out owner and privileges. */
function stateParts(request: RestoreRequest, manifest: Manifest): StateParts {
  return { owner: !request.noOwner && !manifest.options.noOwner, acl: !request.noAcl && !manifest.options.noAcl, roleSettings: true };
}

/** The state as --dry-run lists it. */
function describeState(state: DatabaseState, parts: StateParts): string[] {
  return [
    `locale ${describeLocale(state)}, encoding ${state.encoding}`,
    parts.owner ? `owner ${state.owner}` : 'owner: the restoring role (--no-owner)',
    parts.acl ? (state.acl === null ? 'privileges: the defaults' : `privileges ${formatAcl(state.acl)}`) : 'privileges: the defaults (--no-acl)',
    ...(state.comment !== null ? [`comment ${JSON.stringify(state.comment)}`] : []),
    ...(state.connectionLimit !== -1 ? [`connection limit ${state.connectionLimit}`] : []),
    ...state.settings.map((s) => `setting ${s}`),
    ...state.roleSettings.flatMap((r) => r.settings.map((s) => `setting ${s} for role ${r.role}`)),
  ];
}

/** Refuses, before anything is created, a state naming roles the server lacks: one line, and the fix. */
async function assertRolesExist(client: PgClient, manifest: Manifest, state: DatabaseState, parts: StateParts, source: ResolvedSource): Promise<void> {
  const missing = await missingRoles(client, rolesNamed(state, parts));
  if (missing.length === 0) return;
  const globals = manifest.objects.some((o) => o.role === 'globals');
  throw new PgkeepError(
    'ROLE_MISSING',
    `role${missing.length > 1 ? 's' : ''} ${missing.map((r) => `"${r}"`).join(', ')} of backup ${manifest.id} (the database's owner, privileges or settings) ${missing.length > 1 ? 'do' : 'does'} not exist on ${serverLabel(source.connection)}: ${globals ? 'add --globals to create them from the backup' : 'create them first (this backup holds no roles for --globals)'}, or leave them out with --no-owner / --no-acl`,
    { details: { missing } },
  );
}

/** The restored schema against the backup's; a difference fails the restore (VERIFY_FAILED) naming the first objects. */
async function proveSchema(ctx: CommandContext, capture: SchemaCapture, into: ConnectionInfo, manifest: Manifest, request: RestoreRequest, source: ResolvedSource): Promise<SchemaCheck> {
  const serverVersionNum = await withClient(into, async (client) => (await readServerInfo(client)).versionNum, ctx.signal);
  const check = await checkRestoredSchema(
    capture,
    into,
    {
      noOwner: Boolean(request.noOwner) || manifest.options.noOwner,
      noAcl: Boolean(request.noAcl) || manifest.options.noAcl,
      selection: selectionArgs(manifest.options),
      backupPgDump: manifest.tools.pgDump,
      backupServerVersionNum: manifest.server.versionNum,
      serverVersionNum,
      pgBin: source.pgBin,
    },
    ctx.signal,
  );
  if (check.note) ctx.warn(check.note);
  if (check.differences.length > 0) {
    throw new PgkeepError('VERIFY_FAILED', `the restored schema differs from the backup's: ${describeSchemaDifferences(check.differences)}`, { details: { differences: check.differences } });
  }
  return check;
}

/**
 * Restore for a source with several repositories (no --repo): from the first
 * repository, in config order, that holds the backup ("latest": the newest in
 * any of them). If that copy fails its checksum check, the failed restore has
 * already dropped the database it created, and the next repository holding
 * the backup is tried; any other failure is final.
 */
export async function runRestoreFromRepositories(ctx: CommandContext, source: ResolvedSource, request: RestoreRequest): Promise<RestoreResult> {
  const candidates = await repositoriesWithBackup(ctx.settings, request.backup, source.name, 'logical', ctx.warn);
  for (let i = 0; ; i++) {
    const { repository, manifest } = candidates[i]!;
    try {
      return await runRestore(ctx, repository, source, { ...request, backup: manifest.id });
    } catch (error) {
      const next = candidates[i + 1];
      if (!next || !isPgkeepError(error, 'CHECKSUM_MISMATCH')) throw error;
      ctx.warn(`backup ${manifest.id} in ${repository.location} is damaged (${error.message}): restoring from ${next.repository.location} instead`);
    }
  }
}

/**
 * pg_dump --table dumps the tables but not the schemas they live in, so such a
 * dump cannot be restored into a new database as it is. Create those schemas first.
 */
export async function createSelectedSchemas(manifest: Manifest, target: ConnectionInfo, selected?: readonly string[]): Promise<void> {
  if (manifest.options.tables.length === 0 && selected === undefined) return;
  const schemas = selected ?? [...new Set(manifest.tables.map((t) => t.schema))];
  await withClient(target, async (client) => {
    for (const schema of schemas) await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
  });
}

/** The safety backup goes to the source whose database it is, else to a source named after the database. */
export function safetySource(source: ResolvedSource, database: string): ResolvedSource {
  const name = database === source.connection.database ? source.name : sourceNameForDatabase(database);
  return { ...source, name, connection: withDatabase(source.connection, database), backup: {} };
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

/**
 * Waits for a backup streamed into a child (pg_restore, psql) and for the
 * child. The checks of the stream decide first: damaged content that still
 * decompresses is only detected by the SHA-256 checks at the end of the
 * object, often after the child failed on it; then the damage is the cause
 * to report (CHECKSUM_MISMATCH, which also lets a restore fall back to
 * another repository), not the child's error. The stream always runs to its
 * end (the stdin sink drains what an exited child no longer reads).
 */
export async function feedChild(load: Promise<void>, child: Pick<RunningProcess, 'done' | 'stop'>): Promise<void> {
  // A load that fails (a missing object, storage refusing, an abort) stops
  // the child at once (SIGTERM, then SIGKILL): it must not wait on input that
  // will never be complete.
  const loadError = load.then(
    () => undefined,
    (error: unknown) => {
      child.stop();
      return error;
    },
  );
  try {
    await settleAll([load, child.done]);
  } catch (error) {
    const failed = await loadError;
    // A child that fails first drains its input and lets the load finish, so a failed load is the cause.
    throw failed ?? error;
  }
}

export const RESTORE_ERROR_LINE = /error|ERROR|FATAL|detail|DETAIL|hint|HINT/;

/**
 * Streams a backup into the empty database `target` (pg_restore, or psql for
 * plain dumps), checking every checksum on the way; `source` gives the tool
 * folder and temp space. Shared by restore and verify --restore-test.
 */
export async function loadBackup(
  ctx: CommandContext,
  repository: Repository,
  manifest: Manifest,
  target: ConnectionInfo,
  request: RestoreRequest,
  source: Pick<ResolvedSource, 'pgBin' | 'tempDir'>,
  identities: AgeIdentity[],
  selection?: SelectionPlan,
  capture?: SchemaCapture,
): Promise<void> {
  const codec = defaultZstd();
  const signal = ctx.signal;
  const env = libpqEnv(target);
  const jobs = request.jobs ?? 1;
  const key = (name: string) => repository.objectKey(manifest.source, manifest.id, name);
  const progress = (done: number) => ctx.progress({ phase: 'restore', bytes: done, totalBytes: manifest.totals.rawBytes });
  const common = { env, signal, isErrorLine: (line: string) => RESTORE_ERROR_LINE.test(line) };

  if (manifest.options.format === 'plain') {
    // No --single-transaction: plain dumps carry their own BEGIN/COMMIT around
    // large objects, which would end it early. A failure drops the database instead.
    const psql = await toolInfo('psql', source.pgBin);
    const role = request.role ? ['-c', `SET ROLE ${quoteIdent(request.role)}`] : [];
    const run = startProcess(psql.path, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-password', '-d', target.database, ...role, '-f', '-'], {
      ...common,
      stdin: 'pipe',
      stdout: 'ignore',
    });
    const sink = capture ? teeSink(childStdinSink(run.stdin!), capture.plainSink()) : childStdinSink(run.stdin!);
    await feedChild(loadStream(repository.storage, key(manifest.objects[0]!.name), manifest.objects[0]!, sink, { codec, signal, identities, onRawBytes: progress }), run);
    return;
  }

  const staging = await makeTempFolder(source.tempDir, 'restore');
  try {
    const pgRestore = await restoreRunner(request, target, source, staging, selection, common);
    await loadArchive(ctx, repository, manifest, identities, pgRestore, staging, jobs, key, progress, codec, selection, capture);
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}

/** Starts pg_restore with the given arguments (and the restore's own), reading stdin or a file. */
type RestoreRunner = (args: string[], stdin: boolean) => { stdin: Writable | null; done: Promise<void>; stop(): void };

/**
 * How pg_restore runs for this request: into the target, with the
 * selection as a -L list. With --clean, in one transaction, dropping each
 * restored object first; with --clean --data-only (which pg_restore does not
 * combine), its SQL goes through psql, which empties the selected tables
 * first in the same transaction.
 */
async function restoreRunner(
  request: RestoreRequest,
  target: ConnectionInfo,
  source: Pick<ResolvedSource, 'pgBin'>,
  staging: string,
  selection: SelectionPlan | undefined,
  common: { env: NodeJS.ProcessEnv; signal: AbortSignal; isErrorLine: (line: string) => boolean },
): Promise<RestoreRunner> {
  const pgRestore = await toolInfo('pg_restore', source.pgBin);
  const args = ['--exit-on-error', '--no-password'];
  if (request.noOwner) args.push('--no-owner');
  if (request.noAcl) args.push('--no-privileges');
  if (request.role) args.push(`--role=${request.role}`);
  if (request.schemaOnly) args.push('--schema-only');
  if (request.dataOnly) args.push('--data-only');
  if (selection) {
    const list = path.join(staging, 'selection.list');
    await writeFile(list, tocListFile(selection.entries), { mode: 0o600 });
    args.push(`--use-list=${list}`);
  }
  if (!(request.clean && request.dataOnly)) {
    if (request.clean) args.push('--clean', '--if-exists', '--single-transaction');
    return (extra, stdin) => startProcess(pgRestore.path, ['--dbname', target.database, ...args, ...extra], { ...common, stdin: stdin ? 'pipe' : 'ignore', stdout: 'ignore' });
  }
  const psql = await toolInfo('psql', source.pgBin);
  const tables = selection?.dataTables ?? [];
  const truncate = tables.length > 0 ? [`-c`, `TRUNCATE ONLY ${tables.map((t) => `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`).join(', ')}`] : [];
  const role = request.role ? ['-c', `SET ROLE ${quoteIdent(request.role)}`] : [];
  return (extra, stdin) => {
    const script = startProcess(pgRestore.path, [...args, '--file=-', ...extra], { ...common, stdin: stdin ? 'pipe' : 'ignore', stdout: 'pipe' });
    const load = startProcess(psql.path, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-password', '--single-transaction', '-d', target.database, ...role, ...truncate, '-f', '-'], {
      ...common,
      stdin: 'pipe',
      stdout: 'ignore',
    });
    const piped = pipeline(script.stdout!, load.stdin!);
    // When psql fails, pg_restore and the pipe between them fail after it (a closed pipe): psql's error is the cause to report.
    const loadError = load.done.then(() => undefined, (error: unknown) => error);
    const done = settleAll([script.done, load.done, piped]).catch(async (error: unknown) => {
      throw (await loadError) ?? error;
    });
    const stop = () => {
      script.stop();
      load.stop();
    };
    return { stdin: script.stdin, done, stop };
  };
}

async function loadArchive(
  ctx: CommandContext,
  repository: Repository,
  manifest: Manifest,
  identities: AgeIdentity[],
  pgRestore: RestoreRunner,
  staging: string,
  jobs: number,
  key: (name: string) => string,
  progress: (done: number) => void,
  codec: ZstdCodec,
  selection: SelectionPlan | undefined,
  capture: SchemaCapture | undefined,
): Promise<void> {
  const signal = ctx.signal;

  if (manifest.options.format === 'custom' && jobs <= 1) {
    // Stream straight into pg_restore: no temp space needed.
    const object = manifest.objects[0]!;
    const run = pgRestore([], true);
    // With a capture, the archive's header and TOC are kept on the way (a few KB) for the schema comparison.
    const sink = capture ? teeSink(childStdinSink(run.stdin!), capture.customSink()) : childStdinSink(run.stdin!);
    await feedChild(loadStream(repository.storage, key(object.name), object, sink, { codec, signal, identities, onRawBytes: progress }), run);
    return;
  }

  if (manifest.options.format === 'custom') {
    // Parallel pg_restore needs a seekable file, but staging the whole dump
    // before starting would put its decompression in series with the load.
    // Instead the dump streams once into a pg_restore of the pre-data and
    // data sections (schema and table contents, in dump order), and through
    // a tee into a temp file. Then the post-data section (indexes,
    // constraints, triggers), where the parallelism pays, runs from that
    // file with --jobs. Post-data items have no data blocks, so the file
    // only needs the archive's header and table of contents: that is all
    // tocStagingSink keeps (it stages the whole dump if it cannot find the
    // TOC's end). Post-data runs only once every checksum matched and the
    // first pg_restore succeeded.
    const file = path.join(staging, 'dump');
    const object = manifest.objects[0]!;
    const first = pgRestore(['--section=pre-data', '--section=data'], true);
    const sink = teeSink(childStdinSink(first.stdin!), tocStagingSink(file));
    await feedChild(loadStream(repository.storage, key(object.name), object, sink, { codec, signal, identities, onRawBytes: progress }), first);
    throwIfAborted(signal);
    ctx.progress({ phase: 'pg_restore', bytes: manifest.totals.rawBytes, totalBytes: manifest.totals.rawBytes });
    await pgRestore(['--section=post-data', `--jobs=${jobs}`, file], false).done;
    await capture?.keepCustom(file);
    return;
  }

  // A directory dump: pg_restore reads a directory, so stage every
  // decompressed, checksum-verified file in a private temp folder first
  // (for a selection, only the data files of the selected entries).
  const input = path.join(staging, 'dump');
  const wanted = selection ? new Set(selection.entries.map((e) => `${e.dumpId}.dat`)) : undefined;
  const objects = manifest.objects.filter((o) => o.role === 'dump-file' && (!wanted || !/^\d+\.dat$/.test(o.file!) || wanted.has(o.file!)));
  const total = objects.reduce((n, o) => n + o.raw.size, 0);
  let done = 0;
  await mkdir(input, { mode: 0o700 });
  for (const object of objects) {
    throwIfAborted(signal);
    const base = done;
    await loadStream(repository.storage, key(object.name), object, createWriteStream(path.join(input, object.file!), { mode: 0o600 }), {
      codec,
      identities,
      signal,
      onRawBytes: (n) => ctx.progress({ phase: 'restore', bytes: base + n, totalBytes: total }),
    });
    done += object.raw.size;
  }
  ctx.progress({ phase: 'pg_restore', bytes: total, totalBytes: total });
  // --single-transaction (--clean) and --jobs do not mix; --clean refuses --jobs, so jobs is 1 then.
  await pgRestore(jobs > 1 ? [`--jobs=${jobs}`, input] : [input], false).done;
  await capture?.keepDirectoryToc(path.join(input, 'toc.dat'));
}

const RestoreCommandRequest = z.object({
  /** A backup of the repository (id or latest), or --file: a dump made outside pgkeep. */
  backup: z.string().optional(),
  file: z.string().optional(),
  to: z.string().optional(),
  overwrite: z.boolean(),
  force: z.boolean(),
  jobs: z.number().int().positive().optional(),
  noOwner: z.boolean(),
  noAcl: z.boolean(),
  tables: z.array(z.string()).optional(),
  schemas: z.array(z.string()).optional(),
  schemaOnly: z.boolean(),
  dataOnly: z.boolean(),
  clean: z.boolean(),
  role: z.string().optional(),
  reindex: z.boolean(),
  globals: z.boolean(),
  dryRun: z.boolean(),
});
export type RestoreCommandRequest = z.output<typeof RestoreCommandRequest>;

export type RestoreCommandResult =
  | { kind: 'restored'; result: RestoreResult }
  | { kind: 'plan'; plan: RestorePlan }
  | { kind: 'file'; result: FileRestoreResult }
  | { kind: 'file-plan'; plan: FileRestorePlan };

/** `pgkeep restore ID|latest` and `pgkeep restore --file DUMP`. */
export const restoreCommand: CommandSpec<RestoreCommandRequest, RestoreCommandResult> = {
  name: 'restore',
  description: 'restore a backup into a new database (or --to NAME); or a dump file made outside pgkeep (--file)',
  arguments: [{ name: '[backup]', description: 'backup id, or latest' }],
  options: [
    { flags: '--file <path>', description: 'restore this dump instead: pg_dump custom (.dump), directory, tar or .sql, optionally .gz/.zst (detected from its content)' },
    { flags: '--to <database>', description: 'target database (default: <db>_restore_<timestamp>)' },
    { flags: '--overwrite', description: 'replace the target database if it exists (asks to confirm; a safety backup is taken first)' },
    { flags: '--force', description: 'confirm --overwrite without asking (for scripts)' },
    { flags: '--jobs <n>', description: 'parallel pg_restore workers (stages the dump in a temp file)', parse: positiveInt('--jobs') },
    { flags: '--no-owner', description: 'do not restore object ownership (nor the database owner: the restoring role owns it)' },
    { flags: '--no-acl', description: 'do not restore privileges (GRANT/REVOKE), on objects nor on the database' },
    { flags: '--table <pattern>', description: 'only tables matching, with their indexes, constraints, triggers (repeatable; pg_dump patterns)', parse: collect },
    { flags: '--schema <pattern>', description: 'only objects of schemas matching (repeatable)', parse: collect },
    { flags: '--schema-only', description: 'only the definitions, no rows' },
    { flags: '--data-only', description: 'only rows, into the existing tables of --to (needs --clean: the tables are emptied first)' },
    { flags: '--clean', description: 'into the existing --to database: replace only the restored objects, in one transaction (asks to confirm; a safety backup is taken first)' },
    { flags: '--role <role>', description: 'restore as this role (SET ROLE)' },
    { flags: '--reindex', description: 'REINDEX what was restored' },
    { flags: '--globals', description: "first create the backup's roles that do not exist on the server (existing roles are left as they are)" },
    { flags: '--dry-run', description: 'print the plan (target, what is dropped and created, TOC entries, size) and change nothing' },
  ],
  help: {
    globals: ['config', 'repo', 'source', 'db', 'identity'],
    examples: ['pgkeep restore latest', 'pgkeep restore latest --to app --overwrite', 'pgkeep restore --file backup_2024.sql.gz --db postgresql://app@localhost/app'],
  },
  parse: requestParser(RestoreCommandRequest, ({ args: [ref], options, given }) => {
    if (options.file !== undefined) {
      if (ref !== undefined) throw new PgkeepError('USAGE', `give either a backup id ("${ref}") or --file, not both`);
      const unsupported = ['dataOnly', 'clean', 'globals'].filter((o) => options[o] !== undefined);
      if (unsupported.length > 0) {
        throw new PgkeepError('USAGE', `--file restores the whole dump into a new database (or --overwrite): ${unsupported.map((o) => `--${o.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} work with backups in the repository only`);
      }
    } else if (ref === undefined) {
      throw new PgkeepError('USAGE', "missing required argument 'backup': give a backup id (or latest), or --file PATH (see pgkeep restore --help)");
    }
    return {
      backup: ref,
      file: options.file,
      to: options.to,
      overwrite: Boolean(options.overwrite),
      force: Boolean(options.force),
      jobs: options.jobs,
      noOwner: given.includes('owner'),
      noAcl: given.includes('acl'),
      tables: listOf(options.table),
      schemas: listOf(options.schema),
      schemaOnly: Boolean(options.schemaOnly),
      dataOnly: Boolean(options.dataOnly),
      clean: Boolean(options.clean),
      role: options.role,
      reindex: Boolean(options.reindex),
      globals: Boolean(options.globals),
      dryRun: Boolean(options.dryRun),
    };
  }),
  async run(ctx, { backup, file, dryRun, dataOnly, clean, globals, ...common }) {
    const { settings } = ctx;
    const source = resolveSource(settings);
    if (file !== undefined) {
      const fileRequest = { file, ...common };
      if (dryRun) return { kind: 'file-plan', plan: await planRestoreFile(ctx, source, fileRequest) };
      return { kind: 'file', result: await runRestoreFile(ctx, source, fileRequest) };
    }
    const request: RestoreRequest = { backup: backup!, ...common, dataOnly, clean, globals };
    if (dryRun) {
      const repository = source.repos.length > 1 ? (await repositoriesWithBackup(settings, backup!, source.name))[0]!.repository : await openRepository(settings, { source: source.name });
      return { kind: 'plan', plan: await planRestore(ctx, repository, source, request) };
    }
    // Several repositories: the first that holds the backup, falling back on a checksum failure; --repo picks one.
    const result = source.repos.length > 1 ? await runRestoreFromRepositories(ctx, source, request) : await runRestore(ctx, await openRepository(settings, { source: source.name }), source, request);
    return { kind: 'restored', result };
  },
  print(result, out) {
    if (result.kind === 'file-plan') printFileRestorePlan(result.plan, out);
    else if (result.kind === 'file') printFileRestoreDone(result.result, out);
    else if (result.kind === 'plan') printRestorePlan(result.plan, out);
    else printRestoreDone(result.result, out);
  },
};

// Printing for a terminal (moved from src/cli/print.ts)

function printRestoreDone(result: RestoreResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (result.tables.length > 0) {
    out.line(
      formatTable(
        ['TABLE', 'BACKUP', 'RESTORED', ''],
        result.tables.map((t) => [`${t.schema}.${t.name}`, formatCount(t.expected), formatCount(t.actual), t.expected === t.actual ? 'ok' : 'DIFFERENT']),
        [1, 2],
      ),
    );
  }
  const rows = result.tables.reduce((n, t) => n + t.actual, 0);
  out.line(
    `restored ${result.backup.source}/${result.backup.id} into ${result.cleaned ? 'existing database (selected objects replaced) ' : result.replaced ? 'existing database ' : 'new database '}"${result.database}" in ${formatDuration(result.durationMs)}: ` +
      `row counts match the backup (${result.tables.length} tables, ${formatCount(rows)} rows)`,
  );
  if (result.schema?.compared) out.line(`schema: ${result.schema.objects} objects (definitions, owners, privileges) match the backup's`);
  if (result.databaseState === 'reproduced') out.line("database: owner, privileges, comment, settings and locale match the backup's");
  if (result.safetyBackup) out.line(`the replaced database was saved first as backup ${result.safetyBackup}`);
  if (result.globals) out.line(globalsLine(result.globals, 'created'));
  for (const m of result.migrations?.tables ?? []) {
    const at = (state: { rows: number; latest: string | null }) => `${state.latest ?? 'no known version'} (${state.rows} rows)`;
    out.line(
      `migrations: ${m.schema}.${m.name} ${m.actual ? `at ${at(m.actual)}` : 'missing'}: ` +
        (m.ok ? 'as recorded at backup time' : `DIFFERS from ${at(m.expected)} recorded at backup time`),
    );
  }
  out.line(`connect: ${result.connection}`);
}

function globalsLine(g: NonNullable<RestoreResult['globals']>, verb: string): string {
  return (
    `roles: ${verb} ${g.created.length}${g.created.length > 0 ? ` (${g.created.join(', ')})` : ''}; ` +
    `${g.existing.length} existed and were left as they are${g.skipped.length > 0 ? `; ${g.skipped.length} tablespace/per-database statement(s) skipped` : ''}`
  );
}

/** --dry-run: what the restore would do; nothing was changed. */
function printRestorePlan(plan: RestorePlan, out: CommandOutput): void {
  if (out.json) return out.document({ dryRun: true, ...plan });
  const how = {
    new: 'a new database, created',
    overwrite: 'exists: replaced whole (--overwrite), after a safety backup',
    clean: 'exists: the restored objects are dropped and recreated inside it, in one transaction (--clean), after a safety backup',
  }[plan.mode];
  out.line(`plan: restore ${plan.backup.source}/${plan.backup.id} (${plan.backup.format} format)${plan.options.length > 0 ? `, ${plan.options.join(', ')}` : ''}`);
  out.line(`target: database "${plan.database}" on ${plan.server}: ${how}`);
  out.line(`drop: ${plan.drops.length === 0 ? 'nothing' : ''}`);
  for (const d of plan.drops) out.line(`  ${d}`);
  if (plan.entries.length > 0) {
    out.line(`create (${plan.entries.length} TOC entries):`);
    for (const e of plan.entries) out.line(`  ${String(e.id).padStart(5)}; ${e.entry}`);
  } else {
    out.line('create: everything in the plain SQL dump (psql runs it whole)');
  }
  if (plan.tables.length > 0) {
    out.line(formatTable(['TABLE', 'ROWS'], plan.tables.map((t) => [`${t.schema}.${t.name}`, t.rows === null ? '-' : formatCount(t.rows)]), [1]));
  }
  if (plan.databaseState.length > 0) {
    out.line('database state:');
    for (const line of plan.databaseState) out.line(`  ${line}`);
  }
  if (plan.globals) out.line(globalsLine(plan.globals, 'would create'));
  out.line(`estimated size: ${formatBytes(plan.estimatedBytes)} of dump data; ${plan.tables.length} table(s) with rows`);
  out.line('dry run: nothing was changed');
}

function printFileRestoreDone(result: FileRestoreResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (result.tables.length > 0) out.line(formatTable(['TABLE', 'ROWS'], result.tables.map((t) => [`${t.schema}.${t.name}`, formatCount(t.rows)]), [1]));
  const rows = result.tables.reduce((n, t) => n + t.rows, 0);
  out.line(
    `restored ${result.file} (${result.format}${result.compression === 'none' ? '' : `, ${result.compression}`}) into ${result.replaced ? 'existing' : 'new'} database "${result.database}" ` +
      `in ${formatDuration(result.durationMs)}: ${result.tables.length} tables, ${formatCount(rows)} rows`,
  );
  if (result.safetyBackup) out.line(`the replaced database was saved first as backup ${result.safetyBackup}`);
  out.line(`connect: ${result.connection}`);
}

/** restore --file --dry-run */
function printFileRestorePlan(plan: FileRestorePlan, out: CommandOutput): void {
  if (out.json) return out.document({ dryRun: true, ...plan });
  out.line(`plan: restore ${plan.file}: ${plan.format} dump${plan.compression === 'none' ? '' : `, ${plan.compression}-compressed`}, ${formatBytes(plan.bytes)}`);
  out.line(`target: database "${plan.database}" on ${plan.server}: ${plan.mode === 'new' ? 'a new database, created' : 'exists: replaced whole (--overwrite), after a safety backup'}`);
  if (plan.entries.length > 0) {
    out.line(`create (${plan.entries.length} TOC entries):`);
    for (const e of plan.entries) out.line(`  ${String(e.id).padStart(5)}; ${e.entry}`);
  } else {
    out.line(`create: everything in the ${plan.format === 'plain' ? 'SQL script (psql runs it whole)' : 'archive'}`);
  }
  out.line('dry run: nothing was changed');
}
