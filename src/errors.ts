/**
 * Every error pgkeep reports to a user is a PgkeepError with a stable code from
 * this catalog. The code is what scripts and tests match on; the message is
 * one line a person can act on (what was wrong, and what to do).
 */
export const ERROR_CODES = {
  // usage and configuration
  USAGE: { exit: 2, summary: 'bad command-line usage' },
  CONFIG_INVALID: { exit: 2, summary: 'configuration file or value is invalid' },
  CONFIG_NOT_FOUND: { exit: 2, summary: 'configuration file given with --config does not exist' },
  SOURCE_UNKNOWN: { exit: 2, summary: 'no source of that name, or several and none chosen' },
  NO_DATABASE: { exit: 2, summary: 'no database connection configured' },
  INVALID_NAME: { exit: 2, summary: 'a backup, source or database name has characters that are not allowed' },
  FILE_NOT_FOUND: { exit: 2, summary: 'a file given on the command line (restore --file, wal-push) cannot be read' },
  OUTPUT_EXISTS: { exit: 2, summary: 'the --output file already exists (pgkeep never overwrites it)' },
  DUMP_FORMAT_UNKNOWN: { exit: 2, summary: 'restore --file: not a dump format pgkeep can restore (or one it must not run as it is)' },

  // PostgreSQL server and tools
  DB_UNREACHABLE: { exit: 3, summary: 'the PostgreSQL server cannot be reached' },
  DB_AUTH_FAILED: { exit: 3, summary: 'the server refused the credentials' },
  DB_MISSING: { exit: 3, summary: 'the database does not exist' },
  DB_EXISTS: { exit: 3, summary: 'the restore target database already exists' },
  DB_QUERY_FAILED: { exit: 3, summary: 'a query against the server failed' },
  DB_PRIVILEGE: { exit: 3, summary: 'the role lacks a privilege pgkeep needs' },
  ROLE_MISSING: { exit: 3, summary: 'a role the backup names (owner, privileges, settings) does not exist on the target server' },
  TOOL_MISSING: { exit: 4, summary: 'a PostgreSQL client program (pg_dump, pg_restore, psql) is not installed' },
  TOOL_TOO_OLD: { exit: 4, summary: 'a PostgreSQL client program is older than the server' },
  TOOL_FAILED: { exit: 4, summary: 'a PostgreSQL client program exited with an error' },

  // repository and storage
  REPO_MISSING: { exit: 5, summary: 'the repository does not exist' },
  REPO_NOT_PGKEEP: { exit: 5, summary: 'the location is not a pgkeep repository' },
  REPO_EXISTS: { exit: 5, summary: 'a repository already exists there' },
  REPO_INIT_UNFINISHED: { exit: 5, summary: 'the location holds the keys of a pgkeep init that did not finish, and no pgkeep.json' },
  REPO_FORMAT: { exit: 5, summary: 'the repository was written by an incompatible pgkeep version' },
  STORAGE_FULL: { exit: 5, summary: 'no space left on the repository storage' },
  STORAGE_ACCESS: { exit: 5, summary: 'the storage refused access' },
  STORAGE_IO: { exit: 5, summary: 'reading or writing the storage failed' },
  STORAGE_NETWORK: {
    exit: 16,
    summary: 'the storage could not be reached or stopped answering (refused, reset, timed out) after every retry: nothing was judged corrupt; try again',
  },
  STORAGE_NOT_FOUND: { exit: 5, summary: 'an object is missing from the storage' },
  LOCK_HELD: { exit: 5, summary: 'another pgkeep process holds the source lock' },
  BACKUP_NOT_FOUND: { exit: 6, summary: 'no backup with that id' },
  BACKUP_EXISTS: { exit: 6, summary: 'a backup with that id is already in the repository' },
  BACKUP_AMBIGUOUS: { exit: 6, summary: 'the backup id matches backups of several sources' },
  MANIFEST_INVALID: { exit: 6, summary: 'a manifest cannot be read' },
  BACKUP_PARTIAL: { exit: 10, summary: 'the backup was written to some of the source\'s repositories, not all' },
  DATABASES_PARTIAL: { exit: 10, summary: 'backup --all-databases: some databases were backed up, others failed' },

  // WAL archive and point-in-time recovery
  WAL_INVALID: { exit: 11, summary: 'a file given to wal-push is not a WAL file PostgreSQL archives' },
  WAL_CONFLICT: { exit: 11, summary: 'the archive already holds that WAL file with different content (never overwritten)' },
  WAL_FOREIGN: { exit: 11, summary: 'the WAL file comes from a different cluster (system identifier) than the source\'s archive' },
  WAL_MISSING: { exit: 1, summary: 'the archive does not hold the requested WAL file' },
  WAL_TIMEOUT: { exit: 11, summary: 'WAL a backup needs did not arrive in the archive in time' },
  PITR_NO_BACKUP: { exit: 12, summary: 'no physical backup can reach the recovery target' },
  PITR_TARGET_DIR: { exit: 12, summary: 'the data directory for recovery is not empty or not usable' },
  PITR_FAILED: { exit: 12, summary: 'the recovered server failed to start or to reach the target' },
  CHECK_FAILED: { exit: 13, summary: 'pgkeep check found a problem with the source, its tools, repository or WAL archiving' },

  // integrity
  VERIFY_FAILED: { exit: 7, summary: 'a backup failed verification' },
  CHECKSUM_MISMATCH: { exit: 7, summary: 'stored bytes do not match the manifest' },
  ROW_COUNT_MISMATCH: { exit: 7, summary: 'restored row counts differ from the backup' },

  // health
  UNHEALTHY: { exit: 2, summary: 'status --check found a problem (2 is CRITICAL for Nagios-style probes)' },

  // daemon (pgkeep serve) and alerts
  JOB_STUCK: { exit: 14, summary: 'a scheduled job made no progress for too long and was cancelled' },
  SERVE_INSECURE: { exit: 2, summary: 'serve would listen on a non-loopback address without an API token' },
  NOTIFY_FAILED: { exit: 15, summary: 'an alert channel (webhook, email) could not deliver' },

  // run control
  ABORTED: { exit: 130, summary: 'interrupted by a signal or cancelled' },
  CONFIRMATION_REQUIRED: { exit: 8, summary: 'a destructive action was not confirmed' },
  RESTORE_FAILED: { exit: 9, summary: 'the restore failed' },
  INTERNAL: { exit: 1, summary: 'unexpected internal error' },
} as const satisfies Record<string, { exit: number; summary: string }>;

