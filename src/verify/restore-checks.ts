import type pg from 'pg';
import type { Probe } from '../config/settings.js';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { libpqEnv, type ConnectionInfo } from '../postgres/connection-info.js';
import { quoteIdent } from '../postgres/pg-client.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { startProcess } from '../postgres/run-process.js';
import { countRows } from '../postgres/table-selection.js';
import type { LogicalManifest } from '../repository/manifest.js';

/** The checks a restore test runs on the restored scratch database, each returning what it found; none throws on a mismatch. */

export interface TableComparison {
  schema: string;
  name: string;
  expected: number;
  actual: number;
  /** --deep: whether the content hash matched; undefined when not compared. */
  contentOk?: boolean | undefined;
}

/**
 * Exact row counts of every table the backup counted (`tables`: the
 * manifest's, or the ones a selective restore loaded), and with `deep` the
 * content hash of each table that has one, in one scan per table.
 * `serverCounts` (not with `deep`): tables whose count the server already
 * reported (the restore's COPY command tags, load-data.ts's LoadReport) are
 * compared with that instead of being scanned again.
 */
export async function compareTables(
  client: pg.Client,
  tables: readonly Pick<LogicalManifest['tables'][number], 'schema' | 'name' | 'rows' | 'checksum'>[],
  options: { deep: boolean; signal?: AbortSignal; serverCounts?: readonly { schema: string; name: string; rows: number }[] | undefined },
): Promise<{ tables: TableComparison[]; problems: Problem[] }> {
  const expected = tables.filter((t) => t.rows !== null);
  const key = (t: { schema: string; name: string }) => JSON.stringify([t.schema, t.name]);
  const reported = new Map(options.deep ? [] : (options.serverCounts ?? []).map((t) => [key(t), t.rows]));
  const scanned = await countRows(client, expected.filter((t) => !reported.has(key(t))), options.signal, { checksums: options.deep });
  const byKey = new Map(scanned.map((c) => [key(c), c]));
  const compared: TableComparison[] = expected.map((t) => {
    const counted = byKey.get(key(t));
    return {
      schema: t.schema,
      name: t.name,
      expected: t.rows!,
      actual: counted?.rows ?? reported.get(key(t))!,
      contentOk: options.deep && t.checksum !== undefined ? t.checksum === counted!.checksum : undefined,
    };
  });
  const problems: Problem[] = [];
  const wrong = compared.filter((t) => t.expected !== t.actual);
  if (wrong.length > 0) {
    const first = wrong[0]!;
    problems.push({
      code: 'ROW_COUNT_MISMATCH',
      message: `restored table ${first.schema}.${first.name} has ${first.actual} rows where the backup recorded ${first.expected}${wrong.length > 1 ? ` (and ${wrong.length - 1} more tables differ)` : ''}`,
    });
  }
  const changed = compared.filter((t) => t.contentOk === false && t.expected === t.actual);
  if (changed.length > 0) {
    const first = changed[0]!;
    problems.push({
      code: 'VERIFY_FAILED',
      message: `restored table ${first.schema}.${first.name} has the recorded row count but different content (its checksum differs from the backup's)${changed.length > 1 ? ` (and ${changed.length - 1} more tables)` : ''}`,
    });
  }
  return { tables: compared, problems };
}

export interface Problem {
  code: 'ROW_COUNT_MISMATCH' | 'VERIFY_FAILED';
  message: string;
}

