import type { JobRecord } from '../scheduler/job-history.js';

/** One check of /ready. */
export interface ReadyCheck {
  name: string;
  ok: boolean;
  message?: string | undefined;
}

/**
 * What the HTTP server asks the daemon. The server owns HTTP only (routes,
 * auth, status codes); the daemon (src/commands/serve.ts) answers from the
 * commands and the scheduler. A dashboard (issue 8) renders the same calls.
 */
export interface DaemonApi {
  readonly version: string;
  readonly startedAt: Date;
  ready(): Promise<ReadyCheck[]>;
  metrics(): Promise<{ contentType: string; text: string }>;
  sources(): Promise<unknown[]>;
  backups(source: string): Promise<unknown[]>;
  backup(id: string): Promise<unknown>;
  jobs(): JobRecord[];
  job(id: string): JobRecord | undefined;
  /** Starts (or queues) a logical backup of the source. */
  startBackup(source: string): JobRecord;
  /** Starts (or queues) a verification of the backup. */
  startVerify(id: string): Promise<JobRecord>;
}
