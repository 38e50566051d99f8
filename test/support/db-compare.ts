// Database fingerprints for backup/restore roundtrip tests: take a snapshot of
// the source, restore, take a snapshot of the target, and diff the two.
//
// Comparing fingerprints instead of dumps keeps the comparison independent of
// the tool under test: the schema comes from the server's own pg_dump, and the
// data is hashed server-side through each row's text form.

import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { findServerBinDir, type PgCluster } from './pg-cluster.js';

export interface TableSnapshot {
  kind: 'table' | 'materialized view';
  /** False only for a materialized view created WITH NO DATA (or never refreshed). */
  populated: boolean;
  rows: number;
  /** md5 over the sorted per-row md5s of `row::text`; null when the table is empty or unpopulated. */
  md5: string | null;
}

export interface SequenceSnapshot {
  /** Kept as a string: bigint sequences exceed Number.MAX_SAFE_INTEGER. */
  lastValue: string;
  isCalled: boolean;
}

export interface DatabaseSnapshot {
  database: string;
  /** Normalised `pg_dump --schema-only` output. */
  schema: string;
  /** Keyed by the quoted, schema-qualified name, e.g. `public."Mixed Case"`. */
  tables: Record<string, TableSnapshot>;
  sequences: Record<string, SequenceSnapshot>;
  /** md5 covers each large object's OID, data and comment. */
  largeObjects: { count: number; md5: string | null };
}

// Settings that change the text form of values (and so the hashes). Pinning
// them lets snapshots taken on differently configured clusters be compared.
const SESSION_SETTINGS: ReadonlyArray<readonly [string, string]> = [
  ['TimeZone', 'UTC'],
  ['DateStyle', 'ISO, YMD'],
  ['IntervalStyle', 'postgres'],
  ['bytea_output', 'hex'],
  ['extra_float_digits', '1'],
  ['lc_monetary', 'C'],
  ['xmloption', 'content'],
];

// Schemas whose contents belong to the system, not to the user's data.
const SYSTEM_SCHEMA_FILTER = `
  n.nspname NOT IN ('pg_catalog', 'information_schema', 'pg_toast')
  AND n.nspname NOT LIKE 'pg\\_temp\\_%' AND n.nspname NOT LIKE 'pg\\_toast\\_temp\\_%'`;

// Objects created by CREATE EXTENSION are recreated by the extension on
// restore, so their contents are the extension's business, not the backup's.
const NOT_EXTENSION_MEMBER = `
  NOT EXISTS (SELECT 1 FROM pg_depend d
              WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`;

export interface SnapshotOptions {
  /**
   * WAL-G's comparison: `pg_dump --create` with owners and privileges, so the
   * database itself (locale, owner, ACL, comment, settings) and every object's
   * owner and grants are compared; the database's name is replaced by <db>.
   */
  full?: boolean;
  /**
   * false leaves the schema text empty: for a server newer than the installed
   * pg_dump (which refuses it), the data is still compared.
   */
  schema?: boolean;
}

const RELATIONS_PER_STATEMENT = 200;

function batches<T>(items: T[], size: number): T[][] {
  const out: T[][] = [];
  for (let i = 0; i < items.length; i += size) out.push(items.slice(i, i + size));
  return out;
}

