import { evaluateRetention, type KeepHook, type RetentionBackup, type RetentionPolicy } from './retention-policy.js';

/** Leftovers younger than this may belong to a backup still running (on another host): never touched. */
export const LEFTOVER_MIN_AGE_MS = 3_600_000;
/** Failure records older than this are removed by prune (status only needs the recent ones). */
export const FAILURE_RECORD_MAX_AGE_MS = 30 * 86_400_000;

/** One complete backup as prune sees it. */
export interface PruneBackup extends RetentionBackup {
  /** "logical" or "physical": each kind has its own policy. */
  readonly kind: string;
  readonly storedBytes: number;
  /** Physical backups: the first WAL segment it needs (its manifest's walStart). */
  readonly walStart?: string | undefined;
}

/** A backup folder without a manifest: an interrupted (or still running) backup. */
export interface PruneLeftover {
  readonly id: string;
  /** The later of its id's time and its newest object's modification time. */
  readonly lastActivity: Date;
}

/**
 * The seam for physical backups and WAL (issue 5). `keep` names physical
 * backups the PITR window still needs ("needed by PITR window"), and `wal`
 * says which archived WAL no retained backup needs. Both are no-ops while a
 * repository holds no physical backups: NO_PITR is what prune uses today.
 */
export interface PitrRetention {
  keep: KeepHook;
  /** What to delete from the WAL archive once the retained physical backups are known. */
  wal(retainedPhysical: readonly PruneBackup[]): WalPrunePlan;
}

export interface WalPrunePlan {
  /** Archive keys (or ranges) that can go; empty while nothing is archived. */
  remove: readonly string[];
  /** One line for the report, e.g. "WAL before 000000010000000000000042 is needed by no retained backup". */
  summary: string | undefined;
}

export const NO_PITR: PitrRetention = {
  keep: () => new Map(),
  wal: () => ({ remove: [], summary: undefined }),
};

/**
 * PITR retention: with a window (retention.physical.pitrWindow), recovering to
 * any moment of the last `window` needs the newest physical backup taken at or
 * before its start, so that one is kept ("needed by PITR window 7d") even when
 * the policy would delete it. WAL: given the names in the archive, every
 * segment older than the oldest retained physical backup's first segment is
 * needed by no recovery pgkeep can start (see planWalRemoval).
 */
export function pitrRetention(window: { ms: number; text: string } | undefined, archivedWal: readonly string[] = []): PitrRetention {
  if ((!window || window.ms <= 0) && archivedWal.length === 0) return NO_PITR;
  return {
    keep:
      !window || window.ms <= 0
        ? NO_PITR.keep
        : (backups, now) => {
            const start = now.getTime() - window.ms;
            const base = backups.find((b) => b.time.getTime() <= start);
            return new Map(base ? [[base.id, `needed by PITR window ${window.text}`]] : []);
          },
    wal: (retained) => planWalRemoval(archivedWal, retained),
  };
}

const SEGMENT_FILE = /^([0-9A-F]{8})([0-9A-F]{16})(\.partial|\.[0-9A-F]{8}\.backup)?$/;

/**
 * Which archived WAL files no retained physical backup needs: segments (and
 * their .partial and .backup files) whose position is before the first segment
 * of the oldest retained physical backup, on any timeline, since every recovery
 * starts from a retained backup and replays forward. Timeline history files are
 * always kept (small, and recovery reads them all). With no retained physical
 * backup nothing is removed: WAL archived before the first base backup may be
 * what the user is about to rely on.
 */
export function planWalRemoval(archived: readonly string[], retainedPhysical: readonly PruneBackup[]): WalPrunePlan {
  const starts = retainedPhysical.map((b) => b.walStart).filter((w): w is string => w !== undefined && SEGMENT_FILE.test(w));
  if (starts.length === 0) return { remove: [], summary: archived.length > 0 ? `WAL: ${archived.length} file(s) kept (no retained physical backup to measure them against)` : undefined };
  const oldest = starts.map((w) => w.slice(8, 24)).sort()[0]!;
  const remove = archived.filter((name) => {
    const match = SEGMENT_FILE.exec(name);
    return match !== null && match[2]! < oldest;
  });
  const first = starts.find((w) => w.slice(8, 24) === oldest)!;
  return {
    remove,
    summary: `WAL: ${remove.length} file(s) before ${first} (the oldest retained physical backup's first segment) needed by no retained backup; ${archived.length - remove.length} kept`,
  };
}

export interface PlannedBackup extends PruneBackup {
  readonly keep: boolean;
  readonly reasons: readonly string[];
}

export interface PlannedLeftover extends PruneLeftover {
  readonly remove: boolean;
  readonly reason: string;
}

export interface PrunePlan {
  /** Newest first. */
  backups: PlannedBackup[];
  leftovers: PlannedLeftover[];
  /** Keys of failure records old enough to go. */
  failureRecords: string[];
  wal: WalPrunePlan;
}

/**
 * What prune will do in one repository for one source: the policy of each
 * kind over that kind's backups, leftovers older than an hour, old failure
 * records, and (through `pitr`) WAL. Pure, like evaluateRetention.
 */
export function planPrune(
  input: { backups: readonly PruneBackup[]; leftovers: readonly PruneLeftover[]; failureRecords: readonly { key: string; failedAt: string }[] },
  policies: { readonly logical: RetentionPolicy; readonly physical?: RetentionPolicy | undefined },
  now: Date,
  pitr: PitrRetention = NO_PITR,
): PrunePlan {
  const kinds = [...new Set(input.backups.map((b) => b.kind))].sort();
  const planned: PlannedBackup[] = [];
  for (const kind of kinds) {
    const ofKind = input.backups.filter((b) => b.kind === kind);
    const hooks = kind === 'physical' ? [pitr.keep] : [];
    const decisions = new Map(evaluateRetention(ofKind, (kind === 'physical' ? policies.physical : undefined) ?? policies.logical, now, hooks).map((d) => [d.id, d]));
    for (const b of ofKind) {
      const decision = decisions.get(b.id)!;
      planned.push({ ...b, keep: decision.keep, reasons: decision.reasons });
    }
  }
  planned.sort((a, b) => b.time.getTime() - a.time.getTime() || (a.id < b.id ? 1 : a.id > b.id ? -1 : 0));

  const leftovers = input.leftovers.map((l): PlannedLeftover => {
    const idle = now.getTime() - l.lastActivity.getTime();
    return idle > LEFTOVER_MIN_AGE_MS
      ? { ...l, remove: true, reason: 'leftover of an interrupted backup' }
      : { ...l, remove: false, reason: 'incomplete and written to within the hour: a backup may still be running' };
  });
  const failureRecords = input.failureRecords.filter((r) => now.getTime() - Date.parse(r.failedAt) > FAILURE_RECORD_MAX_AGE_MS).map((r) => r.key);
  const wal = pitr.wal(planned.filter((b) => b.kind === 'physical' && b.keep));
  return { backups: planned, leftovers, failureRecords, wal };
}
