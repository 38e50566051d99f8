import nodemailer from 'nodemailer';
import type { NotifySettings } from '../config/serve-settings.js';
import { PgkeepError } from '../errors.js';
import { alertText, type AlertChannel } from './alert.js';

/** Sends alerts by SMTP (nodemailer): STARTTLS when offered, TLS from the start with `secure`. */
export function emailChannel(config: NonNullable<NotifySettings['email']>): AlertChannel {
  const transport = nodemailer.createTransport({
    host: config.host,
    port: config.port ?? (config.secure ? 465 : 587),
    secure: config.secure ?? false,
    ...(config.user ? { auth: { user: config.user, pass: config.password ?? '' } } : {}),
    connectionTimeout: 10_000,
    greetingTimeout: 10_000,
    socketTimeout: 20_000,
  });
  return {
    name: `email to ${config.to.join(', ')} via ${config.host}`,
    async send(alert) {
      try {
        await transport.sendMail({
          from: config.from,
          to: config.to,
          subject: `[pgkeep] ${alert.title}`,
          text: `${alertText(alert)}\n\nevent: ${alert.event}${alert.source ? `\nsource: ${alert.source}` : ''}\nat: ${alert.at}\n`,
          headers: { 'X-Pgkeep-Event': alert.event },
        });
      } catch (error) {
        const code = (error as { code?: string }).code ?? 'error';
        // nodemailer's message may quote the server's reply, never the password
        throw new PgkeepError('NOTIFY_FAILED', `email via ${config.host}: cannot send (${code}: ${(error as Error).message.split('\n')[0]}): check notify.email`, { cause: error });
      }
    },
  };
}
