import { z } from 'zod';

function build() {
  /** A duration as written in the config: 14d, 26h, 90m, 2w, 1d12h (0 switches a rule off). */
  const DurationText = z.string().regex(/^(?:0|(?:\d+(?:\.\d+)?[smhdw])+)$/, 'expected a duration such as 14d, 26h, 90m or 2w (units s, m, h, d, w)');
  const Count = z.coerce.number().int('expected a whole number').min(0, 'expected 0 (off) or more');

  /** Retention rules of one kind of backup; see src/retention/retention-policy.ts for their meaning. */
  const RetentionRulesSchema = z
    .object({
      keepLast: Count.optional(),
      keepHourly: Count.optional(),
      keepDaily: Count.optional(),
      keepWeekly: Count.optional(),
      keepMonthly: Count.optional(),
      keepYearly: Count.optional(),
      keepWithin: DurationText.optional(),
      maxAge: DurationText.optional(),
      /** label (or backup name) → how long such backups are kept after they were taken, or "forever". */
      keepLabels: z.record(z.string().min(1), z.union([z.literal('forever'), DurationText])).optional(),
      /** Physical backups: keep what point-in-time recovery to any moment of this window needs. */
      pitrWindow: DurationText.optional(),
      /** IANA time zone of the calendar rules (default: this machine's). */
      timeZone: z.string().min(1).optional(),
    })
    .strict();

  /** Retention of a source: the rules for logical backups, and `physical` overrides for physical ones. */
  const RetentionSchema = RetentionRulesSchema.extend({ physical: RetentionRulesSchema.optional() }).strict();

  /** Thresholds of `pgkeep status --check` (and the daemon's alerts later). */
  const HealthSchema = z
    .object({
      /** No successful backup for longer than this is a problem (default 26h). */
      backupMaxAge: DurationText.optional(),
      /** The newest backup smaller than the previous one by more than this fraction is a problem (default 0.5; 0 off). */
      sizeDropMax: z.coerce.number().min(0).max(1).optional(),
      /** The newest backup dumping fewer bytes than this is a problem, e.g. 1MiB (default off). */
      minSize: z.union([z.number().int().min(0), z.string().regex(/^\d+(?:\.\d+)?\s*(?:B|KB|MB|GB|TB|KiB|MiB|GiB|TiB)?$/i, 'expected a size such as 500KiB, 10MB or 2GiB')]).optional(),
      /** The newest logical restore test older than this is a problem, for a source with logical backups (default off). */
      restoreTestMaxAge: DurationText.optional(),
      /** The newest physical restore test older than this is a problem, for a source with physical backups (default off). */
      physicalRestoreTestMaxAge: DurationText.optional(),
      /** The newest PITR drill older than this is a problem, for a source with physical backups (default off). */
      pitrDrillMaxAge: DurationText.optional(),
      /** WAL archiving behind by more than this is a problem (default 15m; applies once WAL is archived). */
      archiveLagMax: DurationText.optional(),
    })
    .strict();
  return { RetentionRulesSchema, RetentionSchema, HealthSchema };
}

type Schemas = ReturnType<typeof build>;
let built: Schemas | undefined;
/** The schemas, made on first use (see config-schema.ts). */
export const retentionSchemas = (): Schemas => (built ??= build());
export type RetentionRulesConfig = z.infer<Schemas['RetentionRulesSchema']>;
export type RetentionConfig = z.infer<Schemas['RetentionSchema']>;
export type HealthConfig = z.infer<Schemas['HealthSchema']>;
