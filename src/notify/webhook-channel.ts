import type { WebhookConfig } from '../config/serve-schema.js';
import { PgkeepError } from '../errors.js';
import { alertText, type Alert, type AlertChannel } from './alert.js';

const TIMEOUT_MS = 10_000;

/**
 * POSTs alerts as JSON: pgkeep's own object (generic), or `{ text }` for Slack
 * incoming webhooks, or `{ content }` for Discord. The URL often is the secret
 * (Slack, Discord): only its host is ever named.
 */
export function webhookChannel(config: WebhookConfig): AlertChannel {
  const format = config.format ?? 'generic';
  const host = new URL(config.url).host;
  return {
    name: `webhook ${host} (${format})`,
    async send(alert, signal) {
      const body = format === 'slack' ? { text: `${icon(alert)} ${alertText(alert)}` } : format === 'discord' ? { content: `${icon(alert)} ${alertText(alert)}`.slice(0, 2000) } : { pgkeep: 1, ...alert };
      let response: Response;
      try {
        response = await fetch(config.url, {
          method: 'POST',
          headers: { 'content-type': 'application/json', 'user-agent': 'pgkeep', ...config.headers },
          body: JSON.stringify(body),
          signal: signal ? AbortSignal.any([signal, AbortSignal.timeout(TIMEOUT_MS)]) : AbortSignal.timeout(TIMEOUT_MS),
        });
      } catch (error) {
        const cause = (error as Error & { cause?: { code?: string } }).cause?.code ?? (error as Error).name;
        throw new PgkeepError('NOTIFY_FAILED', `webhook ${host}: cannot deliver (${cause}): check notify.webhooks url`, { cause: error });
      }
      await response.arrayBuffer().catch(() => undefined);
      if (!response.ok) throw new PgkeepError('NOTIFY_FAILED', `webhook ${host} answered HTTP ${response.status}: check the URL and its headers`);
    },
  };
}

function icon(alert: Alert): string {
  return alert.event === 'recovered' ? ':white_check_mark:' : alert.severity === 'critical' ? ':rotating_light:' : alert.severity === 'warning' ? ':warning:' : ':information_source:';
}
