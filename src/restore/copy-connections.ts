import { finished } from 'node:stream/promises';
import { from as copyFrom, type CopyStreamQuery } from 'pg-copy-streams';
import { PgkeepError } from '../errors.js';
import type { ConnectionInfo } from '../postgres/connection-info.js';
import { connect, quoteIdent, type PgClient } from '../postgres/pg-client.js';

/** A table whose rows the connections load: its COPY statement from the archive, and its name for messages. */
export interface CopyTarget {
  schema: string | null;
  name: string;
  /** `COPY schema.table (columns) FROM stdin;` as pg_dump wrote it. */
  copyStmt: string;
}

export interface CopyConnectionsOptions {
  target: ConnectionInfo;
  /** SQL run first on every connection: the archive's own session entries (encoding, standard strings, search path). */
  sessionSql: readonly string[];
  /** Settings for the load (name → value), e.g. synchronous_commit. */
  settings: Readonly<Record<string, string>>;
  role?: string | undefined;
  signal: AbortSignal;
}

/** What each table received: rows sent, and rows the server reported loading (COPY's command tag), summed over the connections. */
export interface LoadedTable {
  target: CopyTarget;
  sent: number;
  loaded: number;
  /** How many connections loaded a part of it. */
  connections: number;
}

interface Batch {
  target: CopyTarget;
  data: Buffer;
  rows: number;
  /** Called once the COPY has taken `data` (written to the connection): its buffer may be reused. */
  written?: (() => void) | undefined;
}

/**
 * Several connections, each running its own COPY … FROM STDIN, fed batches
 * of whole rows: a batch goes to the connection with the least queued, so a
 * big table is loaded by all of them at once, and small tables by different
 * ones side by side. A connection keeps its COPY open while it gets batches
 * of the same table, and ends it (one commit) when the next batch is for
 * another table. The first failure stops every connection (closing a
 * connection mid-COPY rolls its COPY back) and is what `failure` holds.
 */
export class CopyConnections {
  private readonly workers: Worker[] = [];
  private readonly tables = new Map<CopyTarget, LoadedTable>();
  private waiters: (() => void)[] = [];
  failure: Error | undefined;
  private closed = false;

  private constructor(private readonly options: CopyConnectionsOptions) {}

  static async open(count: number, options: CopyConnectionsOptions): Promise<CopyConnections> {
    const pool = new CopyConnections(options);
    const clients = await Promise.allSettled(Array.from({ length: count }, () => pool.session()));
    for (const c of clients) if (c.status === 'fulfilled') pool.workers.push(new Worker(c.value));
    const failed = clients.find((c): c is PromiseRejectedResult => c.status === 'rejected');
    if (failed) {
      await pool.close();
      throw failed.reason;
    }
    return pool;
  }

  /** Bytes handed on and not loaded yet. */
  get queuedBytes(): number {
    return this.workers.reduce((n, w) => n + w.queued, 0);
  }

  /** Queues a batch on the least busy connection; `written` is called once the connection has taken the bytes (never after a failure). */
  send(target: CopyTarget, data: Buffer, rows: number, written?: () => void): void {
    if (this.failure) return;
    let table = this.tables.get(target);
    if (!table) this.tables.set(target, (table = { target, sent: 0, loaded: 0, connections: 0 }));
    table.sent += rows;
    // Least queued; on a tie, the one already copying into this table (no extra COPY to start).
    let best = this.workers[0]!;
    for (const w of this.workers) if (w.queued < best.queued || (w.queued === best.queued && w.copying === target && best.copying !== target)) best = w;
    best.queued += data.length;
    best.tail = best.tail.then(() => this.load(best, { target, data, rows, written }));
  }

  /** Resolves once fewer than `bytes` are queued, or a connection failed. */
  async drainBelow(bytes: number): Promise<void> {
    while (!this.failure && this.queuedBytes >= bytes) await new Promise<void>((resolve) => this.waiters.push(resolve));
  }

  /** Waits for every batch, ends every COPY, closes the connections; rejects with the first failure. */
  async finish(): Promise<LoadedTable[]> {
    await Promise.all(this.workers.map((w) => w.tail));
    if (!this.failure) await Promise.all(this.workers.map((w) => this.endCopy(w).catch((error: unknown) => this.fail(error))));
    await this.close();
    if (this.failure) throw this.failure;
    return [...this.tables.values()];
  }

