import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { finished, pipeline } from 'node:stream/promises';
import { abortError, PgkeepError } from '../errors.js';
import { CustomTocScanner, K_VERS_1_15, readArchiveToc, SESSION_DESCS, type TocEntry } from '../pipeline/custom-toc.js';
import type { ConnectionInfo } from '../postgres/connection-info.js';
import { ArchiveDataSplitter } from './archive-data-splitter.js';
import { copyStatementTable } from './copy-statement-table.js';
import { CopyConnections, type CopyTarget, type LoadedTable } from './copy-connections.js';

/** Past this many connections a restore gains little and takes connection slots from the applications. */
export const MAX_DEFAULT_JOBS = 8;

/** --jobs when not given: one per core, at most MAX_DEFAULT_JOBS. */
export function defaultRestoreJobs(cores = availableParallelism()): number {
  return Math.max(1, Math.min(cores, MAX_DEFAULT_JOBS));
}

/** A pg_restore run with the restore's own options (owner, privileges, role), into the target, reading a file named in `args` or its stdin. */
export type PgRestoreStarter = (args: string[], stdin: boolean) => { stdin: Writable | null; done: Promise<void>; stop(): void };

export interface ParallelLoadOptions {
  target: ConnectionInfo;
  jobs: number;
  /** A private folder: the archive's header and TOC, and the data blocks pg_restore loads, are staged there. */
  staging: string;
  pgRestore: PgRestoreStarter;
  role?: string | undefined;
  signal: AbortSignal;
  /** Settings of the COPY sessions (name → value); see RESTORE_COPY_SETTINGS. */
  copySettings?: Readonly<Record<string, string>> | undefined;
  /** Rows are handed to the connections in batches of about this many bytes. */
  batchBytes?: number | undefined;
  onPhase?: ((phase: 'pre-data' | 'rows' | 'post-data') => void) | undefined;
  /**
   * Called with each piece of the fed stream the loader is done with (its rows copied out, nothing of it
   * kept): the feed may reuse its buffer. Not called for the pieces before the rows (the head, which a
   * schema capture beside the loader may still be writing) nor for any of which a part is kept.
   */
  recycle?: ((piece: Buffer) => void) | undefined;
  /**
   * Started beside the post-data section once every row is in (restore runs
   * ANALYZE of the loaded tables there); its signal stops it when the load
   * fails, and the load returns only once it has settled.
   */
  besidePostData?: ((signal: AbortSignal) => Promise<void>) | undefined;
}

/**
 * What the server does less of while rows load (docs/benchmarks.md, "Restore
 * speed", has the measurements): no wait for a WAL flush at each commit. A
 * crash mid-restore loses nothing that matters: the half-made database is
 * dropped. maintenance_work_mem for the index builds was measured and did
 * not pay at the sizes measured; COPY FREEZE needs the table created or
 * emptied in the COPY's own transaction, which rows spread over several
 * connections cannot share.
 */
export const RESTORE_COPY_SETTINGS: Readonly<Record<string, string>> = { synchronous_commit: 'off' };

/** The same settings for the pg_restore runs of a parallel load (pre-data commits each statement), as PGOPTIONS. */
export function restorePgOptions(inherited: string | undefined): string {
  return [inherited, ...Object.entries(RESTORE_COPY_SETTINGS).map(([name, value]) => `-c ${name}=${value}`)].filter(Boolean).join(' ');
}

/** Rows go to the connections in batches of this size: big enough to keep a COPY busy, small enough to spread a table and keep memory flat. */
export const DEFAULT_BATCH_BYTES = 256 << 10;

export interface ParallelLoadResult {
  /** parallel: rows went through the COPY connections; staged: the archive was not one the loader reads, pg_restore loaded it from the staged file. */
  mode: 'parallel' | 'staged';
  /** Why the archive was staged instead. */
  reason?: string | undefined;
  /**
   * Tables loaded by the connections, with rows sent and loaded (equal: checked) and the number of connections that loaded a part.
   * `direct`: the COPY named the table itself (not a partition root, as --load-via-partition-root writes), so `rows` is
   * the server's own count of the rows now in it (COPY's command tag, read once the commit is done).
   */
  tables: { schema: string | null; name: string; rows: number; connections: number; direct: boolean }[];
  /** Data entries left to pg_restore (large objects, sequence values, anything without a COPY statement). */
  pgRestoreEntries: number;
  /** The staged archive: header and TOC (and the blocks pg_restore loads), e.g. for a schema capture. */
  file: string;
  ms: { preData: number; rows: number; postData: number };
}

