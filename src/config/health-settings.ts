import { PgkeepError } from '../errors.js';
import { parseDuration, type Duration } from '../retention/duration.js';
import type { HealthConfig } from './retention-schema.js';
import type { Settings } from './settings.js';

/** The defaults of the issue: a backup at least every 26h, alarm on a 50% drop in size. */
export const DEFAULT_BACKUP_MAX_AGE = '26h';
export const DEFAULT_SIZE_DROP_MAX = 0.5;

/** Thresholds of the health checks of one source (pgkeep.yaml `health:`). */
export interface HealthThresholds {
  /** No successful backup for longer than this is a problem. Default 26h. */
  backupMaxAge: Duration;
  /** The newest backup dumping less than (1 - this) of the previous comparable one is a problem; 0 is off. Default 0.5. */
  sizeDropMax: number;
  /** The newest backup dumping fewer bytes is a problem; 0 is off (default). */
  minSizeBytes: number;
  /** The newest logical restore test older than this (or none at all) is a problem, once the source has logical backups; undefined is off (default). */
  restoreTestMaxAge: Duration | undefined;
  /** The same for physical restore tests, once the source has physical backups; undefined is off (default). */
  physicalRestoreTestMaxAge?: Duration | undefined;
  /** The same for PITR drills (verify --pitr-drill), once the source has physical backups; undefined is off (default). */
  pitrDrillMaxAge?: Duration | undefined;
  /** The newest archived WAL older than this is a problem, once WAL is archived; undefined is off (default). */
  archiveLagMax: Duration | undefined;
}

/** Thresholds of a source's health checks: the config's top-level `health`, then the source's own, key by key. */
export function resolveHealthThresholds(settings: Settings, sourceName: string): HealthThresholds {
  const own = settings.config.sources?.[sourceName]?.health;
  const merged: HealthConfig = { ...settings.config.health, ...Object.fromEntries(Object.entries(own ?? {}).filter(([, v]) => v !== undefined)) };
  const where = own ? `sources.${sourceName}.health` : 'health';
  const optional = (text: string | undefined, key: string) => (text === undefined || text === '0' ? undefined : parseDuration(text, `${where}.${key}`));
  return {
    backupMaxAge: parseDuration(merged.backupMaxAge ?? DEFAULT_BACKUP_MAX_AGE, `${where}.backupMaxAge`),
    sizeDropMax: merged.sizeDropMax ?? DEFAULT_SIZE_DROP_MAX,
    minSizeBytes: parseSize(merged.minSize ?? 0, `${where}.minSize`),
    restoreTestMaxAge: optional(merged.restoreTestMaxAge, 'restoreTestMaxAge'),
    physicalRestoreTestMaxAge: optional(merged.physicalRestoreTestMaxAge, 'physicalRestoreTestMaxAge'),
    pitrDrillMaxAge: optional(merged.pitrDrillMaxAge, 'pitrDrillMaxAge'),
    archiveLagMax: optional(merged.archiveLagMax, 'archiveLagMax'),
  };
}

const SIZE_UNITS: Record<string, number> = { b: 1, kb: 1e3, mb: 1e6, gb: 1e9, tb: 1e12, kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4 };

/** 500KiB, 10MB, 2GiB, or a number of bytes. */
export function parseSize(value: number | string, what: string): number {
  if (typeof value === 'number') return value;
  const match = /^(\d+(?:\.\d+)?)\s*([a-z]*)$/i.exec(value.trim());
  const unit = SIZE_UNITS[(match?.[2] || 'b').toLowerCase()];
  if (!match || unit === undefined) throw new PgkeepError('CONFIG_INVALID', `${what}: "${value}" is not a size: write e.g. 500KiB, 10MB or 2GiB`);
  return Math.round(Number(match[1]) * unit);
}
