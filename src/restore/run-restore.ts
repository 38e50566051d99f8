import { createWorkDatabase, dropPartialDatabase } from './create-work-database.js';
import { putInPlace } from './put-in-place.js';
import { recordedState } from './recorded-state.js';
import { createSelectedSchemas } from './create-selected-schemas.js';
import { safetySource } from './safety-source.js';
import { loadData, type LoadReport } from './load-data.js';
import { rm } from 'node:fs/promises';
import type { ResolvedSource } from '../config/settings.js';
import { isPgkeepError, PgkeepError, throwIfAborted } from '../errors.js';
import { readBackupToc } from '../repository/read-backup-toc.js';
import type { TocEntry } from '../pipeline/custom-toc.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { describeConnection, serverLabel, withDatabase, type ConnectionInfo } from '../postgres/connection-info.js';
import { fitIdentifier } from '../postgres/database-admin.js';
import { quoteIdent, withClient, type PgClient } from '../postgres/pg-client.js';
import { assertArchiveReadable, serverMajor, toolInfo } from '../postgres/pg-tools.js';
import { databaseExists, readServerInfo } from '../postgres/server-info.js';
import { describeEntry, planSelection, schemasToCreate, type SelectionPlan } from '../postgres/restore-plan.js';
import { compareTables } from '../verify/restore-checks.js';
import { checkRestoredSchema, describeSchemaDifferences, SchemaCapture, selectionArgs, type SchemaCheck } from '../verify/schema-compare.js';
import { applyDatabaseState, describeLocale, formatAcl, missingRoles, rolesNamed, type DatabaseState, type StateParts } from '../postgres/database-state.js';
import { timestampPart } from '../repository/backup-id.js';
import { requireLogical, type LogicalManifest as Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { runBackup } from '../backup/logical-backup.js';
import { analyzeDatabase, analyzeLoadedTables } from './analyze-database.js';
import { defaultRestoreJobs } from './parallel-copy-loader.js';
import type { SourceLock } from '../repository/source-lock.js';
import { applyGlobals } from './apply-globals.js';
import type { GlobalsReport } from '../postgres/globals-sql.js';
import { repositoriesWithBackup } from '../repository/open-repository.js';
import { compareMigrations, type MigrationComparison } from '../verify/migrations.js';
import { identitiesFor, manifestKeysOf } from '../repository/repository-keys.js';
import type { AgeIdentity } from '../pipeline/age.js';
import type { CommandContext } from '../registry/command-context.js';
import { makeTempFolder } from '../local/temp-folders.js';
import { faultPoint } from '../fault-points.js';
import { markDatabase, newMarker, unmarkDatabase } from '../postgres/restore-leftovers.js';
import { cleanLeftovers } from '../local/clean-leftovers.js';

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
    lock = await repository.lockSource(replaced.name, `restore --${plan.mode === 'clean' ? 'clean' : 'overwrite'}`);
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
        await loadData(ctx, { repository, manifest, identities, target: into, options: request, source, selection });
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
      // The loaded tables are analyzed while post-data builds their indexes, where the parallel loader runs (step 5 does the rest).
      let analyzedEarly = new Set<string>();
      const besidePostData = async (stop: AbortSignal) => void (analyzedEarly = await analyzeLoadedTables(into, request.jobs ?? defaultRestoreJobs(), stop));
      const { serverCounts } = await loadData(ctx, { repository, manifest, identities, target: into, options: request, source, selection, capture, besidePostData });
      faultPoint('after-load');

      // 5. prove it: ANALYZE (what was not analyzed during the load), exact row counts against the manifest and the
      //    whole schema (definitions, owners, privileges) against the backup's, side by side (none changes what another
      //    reads); then the database-level state (its owner may decide what ANALYZE may do, so it comes after); the app's migration version
      const [tables, schema] = await inOrder(checkRestored(into, plan, request, signal, true, analyzedEarly, serverCounts), capture ? proveSchema(ctx, capture, into, manifest, request, source) : Promise.resolve(undefined));
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
  const loader = format === 'plain' ? 'psql' : 'pg_restore';
  // The server's answers and the tool's version side by side: each is a round trip or a process start.
  const [{ exists, server }, tool] = await inOrder(
    withClient(admin, async (client) => ({ exists: await databaseExists(client, target), server: await readServerInfo(client) }), signal),
    toolInfo(loader, source.pgBin),
  );
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
 *
 * Where the parallel loader's COPY went into the table itself
 * (`serverCounts`), the count compared is the server's own: the sum of the
 * COPY command tags, each read only after that COPY's commit (ReadyForQuery),
 * so it is the number of rows the server committed into that table. Nothing
 * that runs between the load and this check can add or remove rows: triggers,
 * rules and policies belong to post-data and are created after the rows, and
 * the only other writer is pgkeep's own pg_restore, which loads sequence values
 * and large objects. So it proves what `SELECT count(*)` proves (the manifest's
 * count, which the backup took from the same framing, equals what the database
 * holds) without reading every table again: at 1 GB that scan, which also
 * dirties every page it sets hint bits on, was the longest of the checks
 * (docs/benchmarks.md, "fourth round"). Other tables (pg_restore loaded them,
 * or the COPY named a partition root) are counted.
 */
async function checkRestored(
  into: ConnectionInfo,
  plan: RestorePlan,
  request: RestoreRequest,
  signal: AbortSignal,
  wholeDatabase: boolean,
  analyzedEarly?: ReadonlySet<string>,
  serverCounts?: LoadReport['serverCounts'],
): Promise<TableCheck[]> {
  const names = plan.tables.map((t) => `${quoteIdent(t.schema)}.${quoteIdent(t.name)}`);
  // ANALYZE (and REINDEX) and the counts at the same time, on their own connections: a count takes
  // only ACCESS SHARE locks, which neither waits for, and at small sizes a restore's RTO is mostly such fixed costs.
  const maintain = withClient(
    into,
    async (client) => {
      if (wholeDatabase) await analyzeDatabase(into, request.jobs ?? defaultRestoreJobs(), signal, analyzedEarly);
      else for (const name of names) await client.query(`ANALYZE ${name}`);
      if (request.reindex) {
        if (wholeDatabase) await client.query(`REINDEX DATABASE ${quoteIdent(into.database)}`);
        else for (const name of names) await client.query(`REINDEX TABLE ${name}`);
      }
    },
    signal,
  );
  const counting = withClient(into, (client) => compareTables(client, plan.tables, { deep: false, signal, serverCounts }), signal);
  const [{ tables, problems }] = await inOrder(counting, maintain);
  const first = problems[0];
  if (first) throw new PgkeepError(first.code, first.message, { details: { tables: tables.filter((t) => t.expected !== t.actual) } });
  return tables.map(({ schema, name, expected, actual }) => ({ schema, name, expected, actual }));
}


/**
 * Waits for both checks (neither is left running against a database about to
 * be dropped), then fails with the first one's error in argument order, not in
 * time: the same failure is reported whichever finished first.
 */
async function inOrder<A, B>(a: Promise<A>, b: Promise<B>): Promise<[A, B]> {
  const [x, y] = await Promise.allSettled([a, b]);
  if (x.status === 'rejected') throw x.reason;
  if (y.status === 'rejected') throw y.reason;
  return [x.value, y.value];
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