export type ErrorCode = keyof typeof ERROR_CODES;

export interface PgkeepErrorOptions {
  cause?: unknown;
  /** Extra detail kept for --json and debugging; never shown as the one-line message. */
  details?: Record<string, unknown>;
}

export class PgkeepError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message: string, options: PgkeepErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'PgkeepError';
    this.code = code;
    this.details = options.details;
  }

  get exitCode(): number {
    return ERROR_CODES[this.code].exit;
  }
}

export function isPgkeepError(error: unknown, code?: ErrorCode): error is PgkeepError {
  return error instanceof PgkeepError && (code === undefined || error.code === code);
}

/** Wraps anything thrown into a PgkeepError, keeping PgkeepErrors as they are. */
export function toPgkeepError(error: unknown, fallback: ErrorCode = 'INTERNAL'): PgkeepError {
  if (error instanceof PgkeepError) return error;
  const message = error instanceof Error ? error.message : String(error);
  return new PgkeepError(fallback, message, { cause: error });
}

/** The error an aborted operation rejects with; the reason is kept as the cause. */
export function abortError(signal: AbortSignal): PgkeepError {
  if (signal.reason instanceof PgkeepError) return signal.reason;
  return new PgkeepError('ABORTED', 'interrupted', { cause: signal.reason });
}

export function throwIfAborted(signal: AbortSignal | undefined): void {
  if (signal?.aborted) throw abortError(signal);
}
