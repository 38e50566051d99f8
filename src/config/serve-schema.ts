import { z } from 'zod';
import { parseHostPattern, parseProxyAddress } from '../server/host-allowlist.js';

/**
 * A kind of scheduled work: a key of `sources.<name>.schedule`. The kinds are
 * those the commands declare (src/registry/); config reads no one, so the key
 * is checked where `pgkeep serve` resolves its settings (resolveServeSettings).
 */
export type JobKind = string;

function build() {
  /** A duration as written in the config: 10m, 60s, 24h (same syntax as retention). */
  const DurationText = z.string().regex(/^(?:\d+(?:\.\d+)?[smhdw])+$/, 'expected a duration such as 10m, 60s or 24h (units s, m, h, d, w)');
  /** A cron expression (5 fields, or 6 with seconds); checked by croner when the daemon starts. */
  const CronText = z.string().min(1, 'expected a cron expression such as "0 2 * * *"');

  /** A list in the config, also written as one string (`allowedHosts: backup.example.com`). */
  const listOf = (item: z.ZodType<string>) => z.preprocess((value) => (typeof value === 'string' ? [value] : value), z.array(item));
  /** An entry of serve.allowedHosts: name, name:port, *.domain, IP address, CIDR range or "*". */
  const HostPatternText = z.string().superRefine((value, ctx) => {
    const parsed = parseHostPattern(value);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
  });
  /** An entry of serve.trustProxy: an IP address or CIDR range. */
  const ProxyAddressText = z.string().superRefine((value, ctx) => {
    const parsed = parseProxyAddress(value);
    if (typeof parsed === 'string') ctx.addIssue({ code: 'custom', message: parsed });
  });

  /**
   * Cron schedules of one source (`sources.<name>.schedule`): a cron expression
   * per job kind (logical, physical, restoreTest, prune, check), each optional.
   */
  const ScheduleSchema = z
    .object({
      /** IANA time zone of these cron expressions (default: `serve.timeZone`, else this machine's). */
      timeZone: z.string().min(1).optional(),
    })
    .catchall(CronText);

  /** `serve:` — the daemon. */
  const ServeSchema = z
    .object({
      /** Address to listen on (default 127.0.0.1). Anything but loopback needs a token. */
      host: z.string().min(1).optional(),
      /** Port (default 9187). */
      port: z.coerce.number().int().min(0).max(65535).optional(),
      /** Bearer token of the API; PGKEEP_API_TOKEN wins. Without one, state-changing endpoints are disabled. */
      token: z.string().min(1).optional(),
      /** File holding the token (read at start). */
      tokenFile: z.string().min(1).optional(),
      /** Require the token on /health, /ready and /metrics too (default false). */
      protectProbes: z.boolean().optional(),
      /**
       * Host names the HTTP server answers besides loopback and its own addresses
       * (DNS rebinding protection): the name behind a reverse proxy, a Service name.
       */
      allowedHosts: listOf(HostPatternText).optional(),
      /** Addresses (IP or CIDR) of reverse proxies whose X-Forwarded-Host is read, and checked against allowedHosts. */
      trustProxy: listOf(ProxyAddressText).optional(),
      /** Folder of the job history (default ./pgkeep-state, beside the config). */
      stateDir: z.string().min(1).optional(),
      /** Jobs running at once across sources (default 2). */
      concurrency: z.coerce.number().int().min(1).max(64).optional(),
      /** A job due while another job of the same source runs: queue it (default) or skip it. */
      overlap: z.enum(['queue', 'skip']).optional(),
      /** A job with no progress for this long is cancelled and failed (default 10m). */
      stuckAfter: DurationText.optional(),
      /** On SIGTERM, how long running jobs may take to finish before they are cancelled (default 60s). */
      gracePeriod: DurationText.optional(),
      /** At start, run one backup of a kind whose last success is older than its schedule period (default false). */
      catchUp: z.boolean().optional(),
      /** Prune the source after each successful backup (default true). */
      pruneAfterBackup: z.boolean().optional(),
      /** Default IANA time zone of every schedule. */
      timeZone: z.string().min(1).optional(),
      /** Job history records kept (default 1000). */
      historyLimit: z.coerce.number().int().min(10).optional(),
      /**
       * How often serve's catalog looks for backups written by others (the CLI,
       * another host on the same bucket): one listing per source (default 1m).
       */
      catalogRefresh: DurationText.optional(),
    })
    .strict();

  const WebhookSchema = z
    .object({
      url: z.string().url('a webhook needs an http(s) URL'),
      /** generic: pgkeep's own JSON; slack: {text}; discord: {content}. */
      format: z.enum(['generic', 'slack', 'discord']).optional(),
      /** Extra request headers, e.g. an Authorization header (use ${VAR}). */
      headers: z.record(z.string(), z.string()).optional(),
    })
    .strict();

  const EmailSchema = z
    .object({
      host: z.string().min(1),
      port: z.coerce.number().int().min(1).max(65535).optional(),
      /** TLS from the start (port 465); otherwise STARTTLS when the server offers it. */
      secure: z.boolean().optional(),
      user: z.string().min(1).optional(),
      /** File holding the SMTP password (or SMTP_PASSWORD in the environment). */
      passwordFile: z.string().min(1).optional(),
      from: z.string().min(3),
      to: z.array(z.string().min(3)).min(1, 'email.to needs at least one address'),
    })
    .strict();

  /** `notify:` — where alerts go, and how often a problem is repeated. */
  const NotifySchema = z
    .object({
      webhooks: z.array(WebhookSchema).optional(),
      email: EmailSchema.optional(),
      /** A problem that has not cleared is sent again after this long (default 24h; 0 never). */
      reminderInterval: z.union([z.literal('0'), DurationText]).optional(),
    })
    .strict();
  return { ScheduleSchema, ServeSchema, WebhookSchema, EmailSchema, NotifySchema };
}

type Schemas = ReturnType<typeof build>;
let built: Schemas | undefined;
/** The schemas, made on first use (see config-schema.ts). */
export const serveSchemas = (): Schemas => (built ??= build());
export type ScheduleConfig = z.infer<Schemas['ScheduleSchema']>;
export type ServeConfig = z.infer<Schemas['ServeSchema']>;
export type WebhookConfig = z.infer<Schemas['WebhookSchema']>;
export type EmailConfig = z.infer<Schemas['EmailSchema']>;
export type NotifyConfig = z.infer<Schemas['NotifySchema']>;
