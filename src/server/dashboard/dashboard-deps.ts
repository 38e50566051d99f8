import type { SourceStatus } from '../../status/health.js';

/** One source on the overview: its status (src/status/health.ts) plus what only a scheduler or a record knows. */
export interface SourceOverview {
  status: SourceStatus;
  /** Next scheduled run (ISO), when a scheduler knows it; undefined shows "not scheduled". */
  nextRunAt?: string | undefined;
  /** The labels the source's backups carry (sources.<name>.backup.labels): the overview filters by them. */
  labels?: string[] | undefined;
  /** How long the restore of the last restore test took: the measured restore time. */
  lastRestoreTestRestoreMs?: number | undefined;
}

/** One backup in the backups view. */
export interface BackupRow {
  id: string;
  kind: string;
  name: string | null;
  labels: string[];
  startedAt: string;
  finishedAt: string;
  durationMs: number;
  rawBytes: number;
  storedBytes: number;
  /** A deduplicated backup: what it added to the repository's storage (rawBytes is then its logical size); undefined for files. */
  addedBytes?: number | undefined;
  /** The database that was dumped (for the restore command). */
  database: string;
  /** Repositories holding it (locations). */
  repositories: string[];
  pinned: boolean;
  /** The newest verification of this backup, if any. */
  verification?: { kind: 'integrity' | 'restore-test'; ok: boolean; finishedAt: string; problem?: string | undefined; restoreMs?: number | undefined } | undefined;
}

/** backup (logical or physical), the job kind restoreTest (as in pgkeep.yaml and the job history), pin, unpin. */
export type JobKind = 'backup' | 'restoreTest' | 'pin' | 'unpin';

/** A job started by the dashboard or a scheduler, running or recent. */
export interface JobView {
  id: string;
  source: string;
  kind: JobKind;
  state: 'running' | 'succeeded' | 'failed';
  startedAt: string;
  finishedAt?: string | undefined;
  /** What the job is doing now (dump, verify, restore, ...). */
  phase?: string | undefined;
  bytes: number;
  totalBytes?: number | undefined;
  /** Bytes per second since the job started. */
  rate?: number | undefined;
  /** The backup the job made or worked on. */
  backupId?: string | undefined;
  error?: { code: string; message: string } | undefined;
}

/**
 * Everything the dashboard reads and does, so it can be mounted on any
 * server: `commandDashboardDeps` implements it on the CLI's commands with an
 * in-memory job list; `pgkeep serve` can point it at its scheduler and job
 * runner. Errors are PgkeepErrors (SOURCE_UNKNOWN, BACKUP_NOT_FOUND, LOCK_HELD
 * for a job that would overlap itself, ...).
 */
export interface DashboardDeps {
  /** Every source with its health, in display order. */
  sources(): Promise<SourceOverview[]>;
  /** One source with its health, reading only that source (its page must not cost the whole fleet); SOURCE_UNKNOWN if none. */
  source?(name: string): Promise<SourceOverview>;
  /** The complete backups of one source, oldest first. */
  backups(source: string): Promise<BackupRow[]>;
  /** Running jobs and recent ones, newest first. */
  jobs(): Promise<JobView[]>;
  /** Starts a backup of the source now; resolves to the job id once it has started. */
  startBackup(source: string): Promise<string>;
  /** Starts a restore test of a backup (`latest` by default) now. */
  startRestoreTest(source: string, backupId: string): Promise<string>;
  pin(source: string, backupId: string): Promise<string>;
  unpin(source: string, backupId: string): Promise<string>;
  /** The source's disaster-recovery runbook, as markdown (pgkeep runbook). */
  runbook?(source: string): Promise<string>;
}
