import { throwIfAborted } from '../errors.js';
import type { ConnectionInfo } from '../postgres/connection-info.js';
import { withClient } from '../postgres/pg-client.js';

/**
 * ANALYZE every relation a database-wide `ANALYZE` would (tables, partitioned
 * tables and materialized views, system catalogs included; not foreign tables,
 * not other sessions' temporary tables), biggest first, on up to `jobs`
 * connections at once, as `vacuumdb --analyze-only --jobs` does. On a freshly
 * restored database ANALYZE reads most pages of every table (its sample is
 * 30,000 pages per table at the default statistics target) and sets their
 * hint bits: one statement on one connection took 1.6-3.1 s of a 200 MB
 * restore (docs/benchmarks.md, "Restore speed"); side by side the tables share
 * the cores.
 */
export async function analyzeDatabase(into: ConnectionInfo, jobs: number, signal: AbortSignal): Promise<void> {
  const relations = await withClient(
    into,
    async (client) =>
      (
        await client.query<{ name: string }>(
          `SELECT format('%I.%I', n.nspname, c.relname) AS name
             FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
            WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't'
            ORDER BY c.relpages DESC, c.oid`,
        )
      ).rows.map((r) => r.name),
    signal,
  );
  let next = 0;
  const worker = () =>
    withClient(
      into,
      async (client) => {
        for (let i = next++; i < relations.length; i = next++) {
          throwIfAborted(signal);
          await client.query(`ANALYZE ${relations[i]}`);
        }
      },
      signal,
    );
  let failure: { error: unknown } | undefined;
  await Promise.all(
    Array.from({ length: Math.max(1, Math.min(jobs, relations.length)) }, () =>
      worker().catch((error: unknown) => {
        failure ??= { error };
        next = relations.length; // the others stop after their current table
      }),
    ),
  );
  if (failure) throw failure.error;
}
