import type pg from 'pg';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { quoteIdent } from './pg-client.js';

/** A relation as the catalog describes it, enough to mirror pg_dump's selection. */
export interface CatalogTable {
  schema: string;
  name: string;
  /** pg_class.relkind: r table (incl. partitions), p partitioned, f foreign, m materialized view. */
  kind: string;
  /** On the search_path (pg_table_is_visible): unqualified -t patterns only match these. */
  visible: boolean;
  /** Belongs to an extension: pg_dump leaves its data to the extension. */
  extensionMember: boolean;
}

export interface SelectionOptions {
  tables?: readonly string[] | undefined;
  excludeTables?: readonly string[] | undefined;
  schemas?: readonly string[] | undefined;
  excludeSchemas?: readonly string[] | undefined;
}

interface NamePattern {
  schema: RegExp | undefined;
  name: RegExp;
}

/**
 * Parses a psql/pg_dump name pattern: `*` and `?` are wildcards, unquoted
 * letters fold to lower case, other regular-expression characters work
 * outside quotes, double quotes keep case and make everything literal, and an
 * unquoted dot separates schema from name.
 */
export function parseNamePattern(pattern: string): NamePattern {
  const parts: string[] = [''];
  let quoted = false;
  for (let i = 0; i < pattern.length; i++) {
    const ch = pattern[i]!;
    if (ch === '"') {
      if (quoted && pattern[i + 1] === '"') {
        parts[parts.length - 1] += escapeRegex('"');
        i++;
      } else {
        quoted = !quoted;
      }
    } else if (quoted) {
      parts[parts.length - 1] += escapeRegex(ch);
    } else if (ch === '.') {
      parts.push('');
    } else if (ch === '*') {
      parts[parts.length - 1] += '.*';
    } else if (ch === '?') {
      parts[parts.length - 1] += '.';
    } else if (ch === '$') {
      parts[parts.length - 1] += '\\$';
    } else if (ch === '[' && pattern[i + 1] === ']') {
      parts[parts.length - 1] += '\\[';
    } else {
      // Outside quotes pg_dump passes other regular-expression characters through ([0-9], a|b).
      parts[parts.length - 1] += ch.toLowerCase();
    }
  }
  const toRegex = (source: string) => {
    try {
      return new RegExp(`^(?:${source})$`, 's');
    } catch {
      throw new PgkeepError('USAGE', `invalid name pattern "${pattern}": check its brackets and parentheses, or double-quote the name`);
    }
  };
  // db.schema.name: the database part is ignored, as pg_dump does for the current database.
  const name = parts.at(-1)!;
  const schema = parts.length >= 2 ? parts.at(-2)! : undefined;
  return { schema: schema === undefined ? undefined : toRegex(schema), name: toRegex(name) };
}

function escapeRegex(text: string): string {
  return text.replace(/[\\^$.*+?()[\]{}|/]/g, '\\$&');
}

function matchesTable(pattern: NamePattern, table: CatalogTable): boolean {
  if (!pattern.name.test(table.name)) return false;
  return pattern.schema ? pattern.schema.test(table.schema) : table.visible;
}

function matchesSchema(pattern: string, schema: string): boolean {
  return parseNamePattern(pattern).name.test(schema);
}

/**
 * The tables whose rows pg_dump will write, under the same rules: -t selects
 * tables regardless of -n/-N; otherwise -n/-N select schemas; -T excludes.
 * Partitioned parents hold no rows (their partitions do), so only kind 'r'.
 */
export function selectDataTables(catalog: readonly CatalogTable[], options: SelectionOptions): CatalogTable[] {
  const include = (options.tables ?? []).map(parseNamePattern);
  const exclude = (options.excludeTables ?? []).map(parseNamePattern);
  const schemas = options.schemas ?? [];
  const excludeSchemas = options.excludeSchemas ?? [];
  return catalog.filter((table) => {
    if (table.kind !== 'r' || table.extensionMember) return false;
    if (include.length > 0) {
      if (!include.some((p) => matchesTable(p, table))) return false;
    } else {
      if (schemas.length > 0 && !schemas.some((s) => matchesSchema(s, table.schema))) return false;
      if (excludeSchemas.some((s) => matchesSchema(s, table.schema))) return false;
    }
    return !exclude.some((p) => matchesTable(p, table));
  });
}

export async function readCatalogTables(client: pg.Client): Promise<CatalogTable[]> {
  const result = await client.query<{ schema: string; name: string; kind: string; visible: boolean; extension_member: boolean }>(`
    SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind,
           pg_catalog.pg_table_is_visible(c.oid) AS visible,
           EXISTS (SELECT 1 FROM pg_catalog.pg_depend d
                   WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e') AS extension_member
      FROM pg_catalog.pg_class c
      JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE c.relkind IN ('r', 'p', 'f', 'm')
       AND n.nspname <> 'information_schema'
       AND n.nspname !~ '^pg_'
     ORDER BY n.nspname, c.relname`);
  return result.rows.map((r) => ({ schema: r.schema, name: r.name, kind: r.kind, visible: r.visible, extensionMember: r.extension_member }));
}

/** Exact row counts, one table at a time, in whatever transaction `client` is in. */
export async function countRows(
  client: pg.Client,
  tables: readonly { schema: string; name: string }[],
  signal?: AbortSignal,
): Promise<{ schema: string; name: string; rows: number }[]> {
  const counts: { schema: string; name: string; rows: number }[] = [];
  for (const table of tables) {
    throwIfAborted(signal);
    const result = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${quoteIdent(table.schema)}.${quoteIdent(table.name)}`);
    counts.push({ schema: table.schema, name: table.name, rows: Number(result.rows[0]!.n) });
  }
  return counts;
}
