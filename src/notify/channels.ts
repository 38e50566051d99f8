import type { NotifySettings } from '../config/serve-settings.js';
import type { AlertChannel } from './alert.js';
import { emailChannel } from './email-channel.js';
import { webhookChannel } from './webhook-channel.js';

/** Every configured channel: each webhook, then email. */
export function notifyChannels(settings: NotifySettings): AlertChannel[] {
  return [...settings.webhooks.map(webhookChannel), ...(settings.email ? [emailChannel(settings.email)] : [])];
}