/** TOC entry kinds checked against the catalog; longer kinds that start the same way are not (TABLE DATA, INDEX ATTACH, ...). */
const CHECKED_KINDS = ['MATERIALIZED VIEW', 'FOREIGN TABLE', 'FK CONSTRAINT', 'CHECK CONSTRAINT', 'CONSTRAINT', 'TABLE', 'VIEW', 'SEQUENCE', 'INDEX', 'TYPE', 'DOMAIN', 'FUNCTION', 'PROCEDURE', 'AGGREGATE', 'TRIGGER', 'SCHEMA', 'EXTENSION'];
const UNCHECKED_KINDS = ['MATERIALIZED VIEW DATA', 'TABLE DATA', 'TABLE ATTACH', 'INDEX ATTACH', 'SEQUENCE SET', 'SEQUENCE OWNED BY'];
/** Kinds that share one catalog key set. */
const KIND_GROUP: Record<string, string> = { 'FK CONSTRAINT': 'CONSTRAINT', 'CHECK CONSTRAINT': 'CONSTRAINT' };

/**
 * Objects of the restored database, keyed as `pg_restore --list` prints them
 * after the entry kind: "<schema> <name>", "- <name>" for schemas and
 * extensions, "<schema> <table> <name>" for triggers and constraints, and
 * "<schema> <function>(" for routines (their argument lists are not compared).
 */
const CATALOG_SQL = `
  SELECT CASE c.relkind WHEN 'r' THEN 'TABLE' WHEN 'p' THEN 'TABLE' WHEN 'v' THEN 'VIEW' WHEN 'm' THEN 'MATERIALIZED VIEW'
                        WHEN 'S' THEN 'SEQUENCE' WHEN 'i' THEN 'INDEX' WHEN 'I' THEN 'INDEX' WHEN 'f' THEN 'FOREIGN TABLE' END AS kind,
         n.nspname || ' ' || c.relname AS key
    FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'i', 'I', 'f')
  UNION ALL SELECT 'SCHEMA', '- ' || nspname FROM pg_catalog.pg_namespace
  UNION ALL SELECT 'EXTENSION', '- ' || extname FROM pg_catalog.pg_extension
  UNION ALL SELECT CASE t.typtype WHEN 'd' THEN 'DOMAIN' ELSE 'TYPE' END, n.nspname || ' ' || t.typname
    FROM pg_catalog.pg_type t JOIN pg_catalog.pg_namespace n ON n.oid = t.typnamespace
  UNION ALL SELECT CASE p.prokind WHEN 'p' THEN 'PROCEDURE' WHEN 'a' THEN 'AGGREGATE' ELSE 'FUNCTION' END, n.nspname || ' ' || p.proname || '('
    FROM pg_catalog.pg_proc p JOIN pg_catalog.pg_namespace n ON n.oid = p.pronamespace
  UNION ALL SELECT 'TRIGGER', n.nspname || ' ' || c.relname || ' ' || t.tgname
    FROM pg_catalog.pg_trigger t JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
   WHERE NOT t.tgisinternal
  UNION ALL SELECT 'CONSTRAINT', n.nspname || ' ' || coalesce(c.relname, ty.typname) || ' ' || con.conname
    FROM pg_catalog.pg_constraint con JOIN pg_catalog.pg_namespace n ON n.oid = con.connamespace
    LEFT JOIN pg_catalog.pg_class c ON c.oid = con.conrelid LEFT JOIN pg_catalog.pg_type ty ON ty.oid = con.contypid`;

export interface SchemaComparison {
  /** TOC entries compared with the catalog. */
  checked: number;
  /** Entries the restored database lacks, as "<KIND> <schema> <name>". */
  missing: string[];
}

/**
 * Checks that the restored database holds every schema object the dump's
 * table of contents lists (tables, views, sequences, indexes, types, domains,
 * routines, triggers, constraints, schemas, extensions). Names in the listing
 * are unquoted, so an entry matches when a catalog key is a prefix of it
 * ending where the owner (or, for routines, the argument list) starts.
 */
export async function compareSchema(client: pg.Client, tocListing: string): Promise<SchemaComparison> {
  return matchTocWithCatalog(tocListing, (await client.query<CatalogObject>(CATALOG_SQL)).rows);
}

/** One object of the restored database: its TOC kind and its key as `pg_restore --list` prints it. */
export interface CatalogObject {
  kind: string;
  key: string;
}