  /** Stops everything at once: closing a connection rolls back its open COPY. Safe to call more than once. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    await Promise.all(
      this.workers.map(async (w) => {
        // Ending the connection is enough: the server rolls back a COPY whose connection goes away.
        await w.client.end().catch(() => undefined);
      }),
    );
    this.wake();
  }

  private async session(): Promise<PgClient> {
    const client = await connect(this.options.target, this.options.signal);
    try {
      for (const sql of this.options.sessionSql) await client.query(sql);
      // What pg_restore sets on its connections (_doSetFixedOutputState), so values load the same way.
      const settings: Record<string, string> = {
        statement_timeout: '0',
        lock_timeout: '0',
        idle_in_transaction_session_timeout: '0',
        xmloption: 'content',
        client_min_messages: 'warning',
        row_security: 'off',
        ...this.options.settings,
      };
      for (const [name, value] of Object.entries(settings)) await client.query('SELECT pg_catalog.set_config($1, $2, false)', [name, value]);
      if (this.options.role) await client.query(`SET ROLE ${quoteIdent(this.options.role)}`);
      return client;
    } catch (error) {
      await client.end().catch(() => undefined);
      throw error;
    }
  }

  private async load(worker: Worker, batch: Batch): Promise<void> {
    try {
      if (this.failure || this.closed) return;
      if (worker.copying !== batch.target) {
        await this.endCopy(worker);
        const stream = worker.client.query(copyFrom(batch.target.copyStmt.replace(/;\s*$/, '')));
        // The server's error (a row refused) arrives as an event, possibly between two writes, and a
        // write after it fails for want of a connection: the first one is the cause to report.
        worker.streamError = undefined;
        stream.on('error', (error: Error) => (worker.streamError ??= error));
        worker.stream = stream;
        worker.copying = batch.target;
        this.tables.get(batch.target)!.connections++;
      }
      const stream = worker.stream!;
      if (worker.streamError) throw worker.streamError;
      // The batch is taken when the COPY stream has called back for it (it handed the bytes to the socket; not when
      // write() returns true: a batch smaller than the stream's high-water mark is only queued then, e.g. before the
      // server's CopyInResponse) and nothing waits on the socket: it may still hold the write (seen for 1 batch in 4).
      // The socket writes in order, so once it has nothing left every batch called back before is written too.
      // After an error (the callback's, or the COPY's) the buffers are left alone: they may still be queued somewhere.
      const written = batch.written;
      const socket = worker.client.connection.stream;
      const taken =
        written &&
        ((error?: Error | null) => {
          if (error || worker.streamError || stream.destroyed) return;
          worker.unwritten.push(written);
          if (socket.writableLength > 0) return;
          for (const done of worker.unwritten.splice(0)) done();
        });
      if (!stream.write(batch.data, taken || undefined)) await drained(stream);
    } catch (error) {
      // An error from ending the previous COPY (endCopy) carries its own table; fail() prefers it.
      this.fail(worker.streamError ?? error, worker.copying ?? batch.target);
    } finally {
      worker.queued -= batch.data.length;
      this.wake();
    }
  }

  private async endCopy(worker: Worker): Promise<void> {
    const { stream, copying } = worker;
    if (!stream || !copying) return;
    worker.stream = undefined;
    worker.copying = undefined;
    stream.end();
    try {
      if (worker.streamError) throw worker.streamError;
      await finished(stream);
    } catch (error) {
      throw Object.assign(worker.streamError ?? (error as Error), { copyTarget: copying });
    }
    this.tables.get(copying)!.loaded += stream.rowCount;
  }

  /**
   * Records the first failure, named after the table whose COPY failed. A COPY's error may only arrive when
   * it ends: with the next table's batch, or in finish() after the last batch, where no batch names a table;
   * endCopy() tags such an error with its COPY's table (copyTarget), which wins over the caller's guess.
   */
  private fail(error: unknown, target?: CopyTarget): void {
    if (this.failure) return;
    target = (error as { copyTarget?: CopyTarget } | undefined)?.copyTarget ?? target;
    const where = target ? ` into ${target.schema === null ? '' : `${target.schema}.`}${target.name}` : '';
    this.failure =
      error instanceof PgkeepError ? error : new PgkeepError('RESTORE_FAILED', `COPY${where} failed: ${(error as Error).message}`, { cause: error });
    void this.close();
  }

  private wake(): void {
    const waiters = this.waiters;
    this.waiters = [];
    for (const w of waiters) w();
  }
}

class Worker {
  queued = 0;
  tail: Promise<void> = Promise.resolve();
  stream: CopyStreamQuery | undefined;
  /** The first error of the current COPY. */
  streamError: Error | undefined;
  copying: CopyTarget | undefined;
  /** Batches the COPY stream called back for while the socket still held bytes: given back once it holds none. */
  readonly unwritten: (() => void)[] = [];
  constructor(readonly client: PgClient) {}
}

/** Waits for a COPY stream to take more (or to end: then the next write or its end reports why). */
function drained(stream: CopyStreamQuery): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (error?: Error) => {
      stream.off('drain', onDrain).off('close', onDrain).off('error', done);
      if (error) reject(error);
      else resolve();
    };
    const onDrain = () => done();
    stream.on('drain', onDrain).on('close', onDrain).on('error', done);
  });
}
