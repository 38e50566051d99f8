import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import type { Clock } from '../scheduler/clock.js';
import type { JobRecord } from '../scheduler/job-history.js';
import type { Finding } from '../status/health.js';
import type { Alert, AlertChannel, AlertEvent } from './alert.js';

/** An open problem: what it is, and for whom. `key` identifies it while it lasts. */
export interface Problem {
  key: string;
  event: AlertEvent;
  source: string | undefined;
  severity: 'critical' | 'warning';
  title: string;
  message: string;
}

interface OpenProblem extends Problem {
  since: string;
  lastSentAt: string;
}

/**
 * Turns problems into alerts without storms: one alert when a problem
 * appears (tried again at the next update when no channel took it), a reminder every `reminderMs` while it lasts (0: none), one
 * "recovered" message when it clears. Problems are grouped in scopes (the
 * health of a source, the jobs of a source and kind): each update replaces
 * the open problems of one scope. The open set is kept in a state file so a
 * restart does not alert again for what was already sent.
 */
export class Alerter {
  private readonly open = new Map<string, OpenProblem & { scope: string }>();

  constructor(
    private readonly channels: readonly AlertChannel[],
    private readonly options: { reminderMs: number; clock: Clock; log: (level: 'info' | 'warn' | 'error', message: string) => void; stateFile?: string | undefined },
  ) {
    const file = options.stateFile;
    if (file && existsSync(file)) {
      try {
        for (const p of JSON.parse(readFileSync(file, 'utf8')) as (OpenProblem & { scope: string })[]) this.open.set(p.key, p);
      } catch {
        options.log('warn', `ignoring an unreadable alert state file ${file}: open problems may be announced again`);
      }
    }
  }

  /** The problems open now. */
  problems(): (OpenProblem & { scope: string })[] {
    return [...this.open.values()];
  }

  /** Replaces the open problems of `scope`; sends what is new, due for a reminder, or cleared. */
  async update(scope: string, problems: readonly Problem[]): Promise<void> {
    const now = this.options.clock.now();
    const at = now.toISOString();
    // each alert with the problem it opens, if any: undelivered, that problem is tried again at the next update
    const alerts: (Alert & { opens?: string })[] = [];
    const current = new Set(problems.map((p) => p.key));
    for (const [key, was] of this.open) {
      if (was.scope !== scope || current.has(key)) continue;
      this.open.delete(key);
      alerts.push({ event: 'recovered', problem: was.event, source: was.source, severity: 'info', title: `recovered: ${was.title}`, message: `the problem cleared: ${was.message}`, at, since: was.since });
    }
    for (const problem of problems) {
      const was = this.open.get(problem.key);
      if (!was) {
        this.open.set(problem.key, { ...problem, scope, since: at, lastSentAt: at });
        alerts.push({ event: problem.event, source: problem.source, severity: problem.severity, title: problem.title, message: problem.message, at, opens: problem.key });
      } else {
        // the wording may change (ages grow); the problem stays the same
        Object.assign(was, { title: problem.title, message: problem.message });
        if (this.options.reminderMs > 0 && now.getTime() - Date.parse(was.lastSentAt) >= this.options.reminderMs) {
          was.lastSentAt = at;
          alerts.push({ event: 'reminder', problem: problem.event, source: problem.source, severity: problem.severity, title: `still: ${problem.title}`, message: problem.message, at, since: was.since });
        }
      }
    }
    for (const { opens, ...alert } of alerts) {
      const results = await this.send(alert);
      if (opens && results.length > 0 && results.every((r) => r.error)) this.open.delete(opens);
    }
    if (alerts.length > 0) this.save();
  }

  /** Sends one alert to every channel; a channel that fails is logged, the others still get it. */
  async send(alert: Alert): Promise<{ channel: string; error?: string | undefined }[]> {
    const results = [];
    for (const channel of this.channels) {
      try {
        await channel.send(alert);
        results.push({ channel: channel.name });
      } catch (error) {
        this.options.log('error', `alert "${alert.title}" not delivered: ${(error as Error).message}`);
        results.push({ channel: channel.name, error: (error as Error).message });
      }
    }
    if (this.channels.length > 0) this.options.log('info', `alert sent: ${alert.title}`);
    return results;
  }

