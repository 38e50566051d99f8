import { closeSync, existsSync, fsyncSync, openSync, readFileSync, renameSync, writeFileSync, writeSync } from 'node:fs';
import { makeFoldersSync } from '../local/make-folders.js';
import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import type { JobKind } from '../config/serve-schema.js';

export type JobState = 'queued' | 'running' | 'succeeded' | 'failed' | 'skipped' | 'cancelled';
export type JobTrigger = 'schedule' | 'api' | 'catch-up' | 'once';

/** One job of the daemon, as the API shows it and the history keeps it. */
export interface JobRecord {
  id: string;
  source: string;
  kind: JobKind | 'verify';
  trigger: JobTrigger;
  state: JobState;
  queuedAt: string;
  startedAt?: string | undefined;
  finishedAt?: string | undefined;
  /** Bytes the job moved (dumped, verified), as last reported. */
  bytes: number;
  /** The backup it made or checked. */
  backupId?: string | undefined;
  /** A backup to verify (POST /api/backups/:id/verify). */
  target?: string | undefined;
  /** A short outcome line ("3 deleted, 5 kept", "skipped: a job of this source is running"). */
  detail?: string | undefined;
  error?: { code: string; message: string } | undefined;
  /**
   * Skipped runs aggregated in this one record (state "skipped"): how many, and
   * when the first was; queuedAt and finishedAt are the newest skip's. One record
   * per source and kind, so skips under overload never evict real jobs.
   */
  skipped?: number | undefined;
  firstSkippedAt?: string | undefined;
}

const FILE = 'jobs.jsonl';
const ONCE_FILE = 'once.json';

/**
 * The job history of the daemon, kept across restarts in `<stateDir>/jobs.jsonl`.
 *
 * Why JSON lines rather than SQLite: better-sqlite3 is a native module that
 * would have to be compiled from source on every install here, for a store of a
 * few hundred small records written a few times per job. Each change appends
 * one line (a torn last line after a crash is ignored); the newest record of
 * an id wins; the file is compacted (temp file, fsync, rename) at open and when
 * it grows past twice the limit, so it stays small and is never half-rewritten.
 */
export class JobHistory {
  private readonly records = new Map<string, JobRecord>();
  private lines = 0;

  private constructor(
    private readonly file: string,
    private readonly limit: number,
  ) {}

  /** Opens (or creates) the history; jobs left running by a previous process are recorded as failed. */
  static open(stateDir: string, options: { limit?: number; now?: Date } = {}): JobHistory {
    const history = new JobHistory(path.join(stateDir, FILE), options.limit ?? 1000);
    try {
      makeFoldersSync(stateDir);
      if (existsSync(history.file)) {
        for (const line of readFileSync(history.file, 'utf8').split('\n')) {
          if (!line.trim()) continue;
          try {
            const record = JSON.parse(line) as JobRecord;
            if (typeof record.id === 'string') history.records.set(record.id, record);
          } catch {
            // a line torn by a crash mid-append: the record before it stands
          }
        }
      }
    } catch (error) {
      throw new PgkeepError('CONFIG_INVALID', `cannot use the state folder ${stateDir}: ${(error as NodeJS.ErrnoException).code ?? (error as Error).message} (check serve.stateDir and its permissions)`, { cause: error });
    }
    const now = (options.now ?? new Date()).toISOString();
    for (const record of history.records.values()) {
      if (record.state === 'running' || record.state === 'queued') {
        history.records.set(record.id, { ...record, state: 'failed', finishedAt: now, error: { code: 'ABORTED', message: 'pgkeep serve stopped before the job finished' } });
      }
    }
    history.compact();
    return history;
  }

  /** When `serve --once` last ran (schedules that never ran count from then). */
  lastOnceRun(): Date | undefined {
    try {
      const at = (JSON.parse(readFileSync(path.join(path.dirname(this.file), ONCE_FILE), 'utf8')) as { lastRunAt?: string }).lastRunAt;
      return at ? new Date(at) : undefined;
    } catch {
      return undefined;
    }
  }

  /** Records a `serve --once` run (temp file, then rename). */
  markOnceRun(at: Date): void {
    const file = path.join(path.dirname(this.file), ONCE_FILE);
    writeFileSync(`${file}.tmp`, JSON.stringify({ lastRunAt: at.toISOString() }), { mode: 0o600 });
    renameSync(`${file}.tmp`, file);
  }

  /** Every record, oldest first. */
  list(): JobRecord[] {
    return [...this.records.values()].sort((a, b) => a.queuedAt.localeCompare(b.queuedAt) || a.id.localeCompare(b.id));
  }

  get(id: string): JobRecord | undefined {
    return this.records.get(id);
  }

  /** The newest record of a source and kind matching `filter`. */
  latest(source: string, kind: string, filter: (record: JobRecord) => boolean = () => true): JobRecord | undefined {
    return this.list()
      .filter((r) => r.source === source && r.kind === kind && filter(r))
      .at(-1);
  }

  /** Stores the new state of a job (one appended line). */
  save(record: JobRecord): void {
    this.records.set(record.id, { ...record });
    const fd = openSync(this.file, 'a', 0o600);
    try {
      writeSync(fd, `${JSON.stringify(record)}\n`);
    } finally {
      closeSync(fd);
    }
    if (++this.lines > this.limit * 2) this.compact();
  }

  /** Rewrites the file with the newest `limit` records, atomically. */
  private compact(): void {
    const kept = this.list().slice(-this.limit);
    this.records.clear();
    for (const record of kept) this.records.set(record.id, record);
    const temp = `${this.file}.${process.pid}.tmp`;
    const fd = openSync(temp, 'w', 0o600);
    try {
      writeSync(fd, kept.map((r) => `${JSON.stringify(r)}\n`).join(''));
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(temp, this.file);
    this.lines = kept.length;
  }
}
