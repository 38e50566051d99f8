import { createWriteStream } from 'node:fs';
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import type { ResolvedSource } from '../config/settings.js';
import { sourceNameForDatabase } from '../config/settings.js';
import { isPgkeepError, PgkeepError, throwIfAborted } from '../errors.js';
import { tocStagingSink } from '../pipeline/custom-toc.js';
import { childStdinSink, loadStream, teeSink } from '../pipeline/load-stream.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { describeConnection, libpqEnv, serverLabel, withDatabase, type ConnectionInfo } from '../postgres/connection-info.js';
import { createDatabase, dropDatabase, fitIdentifier, renameDatabase } from '../postgres/database-admin.js';
import { quoteIdent, withClient } from '../postgres/pg-client.js';
import { assertToolNotOlder, toolInfo } from '../postgres/pg-tools.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import { databaseExists, readServerInfo } from '../postgres/server-info.js';
import { countRows } from '../postgres/table-selection.js';
import { timestampPart } from '../repository/backup-id.js';
import { requireLogical, type LogicalManifest as Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { runBackup } from './backup.js';
import { repositoriesWithBackup } from './open-repository.js';
import { identitiesFor } from './repository-keys.js';
import type { AgeIdentity } from '../pipeline/age.js';
import type { CommandContext } from './command-context.js';

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
  /** Id of the backup taken of the replaced database, when one was replaced. */
  safetyBackup: string | undefined;
  tables: TableCheck[];
  durationMs: number;
}

/**
 * Restores a backup into a database on the source's server:
 *
 *  1. find the backup, choose the target name, check pg_restore can read it
 *  2. if the target exists: refuse, unless --overwrite and confirmed; then take
 *     a safety backup of it (label pre-restore)
 *  3. create a new empty database (for an overwrite, under a temporary name)
 *  4. stream the backup into it, checking every checksum on the way
 *  5. ANALYZE, and compare every table's row count with the manifest
 *  6. for an overwrite, swap: the old database is renamed away, the new one
 *     takes its name, the old one is dropped
 *
 * Any failure before the swap drops the database this restore created and
 * leaves an existing database untouched.
 */
