import { PgkeepError } from '../errors.js';
import { validateTimeZone } from '../retention/calendar.js';
import { parseDuration, type Duration } from '../retention/duration.js';
import type { RetentionPolicy } from '../retention/retention-policy.js';
import type { RetentionRulesConfig } from './retention-schema.js';
import { validateName, type Settings } from './settings.js';

/** Retention rules given on the command line (prune's --keep-* flags); the same keys as the config. */
export type RetentionFlags = Partial<RetentionRulesConfig>;

/** The retention of one source: one policy per kind of backup. */
export interface RetentionPolicies {
  logical: RetentionPolicy;
  physical: RetentionPolicy;
  /** Physical backups only: the point-in-time recovery window to keep recoverable. */
  pitrWindow: Duration | undefined;
}

/**
 * The retention policies of a source, merged key by key, lowest first: the
 * config's top-level `retention`, the source's own, BACKUP_RETENTION_DAYS (as
 * maxAge), then flags. Physical backups use the same rules, overridden by the
 * `physical:` keys at each config level.
 */
export function resolveRetention(settings: Settings, sourceName: string | undefined, flags: RetentionFlags = {}): RetentionPolicies {
  const top = settings.config.retention ?? {};
  const own = sourceName ? (settings.config.sources?.[sourceName]?.retention ?? {}) : {};
  const env: RetentionFlags = {};
  const days = settings.env.BACKUP_RETENTION_DAYS;
  if (days !== undefined && days !== '') {
    if (!/^\d+$/.test(days.trim())) throw new PgkeepError('CONFIG_INVALID', `BACKUP_RETENTION_DAYS must be a whole number of days (got "${days}")`);
    env.maxAge = `${Number(days)}d`;
  }
  const { physical: topPhysical, ...topRules } = top;
  const { physical: ownPhysical, ...ownRules } = own;
  const defined = (rules: RetentionFlags | undefined) => Object.fromEntries(Object.entries(rules ?? {}).filter(([, v]) => v !== undefined)) as RetentionFlags;
  const logical: RetentionFlags = { ...defined(topRules), ...defined(ownRules), ...env, ...defined(flags) };
  const physical: RetentionFlags = { ...logical, ...defined(topPhysical), ...defined(ownPhysical), ...env, ...defined(flags) };
  const where = sourceName && settings.config.sources?.[sourceName]?.retention ? `sources.${sourceName}.retention` : 'retention';
  const pitrWindow = physical.pitrWindow === undefined ? undefined : parseDuration(physical.pitrWindow, `${where}.physical.pitrWindow`);
  return { logical: toPolicy(logical, where), physical: toPolicy(physical, `${where}.physical`), pitrWindow };
}

function toPolicy(rules: RetentionFlags, where: string): RetentionPolicy {
  const duration = (key: 'keepWithin' | 'maxAge'): Duration | undefined => {
    const text = rules[key];
    return text === undefined ? undefined : parseDuration(text, `${where}.${key}`);
  };
  const keepLabels: Record<string, Duration | 'forever'> = {};
  for (const [label, period] of Object.entries(rules.keepLabels ?? {})) {
    validateName(label, `${where}.keepLabels label`);
    keepLabels[label] = period === 'forever' ? 'forever' : parseDuration(period, `${where}.keepLabels.${label}`);
  }
  return {
    keepLast: rules.keepLast,
    keepHourly: rules.keepHourly,
    keepDaily: rules.keepDaily,
    keepWeekly: rules.keepWeekly,
    keepMonthly: rules.keepMonthly,
    keepYearly: rules.keepYearly,
    keepWithin: duration('keepWithin'),
    maxAge: duration('maxAge'),
    keepLabels,
    timeZone: validateTimeZone(rules.timeZone ?? Intl.DateTimeFormat().resolvedOptions().timeZone, `${where}.timeZone`),
  };
}

/** The policy in words, for prune's header: "keep-last 3, keep-daily 7, max-age 30d, time zone UTC". */
export function describePolicy(policy: RetentionPolicy): string {
  const parts: string[] = [];
  const counts = [
    ['keep-last', policy.keepLast],
    ['keep-hourly', policy.keepHourly],
    ['keep-daily', policy.keepDaily],
    ['keep-weekly', policy.keepWeekly],
    ['keep-monthly', policy.keepMonthly],
    ['keep-yearly', policy.keepYearly],
  ] as const;
  for (const [name, value] of counts) if (value) parts.push(`${name} ${value}`);
  if (policy.keepWithin?.ms) parts.push(`keep-within ${policy.keepWithin.text}`);
  if (policy.maxAge?.ms) parts.push(`max-age ${policy.maxAge.text}`);
  const labels = Object.entries(policy.keepLabels ?? {}).map(([label, period]) => `${label}=${period === 'forever' ? 'forever' : period.text}`);
  if (labels.length > 0) parts.push(`keep-labels ${labels.join(',')}`);
  parts.push(`time zone ${policy.timeZone}`);
  return parts.join(', ');
}
