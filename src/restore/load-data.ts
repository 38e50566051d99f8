import { feedChild, RESTORE_ERROR_LINE } from './feed-child.js';
import { createWriteStream } from 'node:fs';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import * as path from 'node:path';
import type { ResolvedSource } from '../config/settings.js';
import { throwIfAborted } from '../errors.js';
import { tocStagingSink } from '../pipeline/custom-toc.js';
import { childStdinSink, teeSink } from '../pipeline/load-stream.js';
import { defaultZstd, type ZstdCodec } from '../pipeline/zstd.js';
import { runBuffers } from '../repository/content-store/content-store.js';
import { libpqEnv, type ConnectionInfo } from '../postgres/connection-info.js';
import { quoteIdent } from '../postgres/pg-client.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import { tocListFile, type SelectionPlan } from '../postgres/restore-plan.js';
import { SchemaCapture } from '../verify/schema-compare.js';
import { type LogicalManifest as Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { AgeIdentity } from '../pipeline/age.js';
import type { CommandContext } from '../registry/command-context.js';
import { makeTempFolder } from '../local/temp-folders.js';
import { defaultRestoreJobs, parallelCopyLoad, restorePgOptions, type ParallelLoadOptions } from './parallel-copy-loader.js';

/**
 * How the dump is loaded: the pg_restore options of the restore (a
 * RestoreRequest is one). `clean` loads into an existing database in one
 * transaction; `jobs` > 1 stages what pg_restore --jobs needs.
 */
export interface LoadDataOptions {
  jobs?: number | undefined;
  noOwner?: boolean | undefined;
  noAcl?: boolean | undefined;
  role?: string | undefined;
  schemaOnly?: boolean | undefined;
  dataOnly?: boolean | undefined;
  clean?: boolean | undefined;
}

/** What one load reads and where it goes. */
export interface LoadDataInput {
  repository: Repository;
  /** The backup: its objects are read through repository.loadObject (every checksum checked). */
  manifest: Manifest;
  identities: AgeIdentity[];
  /** The database the data goes into: empty (a new one), or the existing one with `clean`. */
  target: ConnectionInfo;
  options: LoadDataOptions;
  /** The tool folder (pg_restore, psql) and temp space. */
  source: Pick<ResolvedSource, 'pgBin' | 'tempDir'>;
  /** A selective restore: the pg_restore -L entries. */
  selection?: SelectionPlan | undefined;
  /** Keeps the backup's schema on the way, for the whole-schema proof. */
  capture?: SchemaCapture | undefined;
  /** Work beside the post-data section once the rows are in, where the rows are loaded by the parallel loader (parallel-copy-loader.ts). */
  besidePostData?: ((signal: AbortSignal) => Promise<void>) | undefined;
}

/** What a load tells about what it loaded. */
export interface LoadReport {
  /**
   * The rows the server reported loading into each table whose rows the
   * parallel loader's COPY sent into that table itself (COPY's command tag,
   * summed over the connections, each read after its commit): the server's
   * own count of the rows in it, checked against the rows the dump framed.
   * Empty when pg_restore loaded the rows; a table not listed is counted.
   */
  serverCounts: { schema: string; name: string; rows: number }[];
}

/**
 * The one place where a dump's contents are fed to the server: streams the
 * backup into `target` (pg_restore, or psql for plain dumps), checking every
 * checksum on the way. Used by restore (new database and --clean), extract's
 * scratch copy and verify --restore-test. A loader that feeds rows another
 * way (several COPY connections: parallel-copy-loader.ts) plugs in here, in
 * loadArchive, beside the pg_restore paths it replaces.
 */
export async function loadData(ctx: CommandContext, input: LoadDataInput): Promise<LoadReport> {
  const { repository, manifest, identities, target, options: request, source, selection, capture } = input;
  const codec = defaultZstd();
  const signal = ctx.signal;
  // --clean runs in one transaction, which pg_restore --jobs cannot share.
  const jobs = request.jobs ?? (request.clean ? 1 : defaultRestoreJobs());
  // The parallel row loader takes whole restores of a custom dump into a new database; a selection or --clean/--data-only/--schema-only goes through pg_restore alone.
  const parallelRows = manifest.options.format === 'custom' && jobs > 1 && !selection && !request.clean && !request.dataOnly && !request.schemaOnly;
  const base = libpqEnv(target);
  const env = parallelRows ? { ...base, PGOPTIONS: restorePgOptions(base.PGOPTIONS) } : base;
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
    await feedChild(repository.loadObject(manifest, manifest.objects[0]!, sink, { codec, signal, identities, onRawBytes: progress }), run);
    return { serverCounts: [] };
  }

  const staging = await makeTempFolder(source.tempDir, 'restore');
  try {
    const pgRestore = await restoreRunner(request, target, source, staging, selection, common);
    return await loadArchive(ctx, repository, manifest, identities, pgRestore, staging, jobs, progress, codec, selection, capture, parallelRows ? { target, role: request.role, besidePostData: input.besidePostData } : undefined);
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
  request: LoadDataOptions,
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
  progress: (done: number) => void,
  codec: ZstdCodec,
  selection: SelectionPlan | undefined,
  capture: SchemaCapture | undefined,
  parallelRows: Pick<ParallelLoadOptions, 'target' | 'role' | 'besidePostData'> | undefined,
): Promise<LoadReport> {
  const signal = ctx.signal;

  if (manifest.options.format === 'custom' && jobs <= 1) {
    // Stream straight into pg_restore: no temp space needed.
    const object = manifest.objects[0]!;
    const run = pgRestore([], true);
    // With a capture, the archive's header and TOC are kept on the way (a few KB) for the schema comparison.
    // A run the content store decompressed into one of its pooled buffers goes back to it once the pipe has
    // taken it (the capture keeps copies of what it holds: tocStagingSink).
    const toChild = childStdinSink(run.stdin!, (piece) => runBuffers.owns(piece) && runBuffers.give(piece));
    const sink = capture ? teeSink(toChild, capture.customSink()) : toChild;
    await feedChild(repository.loadObject(manifest, object, sink, { codec, signal, identities, onRawBytes: progress }), run);
    return { serverCounts: [] };
  }

  if (manifest.options.format === 'custom' && parallelRows) {
    // The rows of every table spread over --jobs COPY connections (parallel-copy-loader.ts);
    // pre-data before them, post-data after them with pg_restore --jobs.
    const object = manifest.objects[0]!;
    const loaded = await parallelCopyLoad(
      (sink) => repository.loadObject(manifest, object, capture ? teeSink(sink, capture.customSink()) : sink, { codec, signal, identities, onRawBytes: progress }),
      {
        ...parallelRows,
        jobs,
        staging,
        signal,
        pgRestore,
        onPhase: (phase) => phase === 'post-data' && ctx.progress({ phase: 'pg_restore', bytes: manifest.totals.rawBytes, totalBytes: manifest.totals.rawBytes }),
        // a run the content store decompressed into one of its pooled buffers goes back to it (memory: docs/benchmarks.md, "Restore memory, session 12")
        recycle: (piece) => runBuffers.owns(piece) && runBuffers.give(piece),
      },
    );
    if (loaded.mode === 'staged') ctx.warn(`rows loaded by pg_restore on one connection: ${loaded.reason}`);
    return { serverCounts: loaded.tables.flatMap((t) => (t.direct && t.schema !== null ? [{ schema: t.schema, name: t.name, rows: t.rows }] : [])) };
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
    await feedChild(repository.loadObject(manifest, object, sink, { codec, signal, identities, onRawBytes: progress }), first);
    throwIfAborted(signal);
    ctx.progress({ phase: 'pg_restore', bytes: manifest.totals.rawBytes, totalBytes: manifest.totals.rawBytes });
    await pgRestore(['--section=post-data', `--jobs=${jobs}`, file], false).done;
    await capture?.keepCustom(file);
    return { serverCounts: [] };
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
    await repository.loadObject(manifest, object, createWriteStream(path.join(input, object.file!), { mode: 0o600 }), {
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
  return { serverCounts: [] };
}