  private save(): void {
    const file = this.options.stateFile;
    if (!file) return;
    try {
      writeFileSync(`${file}.tmp`, JSON.stringify(this.problems(), null, 1), { mode: 0o600 });
      renameSync(`${file}.tmp`, file);
    } catch (error) {
      this.options.log('warn', `cannot save the alert state to ${file}: ${(error as Error).message}`);
    }
  }
}

const FINDING_EVENTS: Record<Finding['code'], AlertEvent> = {
  REPOSITORY_UNREADABLE: 'problem',
  NO_BACKUP: 'backup_stale',
  BACKUP_TOO_OLD: 'backup_stale',
  LAST_BACKUP_FAILED: 'backup_failed',
  SIZE_DROP: 'size_anomaly',
  SIZE_BELOW_MIN: 'size_anomaly',
  VERIFY_FAILED: 'problem',
  RESTORE_TEST_FAILED: 'restore_test_failed',
  RESTORE_TEST_TOO_OLD: 'restore_test_failed',
  PHYSICAL_RESTORE_TEST_TOO_OLD: 'restore_test_failed',
  PITR_DRILL_TOO_OLD: 'restore_test_failed',
  ARCHIVE_LAG: 'wal_archive_lag',
};

/**
 * Keys of problems that both a failed job and the health findings report (a
 * failed backup leaves a failure record that status reads): one key, so they
 * make one alert.
 */
const sharedKey = (source: string, what: 'backup-failed' | 'restore-test-failed') => `${what}:${source}`;

/** The health findings of a source (src/status/health.ts) as problems. */
export function problemsFromFindings(findings: readonly Finding[]): Problem[] {
  return findings.map((f) => ({
    key:
      f.code === 'LAST_BACKUP_FAILED'
        ? sharedKey(f.source, 'backup-failed')
        : f.code === 'RESTORE_TEST_FAILED'
          ? sharedKey(f.source, 'restore-test-failed')
          : `health:${f.source}:${f.code}${f.repository ? `:${f.repository}` : ''}`,
    event: FINDING_EVENTS[f.code],
    source: f.source,
    severity: f.code === 'SIZE_DROP' || f.code === 'RESTORE_TEST_TOO_OLD' || f.code === 'PHYSICAL_RESTORE_TEST_TOO_OLD' || f.code === 'PITR_DRILL_TOO_OLD' ? 'warning' : 'critical',
    title: `${f.source}: ${f.code.toLowerCase().replace(/_/g, ' ')}`,
    message: f.message,
  }));
}

/** The scope of a job's own problem: failures of one kind of job of one source. */
export function jobScope(job: Pick<JobRecord, 'source' | 'kind'>): string {
  return `job:${job.source}:${job.kind}`;
}

/** A failed job as a problem (none when it succeeded); skipped and cancelled jobs change nothing (undefined). */
export function problemsFromJob(job: Readonly<JobRecord>): Problem[] | undefined {
  if (job.state === 'succeeded') return [];
  if (job.state !== 'failed' || !job.error) return undefined;
  const stuck = job.error.code === 'JOB_STUCK';
  const event: AlertEvent = stuck ? 'job_stuck' : job.kind === 'logical' || job.kind === 'physical' ? 'backup_failed' : job.kind === 'restoreTest' || job.kind === 'pitrDrill' ? 'restore_test_failed' : 'problem';
  const key = event === 'backup_failed' ? sharedKey(job.source, 'backup-failed') : event === 'restore_test_failed' ? sharedKey(job.source, 'restore-test-failed') : jobScope(job);
  return [{ key, event, source: job.source, severity: 'critical', title: `${job.source}: ${job.kind} ${stuck ? 'stuck' : 'failed'}`, message: `${job.error.message} (${job.error.code}, job ${job.id})` }];
}
