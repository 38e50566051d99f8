import { readFile, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { ResolvedSource } from '../config/settings.js';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { childStdinSink } from '../pipeline/load-stream.js';
import { detectDumpFile, openDumpStream, type DumpFile } from '../pipeline/dump-file.js';
import { readArchiveTocFrom } from '../pipeline/backup-toc.js';
import { readArchiveToc, type TocEntry } from '../pipeline/custom-toc.js';
import { defaultZstd, type ZstdCodec } from '../pipeline/zstd.js';
import { describeEntry, planSelection, schemasToCreate, tocListFile, type SelectionPlan } from '../postgres/restore-plan.js';
import { describeConnection, libpqEnv, serverLabel, withDatabase, type ConnectionInfo } from '../postgres/connection-info.js';
import { createDatabase, fitIdentifier } from '../postgres/database-admin.js';
import { quoteIdent, runInTransaction, withClient, type PgClient } from '../postgres/pg-client.js';
import { describeLocale, missingRoles } from '../postgres/database-state.js';
import { dumpDatabaseState, renameDatabaseIn, rolesInStatements, type DumpDatabaseState } from '../postgres/dump-database-state.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { startProcess } from '../postgres/run-process.js';
import { databaseExists } from '../postgres/server-info.js';
import { countRows, readCatalogTables } from '../postgres/table-selection.js';
import { timestampPart } from '../repository/backup-id.js';
import { pipeline } from 'node:stream/promises';
import { runBackup } from '../backup/logical-backup.js';
import type { CommandContext } from '../registry/command-context.js';
import { openRepository } from '../repository/open-repository.js';
import { cleanLeftovers } from '../local/clean-leftovers.js';
import { createWorkDatabase, dropPartialDatabase } from './create-work-database.js';
import { feedChild, RESTORE_ERROR_LINE } from './feed-child.js';
import { putInPlace } from './put-in-place.js';
import { safetySource } from './safety-source.js';
import { makeTempFolder } from '../local/temp-folders.js';
import { databaseComment, markDatabase, newMarker, unmarkDatabase } from '../postgres/restore-leftovers.js';

export interface FileRestoreRequest {
  /** A dump made outside pgkeep: custom, directory, tar or plain SQL, optionally gzip or zstd. */
  file: string;
  to?: string | undefined;
  overwrite?: boolean | undefined;
  force?: boolean | undefined;
  jobs?: number | undefined;
  noOwner?: boolean | undefined;
  /** Leave out privileges (objects' and the database's). */
  noAcl?: boolean | undefined;
  role?: string | undefined;
  reindex?: boolean | undefined;
  /** Only these tables / schemas (custom and directory dumps), as for a backup in the repository. */
  tables?: readonly string[] | undefined;
  schemas?: readonly string[] | undefined;
  schemaOnly?: boolean | undefined;
}

export interface FileRestoreResult {
  file: string;
  format: DumpFile['format'];
  compression: DumpFile['compression'];
  database: string;
  connection: string;
  replaced: boolean;
  safetyBackup: string | undefined;
  /** Every restored table with its exact row count (there is no manifest to compare with). */
  tables: { schema: string; name: string; rows: number }[];
  /** The database-level state (locale, owner, privileges, comment, settings) the dump carried: reproduced, or none in this dump (plain, tar, or made with --table/--schema). */
  databaseState: 'reproduced' | 'none in the dump';
  durationMs: number;
}

/**
 * Restores a dump file made outside pgkeep (an old script's backup), with the
 * same safety rules as a restore from the repository:
 *
 *  1. detect the format from the file's bytes; choose the target (default: a
 *     new database named after the file)
 *  2. if the target exists: refuse, unless --overwrite and confirmed; then take
 *     a safety backup of it into the source's repository
 *  3. create a new empty database (for an overwrite, under a temporary name)
 *  4. stream the dump into psql or pg_restore (decompressing on the way)
 *  5. ANALYZE, count every table's rows
 *  6. for an overwrite, swap the new database into place
 *
 * Any failure before the swap drops the database this restore created.
 */
export async function runRestoreFile(ctx: CommandContext, source: ResolvedSource, request: FileRestoreRequest): Promise<FileRestoreResult> {
  const started = Date.now();
  const { signal } = ctx;

  // 1. what the file is, the target, the tools, the selection
  // What interrupted runs left, before the target's existence is read (see runRestore).
  await cleanLeftovers(ctx, withDatabase(source.connection, 'postgres'), source.tempDir);
  const { dump, target, admin, exists, selection, dbState } = await prepareFileRestore(ctx, source, request);
  if (dump.format === 'plain' && request.noOwner) ctx.warn('--no-owner does not apply to a plain SQL dump (psql runs its ALTER … OWNER statements): use --role, or create the owners first');
  const tool = await toolInfo(dump.format === 'plain' ? 'psql' : 'pg_restore', source.pgBin);

  // 2. never replace a database without consent, and never without a copy
  let safetyBackup: string | undefined;
  if (exists) {
    if (!request.overwrite) {
      throw new PgkeepError('DB_EXISTS', `database "${target}" already exists on ${serverLabel(source.connection)}: choose another --to, or add --overwrite to replace it (a safety backup is taken first)`);
    }
    if (!request.force && !(await ctx.confirm(`This replaces database "${target}" on ${serverLabel(source.connection)} with ${dump.path}. Type the database name to confirm:`, target))) {
      throw new PgkeepError('CONFIRMATION_REQUIRED', `not replacing database "${target}": confirm by typing its name, or pass --force when running without a terminal`);
    }
    ctx.info(`taking a safety backup of "${target}" before replacing it`);
    const repository = await openRepository(ctx.settings, { source: source.name, createIfEmpty: true });
    const safety = await runBackup(ctx, repository, safetySource(source, target), { name: 'pre-restore', labels: ['pre-restore'] });
    safetyBackup = `${safety.source}/${safety.id}`;
    ctx.info(`safety backup ${safety.id} (source ${safety.source}) written`);
  }

  // 3. a new, empty database under a temporary name, marked as pgkeep's (see runRestore),
  //    with the dump's locale when it says (its DATABASE entry), else the server's default
  const { work, old } = await createWorkDatabase(ctx, admin, target, exists, `file ${dump.path}`, dbState?.locale, 'dump');
  let swapped = false;
  try {
    // 4. load
    ctx.info(`restoring ${dump.path} (${dump.format}${dump.compression === 'none' ? '' : `, ${dump.compression}`}) into "${work}"`);
    const into = withDatabase(source.connection, work);
    const missing = schemasToCreate(selection) ?? [];
    if (missing.length > 0) await withClient(into, async (client) => {
      for (const schema of missing) await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
    });
    await loadDumpFile(ctx, dump, into, request, tool.path, selection, source.tempDir);

    // 5. ANALYZE and count
    const tables = await withClient(into, async (client) => {
      await client.query('ANALYZE');
      if (request.reindex) await client.query(`REINDEX DATABASE ${quoteIdent(work)}`);
      const restored = (t: { schema: string; name: string }) => !selection || selection.dataTables.some((d) => d.schema === t.schema && d.name === t.name);
      const catalog = (await readCatalogTables(client)).filter((t) => t.kind === 'r' && !t.extensionMember && restored(t));
      return countRows(client, catalog, signal);
    });

    // The database's own state, as pg_restore --create would give it, for the name restored into;
    // its comment (if the dump has one) replaces pgkeep's marker once the database is in place.
    let comment: string | null = null;
    if (dbState) {
      comment = await withClient(
        admin,
        async (client) => {
          await unmarkDatabase(client, work, null);
          await applyDumpDatabaseState(client, work, dbState, request);
          const own = await databaseComment(client, work);
          await markDatabase(client, work, newMarker(work, target, `file ${dump.path}`, old)).catch(() => undefined);
          return own;
        },
        signal,
      );
    }

    // 6. into place (rename, or swap for an overwrite)
    throwIfAborted(signal);
    await putInPlace(ctx, admin, target, work, old, safetyBackup, comment);
    swapped = true;
    return {
      file: dump.path,
      format: dump.format,
      compression: dump.compression,
      database: target,
      connection: describeConnection(source.connection, target),
      replaced: exists,
      safetyBackup,
      tables,
      databaseState: dbState ? 'reproduced' : 'none in the dump',
      durationMs: Date.now() - started,
    };
  } catch (error) {
    if (!swapped) await dropPartialDatabase(ctx, admin, work);
    throw error;
  }
}

/** What restore --file --dry-run prints: nothing is created or changed. */
export interface FileRestorePlan {
  file: string;
  format: DumpFile['format'];
  compression: DumpFile['compression'];
  bytes: number;
  database: string;
  server: string;
  exists: boolean;
  /** new, or overwrite (after confirmation and a safety backup). */
  mode: 'new' | 'overwrite';
  /** The TOC entries restored (custom and directory dumps; empty for tar and plain SQL, which are restored whole). */
  entries: { id: number; entry: string }[];
}

export async function planRestoreFile(ctx: CommandContext, source: ResolvedSource, request: FileRestoreRequest): Promise<FileRestorePlan> {
  const { dump, target, exists, selection, toc } = await prepareFileRestore(ctx, source, request, true);
  const entries = (selection?.entries ?? toc ?? []).filter((e) => !['ENCODING', 'STDSTRINGS', 'SEARCHPATH', 'DATABASE'].includes(e.desc));
  if (exists && !request.overwrite) {
    throw new PgkeepError('DB_EXISTS', `database "${target}" already exists on ${serverLabel(source.connection)}: choose another --to, or add --overwrite to replace it (a safety backup is taken first)`);
  }
  return {
    file: dump.path,
    format: dump.format,
    compression: dump.compression,
    bytes: dump.bytes,
    database: target,
    server: serverLabel(source.connection),
    exists,
    mode: exists ? 'overwrite' : 'new',
    entries: entries.map((e) => ({ id: e.dumpId, entry: describeEntry(e) })),
  };
}

/** Step 1, shared with --dry-run: detect, name the target, check the tools, plan a selection; nothing is changed. */
async function prepareFileRestore(ctx: CommandContext, source: ResolvedSource, request: FileRestoreRequest, dryRun = false) {
  const { signal } = ctx;
  const dump = await detectDumpFile(request.file, defaultZstd());
  const target = request.to ?? fitIdentifier(`${stemOf(dump.path)}_restore_`, timestampPart(new Date()).toLowerCase());
  if (target === '' || Buffer.byteLength(target) > 63) throw new PgkeepError('INVALID_NAME', `database name "${target}" is invalid: use 1 to 63 bytes`);
  const admin = withDatabase(source.connection, target === 'postgres' ? 'template1' : 'postgres');
  const exists = await withClient(admin, (client) => databaseExists(client, target), signal);
  // The version policy (README, "Versions"): any pg_restore that reads the archive (it says so itself when the
  // archive is newer than it) and any psql load into a server of any version; the tool must only be there.
  await toolInfo(dump.format === 'plain' ? 'psql' : 'pg_restore', source.pgBin);
  const selective = (request.tables?.length ?? 0) > 0 || (request.schemas?.length ?? 0) > 0;
  const archive = dump.format === 'custom' || dump.format === 'directory';
  if ((selective || request.schemaOnly) && !archive) {
    throw new PgkeepError('USAGE', `${dump.path} is a ${dump.format} dump: --table, --schema and --schema-only need a custom or directory dump (pg_dump -Fc or -Fd); restore it whole`);
  }
  // The TOC also says whether the dump carries the database's own state (pg_dump without --table/--schema writes it).
  const toc = archive ? await dumpToc(dump, signal) : undefined;
  const selection = selective ? planSelection(toc!, { tables: request.tables, schemas: request.schemas, newDatabase: true }) : undefined;
  const dbState = toc ? dumpDatabaseState(toc) : undefined;
  if (dbState) {
    const roles = [...new Set([...(request.noOwner || !dbState.owner ? [] : [dbState.owner]), ...rolesInStatements(dbState.properties), ...rolesInStatements(stateAcl(dbState, request))])];
    const missing = await withClient(admin, (client) => missingRoles(client, roles), signal);
    if (missing.length > 0) {
      throw new PgkeepError(
        'ROLE_MISSING',
        `role${missing.length > 1 ? 's' : ''} ${missing.map((r) => `"${r}"`).join(', ')} named by ${dump.path} (the database's owner, privileges or settings) ${missing.length > 1 ? 'do' : 'does'} not exist on ${serverLabel(source.connection)}: create them first (pgkeep restore --globals from a backup of the source, or pg_dumpall --globals-only), or leave them out with --no-owner / --no-acl`,
        { details: { missing } },
      );
    }
  }
  return { dump, target, admin, exists, selection, toc, dbState };
}

/** The dump's database ACL statements this restore applies: none with --no-acl; with --no-owner, none naming the original owner. */
function stateAcl(state: DumpDatabaseState, request: FileRestoreRequest): string[] {
  if (request.noAcl) return [];
  if (!request.noOwner || !state.owner) return state.acl;
  return state.acl.filter((statement) => !rolesInStatements([statement]).includes(state.owner!));
}

/** Owner, comment, settings, connection limit and privileges from the dump, renamed for `database`, in one transaction. */
async function applyDumpDatabaseState(client: PgClient, database: string, state: DumpDatabaseState, request: FileRestoreRequest): Promise<void> {
  const statements = [
    ...(request.noOwner || !state.owner ? [] : [`ALTER DATABASE ${quoteIdent(database)} OWNER TO ${quoteIdent(state.owner)}`]),
    ...state.properties.map((s) => renameDatabaseIn(s, state.name, database)),
    ...stateAcl(state, request).map((s) => renameDatabaseIn(s, state.name, database)),
  ];
  try {
    await runInTransaction(client, statements);
  } catch (error) {
    throw new PgkeepError('RESTORE_FAILED', `could not give "${database}" the owner, privileges and settings the dump carries (${(error as Error).message}): restore as a superuser, or leave parts out with --no-owner / --no-acl`, { cause: error });
  }
}

/**
 * Feeds the dump to its loader. A plain dump streams into psql; an archive
 * in a plain file or folder is read by pg_restore itself (seekable, so
 * --jobs works for custom and directory); a compressed archive streams
 * into pg_restore's stdin (one job).
 */
async function loadDumpFile(
  ctx: CommandContext,
  dump: DumpFile,
  target: ConnectionInfo,
  request: FileRestoreRequest,
  loaderPath: string,
  selection: SelectionPlan | undefined,
  tempDir: string | undefined,
): Promise<void> {
  const common = { env: libpqEnv(target), signal: ctx.signal, isErrorLine: (line: string) => RESTORE_ERROR_LINE.test(line) };
  const codec = defaultZstd();
  // Compressed, the file's size says little about the bytes that come out of it.
  const total = dump.compression === 'none' ? dump.bytes : undefined;
  if (dump.format === 'plain') {
    // No --single-transaction: pg_dump's plain output has its own BEGIN/COMMIT around large objects. A failure drops the database instead.
    const role = request.role ? ['-c', `SET ROLE ${quoteIdent(request.role)}`] : [];
    const run = startProcess(loaderPath, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-password', '-d', target.database, ...role, '-f', '-'], { ...common, stdin: 'pipe', stdout: 'ignore' });
    await feedChild(pipeline(openDumpStream(dump, codec), progressOf(ctx, total), childStdinSink(run.stdin!), { signal: ctx.signal }), run);
    return;
  }
  const args = ['--dbname', target.database, '--exit-on-error', '--no-password'];
  if (request.noOwner) args.push('--no-owner');
  if (request.noAcl) args.push('--no-privileges');
  if (request.role) args.push(`--role=${request.role}`);
  if (request.schemaOnly) args.push('--schema-only');
  const staging = selection ? await makeTempFolder(tempDir, 'restore') : undefined;
  try {
    if (selection) {
      const list = path.join(staging!, 'selection.list');
      await writeFile(list, tocListFile(selection.entries), { mode: 0o600 });
      args.push(`--use-list=${list}`);
    }
    await loadArchiveFile(ctx, dump, args, request, loaderPath, common, codec, total);
  } finally {
    if (staging) await rm(staging, { recursive: true, force: true });
  }
}

async function loadArchiveFile(
  ctx: CommandContext,
  dump: DumpFile,
  args: string[],
  request: FileRestoreRequest,
  loaderPath: string,
  common: { env: NodeJS.ProcessEnv; signal: AbortSignal; isErrorLine: (line: string) => boolean },
  codec: ZstdCodec,
  total: number | undefined,
): Promise<void> {
  const jobs = request.jobs ?? 1;
  if (dump.compression === 'none') {
    if (jobs > 1 && dump.format === 'tar') ctx.warn('pg_restore cannot restore a tar archive in parallel: --jobs is ignored');
    const parallel = jobs > 1 && dump.format !== 'tar' ? [`--jobs=${jobs}`] : [];
    await startProcess(loaderPath, [...args, ...parallel, dump.path], { ...common, stdout: 'ignore' }).done;
    return;
  }
  if (jobs > 1) ctx.warn(`a ${dump.compression}-compressed archive streams into pg_restore, which then runs one job: --jobs is ignored (decompress the file first to restore in parallel)`);
  const run = startProcess(loaderPath, args, { ...common, stdin: 'pipe', stdout: 'ignore' });
  await feedChild(pipeline(openDumpStream(dump, codec), progressOf(ctx, total), childStdinSink(run.stdin!), { signal: ctx.signal }), run);
}

/** A custom or directory dump's table of contents, for a selection: toc.dat, or the archive's first bytes. */
async function dumpToc(dump: DumpFile, signal: AbortSignal): Promise<TocEntry[]> {
  if (dump.format === 'directory') {
    try {
      return readArchiveToc(await readFile(path.join(dump.path, 'toc.dat')));
    } catch (error) {
      throw new PgkeepError('DUMP_FORMAT_UNKNOWN', `cannot read the table of contents of ${dump.path}: ${(error as Error).message}`, { cause: error });
    }
  }
  return readArchiveTocFrom(openDumpStream(dump, defaultZstd()), dump.path, signal);
}

/** A pass-through that reports the bytes fed to the loader. */
function progressOf(ctx: CommandContext, total: number | undefined) {
  let bytes = 0;
  return async function* (source: AsyncIterable<Buffer>) {
    for await (const chunk of source) {
      bytes += chunk.length;
      ctx.progress({ phase: 'restore', bytes, totalBytes: total });
      yield chunk;
    }
  };
}

/** "backup_2024-01-01.sql.gz" → "backup_2024_01_01": a database name people can type. */
function stemOf(file: string): string {
  const base = path.basename(path.resolve(file)).replace(/(\.(sql|dump|backup|bak|tar|pgdump|custom))?(\.(gz|zst|zstd))?$/i, '');
  const stem = base.toLowerCase().replace(/[^a-z0-9_]+/g, '_').replace(/^_+|_+$/g, '');
  return stem === '' ? 'dump' : /^[0-9]/.test(stem) ? `d_${stem}` : stem;
}
