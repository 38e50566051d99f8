import { PgkeepError } from '../errors.js';
import type { TocEntry } from '../pipeline/custom-toc.js';
import { parseNamePattern } from './table-selection.js';

/** What a selective restore asks for; patterns follow pg_dump's rules. */
export interface RestoreSelection {
  /** Table patterns (-t): schema-qualified or not; an unqualified pattern matches in every schema, as pg_restore -t does. */
  tables?: readonly string[] | undefined;
  /** Schema patterns (-n): every object of the schema. */
  schemas?: readonly string[] | undefined;
  /**
   * Into a new, empty database: also restore what the selected objects need
   * (their schemas, types, functions, extensions, sequences, a partition's
   * parent) without data. Into an existing database (--clean) those are
   * expected to exist and are left alone.
   */
  newDatabase: boolean;
}

export interface SelectionPlan {
  /** The TOC entries to restore, in archive order (pg_restore -L needs that order to stream). */
  entries: TocEntry[];
  /** Tables whose rows are restored: the row-count check covers only these. */
  dataTables: { schema: string; name: string }[];
  /** Schemas the selected objects live in. */
  schemas: string[];
}

/** Entries that describe a relation: never restored just because something they depend on was selected. */
const RELATIONS = new Set(['TABLE', 'VIEW', 'MATERIALIZED VIEW', 'FOREIGN TABLE', 'SEQUENCE']);
/** Entries a --table pattern can name, as pg_dump -t matches tables, views, sequences and foreign tables. */
const NAMEABLE = new Set(['TABLE', 'VIEW', 'MATERIALIZED VIEW', 'FOREIGN TABLE', 'SEQUENCE']);
/** Entries that carry or set rows: only ever restored for the objects selected, never for ones pulled in as a need. */
const DATA = new Set(['TABLE DATA', 'SEQUENCE SET', 'MATERIALIZED VIEW DATA', 'BLOBS', 'BLOB', 'LARGE OBJECT', 'BLOB METADATA']);
/** Things other objects merely use: they may be depended on without being selected (a type, a function, a schema). */
const STRUCTURAL = new Set(['TABLE', 'VIEW', 'MATERIALIZED VIEW', 'FOREIGN TABLE', 'SEQUENCE', 'INDEX', 'CONSTRAINT', 'FK CONSTRAINT', 'CHECK CONSTRAINT', 'TABLE ATTACH', 'INDEX ATTACH', 'TRIGGER', 'RULE', 'POLICY', 'DEFAULT', ...DATA]);
/** Database-level entries pg_restore handles on its own (they are not objects to select). */
const SETTINGS = new Set(['ENCODING', 'STDSTRINGS', 'SEARCHPATH', 'DATABASE', 'DATABASE PROPERTIES']);

/**
 * Chooses the TOC entries of a selective restore:
 *
 *  1. the roots: relations named by a --table pattern, or every object of a
 *     --schema, with their data;
 *  2. what belongs to them: every non-relation entry (index, constraint,
 *     trigger, default, comment, privilege, owned sequence and its value)
 *     that depends on something selected and on nothing outside the
 *     selection but shared things (types, functions, schemas). A foreign key
 *     to a table that is not selected is left out, as is a view over a
 *     selected table;
 *  3. into a new database, what the selection needs (definitions only, no
 *     data), repeated until nothing changes.
 *
 * Partitions follow what a user means by a table: a selected partitioned
 * table brings all its partitions (and theirs) with their rows, and a
 * selected partition is attached to its parent (TABLE ATTACH; into a new
 * database the parent is created, empty, if it was not selected), so its
 * rows show through the parent and its partitioned indexes and keys attach
 * (INDEX ATTACH needs the partition attached first).
 *
 * No selection means the whole archive.
 */
