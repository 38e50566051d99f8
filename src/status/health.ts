import type { HealthThresholds } from '../config/health-settings.js';
import { toPgkeepError } from '../errors.js';
import { consistentAt, isPhysical, type Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { readSourceCatalog, type SourceCatalog } from '../repository/source-catalog.js';
import type { Verification } from '../repository/verification.js';
import { formatAge, formatBytes } from '../format/human-format.js';

// The thresholds' shape belongs to the config that sets them (config reads no one).
export type { HealthThresholds } from '../config/health-settings.js';

/** One problem, as `status --check` prints it and the daemon's alerts and metrics will use it. */
export interface Finding {
  source: string;
  code:
    | 'REPOSITORY_UNREADABLE'
    | 'NO_BACKUP'
    | 'BACKUP_TOO_OLD'
    | 'LAST_BACKUP_FAILED'
    | 'SIZE_DROP'
    | 'SIZE_BELOW_MIN'
    | 'VERIFY_FAILED'
    | 'RESTORE_TEST_FAILED'
    | 'RESTORE_TEST_TOO_OLD'
    | 'ARCHIVE_LAG';
  /** One line a person can act on. */
  message: string;
  /** The repository concerned, when it is about one. */
  repository?: string | undefined;
}

export interface BackupSummary {
  id: string;
  kind: string;
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  rawBytes: number;
  storedBytes: number;
  /** Repositories holding it. */
  repositories: string[];
}

export interface VerificationSummary {
  backupId: string;
  kind: Verification['kind'];
  ok: boolean;
  finishedAt: string;
  /** How long the whole verification took. */
  durationMs: number;
  /** Restore tests: how long the restore itself took (the measured RTO); undefined for integrity checks. */
  restoreMs: number | undefined;
  /** The first problem, when it failed. */
  problem: string | undefined;
  repository: string;
}

/** WAL archiving and the point-in-time recovery window; `archiving: false` until WAL exists (issue 5 fills in the window). */
export interface PitrStatus {
  archiving: boolean;
  /** Newest archived WAL, when archiving. */
  lastArchivedAt: string | undefined;
  /** now - lastArchivedAt. */
  archiveLagMs: number | undefined;
  /** Oldest and newest recoverable points (oldest physical backup's consistency point → newest WAL); null without both. */
  window: { from: string; to: string } | null;
}

/** Everything `status` says about one source, and its verdict. */
export interface SourceStatus {
  source: string;
  healthy: boolean;
  lastBackup: BackupSummary | undefined;
  /** The newest backup of each kind (logical, physical). */
  lastBackupByKind: Record<string, BackupSummary>;
  lastFailure: { startedAt: string; failedAt: string; code: string; message: string; repository: string } | undefined;
  lastVerification: VerificationSummary | undefined;
  lastRestoreTest: VerificationSummary | undefined;
  repositories: { location: string; backups: number; storedBytes: number; error?: string | undefined }[];
  pitr: PitrStatus;
  findings: Finding[];
}

/** What was read from one repository of a source. */
export interface RepositoryFacts {
  location: string;
  error?: { code: string; message: string } | undefined;
  catalog?: SourceCatalog | undefined;
  /** The newest verification of the newest backup held here. */
  lastVerification?: Verification | undefined;
  /** The newest restore test of any backup held here. */
  lastRestoreTest?: Verification | undefined;
  /** Newest modification time in the WAL archive; undefined when nothing is archived. */
  lastWalAt?: Date | undefined;
}

/**
 * Reads what status needs from every repository of a source (a repository
 * that cannot be read is a finding, not an error), then assesses it.
 */
export async function collectSourceStatus(
  source: string,
  repositories: readonly { url: string; repository?: Repository | undefined; error?: unknown }[],
  thresholds: HealthThresholds,
  now: Date,
): Promise<SourceStatus> {
  const facts: RepositoryFacts[] = [];
  for (const opened of repositories) {
    const location = opened.repository?.location ?? opened.url;
    try {
      if (!opened.repository) throw opened.error;
      facts.push(await readRepositoryFacts(opened.repository, source));
    } catch (error) {
      const failure = toPgkeepError(error, 'STORAGE_IO');
      // a repository the first backup has not created yet holds no backup: that is the finding
      if (failure.code === 'REPO_MISSING') facts.push({ location, catalog: { backups: [], unreadable: [], leftovers: [], pins: new Map(), failures: [] } });
      else facts.push({ location, error: { code: failure.code, message: failure.message } });
    }
  }
  return assessHealth(source, facts, thresholds, now);
}

async function readRepositoryFacts(repository: Repository, source: string): Promise<RepositoryFacts> {
  const catalog = await readSourceCatalog(repository, source);
  const newestFirst = [...catalog.backups].reverse();
  const newest = newestFirst[0];
  const lastVerification = newest ? await repository.lastVerification(source, newest.id) : undefined;
  let lastRestoreTest: Verification | undefined;
  for (const backup of newestFirst) {
    const found = await repository.lastVerification(source, backup.id, 'restore-test');
    if (found && (!lastRestoreTest || found.finishedAt > lastRestoreTest.finishedAt)) lastRestoreTest = found;
    // a restore test of an older backup can only be newer if it ran later: keep looking only while one could be
    if (lastRestoreTest && backup.finishedAt < lastRestoreTest.finishedAt) break;
  }
  return { location: repository.location, catalog, lastVerification, lastRestoreTest, lastWalAt: await repository.lastWalWrittenAt(source) };
}

/** The options that make two logical backups comparable in size (same selection, same format). */
function shape(m: Manifest): string {
  const kind: string = m.kind;
  // physical backups (no options) are compared with physical ones
  if (!('options' in m)) return kind;
  const o = m.options;
  return JSON.stringify([kind, o.format, o.schemaOnly, o.dataOnly, o.tables, o.excludeTables, o.schemas, o.excludeSchemas]);
}

// Findings are sentences for people (and alert texts later): the same units as the CLI's tables.
const ago = (ms: number) => formatAge(new Date(0), new Date(Math.max(0, ms)));
const bytes = formatBytes;

function summarizeVerification(v: Verification, repository: string): VerificationSummary {
  return { backupId: v.backupId, kind: v.kind, ok: v.ok, finishedAt: v.finishedAt, durationMs: v.durationMs, restoreMs: v.restore?.durationMs, problem: v.problems[0], repository };
}

/**
 * The verdict on one source from what was read: pure, so the daemon can run
 * it on every scrape and tests can give it any history.
 */
export function assessHealth(source: string, facts: readonly RepositoryFacts[], thresholds: HealthThresholds, now: Date): SourceStatus {
  const findings: Finding[] = [];
  const add = (code: Finding['code'], message: string, repository?: string) => findings.push({ source, code, message, repository });
  const age = (iso: string) => now.getTime() - Date.parse(iso);

  // every backup once, with where it is
  const byId = new Map<string, { manifest: Manifest; repositories: string[] }>();
  for (const f of facts) {
    if (f.error) add('REPOSITORY_UNREADABLE', `cannot read ${f.location}: ${f.error.message}`, f.location);
    for (const m of f.catalog?.backups ?? []) {
      const entry = byId.get(m.id);
      if (entry) entry.repositories.push(f.location);
      else byId.set(m.id, { manifest: m, repositories: [f.location] });
    }
  }
  const all = [...byId.values()].sort((a, b) => (a.manifest.finishedAt < b.manifest.finishedAt ? -1 : a.manifest.finishedAt > b.manifest.finishedAt ? 1 : a.manifest.id < b.manifest.id ? -1 : 1));
  const newest = all.at(-1);
  const summary = (entry: { manifest: Manifest; repositories: string[] }): BackupSummary => ({
    id: entry.manifest.id,
    kind: entry.manifest.kind,
    startedAt: entry.manifest.startedAt,
    finishedAt: entry.manifest.finishedAt,
    durationMs: entry.manifest.durationMs,
    rawBytes: entry.manifest.totals.rawBytes,
    storedBytes: entry.manifest.totals.storedBytes,
    repositories: entry.repositories,
  });
  const lastBackup: BackupSummary | undefined = newest && summary(newest);
  // the newest of each kind (oldest first above, so the last write wins): per-kind metrics
  const lastBackupByKind: Record<string, BackupSummary> = {};
  for (const entry of all) lastBackupByKind[entry.manifest.kind] = summary(entry);

  // 1. a recent successful backup
  if (!newest) {
    if (facts.some((f) => f.catalog)) add('NO_BACKUP', 'no successful backup yet: run pgkeep backup');
  } else if (age(newest.manifest.finishedAt) > thresholds.backupMaxAge.ms) {
    add('BACKUP_TOO_OLD', `no successful backup within ${thresholds.backupMaxAge.text}: the last, ${newest.manifest.id}, finished ${ago(age(newest.manifest.finishedAt))}`);
  }

  // 2. the last run failed (per repository: a backup may fail in one and succeed in another)
  let lastFailure: SourceStatus['lastFailure'];
  for (const f of facts) {
    const failure = f.catalog?.failures.at(-1);
    if (!failure) continue;
    if (!lastFailure || failure.failedAt > lastFailure.failedAt) lastFailure = { startedAt: failure.startedAt, failedAt: failure.failedAt, code: failure.code, message: failure.message, repository: f.location };
    const success = f.catalog!.backups.at(-1);
    if (!success || failure.failedAt > success.finishedAt) {
      add('LAST_BACKUP_FAILED', `the last backup failed ${ago(age(failure.failedAt))}${facts.length > 1 ? ` in ${f.location}` : ''}: ${failure.message}`, f.location);
    }
  }

  // 3. the newest backup is not suspiciously small
  if (newest) {
    const raw = newest.manifest.totals.rawBytes;
    const previous = all.slice(0, -1).reverse().find((b) => shape(b.manifest) === shape(newest.manifest));
    if (previous && thresholds.sizeDropMax > 0) {
      const before = previous.manifest.totals.rawBytes;
      if (before > 0 && raw < (1 - thresholds.sizeDropMax) * before) {
        add('SIZE_DROP', `backup ${newest.manifest.id} is ${Math.round((1 - raw / before) * 100)}% smaller than the previous one (${bytes(raw)} dumped, ${previous.manifest.id} ${bytes(before)}): check the database was not emptied or the wrong one dumped`);
      }
    }
    if (thresholds.minSizeBytes > 0 && raw < thresholds.minSizeBytes) {
      add('SIZE_BELOW_MIN', `backup ${newest.manifest.id} dumped ${bytes(raw)}, below the minimum of ${bytes(thresholds.minSizeBytes)}: an empty or wrong database?`);
    }
  }

  // 4. verification and restore tests
  const newestOf = (pick: (f: RepositoryFacts) => Verification | undefined) => {
    let best: VerificationSummary | undefined;
    for (const f of facts) {
      const v = pick(f);
      if (v && (!best || v.finishedAt > best.finishedAt)) best = summarizeVerification(v, f.location);
    }
    return best;
  };
  const lastVerification = newest ? newestOf((f) => (f.lastVerification?.backupId === newest.manifest.id ? f.lastVerification : undefined)) : undefined;
  if (lastVerification && !lastVerification.ok && lastVerification.kind === 'integrity') {
    add('VERIFY_FAILED', `backup ${lastVerification.backupId} failed verification ${ago(age(lastVerification.finishedAt))}: ${lastVerification.problem ?? 'see pgkeep verify'}`, lastVerification.repository);
  }
  const lastRestoreTest = newestOf((f) => f.lastRestoreTest);
  if (lastRestoreTest && !lastRestoreTest.ok) {
    add('RESTORE_TEST_FAILED', `the last restore test (of ${lastRestoreTest.backupId}, ${ago(age(lastRestoreTest.finishedAt))}) failed: ${lastRestoreTest.problem ?? 'see pgkeep verify --restore-test'}`, lastRestoreTest.repository);
  } else if (thresholds.restoreTestMaxAge && newest) {
    if (!lastRestoreTest) add('RESTORE_TEST_TOO_OLD', `no restore test yet (required every ${thresholds.restoreTestMaxAge.text}): run pgkeep verify latest --restore-test`);
    else if (age(lastRestoreTest.finishedAt) > thresholds.restoreTestMaxAge.ms) {
      add('RESTORE_TEST_TOO_OLD', `the last restore test ran ${ago(age(lastRestoreTest.finishedAt))}, longer ago than ${thresholds.restoreTestMaxAge.text}: run pgkeep verify latest --restore-test`);
    }
  }

  // 5. WAL archiving (a seam until physical backups and WAL exist: "not archiving")
  const lastWal = facts.reduce<number | undefined>((n, f) => (f.lastWalAt ? Math.max(n ?? 0, f.lastWalAt.getTime()) : n), undefined);
  const pitr: PitrStatus = {
    archiving: lastWal !== undefined,
    lastArchivedAt: lastWal === undefined ? undefined : new Date(lastWal).toISOString(),
    archiveLagMs: lastWal === undefined ? undefined : Math.max(0, now.getTime() - lastWal),
    window: null,
  };
  // The window: from the moment the oldest physical backup became consistent to the newest archived WAL.
  const physical = all.map((b) => b.manifest).filter(isPhysical);
  if (lastWal !== undefined && physical.length > 0) {
    const from = physical.map(consistentAt).sort()[0]!;
    if (from <= pitr.lastArchivedAt!) pitr.window = { from, to: pitr.lastArchivedAt! };
  }
  if (pitr.archiveLagMs !== undefined && thresholds.archiveLagMax && pitr.archiveLagMs > thresholds.archiveLagMax.ms) {
    add('ARCHIVE_LAG', `WAL archiving is behind: the last segment was archived ${ago(pitr.archiveLagMs)}, more than ${thresholds.archiveLagMax.text}: check archive_command and pg_stat_archiver`);
  }

  return {
    source,
    healthy: findings.length === 0,
    lastBackup,
    lastBackupByKind,
    lastFailure,
    lastVerification,
    lastRestoreTest,
    repositories: facts.map((f) => ({
      location: f.location,
      backups: f.catalog?.backups.length ?? 0,
      storedBytes: (f.catalog?.backups ?? []).reduce((n, m) => n + m.totals.storedBytes, 0),
      ...(f.error ? { error: f.error.message } : {}),
    })),
    pitr,
    findings,
  };
}