/** The matching behind compareSchema, without a database (for tests). */
export function matchTocWithCatalog(tocListing: string, objects: readonly CatalogObject[]): SchemaComparison {
  const catalog = new Map<string, Set<string>>();
  for (const row of objects) {
    if (!catalog.has(row.kind)) catalog.set(row.kind, new Set());
    catalog.get(row.kind)!.add(row.key);
  }
  let checked = 0;
  const missing: string[] = [];
  for (const line of tocListing.split('\n')) {
    const entry = /^\d+; \d+ \d+ (.*)$/.exec(line)?.[1];
    if (!entry || UNCHECKED_KINDS.some((k) => entry.startsWith(`${k} `))) continue;
    const kind = CHECKED_KINDS.find((k) => entry.startsWith(`${k} `));
    if (!kind) continue;
    const rest = entry.slice(kind.length + 1);
    const keys = catalog.get(KIND_GROUP[kind] ?? kind) ?? new Set<string>();
    checked++;
    if (!prefixesOf(rest).some((p) => keys.has(p))) missing.push(`${kind} ${rest.replace(/ \S*$/, '')}`);
  }
  return { checked, missing };
}

/** The whole text, and every prefix that ends before a space or just after a "(". */
function prefixesOf(text: string): string[] {
  const prefixes = [text];
  for (let i = 0; i < text.length; i++) {
    if (text[i] === ' ') prefixes.push(text.slice(0, i));
    else if (text[i] === '(') prefixes.push(text.slice(0, i + 1));
  }
  return prefixes;
}

export interface ProbeResult {
  sql: string;
  expect: string | number | boolean;
  ok: boolean;
  /** The first column of the first row, as text; null for SQL NULL or no row. */
  value: string | null;
  error?: string | undefined;
}

/**
 * Runs the configured probes, each a single statement in its own read-only
 * transaction, and compares the first column of the first row with what the probe expects.
 */
export async function runProbes(client: pg.Client, probes: readonly Probe[]): Promise<ProbeResult[]> {
  const results: ProbeResult[] = [];
  for (const probe of probes) {
    await client.query('BEGIN READ ONLY');
    try {
      // The extended protocol takes exactly one statement: a probe cannot COMMIT its way out of the read-only transaction.
      const query: pg.QueryArrayConfig & { queryMode: 'extended' } = { text: probe.sql, rowMode: 'array', queryMode: 'extended' };
      const result = await client.query(query);
      const raw = (result.rows[0] as unknown[] | undefined)?.[0];
      const value = raw === undefined || raw === null ? null : String(raw);
      results.push({ sql: probe.sql, expect: probe.expect, value, ok: probeMatches(value, raw, probe.expect) });
      await client.query('COMMIT');
    } catch (error) {
      await client.query('ROLLBACK').catch(() => undefined);
      results.push({ sql: probe.sql, expect: probe.expect, value: null, ok: false, error: (error as Error).message });
    }
  }
  return results;
}

function probeMatches(value: string | null, raw: unknown, expect: string | number | boolean): boolean {
  if (value === null) return false;
  if (expect === 'non-zero') {
    if (typeof raw === 'boolean') return raw;
    const n = Number(value);
    return value.trim() !== '' && Number.isFinite(n) && n !== 0;
  }
  const wanted = String(expect);
  if (value === wanted) return true;
  // 42 and "42.0" are the same number
  const [a, b] = [Number(value), Number(wanted)];
  return value.trim() !== '' && wanted.trim() !== '' && Number.isFinite(a) && Number.isFinite(b) && a === b;
}

