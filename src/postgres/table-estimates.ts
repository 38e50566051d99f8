import type { ConnectionInfo } from './connection-info.js';
import { withClient, type PgClient } from './pg-client.js';

/** One database's tables and their pg_class.reltuples (the planner's row estimate; -1: never vacuumed or analyzed, PostgreSQL 14+). */
export interface DatabaseTableEstimates {
  name: string;
  tables: { schema: string; name: string; reltuples: number }[];
}

/** Ordinary and partitioned tables outside the system schemas, by schema and name. */
const TABLES_SQL = `SELECT n.nspname AS schema, c.relname AS name, c.reltuples::float8 AS reltuples
  FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_toast'
 ORDER BY 1, 2`;

/** The tables of the database `client` is connected to. */
export async function readTableEstimates(client: PgClient): Promise<DatabaseTableEstimates['tables']> {
  return (await client.query<{ schema: string; name: string; reltuples: number }>(TABLES_SQL)).rows.map((r) => ({ schema: r.schema, name: r.name, reltuples: Number(r.reltuples) }));
}

/**
 * The tables of every database of a cluster that accepts connections: a
 * catalog read per database (no table is scanned). A database this role
 * cannot connect to is left out, not an error: these are facts for a later
 * check, not part of the backup.
 */
export async function readClusterTableEstimates(connection: ConnectionInfo, signal?: AbortSignal): Promise<DatabaseTableEstimates[]> {
  const names = await withClient(connection, async (c) => (await c.query<{ datname: string }>('SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname')).rows.map((r) => r.datname), signal);
  const databases: DatabaseTableEstimates[] = [];
  for (const name of names) {
    const tables = await withClient({ ...connection, database: name }, readTableEstimates, signal).catch(() => undefined);
    if (tables) databases.push({ name, tables });
  }
  return databases;
}
