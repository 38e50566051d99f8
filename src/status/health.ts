import type { HealthThresholds } from '../config/health-settings.js';
import { toPgkeepError } from '../errors.js';
import { consistentAt, dedupFigures, isPhysical, type Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { readSourceCatalog, type SourceCatalog } from '../repository/source-catalog.js';
import { DRILL_KINDS, DRILL_NAMES, drillKindOf, type DrillKind, type Verification } from '../repository/verification.js';
import { formatAge, formatBytes } from '../format/human-format.js';
import { readRepositoryUsage, type RepositoryUsage } from './repository-usage.js';

// Drill kinds, for the status printers, the metrics and the dashboard.
export { DRILL_KINDS, DRILL_NAMES, type DrillKind } from '../repository/verification.js';

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
    | 'PHYSICAL_RESTORE_TEST_TOO_OLD'
    | 'PITR_DRILL_TOO_OLD'
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
  /** A deduplicated backup: what it added to its repository's storage (its packs); undefined for a backup stored as files. */
  addedBytes?: number | undefined;
  /** Repositories holding it. */
  repositories: string[];
}

export interface VerificationSummary {
  backupId: string;
  kind: Verification['kind'];
  /** Restore tests: which drill. */
  drill: DrillKind | undefined;
  ok: boolean;
  finishedAt: string;
  /** How long the whole verification took. */
  durationMs: number;
  /** Restore tests: how long the restore itself took (the measured RTO); undefined for integrity checks. */
  restoreMs: number | undefined;
  /** The first problem, when it failed. */
  problem: string | undefined;
  repository: string;
  /** PITR drills: the RPO the archive gave when it ran (now - its newest recoverable point). */
  rpoMs?: number | undefined;
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
  /** The newest restore test of any kind (logical, physical or PITR drill). */
  lastRestoreTest: VerificationSummary | undefined;
  /** Per drill kind: the newest run (passed or not) and the newest that passed. */
  drills: Partial<Record<DrillKind, DrillStatus>>;
  /**
   * `storedBytes`: the source's backups as files, or in a deduplicating
   * repository what they added; `usage`: a deduplicating repository as a
   * whole (every source in it): logical and stored bytes, the ratio.
   */
  repositories: { location: string; backups: number; storedBytes: number; usage?: RepositoryUsage | undefined; error?: string | undefined }[];
  pitr: PitrStatus;
  findings: Finding[];
}

/** The newest drill of one kind. */
export interface DrillStatus {
  last: VerificationSummary;
  /** The newest that passed (the same as last when that passed); undefined when none did. */
  lastSuccess: VerificationSummary | undefined;
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
  /** Per drill kind: the newest run, and the newest that passed, of any backup held here. */
  drills?: Partial<Record<DrillKind, { last: Verification; lastSuccess?: Verification | undefined }>> | undefined;
  /** Newest modification time in the WAL archive; undefined when nothing is archived. */
  lastWalAt?: Date | undefined;
  /** A deduplicating repository's size and ratio (every source in it), when the caller asked for it. */
  usage?: RepositoryUsage | undefined;
}

/** Usage read once per repository location in one run (a repository shared by several sources is listed once). */
export type UsageCache = Map<string, Promise<RepositoryUsage | undefined>>;

/**
 * Reads what status needs from every repository of a source (a repository
 * that cannot be read is a finding, not an error), then assesses it.
 */