export async function snapshotDatabase(cluster: PgCluster, database: string, options: SnapshotOptions = {}): Promise<DatabaseSnapshot> {
  const dumped = options.schema === false ? '' : normaliseSchemaDump(await dumpSchema(cluster, database, options.full ?? false));
  const schema = options.full ? withoutDatabaseName(dumped, database) : dumped;

  const client = new pg.Client({
    host: cluster.host,
    port: cluster.port,
    user: cluster.superuser,
    password: cluster.password,
    database,
  });
  await client.connect();
  try {
    // One snapshot for all tables, so a concurrent writer cannot make the
    // fingerprint a mix of before and after.
    await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
    // All in one statement: set_config(name, value, true) for each.
    await client.query(
      `SELECT ${SESSION_SETTINGS.map((_, i) => `set_config($${2 * i + 1}, $${2 * i + 2}, true)`).join(', ')}`,
      SESSION_SETTINGS.flat(),
    );

    const relations = await client.query<{ name: string; relkind: string; populated: boolean }>(`
      SELECT * FROM (
        SELECT format('%I.%I', n.nspname, c.relname) AS name, c.relkind::text AS relkind, c.relispopulated AS populated
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'm', 'S') AND c.relpersistence <> 't'
          AND ${SYSTEM_SCHEMA_FILTER} AND ${NOT_EXTENSION_MEMBER}
      ) AS rels
      ORDER BY name COLLATE "C"`);

    // Filled in relation (name) order below, as one statement per relation did.
    const found = new Map<string, TableSnapshot>();
    const foundSequences = new Map<string, SequenceSnapshot>();
    const seqRels = relations.rows.filter((rel) => rel.relkind === 'S');
    const hashed: Array<{ name: string; kind: TableSnapshot['kind'] }> = [];
    for (const rel of relations.rows) {
      if (rel.relkind === 'S') continue;
      const kind = rel.relkind === 'm' ? 'materialized view' : 'table';
      if (!rel.populated) {
        // Reading an unpopulated materialized view is an error, and "unpopulated"
        // is itself the state a restore has to reproduce.
        found.set(rel.name, { kind, populated: false, rows: 0, md5: null });
        continue;
      }
      hashed.push({ name: rel.name, kind });
    }

    // All sequences in one statement and all table hashes in another (in
    // batches, so a database of thousands of partitions does not make one
    // giant statement): a round trip per relation cost more than the hashing
    // of the small tables most tests compare. Each branch is numbered, as the
    // names are identifiers (quoted by format('%I')), not literals.
    for (const batch of batches(seqRels, RELATIONS_PER_STATEMENT)) {
      const { rows } = await client.query<{ i: number; last_value: string; is_called: boolean }>(
        batch.map((rel, i) => `SELECT ${i} AS i, last_value::text AS last_value, is_called FROM ${rel.name}`).join('\nUNION ALL\n'),
      );
      for (const row of rows) foundSequences.set(batch[row.i]!.name, { lastValue: row.last_value, isCalled: row.is_called });
    }
    for (const batch of batches(hashed, RELATIONS_PER_STATEMENT)) {
      // Hash each row and then the sorted hashes: this is independent of
      // physical row order, copes with duplicate rows, and keeps string_agg's
      // input at 32 bytes per row so large tables stay far below its 1 GB cap.
      // ONLY, so an inheritance parent is not credited with its children's rows.
      const { rows } = await client.query<{ i: number; n: string; md5: string | null }>(
        batch
          .map(
            (rel, i) =>
              `SELECT ${i} AS i, count(*) AS n, md5(string_agg(h, '' ORDER BY h COLLATE "C")) AS md5
               FROM (SELECT md5(t::text) AS h FROM ONLY ${rel.name} AS t) AS hashed`,
          )
          .join('\nUNION ALL\n'),
      );
      for (const row of rows) {
        const { name, kind } = batch[row.i]!;
        found.set(name, { kind, populated: true, rows: Number(row.n), md5: row.md5 });
      }
    }
    const tables: Record<string, TableSnapshot> = {};
    const sequences: Record<string, SequenceSnapshot> = {};
    for (const { name } of relations.rows) {
      const table = found.get(name);
      if (table) tables[name] = table;
      const sequence = foundSequences.get(name);
      if (sequence) sequences[name] = sequence;
    }

    // OIDs are part of the fingerprint because tables refer to large objects by
    // OID. Comments are folded in too: pg_dump --schema-only (up to v16) leaves
    // large objects out entirely, so the schema text would not notice them.
    const lo = await client.query<{ n: string; md5: string | null }>(`
      SELECT count(*) AS n,
             md5(string_agg(oid::text || ':' || md5(lo_get(oid)) || ':' ||
                            coalesce(md5(obj_description(oid, 'pg_largeobject')), '-'),
                            ',' ORDER BY oid)) AS md5
      FROM pg_largeobject_metadata`);
    const largeObjects = { count: Number(lo.rows[0]?.n ?? 0), md5: lo.rows[0]?.md5 ?? null };

    await client.query('COMMIT');
    return { database, schema, tables, sequences, largeObjects };
  } finally {
    await client.end();
  }
}

export function diffSnapshots(a: DatabaseSnapshot, b: DatabaseSnapshot): string[] {
  const differences: string[] = [];
  differences.push(...diffSchema(a.schema, b.schema));

  for (const name of unionKeys(a.tables, b.tables)) {
    const ta = a.tables[name];
    const tb = b.tables[name];
    const label = `${ta?.kind ?? tb?.kind ?? 'table'} ${name}`;
    if (!ta || !tb) {
      differences.push(`${label}: only in ${ta ? 'a' : 'b'}`);
      continue;
    }
    if (ta.populated !== tb.populated) {
      differences.push(`${label}: populated a=${ta.populated}, b=${tb.populated}`);
    } else if (ta.rows !== tb.rows) {
      differences.push(`${label}: row count a=${ta.rows}, b=${tb.rows}`);
    } else if (ta.md5 !== tb.md5) {
      differences.push(`${label}: contents differ (both have ${ta.rows} rows; md5 a=${ta.md5}, b=${tb.md5})`);
    }
  }

  for (const name of unionKeys(a.sequences, b.sequences)) {
    const sa = a.sequences[name];
    const sb = b.sequences[name];
    if (!sa || !sb) {
      differences.push(`sequence ${name}: only in ${sa ? 'a' : 'b'}`);
    } else if (sa.lastValue !== sb.lastValue || sa.isCalled !== sb.isCalled) {
      differences.push(
        `sequence ${name}: a=(last_value ${sa.lastValue}, is_called ${sa.isCalled}), ` +
          `b=(last_value ${sb.lastValue}, is_called ${sb.isCalled})`,
      );
    }
  }

  if (a.largeObjects.count !== b.largeObjects.count) {
    differences.push(`large objects: count a=${a.largeObjects.count}, b=${b.largeObjects.count}`);
  } else if (a.largeObjects.md5 !== b.largeObjects.md5) {
    differences.push(`large objects: contents or OIDs differ (both have ${a.largeObjects.count})`);
  }
  return differences;
}

