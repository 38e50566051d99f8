import type { Finding } from './health.js';

/** What the grace of one source depends on, as serve knows it. */
export interface GraceState {
  /** The first scheduled backup run of the source after serve started; undefined: no backup schedule, no grace. */
  firstRunAt: Date | undefined;
  /** A backup job of the source ended (any result) since serve started: the grace is over. */
  backupEnded: boolean;
  /** A backup job of the source is queued or running now. */
  backupActive: boolean;
}

/**
 * The start-up grace: a source that has never been backed up is not reported
 * as "no backup" (NO_BACKUP) before its first scheduled backup had its chance,
 * that is until that run's time has come and its job has ended. A fresh
 * install with 60 sources whose first runs are minutes away must not send 60
 * alerts and then 60 "recovered". Every other finding stands, and a backup
 * that is merely too old (BACKUP_TOO_OLD) is reported at once: it was already
 * late before serve started. Pure, for the tests.
 */
export function inStartupGrace(state: GraceState, now: Date): boolean {
  if (!state.firstRunAt || state.backupEnded) return false;
  return now.getTime() < state.firstRunAt.getTime() + START_SLACK_MS || state.backupActive;
}

/**
 * How long after its time the first run may take to show up as a job. The
 * scheduler's timer fires a little late, and more so on a loaded machine; a
 * status read in that gap saw "time has come, no job" and sent a false "no
 * backup" (seen in CI). A run that has not started a minute after its time
 * was skipped or missed, and then the grace is over.
 */
export const START_SLACK_MS = 60_000;

/** The findings that count now: NO_BACKUP dropped while the source is in its start-up grace. */
export function withStartupGrace(findings: readonly Finding[], state: GraceState, now: Date): Finding[] {
  return inStartupGrace(state, now) ? findings.filter((f) => f.code !== 'NO_BACKUP') : [...findings];
}
