/**
 * Named fault points for the fault-injection tests: places where a crash
 * must leave the repository consistent and nothing half-made behind. They
 * do nothing unless armed, and only the CLI arms them, from the test-only
 * environment variable PGKEEP_FAULT (nothing below commands/ reads the
 * environment): `PGKEEP_FAULT=before-manifest` kills the process with
 * SIGKILL the first time it reaches that point, `after-object-stored#2` the
 * second time. A killed process runs no clean-up, exactly as after a crash,
 * an OOM kill or a power cut.
 */
export const FAULT_POINTS = [
  /** backup: an object was stored (its folder has no manifest yet). */
  'after-object-stored',
  /** backup: every object stored, the manifest not yet written. */
  'before-manifest',
  /** backup: the manifest written, the lock and temp files not yet released. */
  'after-manifest',
  /** restore: the temporary database was created and marked. */
  'after-database-created',
  /** restore: the backup is loaded into the temporary database, not yet checked. */
  'after-load',
  /** restore into a new database: checked, not yet renamed to the requested name. */
  'before-rename',
  /** restore --overwrite: the old database was renamed away, the new one not yet put in its place. */
  'between-renames',
  /** restore --overwrite: the new database is in place, the old one not yet dropped. */
  'after-swap',
  /** prune: a backup's manifest was removed, its objects not yet. */
  'mid-prune',
  /** copy: an object was copied to the destination, the manifest not yet. */
  'mid-copy',
  /** deduplicating backup: its packs written, the index file naming them not yet. */
  'before-content-index',
  /** deduplicating backup: the index file written, the manifest not yet. */
  'after-content-index',
  /** prune of a content store: the new index file written, old index files and packs not yet removed. */
  'mid-content-sweep',
  /** prune of a content store: one of its new index files written (#1 of several: before the others), no old one removed yet. */
  'after-prune-index-file',
  /** init (or copy into an empty location): an encrypted repository's keys written, pgkeep.json not yet. */
  'before-repo-info',
  /** restore test of a physical backup: the throwaway server is recovered and running, not yet checked or stopped. */
  'drill-recovered',
] as const;
export type FaultPoint = (typeof FAULT_POINTS)[number];

let armed: { point: FaultPoint; nth: number } | undefined;
const reached = new Map<FaultPoint, number>();

/** Arms one fault point from "name" or "name#n" (the CLI passes PGKEEP_FAULT); undefined or "" disarms. */
export function armFaultPoint(spec: string | undefined): void {
  armed = undefined;
  reached.clear();
  if (!spec) return;
  const match = /^([a-z-]+)(?:#(\d+))?$/.exec(spec);
  const point = match?.[1] as FaultPoint | undefined;
  if (!match || !FAULT_POINTS.includes(point!)) throw new Error(`PGKEEP_FAULT: unknown fault point "${spec}" (known: ${FAULT_POINTS.join(', ')})`);
  armed = { point: point!, nth: Number(match[2] ?? 1) };
}

/** Marks a fault point; when it is the armed one (its n-th time), the process dies here at once. */
export function faultPoint(point: FaultPoint): void {
  if (armed?.point !== point) return;
  const count = (reached.get(point) ?? 0) + 1;
  reached.set(point, count);
  if (count !== armed.nth) return;
  process.stderr.write(`pgkeep: fault point ${point}${armed.nth > 1 ? `#${armed.nth}` : ''} reached: SIGKILL\n`);
  process.kill(process.pid, 'SIGKILL');
}
