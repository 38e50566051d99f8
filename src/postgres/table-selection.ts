import { createHash } from 'node:crypto';
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

export interface RowCount {
  schema: string;
  name: string;
  rows: number;
  /** With `checksums`: a hash of the table's content (see CHECKSUM_SQL). */
  checksum?: string;
}

/**
 * Exact row counts, one table at a time, in whatever transaction `client` is
 * in. With `checksums`, the same scan also hashes every row: the first 64
 * bits of the md5 of the row's text (columns in name order), summed (an order-independent aggregate,
 * so the server keeps one running sum per table whatever its size, and a
 * duplicated row still counts). Any changed, missing or extra row changes the
 * sum unless its hash difference is exactly zero (about 2^-64): enough to
 * catch damage, not meant to resist forgery. The cost is the row's text and
 * one md5 per row on top of the count's scan (about 2 s per million rows of
 * 115 bytes on a modest machine, where count(*) takes 0.1 s).
 * The session is pinned to the output settings first, so that the same rows
 * give the same text on any server (see pinOutputSettings).
 */
export async function countRows(
  client: pg.Client,
  tables: readonly { schema: string; name: string }[],
  signal?: AbortSignal,
  options: { checksums?: boolean } = {},
): Promise<RowCount[]> {
  const counts: RowCount[] = [];
  if (options.checksums) await pinOutputSettings(client);
  for (const table of tables) {
    throwIfAborted(signal);
    const relation = `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
    if (!options.checksums) {
      const result = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ONLY ${relation}`);
      counts.push({ schema: table.schema, name: table.name, rows: Number(result.rows[0]!.n) });
      continue;
    }
    // Columns by name, not position: pg_dump cannot always keep the column order (a column added to an inheritance parent).
    const columns = await client.query<{ name: string }>(
      `SELECT a.attname AS name FROM pg_catalog.pg_attribute a
        WHERE a.attrelid = (SELECT c.oid FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2)
          AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attname COLLATE "C"`,
      [table.schema, table.name],
    );
    const row = `ROW(${columns.rows.map((c) => `r.${quoteIdent(c.name)}`).join(', ')})`;
    const result = await client.query<{ n: string; sum: string }>(CHECKSUM_SQL(relation, row));
    const { n, sum } = result.rows[0]!;
    counts.push({ schema: table.schema, name: table.name, rows: Number(n), checksum: checksumOf(n, sum) });
  }
  return counts;
}

/**
 * One scan: the row count and the sum of the rows' md5 prefixes (sum(int8)
 * accumulates exactly, without overflow). `row` is ROW(r."a", r."b", ...):
 * qualified, so a column named like the alias is still a column.
 */
const CHECKSUM_SQL = (relation: string, row: string) => `
  SELECT count(*) AS n, coalesce(sum(('x' || substr(h, 1, 16))::bit(64)::int8), 0)::text AS sum
    FROM (SELECT pg_catalog.md5(${row}::text) AS h FROM ONLY ${relation} AS r) AS rows`;

/** "v1:" and 32 hex digits: the version names the algorithm, so a later one never compares as different content. */
function checksumOf(rows: string, sum: string): string {
  return `v1:${createHash('sha256').update(`${rows}:${sum}`).digest('hex').slice(0, 32)}`;
}

/**
 * The settings that change how values print (time zone, date and interval
 * style, float digits, bytea, money, and the search path for reg* types),
 * fixed for this session, so a backup and its restore hash the same text.
 */
async function pinOutputSettings(client: pg.Client): Promise<void> {
  await client.query(
    "SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET IntervalStyle = 'postgres'; SET extra_float_digits = 1; " +
      "SET bytea_output = 'hex'; SET lc_monetary = 'C'; SET search_path = pg_catalog, pg_temp",
  );
}