/** One line for a failed probe: what ran, what came back, what was expected. */
export function describeProbeFailure(result: ProbeResult, index: number): string {
  const sql = result.sql.replace(/\s+/g, ' ').trim();
  const shown = sql.length > 80 ? `${sql.slice(0, 77)}…` : sql;
  if (result.error) return `probe ${index + 1} (${shown}) failed: ${result.error}`;
  const expected = result.expect === 'non-zero' ? 'a non-zero value' : JSON.stringify(result.expect);
  return `probe ${index + 1} (${shown}) returned ${result.value === null ? 'no value' : JSON.stringify(result.value)} where the config expects ${expected}`;
}

export interface AmcheckResult {
  /** ran: the checks ran (ok says whether they found corruption); skipped: why not. */
  status: 'ran' | 'skipped';
  ok: boolean;
  /** Why the checks were skipped, or what they did not cover (heap checks with amcheck before 1.3). */
  note?: string | undefined;
  /** The installed amcheck version, when it was installed. */
  version?: string | undefined;
  /** Which checks ran: heap and B-tree (pg_amcheck), or B-tree only (bt_index_check, amcheck before 1.3). */
  checks?: 'heap and btree' | 'btree' | undefined;
  /** The first findings, each whole (a pg_amcheck report is a heading line and its indented detail lines). */
  findings: string[];
}

/** amcheck 1.3 (PostgreSQL 14) brought verify_heapam, which pg_amcheck needs; 1.1 (PostgreSQL 11) bt_index_check's heapallindexed. */
const HEAP_CHECKS_SINCE = [1, 3] as const;

/**
 * Checks the restored database for corruption with the amcheck extension,
 * when it is available there and the role may install it (otherwise the
 * result says why it was skipped):
 *
 *  - amcheck 1.3 or later (PostgreSQL 14+): pg_amcheck --heapallindexed, heap
 *    and B-tree checks. Exit 2 with findings means corruption; a run that
 *    fails without any finding is a check that could not run, not corruption.
 *  - older amcheck (PostgreSQL 12, 13: version 1.2 has no verify_heapam):
 *    bt_index_check(heapallindexed) on every B-tree index, and a note that the
 *    heap checks were skipped. Only the errors amcheck raises for corruption
 *    (SQLSTATE XX001, XX002) are findings.
 */
export async function runAmcheck(client: pg.Client, target: ConnectionInfo, options: { pgBin?: string | undefined; signal?: AbortSignal }): Promise<AmcheckResult> {
  const available = await client.query("SELECT 1 FROM pg_catalog.pg_available_extensions WHERE name = 'amcheck'");
  if (available.rowCount === 0) return { status: 'skipped', ok: true, note: 'the amcheck extension is not installed on the scratch server (package postgresql-contrib)', findings: [] };
  try {
    await client.query('CREATE EXTENSION IF NOT EXISTS amcheck');
  } catch (error) {
    return { status: 'skipped', ok: true, note: `cannot install amcheck in the scratch database (${(error as Error).message}): it needs a superuser`, findings: [] };
  }
  // Its schema: the first of the session's search_path when it was created (the checks before may have pinned that).
  const { v: version, schema } = (
    await client.query<{ v: string; schema: string }>("SELECT e.extversion AS v, n.nspname AS schema FROM pg_catalog.pg_extension e JOIN pg_catalog.pg_namespace n ON n.oid = e.extnamespace WHERE e.extname = 'amcheck'")
  ).rows[0]!;
  if (!versionAtLeast(version, HEAP_CHECKS_SINCE)) return { ...(await btreeChecks(client, version, schema, options.signal)), version };

  let tool;
  try {
    tool = await toolInfo('pg_amcheck', options.pgBin);
  } catch (error) {
    if (error instanceof PgkeepError && error.code === 'TOOL_MISSING') return { status: 'skipped', ok: true, version, note: 'pg_amcheck is not installed (PostgreSQL 14 or later)', findings: [] };
    throw error;
  }
  const lines: string[] = [];
  let partial = '';
  const run = startProcess(tool.path, ['--heapallindexed', '--no-password', target.database], { env: libpqEnv(target), signal: options.signal, stdout: 'pipe' });
  run.stdout!.setEncoding('utf8').on('data', (text: string) => {
    const split = (partial + text).split('\n');
    partial = split.pop() ?? '';
    for (const line of split) if (line.trim() && lines.length < 500) lines.push(line);
  });
  try {
    await run.done;
    return { status: 'ran', ok: true, version, checks: 'heap and btree', findings: groupFindings(lines) };
  } catch (error) {
    if (partial.trim()) lines.push(partial);
    const findings = groupFindings(lines);
    if (error instanceof PgkeepError && error.code === 'TOOL_FAILED' && error.details?.exitCode === 2 && findings.length > 0) return { status: 'ran', ok: false, version, checks: 'heap and btree', findings };
    if (error instanceof PgkeepError && error.code === 'TOOL_FAILED') {
      // It could not check (a connection or permission problem): no corruption was found, so none is reported.
      return { status: 'skipped', ok: true, version, note: `pg_amcheck could not run its checks, so nothing was checked: ${error.message}`, findings };
    }
    throw error;
  }
}

