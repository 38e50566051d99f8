import { calendarBuckets, formatLocalMinute, type CalendarBuckets } from './calendar.js';
import type { Duration } from './duration.js';

/**
 * A retention policy, resolved (durations parsed, zone checked). Every rule
 * is optional; 0 (or a zero duration) switches a rule off. Rules only ever
 * keep backups; a backup no rule keeps is deleted. `maxAge` is the exception:
 * it caps the other rules (see evaluateRetention).
 */
export interface RetentionPolicy {
  /** The N newest backups. */
  keepLast?: number | undefined;
  /** The newest backup of each of the N newest hours / days / ISO weeks / months / years that have backups. */
  keepHourly?: number | undefined;
  keepDaily?: number | undefined;
  keepWeekly?: number | undefined;
  keepMonthly?: number | undefined;
  keepYearly?: number | undefined;
  /** Every backup younger than this. */
  keepWithin?: Duration | undefined;
  /**
   * Nothing older than this is kept by the rules above (pins, labels and the
   * newest backup still are). Alone, it keeps every backup younger than it
   * (BACKUP_RETENTION_DAYS).
   */
  maxAge?: Duration | undefined;
  /** Backups with this label (or name) are kept for the duration after they were taken, or forever. */
  keepLabels?: Readonly<Record<string, Duration | 'forever'>> | undefined;
  /** IANA zone of the calendar buckets. */
  timeZone: string;
}

/** What the policy needs to know of one backup. */
export interface RetentionBackup {
  readonly id: string;
  /** When the backup was taken (its start: the moment its data is from). */
  readonly time: Date;
  /** Labels, and the backup's name: both can be matched by keepLabels. */
  readonly labels: readonly string[];
  readonly pinned: boolean;
}

export interface RetentionDecision {
  readonly id: string;
  readonly keep: boolean;
  /** Why it is kept (every rule that keeps it), or why it is deleted; never empty. */
  readonly reasons: string[];
}

/** Extra reasons to keep backups that a policy does not know about (e.g. "needed by PITR window"). */
export type KeepHook = (backups: readonly RetentionBackup[], now: Date) => ReadonlyMap<string, string>;

const BUCKET_RULES = [
  ['keepHourly', 'hour', 'hourly'],
  ['keepDaily', 'day', 'daily'],
  ['keepWeekly', 'week', 'weekly'],
  ['keepMonthly', 'month', 'monthly'],
  ['keepYearly', 'year', 'yearly'],
] as const satisfies readonly (readonly [keyof RetentionPolicy, keyof CalendarBuckets, string])[];

/** True when the policy has a rule that selects backups (labels alone are not a policy: they would delete everything else). */
export function hasRetentionRules(policy: RetentionPolicy): boolean {
  return (
    (policy.keepLast ?? 0) > 0 ||
    BUCKET_RULES.some(([key]) => ((policy[key] as number | undefined) ?? 0) > 0) ||
    (policy.keepWithin?.ms ?? 0) > 0 ||
    (policy.maxAge?.ms ?? 0) > 0
  );
}

/** Newest first; the same time is ordered by id (descending) so the result never depends on input order. */
export function newestFirst<T extends { id: string; time: Date }>(backups: readonly T[]): T[] {
  return [...backups].sort((a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));
}

/**
 * Decides, for every backup of one source and one kind, keep or delete, and why.
 * Pure: the same (backups, policy, now) always gives the same answer.
 *
 * - keepLast, the calendar rules and keepWithin select backups; a backup
 *   kept by several rules lists them all ("last 3", "daily 2026-11-20", …).
 *   Calendar buckets are counted from the newest backup, not from `now`: the
 *   N newest buckets that hold a backup, and in each its newest backup.
 * - maxAge drops what those rules selected when it is older than maxAge.
 * - pinned backups, backups whose keepLabels period has not ended, the
 *   newest backup, and what `hooks` name are always kept.
 *
 * Age is `now - time`; a backup exactly `keepWithin` (or `maxAge`) old is
 * still within it. Backups from the future (clock skew) count as age 0.
 */
export function evaluateRetention(backups: readonly RetentionBackup[], policy: RetentionPolicy, now: Date, hooks: readonly KeepHook[] = []): RetentionDecision[] {
  const ordered = newestFirst(backups);
  const reasons = new Map<string, string[]>(ordered.map((b) => [b.id, []]));
  const add = (id: string, reason: string) => reasons.get(id)!.push(reason);
  const age = (b: RetentionBackup) => Math.max(0, now.getTime() - b.time.getTime());

  // rules that select backups
  const selected = new Map<string, string[]>(ordered.map((b) => [b.id, []]));
  const keepLast = policy.keepLast ?? 0;
  ordered.slice(0, keepLast).forEach((b) => selected.get(b.id)!.push(`last ${keepLast}`));
  const within = policy.keepWithin?.ms ?? 0;
  if (within > 0) for (const b of ordered) if (age(b) <= within) selected.get(b.id)!.push(`within ${policy.keepWithin!.text}`);
  const buckets = new Map(ordered.map((b) => [b.id, calendarBuckets(b.time, policy.timeZone)]));
  for (const [key, field, word] of BUCKET_RULES) {
    const count = (policy[key] as number | undefined) ?? 0;
    if (count <= 0) continue;
    const seen = new Set<string>();
    for (const b of ordered) {
      const bucket = buckets.get(b.id)![field];
      if (seen.has(bucket)) continue;
      if (seen.size >= count) break;
      seen.add(bucket);
      selected.get(b.id)!.push(`${word} ${bucket}`);
    }
  }
  const maxAge = policy.maxAge?.ms ?? 0;
  const onlyMaxAge = maxAge > 0 && !hasRetentionRules({ ...policy, maxAge: undefined });
  const tooOld = new Set<string>();
  for (const b of ordered) {
    if (maxAge > 0 && age(b) > maxAge) {
      tooOld.add(b.id);
      continue;
    }
    if (onlyMaxAge) selected.get(b.id)!.push(`within max-age ${policy.maxAge!.text}`);
  }

  // what is always kept, then what the rules selected
  const newest = ordered[0];
  const hookReasons = hooks.map((hook) => hook(ordered, now));
  for (const b of ordered) {
    if (b.pinned) add(b.id, 'pinned');
    if (b === newest) add(b.id, 'newest successful backup');
    for (const found of hookReasons) {
      const reason = found.get(b.id);
      if (reason) add(b.id, reason);
    }
    for (const label of new Set(b.labels)) {
      const period = policy.keepLabels?.[label];
      if (period === undefined) continue;
      if (period === 'forever') add(b.id, `label ${label} (forever)`);
      else if (period.ms > 0 && age(b) <= period.ms) add(b.id, `label ${label} (until ${formatLocalMinute(new Date(b.time.getTime() + period.ms), policy.timeZone)})`);
    }
    if (!tooOld.has(b.id)) reasons.get(b.id)!.push(...selected.get(b.id)!);
  }

  return ordered.map((b) => {
    const why = reasons.get(b.id)!;
    if (why.length > 0) return { id: b.id, keep: true, reasons: why };
    return { id: b.id, keep: false, reasons: [tooOld.has(b.id) ? `older than max-age ${policy.maxAge!.text}` : 'no rule keeps it'] };
  });
}