export async function runRestore(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: RestoreRequest): Promise<RestoreResult> {
  const started = Date.now();
  const { signal } = ctx;

  // 1. the backup, the target, the tools
  // "latest" is the newest logical backup; a physical one is recovered with pgkeep pitr.
  const manifest = requireLogical(await repository.resolveBackup(request.backup, source.name, 'logical'), 'restore');
  // Keys first: a missing or wrong identity must fail before any database is touched.
  const identities = await identitiesFor(repository, manifest, ctx.keys);
  const target = request.to ?? fitIdentifier(`${manifest.database.name}_restore_`, timestampPart(new Date()).toLowerCase());
  if (target === '' || Buffer.byteLength(target) > 63) {
    throw new PgkeepError('INVALID_NAME', `database name "${target}" is invalid: use 1 to 63 bytes`);
  }
  // Administrative statements run from another database than the one being replaced.
  const admin = withDatabase(source.connection, target === 'postgres' ? 'template1' : 'postgres');
  const { exists, server } = await withClient(admin, async (client) => ({ exists: await databaseExists(client, target), server: await readServerInfo(client) }), signal);
  const loader = manifest.options.format === 'plain' ? 'psql' : 'pg_restore';
  const tool = await toolInfo(loader, source.pgBin);
  const dumpMajor = Number(manifest.tools.pgDump.split('.')[0]);
  if (loader === 'pg_restore' && tool.major < dumpMajor) {
    throw new PgkeepError('TOOL_TOO_OLD', `pg_restore ${tool.version} cannot read a dump made by pg_dump ${manifest.tools.pgDump}: install postgresql-client-${dumpMajor} or set PG_BIN`);
  }
  assertToolNotOlder(tool, loader, server.versionNum, server.version);

  // 2. never replace a database without consent, and never without a copy
  let safetyBackup: string | undefined;
  if (exists) {
    if (!request.overwrite) {
      throw new PgkeepError('DB_EXISTS', `database "${target}" already exists on ${serverLabel(source.connection)}: choose another --to, or add --overwrite to replace it (a safety backup is taken first)`);
    }
    if (!request.force && !(await ctx.confirm(`This replaces database "${target}" on ${serverLabel(source.connection)} with backup ${manifest.id}. Type the database name to confirm:`, target))) {
      throw new PgkeepError('CONFIRMATION_REQUIRED', `not replacing database "${target}": confirm by typing its name, or pass --force when running without a terminal`);
    }
    ctx.info(`taking a safety backup of "${target}" before replacing it`);
    const safety = await runBackup(ctx, repository, safetySource(source, target), { name: 'pre-restore', labels: ['pre-restore'] });
    safetyBackup = `${safety.source}/${safety.id}`;
    ctx.info(`safety backup ${safety.id} (source ${safety.source}) written`);
  }

  // 3. a new, empty database
  const work = exists ? fitIdentifier(target, `_pgkeep_${timestampPart(new Date()).toLowerCase()}`) : target;
  await withClient(admin, async (client) => {
    const { localeKept } = await createDatabase(client, work, manifest.database);
    if (!localeKept) ctx.warn(`locale ${manifest.database.collate} of the backup is not available on this server: restored with the server's default locale`);
  });

  let swapped = false;
  try {
    // 4. load, checking checksums while streaming
    ctx.info(`restoring ${manifest.id} into "${work}"`);
    await createSelectedSchemas(manifest, withDatabase(source.connection, work));
    await loadBackup(ctx, repository, manifest, withDatabase(source.connection, work), request, source, identities);

    // 5. prove it: ANALYZE, then exact row counts against the manifest
    const tables = await withClient(withDatabase(source.connection, work), async (client) => {
      await client.query('ANALYZE');
      const expected = manifest.tables.filter((t) => t.rows !== null);
      const actual = await countRows(client, expected, signal);
      return expected.map((t, i) => ({ schema: t.schema, name: t.name, expected: t.rows!, actual: actual[i]!.rows }));
    });
    const wrong = tables.filter((t) => t.expected !== t.actual);
    if (wrong.length > 0) {
      const first = wrong[0]!;
      throw new PgkeepError('ROW_COUNT_MISMATCH', `restored table ${first.schema}.${first.name} has ${first.actual} rows where the backup recorded ${first.expected}${wrong.length > 1 ? ` (and ${wrong.length - 1} more tables differ)` : ''}`, {
        details: { tables: wrong },
      });
    }

    // 6. swap the new database into place
    if (exists) {
      throwIfAborted(signal);
      await swapDatabases(admin, target, work, safetyBackup!);
      swapped = true;
    }
    return {
      backup: { id: manifest.id, source: manifest.source },
      database: target,
      connection: describeConnection(source.connection, target),
      replaced: exists,
      safetyBackup,
      tables,
      durationMs: Date.now() - started,
    };
  } catch (error) {
    if (!swapped) {
      await withClient(admin, (client) => dropDatabase(client, work)).catch((dropError) =>
        ctx.warn(`could not drop the partly restored database "${work}": ${(dropError as Error).message}`),
      );
    }
    throw error;
  }
}

/**
 * Restore for a source with several repositories (no --repo): from the first
 * repository, in config order, that holds the backup ("latest": the newest in
 * any of them). If that copy fails its checksum check, the failed restore has
 * already dropped the database it created, and the next repository holding
 * the backup is tried; any other failure is final.
 */
