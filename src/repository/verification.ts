import { z } from 'zod';

export const VERIFICATION_FORMAT = 1;

/**
 * The evidence of one verification of one backup, kept in the repository at
 * sources/<source>/verifications/<backup-id>/<time>.json. Integrity checks and
 * restore tests are both recorded; status, list, show, metrics and the
 * dashboard read the newest record of each backup.
 */
export const VerificationSchema = z.object({
  format: z.literal(VERIFICATION_FORMAT),
  backupId: z.string(),
  source: z.string(),
  /** integrity: checksums and table of contents; restore-test: restored into a scratch database and compared. */
  kind: z.enum(['integrity', 'restore-test']),
  /**
   * Restore tests: which drill this was (a logical restore test, a physical
   * restore test, or a PITR drill), so status can judge each kind's age.
   * Absent in records of older pgkeep: drillKindOf derives it from restore.method.
   */
  drill: z.enum(['logical-restore-test', 'physical-restore-test', 'pitr-drill']).optional(),
  ok: z.boolean(),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationMs: z.number().nonnegative(),
  /** Which repository was read, for messages. */
  repository: z.string(),
  pgkeepVersion: z.string(),
  /** Every problem found, the first mismatch first; empty when ok. */
  problems: z.array(z.string()),
  /** Restore tests: where and how long the restore took (a measured RTO for this backup). */
  restore: z
    .object({
      scratch: z.string(),
      durationMs: z.number().nonnegative(),
      /** logical (a dump loaded), physical (a base backup recovered to its end) or pitr (a drill to a point in time); absent in older records: logical. */
      method: z.enum(['logical', 'physical', 'pitr']).optional(),
      /** Physical and PITR: the recovery target, WAL replay time and amount, and where recovery ended. */
      target: z.string().optional(),
      replayMs: z.number().nonnegative().optional(),
      walFiles: z.number().int().nonnegative().optional(),
      walBytes: z.number().int().nonnegative().optional(),
      recoveryPoint: z.record(z.string(), z.unknown()).optional(),
      /** PITR drills: the newest point the archive could recover to when the drill ran, and that time's distance from then (the RPO it gives). */
      recoverableTo: z.string().optional(),
      rpoMs: z.number().nonnegative().optional(),
    })
    .nullable()
    .default(null),
  /** Restore tests: every table's row count in the manifest against the restored database. */
  tables: z
    .array(z.object({ schema: z.string(), name: z.string(), expected: z.number().int().nullable(), actual: z.number().int().nullable() }))
    .default([]),
  /** Anything else a check wants to keep (probes, hashes, amcheck output). */
  checks: z.record(z.string(), z.unknown()).default({}),
});
export type Verification = z.infer<typeof VerificationSchema>;
export type VerificationInput = z.input<typeof VerificationSchema>;

/** The kinds of drill whose newest run status, the metrics and the dashboard tell apart. */
export const DRILL_KINDS = ['logical-restore-test', 'physical-restore-test', 'pitr-drill'] as const;
export type DrillKind = (typeof DRILL_KINDS)[number];

/** What a drill kind is called in sentences (findings, status). */
export const DRILL_NAMES: Record<DrillKind, string> = {
  'logical-restore-test': 'logical restore test',
  'physical-restore-test': 'physical restore test',
  'pitr-drill': 'PITR drill',
};

/**
 * Which drill a verification is; undefined for an integrity check. Records
 * written before the field existed say it through restore.method (absent:
 * a logical restore test, the only kind there was).
 */
export function drillKindOf(v: Pick<Verification, 'kind' | 'drill' | 'restore'>): DrillKind | undefined {
  if (v.kind !== 'restore-test') return undefined;
  if (v.drill) return v.drill;
  const method = v.restore?.method;
  return method === 'pitr' ? 'pitr-drill' : method === 'physical' ? 'physical-restore-test' : 'logical-restore-test';
}

/** The file name of a verification that started at `at`: sorts by time. */
export function verificationFileName(at: Date): string {
  return `${at.toISOString().replace(/[-:]/g, '')}.json`;
}
