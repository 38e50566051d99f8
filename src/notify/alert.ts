/** What an alert is about (the issue's events, plus "test" for `pgkeep notify test`). */
export type AlertEvent = 'backup_failed' | 'backup_stale' | 'restore_test_failed' | 'size_anomaly' | 'wal_archive_lag' | 'job_stuck' | 'problem' | 'recovered' | 'reminder' | 'test';

/** One message to every channel. */
export interface Alert {
  event: AlertEvent;
  /** The problem's own event for reminders and recoveries. */
  problem?: AlertEvent | undefined;
  source: string | undefined;
  severity: 'critical' | 'warning' | 'info';
  /** One line: the subject of an email, the first line of a chat message. */
  title: string;
  /** What happened and what to do. */
  message: string;
  at: string;
  /** When the problem was first seen (reminders, recoveries). */
  since?: string | undefined;
}

/** A channel delivers one alert or throws NOTIFY_FAILED. */
export interface AlertChannel {
  /** For logs and `notify test` ("webhook hooks.slack.com", "email to ops@…"); never a secret. */
  readonly name: string;
  send(alert: Alert, signal?: AbortSignal): Promise<void>;
}

/** The text of an alert for chat and email bodies. */
export function alertText(alert: Alert): string {
  return `${alert.title}\n${alert.message}${alert.since ? `\n(since ${alert.since})` : ''}`;
}
