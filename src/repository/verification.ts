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

/** The file name of a verification that started at `at`: sorts by time. */
export function verificationFileName(at: Date): string {
  return `${at.toISOString().replace(/[-:]/g, '')}.json`;
}