export async function runRestoreFromRepositories(ctx: CommandContext, source: ResolvedSource, request: RestoreRequest): Promise<RestoreResult> {
  const candidates = await repositoriesWithBackup(ctx.settings, request.backup, source.name, 'logical');
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
async function createSelectedSchemas(manifest: Manifest, target: ConnectionInfo): Promise<void> {
  if (manifest.options.tables.length === 0) return;
  const schemas = [...new Set(manifest.tables.map((t) => t.schema))];
  await withClient(target, async (client) => {
    for (const schema of schemas) await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
  });
}

/** The safety backup goes to the source whose database it is, else to a source named after the database. */
function safetySource(source: ResolvedSource, database: string): ResolvedSource {
  const name = database === source.connection.database ? source.name : sourceNameForDatabase(database);
  return { ...source, name, connection: withDatabase(source.connection, database), backup: {} };
}

async function swapDatabases(admin: ConnectionInfo, target: string, work: string, safetyBackup: string): Promise<void> {
  const old = fitIdentifier(target, `_pgkeep_old_${timestampPart(new Date()).toLowerCase()}`);
  await withClient(admin, async (client) => {
    await renameDatabase(client, target, old);
    try {
      await renameDatabase(client, work, target);
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
async function feedChild(load: Promise<void>, child: Promise<void>): Promise<void> {
  const loadError = load.then(() => undefined, (error: unknown) => error);
  try {
    await settleAll([load, child]);
  } catch (error) {
    const damage = await loadError;
    throw isPgkeepError(damage, 'CHECKSUM_MISMATCH') ? damage : error;
  }
}

const RESTORE_ERROR_LINE = /error|ERROR|FATAL|detail|DETAIL|hint|HINT/;

async function loadBackup(
  ctx: CommandContext,
  repository: Repository,
  manifest: Manifest,
  target: ConnectionInfo,
  request: RestoreRequest,
  source: ResolvedSource,
  identities: AgeIdentity[],
): Promise<void> {
  const codec = defaultZstd();
  const signal = ctx.signal;
  const env = libpqEnv(target);
  const jobs = request.jobs ?? 1;
  const ownerArgs = request.noOwner ? ['--no-owner'] : [];
  const key = (name: string) => repository.objectKey(manifest.source, manifest.id, name);
  const progress = (done: number) => ctx.progress({ phase: 'restore', bytes: done, totalBytes: manifest.totals.rawBytes });
  const common = { env, signal, isErrorLine: (line: string) => RESTORE_ERROR_LINE.test(line) };

  if (manifest.options.format === 'plain') {
    // No --single-transaction: plain dumps carry their own BEGIN/COMMIT around
    // large objects, which would end it early. A failure drops the database instead.
    const psql = await toolInfo('psql', source.pgBin);
    const run = startProcess(psql.path, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-password', '-d', target.database, '-f', '-'], {
      ...common,
      stdin: 'pipe',
      stdout: 'ignore',
    });
    await feedChild(loadStream(repository.storage, key(manifest.objects[0]!.name), manifest.objects[0]!, childStdinSink(run.stdin!), { codec, signal, identities, onRawBytes: progress }), run.done);
    return;
  }

  const pgRestore = await toolInfo('pg_restore', source.pgBin);
  const baseArgs = ['--dbname', target.database, '--exit-on-error', '--no-password', ...ownerArgs];

  if (manifest.options.format === 'custom' && jobs <= 1) {
    // Stream straight into pg_restore: no temp space needed.
    const object = manifest.objects[0]!;
    const run = startProcess(pgRestore.path, baseArgs, { ...common, stdin: 'pipe', stdout: 'ignore' });
    await feedChild(loadStream(repository.storage, key(object.name), object, childStdinSink(run.stdin!), { codec, signal, identities, onRawBytes: progress }), run.done);
    return;
  }

  const staging = await mkdtemp(path.join(source.tempDir ?? tmpdir(), 'pgkeep-restore-'));
  try {
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
      const first = startProcess(pgRestore.path, [...baseArgs, '--section=pre-data', '--section=data'], { ...common, stdin: 'pipe', stdout: 'ignore' });
      const sink = teeSink(childStdinSink(first.stdin!), tocStagingSink(file));
      await feedChild(loadStream(repository.storage, key(object.name), object, sink, { codec, signal, identities, onRawBytes: progress }), first.done);
      throwIfAborted(signal);
      ctx.progress({ phase: 'pg_restore', bytes: manifest.totals.rawBytes, totalBytes: manifest.totals.rawBytes });
      await startProcess(pgRestore.path, [...baseArgs, '--section=post-data', `--jobs=${jobs}`, file], { ...common, stdout: 'ignore' }).done;
      return;
    }

    // A directory dump: pg_restore reads a directory, so stage every
    // decompressed, checksum-verified file in a private temp folder first.
    const input = path.join(staging, 'dump');
    let done = 0;
    await mkdir(input, { mode: 0o700 });
    for (const object of manifest.objects) {
      throwIfAborted(signal);
      const base = done;
      await loadStream(repository.storage, key(object.name), object, createWriteStream(path.join(input, object.file!), { mode: 0o600 }), {
        codec,
        identities,
        signal,
        onRawBytes: (n) => progress(base + n),
      });
      done += object.raw.size;
    }
    ctx.progress({ phase: 'pg_restore', bytes: manifest.totals.rawBytes, totalBytes: manifest.totals.rawBytes });
    await startProcess(pgRestore.path, [...baseArgs, `--jobs=${Math.max(1, jobs)}`, input], { ...common, stdout: 'ignore' }).done;
  } finally {
    await rm(staging, { recursive: true, force: true });
  }
}
