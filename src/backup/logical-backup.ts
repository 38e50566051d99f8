import { readdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { createReadStream } from 'node:fs';
import type { BackupFormat, BackupOptionsConfig } from '../config/config-schema.js';
import { validateName, type ResolvedSource } from '../config/settings.js';
import { isPgkeepError, PgkeepError, throwIfAborted, toPgkeepError } from '../errors.js';
import { DEFAULT_ZSTD_LEVEL, defaultZstd, streamZstd } from '../pipeline/zstd.js';
import { libpqEnv } from '../postgres/connection-info.js';
import { connect, type PgClient } from '../postgres/pg-client.js';
import { assertToolNotOlder, toolInfo } from '../postgres/pg-tools.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import { dumpGlobals } from '../postgres/dump-globals.js';
import { readDatabaseInfo, readServerInfo } from '../postgres/server-info.js';
import { countRows, readCatalogTables, selectDataTables } from '../postgres/table-selection.js';
import { DumpRowCounter, tableKey } from '../pipeline/dump-row-counter.js';
import { writeBackupFailure } from '../repository/backup-failures.js';
import { validateBackupName } from '../repository/backup-id.js';
import type { LogicalManifest, MigrationState } from '../repository/manifest.js';
import { manifestState, type DatabaseStateRecord } from '../repository/manifest.js';
import { beginBackups, storeObjects, type BackupWriter, type ObjectToStore, type StoreObjectOptions } from '../repository/backup-writer.js';
import { Readable } from 'node:stream';
import { readDatabaseState } from '../postgres/database-state.js';
import { Repository } from '../repository/repository.js';
import { readMigrationState } from '../verify/migrations.js';
import type { CommandContext } from '../registry/command-context.js';
import { writeRecipients } from '../repository/repo-info.js';
import { makeTempFolder, removeStaleTempFolders } from '../local/temp-folders.js';

/** What one backup run is asked to do; unset options come from the source's config. */
export interface BackupRequest extends BackupOptionsConfig {
  name?: string | undefined;
  /** Globals dumped beforehand, shared by the backups of one --all-databases run. */
  sharedGlobals?: GlobalsPlan | undefined;
  /**
   * The caller already holds this source's lock in the repositories (restore
   * --overwrite, whose safety backup runs under the lock it took): not taken again.
   */
  lockHeld?: boolean | undefined;
}

type DumpOptions = LogicalManifest['options'];

/** One repository of a backup to several, and how it fared. */
interface Target {
  repository: Repository;
  /** Its backup writer (lock, id, objects, manifest), once begun. */
  writer?: BackupWriter<'logical'> | undefined;
  /** Set once this repository failed: it is left out of the rest of the backup. */
  error?: unknown;
  manifest?: LogicalManifest | undefined;
}

/**
 * Takes one logical backup of `source` into one or more repositories, in one
 * pass of pg_dump:
 *
 *  1. connect, read the server version, check pg_dump is new enough
 *  2. in each repository, a backup writer: the source lock, leftovers of
 *     interrupted backups cleared, one id free in all
 *  3. open a repeatable-read transaction and export its snapshot
 *  4. run pg_dump on that snapshot; hash and compress the stream once, then tee
 *     it to every repository (each with its own encryption, checksums and
 *     write), while counting every table's rows in the same snapshot
 *  5. write the manifests, last: only now does the backup exist
 *
 * A repository that fails is detached and the others complete; its folder is
 * removed, and after the manifests BACKUP_PARTIAL names it. When every
 * repository failed (or there is only one), the first cause is rethrown. On
 * interruption the objects written so far are removed.
 */
export async function runBackup(ctx: CommandContext, repository: Repository | readonly Repository[], source: ResolvedSource, request: BackupRequest = {}): Promise<LogicalManifest> {
  const repositories = repository instanceof Repository ? [repository] : repository;
  const startedAt = new Date();
  try {
    return await takeBackup(ctx, repositories, source, request);
  } catch (error) {
    // A configured source, or one with backups, keeps the failure for `status`. A first attempt at an
    // unknown source (no database given, a misspelt name, pg_dump too old) is reported, not persisted:
    // a source exists once it is configured or has its first backup. A refusal before anything started
    // (pg_dump older than the server) is not a failed backup of any source: nothing is recorded.
    const known = source.configured || (await hasBackupsIn(repositories, source.name));
    if (!known) await forgetNewSource(repositories, source.name);
    else if (!isPgkeepError(error, 'TOOL_TOO_OLD')) await recordFailure(repositories, source.name, startedAt, error);
    throw error;
  }
}

async function hasBackupsIn(repositories: readonly Repository[], source: string): Promise<boolean> {
  for (const repository of repositories) {
    if (await repository.hasCompleteBackup(source).catch(() => true)) return true; // unreadable: assume it is known
  }
  return false;
}

/**
 * Removes what a failed first backup of an unknown source wrote (its
 * source.json, failure records of earlier pgkeep versions): only when that is
 * all the source's folder holds. Anything else (a backup folder, WAL, a pin,
 * another process's lock) leaves the folder as it is. Best effort.
 */
async function forgetNewSource(repositories: readonly Repository[], source: string): Promise<void> {
  for (const repository of repositories) {
    try {
      await repository.forgetSourceIfOnlyRecords(source);
    } catch {
      // the repository may be what failed: it keeps what it has, `pgkeep sources remove` clears it
    }
  }
}

/**
 * Leaves a failure record (for `status`) in each repository the backup did not
 * reach: all of them, or those BACKUP_PARTIAL names. Best effort: the
 * repository that failed may not take a record either.
 */
async function recordFailure(repositories: readonly Repository[], source: string, startedAt: Date, error: unknown): Promise<void> {
  const failure = toPgkeepError(error);
  const failed = failure.code === 'BACKUP_PARTIAL' ? (failure.details?.failed as { repository: string; code: string; message: string }[] | undefined) ?? [] : undefined;
  for (const repository of repositories) {
    const own = failed ? failed.find((f) => f.repository === repository.location) : { code: failure.code, message: failure.message };
    if (!own) continue;
    await writeBackupFailure(repository, { source, kind: 'logical', startedAt: startedAt.toISOString(), failedAt: new Date().toISOString(), code: own.code, message: own.message }).catch(() => undefined);
  }
}

async function takeBackup(ctx: CommandContext, repositories: readonly Repository[], source: ResolvedSource, request: BackupRequest): Promise<LogicalManifest> {
  const options = dumpOptions(source.backup, request);
  if (request.name !== undefined) validateBackupName(request.name);
  const labels = [...new Set([...(source.backup.labels ?? []), ...(request.labels ?? [])])].map((label) => validateName(label, 'label'));
  const startedAt = new Date();
  const controller = new AbortController();
  const stopAll = () => controller.abort(ctx.signal.reason);
  ctx.signal.addEventListener('abort', stopAll, { once: true });
  const signal = controller.signal;

  const targets: Target[] = repositories.map((repository) => ({ repository }));
  // Failures in the order they happened: when every repository failed, the first is the cause.
  const failures: unknown[] = [];
  const fail = (target: Target, error: unknown) => {
    if (target.error !== undefined) return;
    target.error = error;
    failures.push(error);
  };
  const live = () => targets.filter((t) => t.error === undefined);
  const requireLive = () => {
    if (live().length === 0) throw failures[0];
    return live();
  };

  // The tools' version probes (a process each: pg_dump --version, zstd --version) run while the server
  // answers, not one after the other; a failure is still reported after the connection's, as before.
  // Into deduplicating repositories only, nothing is compressed as a stream (each new chunk is compressed
  // in process, content-store.ts): no zstd program to probe for, and the manifest names the codec that
  // compressed its chunks.
  const streams = repositories.some((r) => !r.info.content);
  const probes = Promise.all([toolInfo('pg_dump', source.pgBin), streams ? streamZstd() : defaultZstd()]);
  probes.catch(() => undefined);
  const client = await connect(source.connection, signal);
  let backupId: string | undefined;
  try {
    const server = await readServerInfo(client);
    const [pgDump, codec] = await probes;
    assertToolNotOlder(pgDump, 'pg_dump', server.versionNum, server.version);
    const globals = request.sharedGlobals ?? (await globalsPlan(client, request.globals ?? source.backup.globals, repositories));
    // Owner, privileges, comment, settings, locale: what the dump leaves out without --create (shared catalogs, outside the snapshot).
    const state = manifestState(await readDatabaseState(client));

    // 2. per repository a writer: its lock, its source record, its leftovers, one id free in all; a repository failing here is left out
    // The zstd program where installed (probed above): it compresses beside pgkeep instead of blocking its main thread (streamZstd).
    const begun = await beginBackups(repositories, source.name, 'logical', {
      command: 'backup',
      database: source.connection.database,
      startedAt,
      name: request.name,
      labels,
      lockHeld: request.lockHeld,
      codec,
      keys: ctx.keys,
      info: (message) => ctx.info(message),
      warn: (message) => ctx.warn(message),
      signal,
    });
    begun.forEach((result, i) => {
      if ('error' in result) fail(targets[i]!, result.error);
      else targets[i]!.writer = result.writer;
    });
    backupId = requireLive()[0]!.writer!.id;
    // Temp folders of pgkeep processes killed before they could remove them (the dump's or the globals' staging).
    const stale = await removeStaleTempFolders(source.tempDir);
    for (const folder of stale.removed) ctx.info(`leftover of an interrupted run: removed temp folder ${folder}`);

    // 3. the snapshot every part of this backup reads
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    const snapshot = (await client.query<{ id: string }>('SELECT pg_catalog.pg_export_snapshot() AS id')).rows[0]!.id;
    const database = await readDatabaseInfo(client);
    const selected = selectDataTables(await readCatalogTables(client), options);
    const dataTables = options.schemaOnly ? [] : selected;
    ctx.info(`backing up ${database.name} (${source.name}) as ${backupId}: ${options.format} format, ${dataTables.length} tables with data${live().length > 1 ? `, to ${live().length} repositories` : ''}`);

    // 4. dump once, tee to every repository; count every table's rows in the same snapshot: from the dump
    //    itself as it streams (a custom-format dump), else, or with --checksums, by querying beside the dump
    const counter = options.format === 'custom' && !options.checksums && dataTables.length > 0 ? new DumpRowCounter() : undefined;
    const dump = dumpToRepositories(ctx, live(), fail, source, options, snapshot, pgDump.path, signal, globals, counter, state);
    // The migration tables are read after the counts, on the same connection: same snapshot.
    const counting = counter ? dump.then(() => rowsFromDump(ctx, client, dataTables, counter, signal)) : countRows(client, dataTables, signal, { checksums: options.checksums });
    let counts: Awaited<typeof counting> = [];
    let migrations: MigrationState[] = [];
    await settleAll([
      dump,
      counting.then(async (c) => {
        counts = c;
        migrations = await readMigrationState(client, dataTables);
      }),
    ].map((p) => p.catch((error) => {
      controller.abort(error);
      throw error;
    })));
    await client.query('COMMIT');

    // 5. a manifest in every repository that holds all objects, written last by its writer
    const finishedAt = new Date();
    const tables = options.schemaOnly ? selected.map((t) => ({ schema: t.schema, name: t.name, rows: null })) : counts;
    throwIfAborted(signal);
    const body = {
      server: { ...server, host: source.connection.host, port: source.connection.port },
      tools: { pgDump: pgDump.version },
      database: { ...database, state },
      options,
      snapshot,
      tables,
      migrations,
    };
    for (const target of requireLive()) {
      const writer = target.writer!;
      const withGlobals = writer.objects.some((o) => o.role === 'globals') ? { globals: { rolePasswords: globals!.passwords, ...(globals!.run ? { run: globals!.run } : {}) } } : {};
      try {
        target.manifest = await writer.commit({ ...body, ...withGlobals }, finishedAt);
      } catch (error) {
        throwIfAborted(signal);
        fail(target, error);
      }
    }
    const written = targets.filter((t) => t.manifest !== undefined);
    if (written.length === 0) throw failures[0];
    const failed = targets.filter((t) => t.manifest === undefined);
    if (failed.length > 0) {
      for (const t of failed) await t.writer?.abort();
      const causes = failed.map((t) => {
        const e = t.error instanceof PgkeepError ? t.error : toPgkeepError(t.error, 'STORAGE_IO');
        return { repository: t.repository.location, code: e.code, message: e.message };
      });
      throw new PgkeepError(
        'BACKUP_PARTIAL',
        `backup ${backupId} of ${source.name} was not written to ${causes.map((c) => `${c.repository} (${c.message})`).join(', ')}; ` +
          `it is complete in ${written.map((t) => t.repository.location).join(', ')}`,
        { details: { id: backupId, source: source.name, repositories: written.map((t) => t.repository.location), failed: causes } },
      );
    }
    return written[0]!.manifest!;
  } catch (error) {
    if (error instanceof PgkeepError && error.code === 'BACKUP_PARTIAL') throw error;
    throw signal.aborted && signal.reason instanceof PgkeepError ? signal.reason : error;
  } finally {
    ctx.signal.removeEventListener('abort', stopAll);
    await client.end().catch(() => undefined);
    // Every writer not committed removes what it stored (its own folder: it holds the lock and chose the id) and releases its lock.
    for (const t of targets) await t.writer?.abort();
  }
}

/** Whether and how to store the server's globals: asked for (true), refused (false), or by default (undefined: on). */
export interface GlobalsPlan {
  /** Asked for explicitly: a pg_dumpall failure fails the backup. */
  explicit: boolean;
  /** Role password hashes are secrets: only into repositories that all encrypt, and only when the role may read pg_authid. */
  passwords: boolean;
  /** Already dumped (backup --all-databases dumps them once for every database): store this file. */
  file?: string | undefined;
  /** The id of the --all-databases run whose backups share this globals dump. */
  run?: string | undefined;
}

export async function globalsPlan(client: PgClient, wanted: boolean | undefined, repositories: readonly Repository[]): Promise<GlobalsPlan | undefined> {
  if (wanted === false) return undefined;
  const result = await client.query<{ ok: boolean }>("SELECT pg_catalog.has_table_privilege('pg_catalog.pg_authid', 'SELECT') AS ok");
  const encrypted = repositories.every((r) => writeRecipients(r) !== null);
  return { explicit: wanted === true, passwords: result.rows[0]!.ok && encrypted };
}

function dumpOptions(defaults: BackupOptionsConfig, request: BackupRequest): DumpOptions {
  const pick = <K extends keyof BackupOptionsConfig>(key: K): BackupOptionsConfig[K] => request[key] ?? defaults[key];
  const format: BackupFormat = pick('format') ?? 'custom';
  const jobs = pick('jobs') ?? 1;
  if (jobs > 1 && format !== 'directory') {
    throw new PgkeepError('USAGE', `--jobs ${jobs} needs --format directory (pg_dump dumps in parallel only into a directory)`);
  }
  if (pick('schemaOnly') && pick('dataOnly')) throw new PgkeepError('USAGE', '--schema-only and --data-only cannot be used together');
  return {
    format,
    schemaOnly: pick('schemaOnly') ?? false,
    dataOnly: pick('dataOnly') ?? false,
    tables: [...(pick('tables') ?? [])],
    excludeTables: [...(pick('excludeTables') ?? [])],
    schemas: [...(pick('schemas') ?? [])],
    excludeSchemas: [...(pick('excludeSchemas') ?? [])],
    noOwner: pick('noOwner') ?? false,
    noAcl: pick('noAcl') ?? false,
    jobs,
    compressLevel: pick('compressLevel') ?? DEFAULT_ZSTD_LEVEL,
    checksums: pick('checksums') ?? false,
  };
}

/**
 * The row counts the counter read from the dump; a table it did not see, or
 * every table when it could not read the dump, counted with count(*) in the
 * backup's snapshot (the transaction is still open).
 */
async function rowsFromDump(ctx: CommandContext, client: PgClient, tables: readonly { schema: string; name: string }[], counter: DumpRowCounter, signal: AbortSignal): Promise<{ schema: string; name: string; rows: number }[]> {
  const counted = counter.end();
  if (counted.state !== 'counted') ctx.info(`counting rows with SELECT count(*): ${counted.reason}`);
  const rows = counted.state === 'counted' ? new Map(counted.tables) : new Map<string, number>();
  const missing = tables.filter((t) => !rows.has(tableKey(t.schema, t.name)));
  for (const queried of await countRows(client, missing, signal)) rows.set(tableKey(queried.schema, queried.name), queried.rows);
  return tables.map((t) => ({ schema: t.schema, name: t.name, rows: rows.get(tableKey(t.schema, t.name))! }));
}

export function pgDumpArgs(options: DumpOptions, snapshot: string): string[] {
  const args = [`--format=${options.format}`, `--snapshot=${snapshot}`, '--verbose', '--no-password'];
  if (options.format !== 'plain') args.push('--compress=0');
  if (options.schemaOnly) args.push('--schema-only');
  if (options.dataOnly) args.push('--data-only');
  for (const t of options.tables) args.push(`--table=${t}`);
  for (const t of options.excludeTables) args.push(`--exclude-table=${t}`);
  for (const s of options.schemas) args.push(`--schema=${s}`);
  for (const s of options.excludeSchemas) args.push(`--exclude-schema=${s}`);
  if (options.noOwner) args.push('--no-owner');
  if (options.noAcl) args.push('--no-privileges');
  if (options.jobs > 1) args.push(`--jobs=${options.jobs}`);
  return args;
}

const PG_DUMP_ERROR_LINE = /(error|detail|hint|warning):|FATAL|ERROR/;

/**
 * The dump of a backup to several repositories: one pg_dump, teed to every
 * live target. Sets each target's objects, or marks it failed (through `fail`);
 * rejects only when every target failed.
 */
async function dumpToRepositories(
  ctx: CommandContext,
  targets: Target[],
  fail: (target: Target, error: unknown) => void,
  source: ResolvedSource,
  options: DumpOptions,
  snapshot: string,
  pgDumpPath: string,
  signal: AbortSignal,
  globals: GlobalsPlan | undefined,
  counter: DumpRowCounter | undefined,
  state: DatabaseStateRecord,
): Promise<void> {
  let table: string | undefined;
  let bytes = 0;
  const processOptions = {
    env: libpqEnv(source.connection),
    signal,
    isErrorLine: (line: string) => PG_DUMP_ERROR_LINE.test(line),
    onStderrLine: (line: string) => {
      const match = /dumping contents of table "(.+)"/.exec(line);
      if (match) {
        table = match[1];
        ctx.progress({ phase: 'dump', bytes, item: table });
      }
    },
  };
  const store = { level: options.compressLevel, signal };
  /** Stores one input through every live repository's writer (each encrypts to its own recipients). */
  const storeEverywhere = async (input: Readable, object: ObjectToStore, extra: Partial<StoreObjectOptions>) => {
    const current = targets.filter((t) => t.error === undefined);
    let results;
    try {
      results = await storeObjects(current.map((t) => t.writer!), object, input, { ...store, ...extra });
    } catch (error) {
      for (const t of current) fail(t, error);
      throw error;
    }
    results.forEach((result, i) => {
      if (!result.ok) fail(current[i]!, result.error);
    });
    return results.find((r) => r.ok);
  };

  // The roles dump is small and has no snapshot to share: it runs beside the data dump, and is stored after it.
  const globalsStaging = globals ? await makeTempFolder(source.tempDir, 'globals') : undefined;
  const globalsFile = globals ? stageGlobals(globalsStaging!) : undefined;
  globalsFile?.catch(() => undefined); // observed below, after the data dump
  try {
    await dumpData();
    const staged = await globalsFile;
    if (staged) {
      throwIfAborted(signal);
      await storeEverywhere(createReadStream(staged, { highWaterMark: 1 << 20 }), { name: 'globals.sql', role: 'globals' }, {});
    }
    // The database's own state is also an object, encrypted like the dump: a manifest (always in clear) of an
    // encrypted repository leaves it out, since settings may be secrets (PostgREST's app.jwt_secret is one).
    throwIfAborted(signal);
    await storeEverywhere(Readable.from([Buffer.from(JSON.stringify(state))]), { name: 'state.json', role: 'database-state' }, {});
  } finally {
    if (globalsStaging) {
      await globalsFile?.catch(() => undefined);
      await rm(globalsStaging, { recursive: true, force: true });
    }
  }

  async function dumpData(): Promise<void> {
    if (options.format === 'directory') return dumpDirectory();
    const pgDump = startProcess(pgDumpPath, pgDumpArgs(options, snapshot), { ...processOptions, stdout: 'pipe' });
    await storeEverywhere(pgDump.stdout!, { name: options.format === 'custom' ? 'dump' : 'dump.sql', role: 'dump' }, {
      complete: pgDump.done,
      onRawChunk: counter ? (chunk) => counter.push(chunk) : undefined,
      // a content store cuts its chunks where each table's data starts (the counter parses the archive's framing)
      boundaries: counter ? () => counter.takeBlockStarts() : undefined,
      onRawBytes: (total) => {
        bytes = total;
        ctx.progress({ phase: 'dump', bytes, item: table });
      },
    });
  }

  async function dumpDirectory(): Promise<void> {
    const staging = await makeTempFolder(source.tempDir, 'dump');
    try {
      const dumpDir = path.join(staging, 'dump');
      const pgDump = startProcess(pgDumpPath, [...pgDumpArgs(options, snapshot), `--file=${dumpDir}`], { ...processOptions, stdout: 'ignore' });
      await pgDump.done;
      for (const file of (await readdir(dumpDir)).sort()) {
        throwIfAborted(signal);
        const ok = await storeEverywhere(createReadStream(path.join(dumpDir, file), { highWaterMark: 1 << 20 }), { name: `dump.d/${file}`, role: 'dump-file', file }, {
          onRawBytes: (total) => ctx.progress({ phase: 'store', bytes: bytes + total, item: file }),
        });
        bytes += ok?.ok ? ok.object.raw.size : 0;
      }
    } finally {
      await rm(staging, { recursive: true, force: true });
    }
  }

  /**
   * pg_dumpall --globals-only into a temp file in `staging` (or the file an
   * --all-databases run already made); resolves to the file, or to undefined
   * when it failed and globals were not asked for explicitly (a warning: the
   * backup goes on without them).
   */
  async function stageGlobals(staging: string): Promise<string | undefined> {
    if (globals!.file !== undefined) return globals!.file;
    const file = path.join(staging, 'globals.sql');
    try {
      await dumpGlobals(source.connection, file, { passwords: globals!.passwords, pgBin: source.pgBin, signal });
      return file;
    } catch (error) {
      if (globals!.explicit || signal.aborted) throw error;
      ctx.warn(`roles and tablespaces are not in this backup (pg_dumpall --globals-only failed: ${(error as Error).message}); pass --no-globals to skip them`);
      return undefined;
    }
  }
}