/**
 * Loads a custom-format archive into an empty database, with the rows of
 * each table spread over `jobs` connections (pg_restore loads a table on one):
 *
 *  1. the archive streams in (`feed` pipes it, checked, into the sink given):
 *     its header and TOC are staged in a file, and the pre-data section
 *     (types, tables, functions) is created from it with pg_restore before
 *     any row is read
 *  2. the rows of every TABLE DATA entry go, in batches of whole rows, to
 *     the COPY connections; every other data block (large objects, anything
 *     without a COPY statement) is appended to the staged file
 *  3. once the stream has ended (every checksum matched), the rows each
 *     connection loaded are checked against the rows sent; pg_restore loads
 *     the rest of the data section from the staged file (sequence values,
 *     large objects), then builds the post-data section (indexes,
 *     constraints, triggers) with --jobs
 *
 * An archive the loader does not read (compressed, a layout it does not
 * know) is staged whole and loaded by pg_restore as before. Any failure
 * stops every connection and rejects; the caller drops the database.
 */
export async function parallelCopyLoad(feed: (sink: Writable) => Promise<void>, options: ParallelLoadOptions): Promise<ParallelLoadResult> {
  const file = path.join(options.staging, 'archive');
  const sink = new ParallelLoadSink(file, options);
  try {
    await feed(sink);
  } catch (error) {
    await sink.abandon();
    throw error;
  }
  if (options.signal.aborted) throw abortError(options.signal);
  if (sink.failure) throw sink.failure;
  const started = Date.now();
  options.onPhase?.('post-data');
  const jobs = `--jobs=${Math.max(1, options.jobs)}`;
  if (sink.mode === 'staged') {
    // The whole archive is in the file: pre-data and data from it in one pass, then post-data in parallel.
    await options.pgRestore(['--section=pre-data', '--section=data', file], false).done;
    await options.pgRestore(['--section=post-data', jobs, file], false).done;
    return { mode: 'staged', reason: sink.reason, tables: [], pgRestoreEntries: 0, file, ms: { preData: 0, rows: 0, postData: Date.now() - started } };
  }
  const rest = sink.pgRestoreData();
  if (rest.length > 0) {
    const list = path.join(options.staging, 'data.list');
    await writeFile(list, rest.map((e) => `${e.dumpId}; ${e.desc}\n`).join(''), { mode: 0o600 });
    // Through stdin, not from the file: an archive pg_dump wrote to a file records where each data block
    // was in it, which is not where it is in the staged file; read as a stream, pg_restore looks for each block.
    const run = options.pgRestore(['--section=data', `--use-list=${list}`], true);
    const piping = pipeline(createReadStream(file), run.stdin!).catch(() => undefined);
    try {
      await run.done;
    } finally {
      await piping;
    }
  }
  await besidePostData(options, () => options.pgRestore(['--section=post-data', jobs, file], false).done);
  return {
    mode: 'parallel',
    tables: sink.loaded.map((t) => ({ schema: t.target.schema, name: t.target.name, rows: t.loaded, connections: t.connections, direct: namesItself(t.target) })),
    pgRestoreEntries: rest.length,
    file,
    ms: { preData: sink.ms.preData, rows: sink.ms.rows, postData: Date.now() - started },
  };
}

/** Runs post-data with options.besidePostData beside it: both settle before this does; a post-data failure stops the other. */
async function besidePostData(options: ParallelLoadOptions, postData: () => Promise<void>): Promise<void> {
  if (!options.besidePostData) return postData();
  const stop = new AbortController();
  const onAbort = () => stop.abort(options.signal.reason);
  options.signal.addEventListener('abort', onAbort, { once: true });
  const beside = options.besidePostData(stop.signal);
  try {
    await postData();
  } catch (error) {
    stop.abort(error);
    await beside.catch(() => undefined);
    throw error;
  } finally {
    options.signal.removeEventListener('abort', onAbort);
  }
  await beside;
}

/** Whether a table's COPY statement writes into that table itself. */
function namesItself(target: CopyTarget): boolean {
  const named = copyStatementTable(target.copyStmt);
  return named !== undefined && named[0] === target.schema && named[1] === target.name;
}

/** What the archive's header says: its integer size, and whether its data is compressed. */
function archiveHeader(head: Buffer): { intSize: number; compressed: boolean } {
  const archiveVersion = (head[5]! * 256 + head[6]!) * 256 + head[7]!;
  const intSize = head[8]!;
  // 1.15 (PostgreSQL 16) and later: one byte naming the algorithm; before: the zlib level as an int. 0: none.
  if (archiveVersion >= K_VERS_1_15) return { intSize, compressed: head[11] !== 0 };
  let level = 0;
  for (let i = intSize; i >= 1; i--) level = level * 256 + head[11 + i]!;
  // -1 (zlib's default level) is compressed too: any level but 0.
  return { intSize, compressed: level !== 0 };
}