function unionKeys(a: Record<string, unknown>, b: Record<string, unknown>): string[] {
  return [...new Set([...Object.keys(a), ...Object.keys(b)])].sort();
}

const MAX_SCHEMA_LINES_REPORTED = 20;

/**
 * Multiset line difference rather than a positional diff: pg_dump orders
 * objects deterministically, so an added or missing object shows up as a few
 * unmatched lines, while a positional diff would flag everything after it.
 */
function diffSchema(a: string, b: string): string[] {
  if (a === b) return [];
  const linesA = a.split('\n');
  const linesB = b.split('\n');
  const onlyInA = multisetMinus(linesA, linesB);
  const onlyInB = multisetMinus(linesB, linesA);
  if (onlyInA.length === 0 && onlyInB.length === 0) {
    const first = linesA.findIndex((line, i) => line !== linesB[i]);
    return [`schema: same statements in a different order (first difference at normalised line ${first + 1})`];
  }
  const out = [
    ...onlyInA.map((line) => `schema: only in a: ${line}`),
    ...onlyInB.map((line) => `schema: only in b: ${line}`),
  ];
  if (out.length > MAX_SCHEMA_LINES_REPORTED) {
    const hidden = out.length - MAX_SCHEMA_LINES_REPORTED;
    return [...out.slice(0, MAX_SCHEMA_LINES_REPORTED), `schema: ... and ${hidden} more differing lines`];
  }
  return out;
}

function multisetMinus(from: string[], remove: string[]): string[] {
  const counts = new Map<string, number>();
  for (const line of remove) counts.set(line, (counts.get(line) ?? 0) + 1);
  const result: string[] = [];
  for (const line of from) {
    const n = counts.get(line) ?? 0;
    if (n > 0) counts.set(line, n - 1);
    else result.push(line);
  }
  return result;
}

/**
 * Removes what varies between otherwise identical dumps: comments (they carry
 * the dump time and versions), the random-keyed \restrict/\unrestrict guards
 * that pg_dump emits since the 2025 security releases, session SET lines, and
 * blank lines.
 */
export function normaliseSchemaDump(dump: string): string {
  return dump
    .split(/\r?\n/)
    .filter((line) => {
      if (line.trim() === '') return false;
      if (line.startsWith('--')) return false;
      if (/^\\(un)?restrict\b/.test(line)) return false;
      if (/^SET\s/.test(line)) return false;
      return true;
    })
    .join('\n');
}

/** Replaces the database's name (bare or quoted) where pg_dump --create names it, so two copies compare equal. */
function withoutDatabaseName(schema: string, database: string): string {
  const quoted = `"${database.replace(/"/g, '""')}"`;
  const names = [quoted, ...(/^[a-z_][a-z0-9_$]*$/.test(database) ? [database] : [])].map((n) => n.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const pattern = new RegExp(`(DATABASE )(?:${names.join('|')})(?=[ ;])`, 'g');
  return schema
    .split('\n')
    .map((line) => (line.startsWith('\\connect ') ? '\\connect <db>' : line.replace(pattern, '$1<db>')))
    .join('\n');
}

function dumpSchema(cluster: PgCluster, database: string, full: boolean): Promise<string> {
  // Connection details go through the environment: the password must not be
  // visible in argv, and PGDATABASE (unlike a dbname argument) is never parsed
  // as a connection string, so any database name is taken literally.
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PG')) env[key] = value;
  }
  Object.assign(env, {
    PGHOST: cluster.host,
    PGPORT: String(cluster.port),
    PGUSER: cluster.superuser,
    PGPASSWORD: cluster.password,
    PGDATABASE: database,
    PGCONNECT_TIMEOUT: '30',
  });
  const args = full ? ['--schema-only', '--create', '--no-password'] : ['--schema-only', '--no-owner', '--no-privileges', '--no-password'];
  return new Promise((resolve, reject) => {
    execFile(
      // A server from the embedded packages has no client programs: the installed pg_dump dumps it (12 and later).
      join(existsSync(join(cluster.binDir, 'pg_dump')) ? cluster.binDir : findServerBinDir(), 'pg_dump'),
      args,
      { env, encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error) reject(new Error(`pg_dump --schema-only of ${JSON.stringify(database)} failed: ${stderr.trim() || error.message}`));
        else resolve(stdout);
      },
    );
  });
}