/** amcheck before 1.3: bt_index_check on every valid B-tree index of the database (the catalogs' too, as pg_amcheck does; not partitioned indexes, which hold nothing). */
async function btreeChecks(client: pg.Client, version: string, schema: string, signal: AbortSignal | undefined): Promise<AmcheckResult> {
  const indexes = await client.query<{ oid: string; name: string }>(`
    SELECT c.oid::text AS oid, format('%I.%I', n.nspname, c.relname) AS name
      FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid
      JOIN pg_catalog.pg_am a ON a.oid = c.relam JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
     WHERE a.amname = 'btree' AND c.relkind = 'i' AND i.indisvalid AND i.indisready AND c.relpersistence <> 't'
     ORDER BY n.nspname, c.relname`);
  const heapAllIndexed = versionAtLeast(version, [1, 1]);
  const findings: string[] = [];
  for (const index of indexes.rows) {
    throwIfAborted(signal);
    try {
      await client.query(`SELECT ${quoteIdent(schema)}.bt_index_check($1::oid::regclass${heapAllIndexed ? ', true' : ''})`, [index.oid]);
    } catch (error) {
      const code = (error as { code?: string }).code;
      // XX001 data_corrupted, XX002 index_corrupted: what amcheck raises for corruption; anything else is not a finding.
      if (code !== 'XX001' && code !== 'XX002') {
        // It could not check (not corruption): say so, and report no corruption that was not found.
        return { status: 'skipped', ok: findings.length === 0, checks: 'btree', note: `bt_index_check could not check ${index.name} (${(error as Error).message}): the remaining indexes were not checked`, findings };
      }
      if (findings.length < 50) findings.push(`btree index ${index.name}: ${(error as Error).message}`);
    }
  }
  return {
    status: 'ran',
    ok: findings.length === 0,
    checks: 'btree',
    note: `amcheck ${version} has no heap checks (verify_heapam came with amcheck 1.3, PostgreSQL 14): heap checks skipped, ${indexes.rowCount} B-tree index(es) checked with bt_index_check${heapAllIndexed ? ' (heapallindexed)' : ''}`,
    findings,
  };
}

/** pg_amcheck's report: a heading ("heap table "db.s.t", block 0, offset 3:") and indented detail lines, joined into one finding each. */
export function groupFindings(lines: readonly string[]): string[] {
  const findings: string[] = [];
  for (const line of lines) {
    const text = line.trim();
    if (text === '') continue;
    if (/^\s/.test(line) && findings.length > 0) findings[findings.length - 1] += ` ${text}`;
    else findings.push(text);
  }
  return findings.slice(0, 50);
}

function versionAtLeast(version: string, [major, minor]: readonly [number, number]): boolean {
  const [a = 0, b = 0] = version.split('.').map(Number);
  return a > major || (a === major && b >= minor);
}