export async function collectSourceStatus(
  source: string,
  repositories: readonly { url: string; repository?: Repository | undefined; error?: unknown }[],
  thresholds: HealthThresholds,
  now: Date,
  /** Given: each deduplicating repository's usage is read too (status, the dashboard), once per location. */
  usage?: UsageCache,
): Promise<SourceStatus> {
  const facts: RepositoryFacts[] = [];
  for (const opened of repositories) {
    const location = opened.repository?.location ?? opened.url;
    try {
      if (!opened.repository) throw opened.error;
      const read = await readRepositoryFacts(opened.repository, source);
      if (usage && opened.repository.info.content) {
        const repository = opened.repository;
        if (!usage.has(location)) usage.set(location, readRepositoryUsage(repository));
        read.usage = await usage.get(location);
      }
      facts.push(read);
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
  // Drills of each kind that applies to the backups held (a logical restore test needs a logical backup, the others a physical one).
  const wanted = new Set<DrillKind>(catalog.backups.flatMap((m): DrillKind[] => (isPhysical(m) ? ['physical-restore-test', 'pitr-drill'] : ['logical-restore-test'])));
  const drills: NonNullable<RepositoryFacts['drills']> = {};
  for (const backup of newestFirst) {
    for (const v of await repository.listVerifications(source, backup.id)) noteDrill(drills, v);
    // a drill of an older backup can only be newer if it ran after that backup ended: stop once every wanted kind has a newer success
    if ([...wanted].every((k) => drills[k]?.lastSuccess && backup.finishedAt < drills[k].lastSuccess.finishedAt)) break;
  }
  return { location: repository.location, catalog, lastVerification, lastRestoreTest: newestDrill(drills), drills, lastWalAt: await repository.lastWalWrittenAt(source) };
}

/** Keeps `v` in `drills` when it is the newest (or newest passed) of its kind. */
export function noteDrill(drills: NonNullable<RepositoryFacts['drills']>, v: Verification): void {
  const kind = drillKindOf(v);
  if (!kind) return;
  const held = (drills[kind] ??= { last: v });
  if (v.finishedAt > held.last.finishedAt) held.last = v;
  if (v.ok && (!held.lastSuccess || v.finishedAt > held.lastSuccess.finishedAt)) held.lastSuccess = v;
}

/** The newest restore test of any kind. */
export function newestDrill(drills: NonNullable<RepositoryFacts['drills']>): Verification | undefined {
  let best: Verification | undefined;
  for (const d of Object.values(drills)) if (!best || d.last.finishedAt > best.finishedAt) best = d.last;
  return best;
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
  return { backupId: v.backupId, kind: v.kind, drill: drillKindOf(v), ok: v.ok, finishedAt: v.finishedAt, durationMs: v.durationMs, restoreMs: v.restore?.durationMs, problem: v.problems[0], repository, ...(v.restore?.rpoMs !== undefined ? { rpoMs: v.restore.rpoMs } : {}) };
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
    ...(dedupFigures(entry.manifest) ? { addedBytes: dedupFigures(entry.manifest)!.addedBytes } : {}),
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
  // Each kind of drill on its own: the newest run of a kind failed, or the newest that passed is too old.
  const drills: SourceStatus['drills'] = {};
  for (const kind of DRILL_KINDS) {
    // facts without per-kind drills (read by older code paths) say it through their newest restore test
    const last = newestOf((f) => (f.drills ? f.drills[kind]?.last : f.lastRestoreTest && drillKindOf(f.lastRestoreTest) === kind ? f.lastRestoreTest : undefined));
    if (last) drills[kind] = { last, lastSuccess: newestOf((f) => f.drills?.[kind]?.lastSuccess) ?? (last.ok ? last : undefined) };
  }
  const hasKind = (physical: boolean) => all.some((b) => isPhysical(b.manifest) === physical);
  const limits: { kind: DrillKind; maxAge: HealthThresholds['restoreTestMaxAge']; code: Finding['code']; applies: boolean; command: string }[] = [
    { kind: 'logical-restore-test', maxAge: thresholds.restoreTestMaxAge, code: 'RESTORE_TEST_TOO_OLD', applies: hasKind(false), command: 'pgkeep verify latest --restore-test' },
    { kind: 'physical-restore-test', maxAge: thresholds.physicalRestoreTestMaxAge, code: 'PHYSICAL_RESTORE_TEST_TOO_OLD', applies: hasKind(true), command: 'pgkeep verify ID --restore-test on a physical backup' },
    { kind: 'pitr-drill', maxAge: thresholds.pitrDrillMaxAge, code: 'PITR_DRILL_TOO_OLD', applies: hasKind(true), command: 'pgkeep verify latest --pitr-drill' },
  ];
  for (const { kind, maxAge, code, applies, command } of limits) {
    const drill = drills[kind];
    const name = DRILL_NAMES[kind];
    if (drill && !drill.last.ok) {
      add('RESTORE_TEST_FAILED', `the last ${name} (of ${drill.last.backupId}, ${ago(age(drill.last.finishedAt))}) failed: ${drill.last.problem ?? `see pgkeep verify ${drill.last.backupId}`}`, drill.last.repository);
    } else if (maxAge && applies && newest) {
      const ok = drill?.lastSuccess;
      if (!ok) add(code, `no ${name} yet (required every ${maxAge.text}): run ${command}`);
      else if (age(ok.finishedAt) > maxAge.ms) add(code, `the last ${name} passed ${ago(age(ok.finishedAt))}, longer ago than ${maxAge.text}: run ${command}`);
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
    drills,
    repositories: facts.map((f) => ({
      location: f.location,
      backups: f.catalog?.backups.length ?? 0,
      storedBytes: (f.catalog?.backups ?? []).reduce((n, m) => n + (dedupFigures(m)?.addedBytes ?? m.totals.storedBytes), 0),
      ...(f.usage ? { usage: f.usage } : {}),
      ...(f.error ? { error: f.error.message } : {}),
    })),
    pitr,
    findings,
  };
}
