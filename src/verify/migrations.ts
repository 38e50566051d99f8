import type pg from 'pg';
import { quoteIdent } from '../postgres/pg-client.js';
import type { MigrationState } from '../repository/manifest.js';

/**
 * The migration tables of common frameworks, and how each names its newest
 * applied migration. `columns` lists the columns that query needs; a table of that name
 * whose columns differ is still recorded (rows), with `latest` null.
 */
const MIGRATION_TABLES: readonly { name: string; columns: readonly string[]; latest: (table: string) => string }[] = [
  // Rails (varchar timestamps), golang-migrate and Ecto (bigint): by length then text, right for both.
  { name: 'schema_migrations', columns: ['version'], latest: (t) => `SELECT version::text AS latest FROM ${t} ORDER BY length(version::text) DESC, version::text DESC LIMIT 1` },
  {
    name: 'flyway_schema_history',
    columns: ['version', 'installed_rank', 'success'],
    latest: (t) => `SELECT version::text AS latest FROM ${t} WHERE success AND version IS NOT NULL ORDER BY installed_rank DESC LIMIT 1`,
  },
  { name: 'knex_migrations', columns: ['id', 'name'], latest: (t) => `SELECT name::text AS latest FROM ${t} ORDER BY id DESC LIMIT 1` },
  {
    name: '_prisma_migrations',
    columns: ['migration_name', 'finished_at', 'rolled_back_at'],
    latest: (t) => `SELECT migration_name::text AS latest FROM ${t} WHERE finished_at IS NOT NULL AND rolled_back_at IS NULL ORDER BY migration_name DESC LIMIT 1`,
  },
  { name: '__EFMigrationsHistory', columns: ['MigrationId'], latest: (t) => `SELECT "MigrationId"::text AS latest FROM ${t} ORDER BY "MigrationId" DESC LIMIT 1` },
  // Alembic keeps one row per head: all of them, sorted.
  { name: 'alembic_version', columns: ['version_num'], latest: (t) => `SELECT string_agg(version_num::text, ',' ORDER BY version_num) AS latest FROM ${t}` },
];

/**
 * Reads the state of every known migration table among `tables` (the tables
 * whose data the backup holds), in whatever transaction `client` is in. Each
 * read runs under a savepoint, so an odd table (no privilege, unexpected
 * types) gives `latest: null` instead of failing the caller's transaction.
 */
export async function readMigrationState(client: pg.Client, tables: readonly { schema: string; name: string }[]): Promise<MigrationState[]> {
  const states: MigrationState[] = [];
  for (const table of tables) {
    const known = MIGRATION_TABLES.find((m) => m.name === table.name);
    if (!known) continue;
    const state = await readOne(client, table, known);
    if (state) states.push(state);
  }
  return states;
}

async function readOne(client: pg.Client, table: { schema: string; name: string }, known: (typeof MIGRATION_TABLES)[number]): Promise<MigrationState | undefined> {
  const relation = `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
  await client.query('SAVEPOINT pgkeep_migrations');
  try {
    const columns = await client.query<{ attname: string }>(
      `SELECT a.attname FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
          AND a.attnum > 0 AND NOT a.attisdropped`,
      [table.schema, table.name],
    );
    if (columns.rowCount === 0) {
      await client.query('RELEASE SAVEPOINT pgkeep_migrations');
      return undefined;
    }
    const rows = Number((await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${relation}`)).rows[0]!.n);
    const have = new Set(columns.rows.map((r) => r.attname));
    let latest: string | null = null;
    if (known.columns.every((c) => have.has(c))) {
      latest = (await client.query<{ latest: string | null }>(known.latest(relation))).rows[0]?.latest ?? null;
    }
    await client.query('RELEASE SAVEPOINT pgkeep_migrations');
    return { schema: table.schema, name: table.name, rows, latest };
  } catch {
    await client.query('ROLLBACK TO SAVEPOINT pgkeep_migrations');
    await client.query('RELEASE SAVEPOINT pgkeep_migrations');
    return { schema: table.schema, name: table.name, rows: 0, latest: null };
  }
}

export interface MigrationCheck {
  schema: string;
  name: string;
  expected: { rows: number; latest: string | null };
  /** null: the table is missing from the restored database. */
  actual: { rows: number; latest: string | null } | null;
  ok: boolean;
}

export interface MigrationComparison {
  ok: boolean;
  tables: MigrationCheck[];
  /** One line per difference, naming the table and both versions. */
  problems: string[];
}

/**
 * Compares a restored database (`client` connected to it) with the migration
 * state the manifest recorded at backup time, so a user knows before starting
 * the app whether its schema version is the one the backup was taken at.
 * A manifest without a record (older pgkeep) compares as ok with no tables.
 */
export async function compareMigrations(client: pg.Client, recorded: readonly MigrationState[] | undefined): Promise<MigrationComparison> {
  const tables: MigrationCheck[] = [];
  const problems: string[] = [];
  if (recorded && recorded.length > 0) {
    await client.query('BEGIN READ ONLY');
    try {
      for (const expected of recorded) {
        const known = MIGRATION_TABLES.find((m) => m.name === expected.name);
        const state = known ? await readOne(client, expected, known) : undefined;
        const actual = state ? { rows: state.rows, latest: state.latest } : null;
        const ok = actual !== null && actual.rows === expected.rows && actual.latest === expected.latest;
        tables.push({ schema: expected.schema, name: expected.name, expected: { rows: expected.rows, latest: expected.latest }, actual, ok });
        const label = `migration table ${expected.schema}.${expected.name}`;
        if (!actual) problems.push(`${label} is missing from the restored database (the backup recorded ${describe(expected)})`);
        else if (!ok) problems.push(`${label} is at ${describe(actual)} where the backup recorded ${describe(expected)}`);
      }
    } finally {
      await client.query('COMMIT');
    }
  }
  return { ok: problems.length === 0, tables, problems };
}

function describe(state: { rows: number; latest: string | null }): string {
  return `${state.latest === null ? 'no known version' : `version ${state.latest}`} (${state.rows} rows)`;
}
