import * as path from 'node:path';
import { parseDuration } from '../retention/duration.js';
import { PgkeepError } from '../errors.js';
import type { EmailConfig, JobKind, WebhookConfig } from './serve-schema.js';
import { readSecretFile, type Settings } from './settings.js';

/** One cron schedule: run `kind` for `source` at `cron` (in `timeZone`). */
export interface ScheduleEntry {
  source: string;
  kind: JobKind;
  cron: string;
  timeZone?: string | undefined;
}

/** Defaults of `serve:` (the issue's: 127.0.0.1:9187, stuck after 10 min). */
export const SERVE_DEFAULTS = { host: '127.0.0.1', port: 9187, concurrency: 2, overlap: 'queue', stuckAfter: '10m', gracePeriod: '60s', historyLimit: 1000, catalogRefresh: '1m' } as const;

/** The daemon's settings, resolved from `serve:` and the environment. */
export interface ServeSettings {
  host: string;
  port: number;
  /** PGKEEP_API_TOKEN > serve.tokenFile > serve.token; undefined disables state-changing endpoints. */
  token: string | undefined;
  protectProbes: boolean;
  /** Host patterns answered besides loopback and the server's own addresses (serve.allowedHosts + --allowed-host). */
  allowedHosts: string[];
  /** Proxies whose X-Forwarded-Host is read (serve.trustProxy + --trust-proxy). */
  trustProxy: string[];
  stateDir: string;
  concurrency: number;
  overlap: 'queue' | 'skip';
  stuckAfterMs: number;
  graceMs: number;
  catchUp: boolean;
  pruneAfterBackup: boolean;
  historyLimit: number;
  /** How often the catalog lists every source's repositories for backups written by others (serve.catalogRefresh). */
  catalogRefreshMs: number;
  schedules: ScheduleEntry[];
}

export interface ServeOverrides {
  host?: string | undefined;
  port?: number | undefined;
  /** --allowed-host: added to serve.allowedHosts. */
  allowedHosts?: readonly string[] | undefined;
  /** --trust-proxy: added to serve.trustProxy. */
  trustProxy?: readonly string[] | undefined;
}

/**
 * The daemon's settings. `jobKinds` are the kinds a schedule may name (the
 * registry's scheduled job kinds, in the order their schedules are listed): an
 * unknown key of sources.<name>.schedule is CONFIG_INVALID, worded as the
 * config's own unknown keys are.
 */
export function resolveServeSettings(settings: Settings, overrides: ServeOverrides, jobKinds: readonly string[]): ServeSettings {
  const serve = settings.config.serve ?? {};
  const base = settings.configFile ? path.dirname(settings.configFile) : settings.cwd;
  const token = settings.env.PGKEEP_API_TOKEN || (serve.tokenFile ? readSecretFile(path.resolve(base, serve.tokenFile), 'serve.tokenFile') : serve.token) || undefined;
  const schedules: ScheduleEntry[] = [];
  for (const [source, config] of Object.entries(settings.config.sources ?? {})) {
    const unknown = Object.keys(config.schedule ?? {}).filter((key) => key !== 'timeZone' && !jobKinds.includes(key));
    if (unknown.length > 0) {
      const file = settings.configFile ? path.basename(settings.configFile) : 'pgkeep.yaml';
      throw new PgkeepError('CONFIG_INVALID', `${file}: sources.${source}.schedule: unknown key ${unknown.map((k) => `"${k}"`).join(', ')} (check the spelling)`);
    }
    for (const kind of jobKinds) {
      const cron = config.schedule?.[kind];
      if (cron) schedules.push({ source, kind, cron, timeZone: config.schedule?.timeZone ?? serve.timeZone });
    }
  }
  return {
    host: overrides.host ?? serve.host ?? SERVE_DEFAULTS.host,
    port: overrides.port ?? serve.port ?? SERVE_DEFAULTS.port,
    token,
    protectProbes: serve.protectProbes ?? false,
    allowedHosts: [...(serve.allowedHosts ?? []), ...(overrides.allowedHosts ?? [])],
    trustProxy: [...(serve.trustProxy ?? []), ...(overrides.trustProxy ?? [])],
    stateDir: path.resolve(base, settings.env.PGKEEP_STATE_DIR || serve.stateDir || 'pgkeep-state'),
    concurrency: serve.concurrency ?? SERVE_DEFAULTS.concurrency,
    overlap: serve.overlap ?? SERVE_DEFAULTS.overlap,
    stuckAfterMs: parseDuration(serve.stuckAfter ?? SERVE_DEFAULTS.stuckAfter, 'serve.stuckAfter').ms,
    graceMs: parseDuration(serve.gracePeriod ?? SERVE_DEFAULTS.gracePeriod, 'serve.gracePeriod').ms,
    catchUp: serve.catchUp ?? false,
    pruneAfterBackup: serve.pruneAfterBackup ?? true,
    historyLimit: serve.historyLimit ?? SERVE_DEFAULTS.historyLimit,
    catalogRefreshMs: parseDuration(serve.catalogRefresh ?? SERVE_DEFAULTS.catalogRefresh, 'serve.catalogRefresh').ms,
    schedules,
  };
}

/** The alert channels, resolved (secrets read from files or the environment). */
export interface NotifySettings {
  webhooks: WebhookConfig[];
  email: (EmailConfig & { password: string | undefined }) | undefined;
  /** 0: never remind. */
  reminderMs: number;
}

export function resolveNotifySettings(settings: Settings): NotifySettings {
  const notify = settings.config.notify ?? {};
  const base = settings.configFile ? path.dirname(settings.configFile) : settings.cwd;
  const email = notify.email
    ? { ...notify.email, password: notify.email.passwordFile ? readSecretFile(path.resolve(base, notify.email.passwordFile), 'notify.email.passwordFile') : settings.env.SMTP_PASSWORD || undefined }
    : undefined;
  return {
    webhooks: [...(notify.webhooks ?? [])],
    email,
    reminderMs: parseDuration(notify.reminderInterval ?? '24h', 'notify.reminderInterval').ms,
  };
}
