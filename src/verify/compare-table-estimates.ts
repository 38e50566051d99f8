import type { DatabaseTableEstimates } from '../postgres/table-estimates.js';

/** What the recovered cluster holds against the facts recorded at backup time. */
export interface TableEstimatesComparison {
  /** Tables recorded at backup time. */
  recorded: number;
  /** Recorded tables found after recovery with a matching estimate. */
  matched: number;
  /** "db: schema.table" recorded at backup time and absent after recovery. */
  missing: string[];
  /** Tables whose estimate differs by more than the tolerance. */
  differing: { table: string; recorded: number; recovered: number }[];
  /** Databases recorded at backup time that were not found (or not readable) after recovery. */
  missingDatabases: string[];
}

/**
 * reltuples is catalog state that WAL replay reproduces exactly (VACUUM and
 * ANALYZE update it in place, WAL-logged); it differs only when one of them
 * ran between the backup's stop and the reading of the facts, or, for a
 * later target, after the backup. Differences up to this share (and this
 * many rows) are not reported.
 */
const TOLERANCE = { share: 0.1, rows: 1000 };

/** Compares the table lists and estimates recorded at backup time with those read from the recovered cluster. */
export function compareTableEstimates(recorded: readonly DatabaseTableEstimates[], recovered: ReadonlyMap<string, DatabaseTableEstimates['tables']>): TableEstimatesComparison {
  const result: TableEstimatesComparison = { recorded: 0, matched: 0, missing: [], differing: [], missingDatabases: [] };
  for (const db of recorded) {
    result.recorded += db.tables.length;
    const tables = recovered.get(db.name);
    if (!tables) {
      result.missingDatabases.push(db.name);
      result.missing.push(...db.tables.map((t) => `${db.name}: ${t.schema}.${t.name}`));
      continue;
    }
    const byName = new Map(tables.map((t) => [`${t.schema}.${t.name}`, t.reltuples]));
    for (const t of db.tables) {
      const key = `${t.schema}.${t.name}`;
      const now = byName.get(key);
      if (now === undefined) result.missing.push(`${db.name}: ${key}`);
      // -1 (never analyzed, 14+) on either side says nothing about the rows
      else if (t.reltuples >= 0 && now >= 0 && Math.abs(now - t.reltuples) > Math.max(TOLERANCE.rows, TOLERANCE.share * Math.max(now, t.reltuples))) {
        result.differing.push({ table: `${db.name}: ${key}`, recorded: t.reltuples, recovered: now });
      } else result.matched++;
    }
  }
  return result;
}