export function planSelection(toc: readonly TocEntry[], selection: RestoreSelection): SelectionPlan {
  const tablePatterns = (selection.tables ?? []).map((p) => ({ text: p, pattern: parseNamePattern(p) }));
  const schemaPatterns = (selection.schemas ?? []).map((p) => ({ text: p, pattern: parseNamePattern(p).name }));
  const byId = new Map(toc.map((e) => [e.dumpId, e]));
  if (tablePatterns.length === 0 && schemaPatterns.length === 0) {
    return { entries: [...toc], dataTables: dataTablesOf(toc, toc), schemas: namespaces(toc) };
  }

  const roots = new Set<number>();
  const unmatched = new Set(tablePatterns.map((p) => p.text));
  for (const entry of toc) {
    if (NAMEABLE.has(entry.desc) && entry.namespace !== null) {
      for (const { text, pattern } of tablePatterns) {
        if (pattern.name.test(entry.tag) && (!pattern.schema || pattern.schema.test(entry.namespace))) {
          roots.add(entry.dumpId);
          unmatched.delete(text);
        }
      }
    }
    const schema = entry.desc === 'SCHEMA' ? entry.tag : entry.namespace;
    if (schema !== null && !SETTINGS.has(entry.desc) && schemaPatterns.some((p) => p.pattern.test(schema))) {
      // Into an existing database the schema itself stays: only its objects are replaced.
      if (entry.desc !== 'SCHEMA' || selection.newDatabase) roots.add(entry.dumpId);
    }
  }
  if (unmatched.size > 0) {
    const tables = toc.filter((e) => e.desc === 'TABLE').map((e) => `${e.namespace}.${e.tag}`);
    throw new PgkeepError(
      'USAGE',
      `--table ${[...unmatched].map((t) => `"${t}"`).join(', ')} matches no table in this backup (it holds ${tables.length} tables${tables.length > 0 ? `, e.g. ${tables.slice(0, 5).join(', ')}` : ''}); quote mixed-case names: --table 'public."My Table"'`,
    );
  }
  if (roots.size === 0) {
    throw new PgkeepError('USAGE', `--schema ${schemaPatterns.map((p) => `"${p.text}"`).join(', ')} matches no schema in this backup`);
  }

  // A partitioned table's partitions are part of it: their rows are its rows.
  const partitions = partitionsOf(toc);
  for (let grew = true; grew; ) {
    grew = false;
    for (const { partition, parent } of partitions) {
      if (roots.has(parent) && !roots.has(partition)) {
        roots.add(partition);
        grew = true;
      }
    }
  }

  const selected = new Set(roots);
  // A root's data comes with it.
  for (const entry of toc) if (DATA.has(entry.desc) && entry.dependencies.some((d) => roots.has(d) && RELATIONS.has(byId.get(d)?.desc ?? ''))) selected.add(entry.dumpId);

  const shared = (id: number) => {
    const dep = byId.get(id);
    return dep === undefined || !STRUCTURAL.has(dep.desc);
  };
  for (let changed = true; changed; ) {
    changed = false;
    // A selected partition is attached to its parent, which is then needed (or, into an existing database, expected).
    for (const { attach, partition } of partitions) {
      if (selected.has(partition) && !selected.has(attach)) {
        selected.add(attach);
        changed = true;
      }
    }
    for (const entry of toc) {
      if (selected.has(entry.dumpId)) continue;
      const owned = entry.desc === 'SEQUENCE' || entry.desc === 'SEQUENCE SET';
      if ((RELATIONS.has(entry.desc) && !owned) || SETTINGS.has(entry.desc)) continue;
      if (DATA.has(entry.desc) && entry.desc !== 'SEQUENCE SET') continue;
      const deps = entry.dependencies;
      if (deps.length > 0 && deps.some((d) => selected.has(d)) && deps.every((d) => selected.has(d) || shared(d))) {
        selected.add(entry.dumpId);
        changed = true;
      }
    }
    if (selection.newDatabase) {
      for (const id of [...selected]) {
        for (const d of byId.get(id)?.dependencies ?? []) {
          const dep = byId.get(d);
          if (dep && !selected.has(d) && !DATA.has(dep.desc) && !SETTINGS.has(dep.desc)) {
            selected.add(d);
            changed = true;
          }
        }
      }
    }
  }
  const entries = toc.filter((e) => selected.has(e.dumpId) || SETTINGS.has(e.desc));
  return { entries, dataTables: dataTablesOf(entries, toc), schemas: namespaces(entries) };
}

/**
 * The partitions of the archive: each TABLE ATTACH entry (pg_dump 11+) with
 * the partition it attaches (the TABLE entry of the same name it depends on)
 * and the parent (its other TABLE dependency).
 */
export function partitionsOf(toc: readonly TocEntry[]): { attach: number; partition: number; parent: number }[] {
  const byId = new Map(toc.map((e) => [e.dumpId, e]));
  const found: { attach: number; partition: number; parent: number }[] = [];
  for (const entry of toc) {
    if (entry.desc !== 'TABLE ATTACH') continue;
    const tables = entry.dependencies.map((d) => byId.get(d)).filter((d): d is TocEntry => d?.desc === 'TABLE');
    const partition = tables.find((t) => t.tag === entry.tag && t.namespace === entry.namespace);
    const parent = tables.find((t) => t !== partition);
    if (partition && parent) found.push({ attach: entry.dumpId, partition: partition.dumpId, parent: parent.dumpId });
  }
  return found;
}

function dataTablesOf(entries: readonly TocEntry[], toc: readonly TocEntry[]): { schema: string; name: string }[] {
  const byId = new Map(toc.map((e) => [e.dumpId, e]));
  return entries
    .filter((e) => e.desc === 'TABLE DATA' && e.namespace !== null)
    .filter((e) => e.dependencies.every((d) => byId.get(d)?.desc !== 'MATERIALIZED VIEW'))
    .map((e) => ({ schema: e.namespace!, name: e.tag }));
}

function namespaces(entries: readonly TocEntry[]): string[] {
  return [...new Set(entries.filter((e) => e.namespace !== null && !SETTINGS.has(e.desc)).map((e) => e.namespace!))];
}

/**
 * A `pg_restore -L` list: one entry per line, in archive order. pg_restore
 * reads only the number before ";"; the rest is for a person reading it.
 */
export function tocListFile(entries: readonly TocEntry[]): string {
  return entries.map((e) => `${e.dumpId}; ${e.desc} ${e.namespace ?? '-'} ${e.tag.replace(/[\r\n]+/g, ' ')}\n`).join('');
}

/** One line per entry for a plan a person reads: "TABLE public.orders". */
export function describeEntry(entry: TocEntry): string {
  return `${entry.desc} ${entry.namespace === null ? '' : `${entry.namespace}.`}${entry.tag}`;
}

/** The schemas of a selection that pg_restore will not create itself (it has no SCHEMA entry for them); undefined without a selection. */
export function schemasToCreate(selection: SelectionPlan | undefined): string[] | undefined {
  if (!selection) return undefined;
  return selection.schemas.filter((schema) => !selection.entries.some((e) => e.desc === 'SCHEMA' && e.tag === schema));
}
