import type { ConnectionInfo } from '../postgres/connection-info.js';
import { connect, type PgClient } from '../postgres/pg-client.js';
import { analyzeWithoutWaiting, plainTables } from './analyze-database.js';

/**
 * ANALYZE of each table as soon as its rows are committed, on one connection
 * of its own, while the parallel loader goes on with the next tables.
 *
 * Why not only beside post-data (analyzeLoadedTables): ANALYZE and an index
 * build on the same table wait for each other (SHARE UPDATE EXCLUSIVE against
 * CREATE INDEX's SHARE and ALTER TABLE's ACCESS EXCLUSIVE), so on a table that
 * is most of the database an ANALYZE at the start of post-data was in series
 * with its index builds (docs/benchmarks.md, "fourth round"). During the rows
 * phase nothing else locks a loaded table.
 *
 * Best effort, like the pass beside post-data: a table it could not take at
 * once, or any failure, is left to the later passes (which report what fails
 * there). Only the plain tables analyzeLoadedTables would take. `finish()`
 * stops taking tables, waits for the ANALYZE under way and closes the
 * connection; it must be awaited before the database may be dropped.
 */
export class TableAnalyzer {
  /** Tables analyzed, as format('%I.%I') writes them. */
  readonly analyzed = new Set<string>();
  private readonly queue: { schema: string; name: string }[] = [];
  private running: Promise<void> | undefined;
  private stopped = false;
  private client: PgClient | undefined;
  private eligible: Map<string, string> | undefined;

  constructor(
    private readonly into: ConnectionInfo,
    private readonly signal: AbortSignal,
  ) {}

  /** A table whose rows are all committed. */
  loaded(table: { schema: string; name: string }): void {
    if (this.stopped) return;
    this.queue.push(table);
    this.running ??= this.drain();
  }

  /** Stops taking tables and resolves once nothing runs and the connection is closed. */
  async finish(): Promise<void> {
    this.stopped = true;
    while (this.running) await this.running;
    await this.client?.end().catch(() => undefined);
    this.client = undefined;
  }

  private async drain(): Promise<void> {
    try {
      this.client ??= await connect(this.into, this.signal);
      const client = this.client;
      this.eligible ??= new Map((await plainTables(client)).map((t) => [JSON.stringify([t.schema, t.table]), t.name]));
      for (let next = this.queue.shift(); next && !this.stopped && !this.signal.aborted; next = this.queue.shift()) {
        const name = this.eligible.get(JSON.stringify([next.schema, next.name]));
        if (name && (await analyzeWithoutWaiting(client, name))) this.analyzed.add(name);
      }
    } catch {
      // refused, dropped, cancelled: the later passes analyze the rest
      this.stopped = true;
    }
    if (this.stopped || this.signal.aborted) {
      await this.client?.end().catch(() => undefined);
      this.client = undefined;
      this.running = undefined;
      return;
    }
    // tables that came while the last ANALYZE ran are in the queue: go on; else wait for the next one with the connection open
    this.running = this.queue.length > 0 ? this.drain() : undefined;
  }
}
