import { resolveNotifySettings } from '../config/serve-settings.js';
import { PgkeepError } from '../errors.js';
import { notifyChannels } from '../notify/channels.js';
import type { CommandContext } from '../registry/command-context.js';
import { z } from 'zod';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';

export interface NotifyTestResult {
  channels: { channel: string; ok: boolean; error?: string | undefined }[];
}

/**
 * `pgkeep notify test`: one test message through every configured channel.
 * Every channel is tried; NOTIFY_FAILED (with the results) when any failed,
 * CONFIG_INVALID when none is configured.
 */
export async function runNotifyTest(ctx: CommandContext, now: Date = new Date()): Promise<NotifyTestResult> {
  const channels = notifyChannels(resolveNotifySettings(ctx.settings));
  if (channels.length === 0) {
    throw new PgkeepError('CONFIG_INVALID', 'no alert channel is configured: add notify.webhooks or notify.email to pgkeep.yaml');
  }
  const results: NotifyTestResult['channels'] = [];
  for (const channel of channels) {
    ctx.info(`sending a test message: ${channel.name}`);
    try {
      await channel.send(
        { event: 'test', source: undefined, severity: 'info', title: 'pgkeep test message', message: 'This is a test of pgkeep alerts: this channel works.', at: now.toISOString() },
        ctx.signal,
      );
      results.push({ channel: channel.name, ok: true });
    } catch (error) {
      results.push({ channel: channel.name, ok: false, error: (error as Error).message });
    }
  }
  const failed = results.filter((r) => !r.ok);
  if (failed.length > 0) {
    throw new PgkeepError('NOTIFY_FAILED', `${failed.length} of ${results.length} channel(s) failed: ${failed[0]!.error}`, { details: { result: { channels: results } } });
  }
  return { channels: results };
}

/** `pgkeep notify test`. */
export const notifyTestCommand: CommandSpec<Record<string, never>, NotifyTestResult> = {
  name: 'notify test',
  description: 'send a test message through every configured channel',
  options: [],
  help: { globals: ['config'], examples: ['pgkeep notify test -c /etc/pgkeep/pgkeep.yaml'] },
  parse: requestParser(z.object({}).strict(), () => ({})),
  run: (ctx) => runNotifyTest(ctx),
  print: (result, out) => printNotifyTest(result, out),
  printFailure(error, out) {
    // which channels failed, and which worked
    const result = error.details?.result;
    if (result && !out.json) printNotifyTest(result as NotifyTestResult, out);
  },
};

function printNotifyTest(result: NotifyTestResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  for (const c of result.channels) out.line(`${c.ok ? 'sent' : 'FAILED'}  ${c.channel}${c.error ? `: ${c.error}` : ''}`);
}
