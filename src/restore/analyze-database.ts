import { throwIfAborted } from '../errors.js';
import type { ConnectionInfo } from '../postgres/connection-info.js';
import { withClient, type PgClient } from '../postgres/pg-client.js';

/**
 * ANALYZE every relation a database-wide `ANALYZE` would (tables, partitioned
 * tables and materialized views, system catalogs included; not foreign tables,
 * not other sessions' temporary tables), biggest first, on up to `jobs`
 * connections at once, as `vacuumdb --analyze-only --jobs` does. On a freshly
 * restored database ANALYZE reads most pages of every table (its sample is
 * 30,000 pages per table at the default statistics target) and sets their
 * hint bits: one statement on one connection took 1.6-3.1 s of a 200 MB
 * restore (docs/benchmarks.md, "Restore speed"); side by side the tables share
 * the cores. `analyzedEarly` (analyzeLoadedTables, beside post-data) are
 * skipped, unless post-data gave them an expression index or extended statistics.
 */
export async function analyzeDatabase(into: ConnectionInfo, jobs: number, signal: AbortSignal, analyzedEarly: ReadonlySet<string> = new Set()): Promise<void> {
  const relations = await withClient(
    into,
    async (client) =>
      (
        await client.query<{ name: string; again: boolean }>(
          `SELECT format('%I.%I', n.nspname, c.relname) AS name,
                  EXISTS (SELECT 1 FROM pg_catalog.pg_index i WHERE i.indrelid = c.oid AND i.indexprs IS NOT NULL)
                  OR EXISTS (SELECT 1 FROM pg_catalog.pg_statistic_ext s WHERE s.stxrelid = c.oid) AS again
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
            ORDER BY c.relpages DESC, c.oid`,
        )
      ).rows.filter((r) => r.again || !analyzedEarly.has(r.name)).map((r) => r.name),
    signal,
  );
  // a failure stops the others after their current table, and is the pass's
  const failure = await onConnections(into, jobs, relations, signal, { stopOthers: true }, async (client, name) => {
    await client.query(`ANALYZE ${name}`);
  });
  if (failure) throw failure.error;
}

/**
 * ANALYZE, while the post-data section is built, the plain tables whose rows
 * are all in (docs/benchmarks.md, "third round": on 2 cores this filled the
 * idle share of `pg_restore -j`'s index builds). Best effort; the final
 * analyzeDatabase pass analyzes whatever this did not, and again every table
 * that post-data gave an expression index or extended statistics (their
 * statistics need the index or statistics object to exist). Resolves with
 * the tables analyzed.
 *
 * Each table is analyzed in its own transaction after `LOCK TABLE … NOWAIT`
 * in ANALYZE's own lock mode: a table whose index pg_restore is building
 * (CREATE INDEX conflicts with ANALYZE) is skipped, not waited for, so this
 * pass never waits on pg_restore; pg_restore may wait for one ANALYZE. Only
 * plain tables: a partitioned or inheritance tree's ANALYZE also locks its
 * other members. Any failure of a table (no privilege, a lock taken first)
 * leaves it to the final pass, which reports what fails there as before.
 */
export async function analyzeLoadedTables(into: ConnectionInfo, jobs: number, signal: AbortSignal): Promise<Set<string>> {
  const analyzed = new Set<string>();
  const relations = await withClient(
    into,
    async (client) =>
      (
        await client.query<{ name: string }>(
          `SELECT format('%I.%I', n.nspname, c.relname) AS name
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind = 'r' AND c.relpersistence <> 't' AND NOT c.relispartition
              AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'
              AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_inherits i WHERE i.inhrelid = c.oid OR i.inhparent = c.oid)
            ORDER BY pg_catalog.pg_relation_size(c.oid) DESC, c.oid`,
        )
      ).rows.map((r) => r.name),
    signal,
  );
  // a connection that fails (refused, dropped) ends its share of the pass, and cancelling ends it all: the final pass does the rest
  await onConnections(into, jobs, relations, signal, { stopOthers: false }, async (client, name) => {
    try {
      await client.query('BEGIN');
      await client.query(`LOCK TABLE ${name} IN SHARE UPDATE EXCLUSIVE MODE NOWAIT`);
      await client.query(`ANALYZE ${name}`);
      await client.query('COMMIT');
      analyzed.add(name);
    } catch {
      await client.query('ROLLBACK');
    }
  });
  return analyzed;
}

/**
 * `each` for every name, in order, on up to `jobs` connections at once (each
 * takes the next name when it is free). A connection whose work throws ends
 * its share; with `stopOthers` the others end after their current name. The
 * first failure (cancelling included) is returned, not thrown.
 */
async function onConnections(
  into: ConnectionInfo,
  jobs: number,
  names: readonly string[],
  signal: AbortSignal,
  options: { stopOthers: boolean },
  each: (client: PgClient, name: string) => Promise<void>,
): Promise<{ error: unknown } | undefined> {
  let next = 0;
  let failure: { error: unknown } | undefined;
  const worker = () =>
    withClient(
      into,
      async (client) => {
        for (let i = next++; i < names.length; i = next++) {
          throwIfAborted(signal);
          await each(client, names[i]!);
        }
      },
      signal,
    );
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(jobs, names.length)) }, () =>
      worker().catch((error: unknown) => {
        failure ??= { error };
        if (options.stopOthers) next = names.length;
      }),
    ),
  );
  return failure;
}