/** The writable end of the loader: parses the head, runs pre-data, splits the blocks, feeds the connections. */
class ParallelLoadSink extends Writable {
  mode: 'head' | 'parallel' | 'staged' = 'head';
  reason: string | undefined;
  loaded: LoadedTable[] = [];
  readonly ms = { preData: 0, rows: 0 };
  private scanner = new CustomTocScanner();
  private prefix: Buffer[] = [];
  private prefixLength = 0;
  private readonly out: WriteStream;
  private readonly file: string;
  private entries: TocEntry[] = [];
  private readonly targets = new Map<number, CopyTarget>();
  private splitter: ArchiveDataSplitter | undefined;
  private connections: CopyConnections | undefined;
  private running: { stop(): void } | undefined;
  private rowsStarted = 0;

  constructor(
    file: string,
    private readonly options: ParallelLoadOptions,
  ) {
    super({ highWaterMark: 1 << 20 });
    this.file = file;
    this.out = createWriteStream(file, { mode: 0o600, highWaterMark: 1 << 20 });
    // A write that fails rejects in stage(); this keeps a late error (after abandon) from going unheard.
    this.out.on('error', (error) => void (this.failure ??= error));
  }

  /** The data entries pg_restore loads after the rows: all but the TABLE DATA the connections loaded. */
  pgRestoreData(): TocEntry[] {
    return this.entries.filter((e) => e.section === 3 && !this.targets.has(e.dumpId));
  }

