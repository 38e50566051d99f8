import { hostname } from 'node:os';
import type pg from 'pg';
import { isAlive } from '../local/temp-folders.js';
import { dropDatabase, renameDatabase } from './database-admin.js';
import { quoteIdent, quoteLiteral } from './pg-client.js';

/**
 * The COMMENT pgkeep puts on every database it creates to restore into
 * (restores, restore tests, extract), until the database is complete and in
 * place. With the database's name it is how a later run tells a database
 * pgkeep left half-made (a SIGKILL, a crash) from every other database: a
 * database is only ever dropped when it carries this marker AND has the
 * temporary name the marker records.
 */
export const MARKER_PREFIX = 'pgkeep: temporary restore database, dropped if left behind: ';

export interface RestoreMarker {
  /** The temporary name the database was created under. */
  work: string;
  /** The name it gets once complete; null for a scratch database that is always dropped (restore tests). */
  target: string | null;
  /** Overwrite: the name the replaced database is moved to during the swap. */
  old?: string | undefined;
  backup: string;
  pid: number;
  host: string;
  started: string;
}

/** A marker for a database this process creates now. */
export function newMarker(work: string, target: string | null, backup: string, old?: string): RestoreMarker {
  return { work, target, ...(old ? { old } : {}), backup, pid: process.pid, host: hostname(), started: new Date().toISOString() };
}

export async function markDatabase(client: pg.Client, name: string, marker: RestoreMarker): Promise<void> {
  await client.query(`COMMENT ON DATABASE ${quoteIdent(name)} IS ${quoteLiteral(MARKER_PREFIX + JSON.stringify(marker))}`);
}

/** Replaces the marker of a database that is complete and in place with its own comment (the backup's, or none). */
export async function unmarkDatabase(client: pg.Client, name: string, comment: string | null): Promise<void> {
  await client.query(`COMMENT ON DATABASE ${quoteIdent(name)} IS ${comment === null ? 'NULL' : quoteLiteral(comment)}`);
}

/** A database's comment (null when it has none). */
export async function databaseComment(client: pg.Client, name: string): Promise<string | null> {
  const { rows } = await client.query<{ comment: string | null }>("SELECT pg_catalog.shobj_description(oid, 'pg_database') AS comment FROM pg_catalog.pg_database WHERE datname = $1", [name]);
  return rows[0]?.comment ?? null;
}

export interface MarkedDatabase {
  name: string;
  marker: RestoreMarker | undefined;
}

/** Every database on the server carrying the marker (a marker that does not parse is returned as undefined). */
export async function markedDatabases(client: pg.Client): Promise<MarkedDatabase[]> {
  const { rows } = await client.query<{ datname: string; comment: string }>(
    `SELECT datname, pg_catalog.shobj_description(oid, 'pg_database') AS comment FROM pg_catalog.pg_database
      WHERE pg_catalog.shobj_description(oid, 'pg_database') LIKE $1 ORDER BY datname`,
    [`${MARKER_PREFIX.replace(/[\\%_]/g, (c) => `\\${c}`)}%`],
  );
  return rows.map((row) => ({ name: row.datname, marker: parseMarker(row.comment) }));
}

function parseMarker(comment: string): RestoreMarker | undefined {
  try {
    const marker = JSON.parse(comment.slice(MARKER_PREFIX.length)) as RestoreMarker;
    if (typeof marker.work !== 'string' || typeof marker.pid !== 'number' || typeof marker.host !== 'string') return undefined;
    return marker;
  } catch {
    return undefined;
  }
}

export interface LeftoverReport {
  /** What was done, one line each ("dropped "x_pgkeep_…", left by an interrupted restore of …"). */
  done: string[];
  /** Leftovers that were not removed, with why. */
  kept: string[];
}

/** Restores on another host may still run; theirs are left alone this long. */
const FOREIGN_AGE_MS = 24 * 3600_000;

/**
 * Finds what interrupted restores left on this server and puts it right:
 *
 *  - a marked database under its temporary name: an interrupted load or
 *    check; it is dropped. If it was an overwrite interrupted between its two
 *    renames (the original moved away, nothing under the requested name),
 *    the original is first renamed back.
 *  - a marked database under its final name: the swap completed but not the
 *    clean-up; the replaced database (the marker names it) is dropped, as
 *    the restore intended, and the marker removed.
 *
 * A database of a restore that may still be running (its pid alive on this
 * host; or another host's, less than a day old) is left alone, as is any
 * marked database whose name is not one its marker records. With `dryRun`
 * nothing is changed: `kept` then lists every leftover (status).
 */
export async function cleanRestoreLeftovers(client: pg.Client, options: { dryRun?: boolean; now?: number } = {}): Promise<LeftoverReport> {
  const report: LeftoverReport = { done: [], kept: [] };
  const now = options.now ?? Date.now();
  const names = async () => new Set((await client.query<{ datname: string }>('SELECT datname FROM pg_catalog.pg_database')).rows.map((r) => r.datname));
  for (const { name, marker } of await markedDatabases(client)) {
    const what = marker ? `left by an interrupted restore of backup ${marker.backup} (pid ${marker.pid} on ${marker.host}, ${marker.started})` : 'with an unreadable pgkeep marker';
    if (!marker || (name !== marker.work && name !== marker.target)) {
      report.kept.push(`database "${name}" ${what}: its name is not the one the marker records, so pgkeep leaves it to you`);
      continue;
    }
    if (marker.pid === process.pid && marker.host === hostname()) continue;
    const running = marker.host === hostname() ? isAlive(marker.pid) : now - Date.parse(marker.started) < FOREIGN_AGE_MS;
    if (running) {
      if (options.dryRun) report.kept.push(`database "${name}": a restore of backup ${marker.backup} by pid ${marker.pid} on ${marker.host} may still be running`);
      continue;
    }
    if (options.dryRun) {
      report.kept.push(`database "${name}" ${what}: the next restore or prune removes it`);
      continue;
    }
    try {
      if (name === marker.work) {
        const present = await names();
        if (marker.old && marker.target && present.has(marker.old) && !present.has(marker.target)) {
          // Interrupted between the two renames of an overwrite: the original goes back.
          await renameDatabase(client, marker.old, marker.target);
          report.done.push(`renamed "${marker.old}" back to "${marker.target}" (an overwrite was interrupted before the restored copy took its place)`);
        }
        await dropDatabase(client, name);
        report.done.push(`dropped database "${name}", ${what}`);
      } else {
        if (marker.old && (await names()).has(marker.old)) {
          await dropDatabase(client, marker.old);
          report.done.push(`dropped database "${marker.old}", replaced by the restore of backup ${marker.backup} into "${name}" (interrupted before it dropped it)`);
        }
        // The backup's own comment, if it had one, is lost here: the marker held its place.
        await unmarkDatabase(client, name, null);
        report.done.push(`"${name}" is the complete restore of backup ${marker.backup}: removed its temporary marker`);
      }
    } catch (error) {
      report.kept.push(`database "${name}" ${what}: could not be removed (${(error as Error).message})`);
    }
  }
  return report;
}