  /**
   * The first failure of the load (a COPY, pre-data, the file). The sink then
   * stops loading but takes the rest of the stream without error, so the
   * checksums upstream still judge every byte: damaged content is reported as
   * such (CHECKSUM_MISMATCH, which lets a restore try another repository),
   * not as the COPY error it caused, as feedChild does for pg_restore.
   */
  failure: Error | undefined;

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    if (this.failure) return callback();
    // Only a chunk split while the rows load can be given back: one read before (the head, up to the end of
    // the TOC) is kept in part, and a restore's schema capture (a tee beside this sink) writes it to a file.
    const splitting = this.mode === 'parallel';
    this.take(chunk).then(
      () => {
        // Its rows were copied out as they were split: the feed may reuse its buffer (a run of the content store),
        // unless blocks staged for pg_restore (large objects) keep a part of it until written.
        if (splitting && !this.passedAny) this.options.recycle?.(chunk);
        callback();
      },
      (error: unknown) => this.failed(error).then(() => callback()),
    );
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.failure) return callback();
    this.finish().then(
      () => callback(),
      (error: unknown) => this.failed(error).then(() => callback()),
    );
  }

  private async failed(error: unknown): Promise<void> {
    this.failure ??= error instanceof Error ? error : new Error(String(error));
    await this.abandon();
  }

  override _destroy(error: Error | null, callback: (error?: Error | null) => void): void {
    this.abandon().then(() => callback(error), () => callback(error));
  }

  /** Stops what runs (pre-data, the connections) and closes the file; the caller drops the database. */
  async abandon(): Promise<void> {
    this.running?.stop();
    await this.connections?.close();
    if (!this.out.closed) {
      this.out.destroy();
      await finished(this.out).catch(() => undefined);
    }
  }

  private async take(chunk: Buffer): Promise<void> {
    if (this.mode === 'staged') return this.stage(chunk);
    if (this.mode === 'parallel') return this.split(chunk);
    this.scanner.push(chunk);
    this.prefix.push(chunk);
    this.prefixLength += chunk.length;
    const scan = this.scanner.scan;
    if (scan.state === 'unsupported') return this.stageAll(scan.reason);
    if (scan.state === 'found') await this.start(scan.end);
  }

  private async finish(): Promise<void> {
    if (this.mode === 'head') {
      const scan = this.scanner.end();
      // An archive without any data block: the TOC is all there is.
      if (scan.state === 'found') await this.start(scan.end);
      else await this.stageAll(scan.state === 'unsupported' ? scan.reason : 'the archive ended inside its table of contents');
    }
    if (this.mode === 'parallel') {
      try {
        this.splitter!.end();
      } catch (error) {
        throw this.layoutError(error);
      }
      this.loaded = await this.connections!.finish();
      this.ms.rows = Date.now() - this.rowsStarted;
      const wrong = this.loaded.find((t) => t.loaded !== t.sent);
      if (wrong) {
        throw new PgkeepError('RESTORE_FAILED', `table ${wrong.target.schema}.${wrong.target.name}: the server loaded ${wrong.loaded} rows of the ${wrong.sent} sent`);
      }
    }
    this.out.end();
    await finished(this.out);
  }

  /** The archive is not one the loader reads: all of it goes to the file, for pg_restore. */
  private async stageAll(reason: string): Promise<void> {
    this.mode = 'staged';
    this.reason = reason;
    const prefix = Buffer.concat(this.prefix, this.prefixLength);
    this.prefix = [];
    await this.stage(prefix);
  }

  /** Header and TOC read: stage them, create the pre-data section, open the connections, then split what follows. */
  private async start(end: number): Promise<void> {
    const bytes = Buffer.concat(this.prefix, this.prefixLength);
    this.prefix = [];
    const head = bytes.subarray(0, end);
    const { intSize, compressed } = archiveHeader(head);
    if (compressed) {
      this.prefix = [bytes];
      this.prefixLength = bytes.length;
      return this.stageAll('the archive is compressed');
    }
    this.entries = readArchiveToc(head);
    for (const e of this.entries) {
      if (e.desc === 'TABLE DATA' && e.hasData && e.copyStmt && /^COPY .* FROM stdin;\s*$/s.test(e.copyStmt)) this.targets.set(e.dumpId, { schema: e.namespace, name: e.tag, copyStmt: e.copyStmt });
    }
    await this.stage(head);
    // The file must hold the TOC before pg_restore reads it.
    await new Promise<void>((resolve, reject) => this.out.write(Buffer.alloc(0), (error) => (error ? reject(error) : resolve())));

    const started = Date.now();
    this.options.onPhase?.('pre-data');
    const preData = this.options.pgRestore(['--section=pre-data', this.file], false);
    this.running = preData;
    await preData.done;
    this.running = undefined;
    this.ms.preData = Date.now() - started;

    this.options.onPhase?.('rows');
    this.rowsStarted = Date.now();
    const sessionSql = this.entries.filter((e) => SESSION_DESCS.has(e.desc) && e.defn).map((e) => e.defn!);
    const count = Math.max(1, Math.min(this.options.jobs, this.targets.size));
    this.connections = await CopyConnections.open(count, {
      target: this.options.target,
      sessionSql,
      settings: this.options.copySettings ?? RESTORE_COPY_SETTINGS,
      role: this.options.role,
      signal: this.options.signal,
    });
    this.mode = 'parallel';
    const connections = this.connections;
    const passed: Buffer[] = [];
    this.passed = passed;
    const splitter = new ArchiveDataSplitter(
      intSize,
      (dumpId) => this.targets.has(dumpId),
      {
        pass: (b) => passed.push(b),
        // a batch's buffer goes back to the splitter's pool once its connection has written it
        rows: (dumpId, data, rows) => connections.send(this.targets.get(dumpId)!, data, rows, () => splitter.recycle(data)),
      },
      this.options.batchBytes ?? DEFAULT_BATCH_BYTES,
    );
    this.splitter = splitter;
    await this.split(bytes.subarray(end));
  }

  private passed: Buffer[] = [];

  /** Whether the last chunk split passed bytes on to the staged file (held until written there). */
  private passedAny = false;

  private async split(chunk: Buffer): Promise<void> {
    try {
      this.splitter!.push(chunk);
    } catch (error) {
      throw this.layoutError(error);
    }
    this.passedAny = this.passed.length > 0;
    if (this.passed.length > 0) {
      const passed = this.passed.splice(0);
      for (const b of passed) await this.stage(b);
    }
    const connections = this.connections!;
    // Backpressure: at most two batches per connection wait; the stream waits meanwhile.
    await connections.drainBelow(Math.max(1, this.options.jobs) * 2 * (this.options.batchBytes ?? DEFAULT_BATCH_BYTES));
    if (connections.failure) throw connections.failure;
  }

  private layoutError(error: unknown): PgkeepError {
    return new PgkeepError('RESTORE_FAILED', `the archive's data is not laid out as expected (${(error as Error).message})`, { cause: error });
  }

  private stage(bytes: Buffer): Promise<void> {
    if (bytes.length === 0) return Promise.resolve();
    return new Promise((resolve, reject) => {
      if (this.out.write(bytes)) return resolve();
      const onError = (error: Error) => reject(error);
      this.out.once('error', onError);
      this.out.once('drain', () => {
        this.out.off('error', onError);
        resolve();
      });
    });
  }
}
