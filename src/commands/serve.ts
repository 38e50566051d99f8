import * as path from 'node:path';
import { resolveHealthThresholds } from '../config/health-settings.js';
import { resolveNotifySettings, resolveServeSettings } from '../config/serve-settings.js';
import { configuredSources, resolveSource, type Settings } from '../config/settings.js';
import { PgkeepError, toPgkeepError } from '../errors.js';
import { Alerter, jobScope, problemsFromFindings, problemsFromJob } from '../notify/alerter.js';
import { notifyChannels } from '../notify/channels.js';
import { withClient } from '../postgres/pg-client.js';
import { systemClock, type Clock } from '../scheduler/clock.js';
import { JobHistory, type JobRecord } from '../scheduler/job-history.js';
import { Scheduler, type MissedRun } from '../scheduler/scheduler.js';
import type { DaemonApi, ReadyCheck } from '../server/daemon-api.js';
import { HostAllowlist } from '../server/host-allowlist.js';
import { assertSafeBind, buildHttpServer } from '../server/http-server.js';
import { registerDashboard } from '../server/dashboard/register-dashboard.js';
import { serveDashboardDeps } from '../server/dashboard/serve-dashboard-deps.js';
import { PgkeepMetrics } from '../server/metrics.js';
import { FleetCatalog } from '../status/fleet-catalog.js';
import type { SourceStatus } from '../status/health.js';
import { withStartupGrace, type GraceState } from '../status/startup-grace.js';
import { PGKEEP_VERSION } from '../version.js';
import type { CommandContext } from '../registry/command-context.js';
import { openRepositoriesSettled } from '../repository/open-repository.js';
import { runJob, settingsForSource } from '../registry/run-job.js';
import { withRunSignal } from '../run-signal.js';
import { sourcesWithRepositories } from '../repository/source-repositories.js';
import { z } from 'zod';
import { requestParser, type CommandSpec } from '../registry/command-spec.js';
import { allowedHostOption, trustedProxyOption } from '../server/host-allowlist.js';

export interface ServeRequest {
  /** Run what is due, wait for it, exit (Kubernetes CronJob). */
  once?: boolean;
  /** --listen host:port; overrides serve.host/serve.port. */
  host?: string | undefined;
  port?: number | undefined;
  /** --allowed-host and --trust-proxy: added to serve.allowedHosts and serve.trustProxy. */
  allowedHosts?: readonly string[] | undefined;
  trustProxy?: readonly string[] | undefined;
  /** The clock (tests); default the system's. */
  clock?: Clock;
}

export interface ServeResult {
  /** Jobs run by --once. */
  jobs: JobRecord[];
  missed: MissedRun[];
}

/** How long /ready waits for the catalog's first load before it reports it as loading (503). */
const READY_LOAD_WAIT_MS = 2000;
/** Sources /ready connects to at once. */
const READY_PARALLEL = 8;
/** How long /ready's answers from the sources' databases are reused. */
const READY_SOURCES_TTL_MS = 10_000;
/** The status gauges are set again at least this often, even with nothing new in the catalog. */
const GAUGES_MAX_AGE_MS = 5000;

/**
 * `pgkeep serve`: the scheduler, the HTTP API and metrics, and alerts, in one
 * process, until ctx.signal (SIGTERM, SIGINT):
 *
 *  1. resolve serve:/notify: settings; refuse a non-loopback address without a token
 *     (and answer only the Host names of the allowlist: DNS rebinding protection)
 *  2. open the job history in the state folder; build the schedules (bad cron → CONFIG_INVALID)
 *  3. with --once: run every schedule that is due, wait, return (failures → the first job's error)
 *  4. start the HTTP server, arm the schedules (missed runs logged, optional catch-up)
 *  5. the catalog (src/status/fleet-catalog.ts): loaded once, refreshed after each job of a
 *     source and every serve.catalogRefresh for other writers → metrics, alerts, pages, API
 *  6. on the signal: stop accepting jobs, give running ones the grace period, cancel
 *     the rest (a cancelled backup removes what it wrote), close the server, return
 */
export async function runServe(ctx: CommandContext, request: ServeRequest = {}): Promise<ServeResult> {
  const { settings } = ctx;
  const registry = ctx.registry;
  if (!registry) throw new PgkeepError('INTERNAL', 'serve runs its jobs through the command registry: give it in the context');
  const clock = request.clock ?? systemClock;
  const log = (level: 'info' | 'warn' | 'error', message: string) => ctx.info(`${clock.now().toISOString()} ${level} ${message}`);

  // 1. settings
  // the schedule keys of pgkeep.yaml are the job kinds the commands declare (checked here: config reads no one)
  const serve = resolveServeSettings(settings, { host: request.host, port: request.port, allowedHosts: request.allowedHosts, trustProxy: request.trustProxy }, registry.jobKinds({ scheduled: true }));
  /** A backup job: it ends the start-up grace of "no backup" alerts. */
  const isBackup = (kind: string) => registry.byJobKind(kind)?.job.backup === true;
  const notify = resolveNotifySettings(settings);
  assertSafeBind(serve.host, serve.token);

  // 2. history, alerts, metrics, schedules
  const history = JobHistory.open(serve.stateDir, { limit: serve.historyLimit, now: clock.now() });
  const alerter = new Alerter(notifyChannels(notify), { reminderMs: notify.reminderMs, clock, log, stateFile: path.join(serve.stateDir, 'alerts.json') });
  const metrics = new PgkeepMetrics();
  const sourceNames = await knownSources(settings);
  for (const source of sourceNames) metrics.declareSource(source, ['logical', ...(serve.schedules.some((s) => s.source === source && s.kind === 'physical') ? ['physical'] : [])]);

  // start-up grace (src/status/startup-grace.ts): no "no backup" alert before a source's first scheduled backup had its chance
  // filled from the schedules once the scheduler exists (below): the first backup run of each source
  const firstRunAt = new Map<string, Date>();
  const backupEnded = new Set<string>();
  const graceOf = (source: string): GraceState => ({
    firstRunAt: firstRunAt.get(source),
    backupEnded: backupEnded.has(source),
    backupActive: scheduler.jobs().some((j) => j.source === source && isBackup(j.kind) && (j.state === 'queued' || j.state === 'running')),
  });
  /** A status as alerts and metrics count it: without "no backup" while the source is in its start-up grace. */
  const graced = (read: SourceStatus): SourceStatus => {
    const findings = withStartupGrace(read.findings, graceOf(read.source), clock.now());
    return { ...read, findings, healthy: findings.length === 0 };
  };
  // set by the signal: follow-up work queued after it (re-reading repositories) is dropped, so shutdown stays bounded
  let stopping = false;
  // every source's backups, verifications, failures and health, in memory: no request reads a manifest
  const catalog = new FleetCatalog({
    sources: sourceNames.map((name) => ({ name, thresholds: resolveHealthThresholds(settings, name) })),
    open: (source) => openRepositoriesSettled(settings, { source }),
    now: () => clock.now(),
    // each assessed status: its alerts, after what is already queued; while a job's own refresh runs they wait for the
    // job's end (its reassessment), so the job's alert, which names the error code, goes first
    // the step runs later, after what is queued: it takes the source's status as it is then, not the one that queued it.
    // A stale "no backup" judged after the source's first backup ended (its grace over) was a false alert (seen in CI).
    onStatus: (status) => {
      if (!jobRefreshes.has(status.source)) then(() => alerter.update(`health:${status.source}`, problemsFromFindings(graced(catalog.status(status.source) ?? status).findings)));
    },
  });
  /** Sources whose job is having its writes read into the catalog, with how many such jobs. */
  const jobRefreshes = new Map<string, number>();
  // alerts and metrics run after each job, one at a time so they never interleave
  let afterJobs: Promise<void> = Promise.resolve();
  /** Queues follow-up work; a failure is logged and never breaks the chain (or the process). */
  const then = (step: () => Promise<void>) => {
    afterJobs = afterJobs.then(() => (stopping ? undefined : step())).catch((error: unknown) => log('error', `after a job: ${(error as Error).message}`));
  };
  /** Waits for the follow-up work, including what it queued meanwhile (a refresh queues its alerts). */
  const drained = async () => {
    let seen: Promise<void>;
    do {
      seen = afterJobs;
      await seen;
    } while (seen !== afterJobs);
  };
  const onJobEnd = (job: Readonly<JobRecord>) => {
    metrics.recordJob(job);
    if (isBackup(job.kind) && job.state !== 'skipped') backupEnded.add(job.source);
    then(async () => {
      const problems = job.kind === 'check' ? undefined : problemsFromJob(job);
      if (problems) await alerter.update(jobScope(job), problems);
      // the catalog read what the job wrote before the job ended (runner, below); the verdict again now
      // that the job is over (it may end the start-up grace), and its alerts
      catalog.reassess(job.source);
    });
  };

  const scheduler: Scheduler = new Scheduler(serve.schedules, {
    configFile: settings.configFile,
    clock,
    history,
    concurrency: serve.concurrency,
    overlap: serve.overlap,
    stuckAfterMs: serve.stuckAfterMs,
    log,
    onJobEnd,
    // a job's storage requests honour the job's own signal: cancelling it aborts a stalled request at once
    // then what the job wrote (a backup, a verification, a failure record, what prune removed) is read into the
    // catalog before the job counts as ended: whoever sees the job succeed sees its backup (one listing, new records only)
    runner: async (job, run) => {
      try {
        return await withRunSignal(run.signal, () => runJob({ settings, registry, pruneAfterBackup: serve.pruneAfterBackup, log }, job, run));
      } finally {
        jobRefreshes.set(job.source, (jobRefreshes.get(job.source) ?? 0) + 1);
        await catalog.refresh(job.source);
        const left = jobRefreshes.get(job.source)! - 1;
        if (left > 0) jobRefreshes.set(job.source, left);
        else jobRefreshes.delete(job.source);
      }
    },
  });

  for (const s of scheduler.schedules()) {
    if (!isBackup(s.kind) || !s.next) continue;
    const next = new Date(s.next);
    if (!firstRunAt.has(s.source) || next < firstRunAt.get(s.source)!) firstRunAt.set(s.source, next);
  }

  // 3. --once
  if (request.once) {
    const due = scheduler.due(history.lastOnceRun());
    history.markOnceRun(clock.now());
    if (due.length === 0) log('info', 'nothing is due');
    const jobs = due.map((entry) => scheduler.submit(entry.source, entry.kind, 'once'));
    // SIGTERM: the same grace period as the daemon
    const onAbort = () => void scheduler.stop(serve.graceMs);
    ctx.signal.addEventListener('abort', onAbort, { once: true });
    await scheduler.idle();
    ctx.signal.removeEventListener('abort', onAbort);
    await drained();
    await scheduler.stop(0);
    const ended = jobs.map((j) => scheduler.job(j.id)!);
    const failed = ended.filter((j) => j.state === 'failed');
    if (failed.length > 0) {
      const first = failed[0]!;
      throw new PgkeepError(first.error!.code as PgkeepError['code'], `${failed.length} of ${ended.length} job(s) failed; ${first.kind} of ${first.source}: ${first.error!.message}`, {
        details: { jobs: ended },
      });
    }
    return { jobs: ended, missed: [] };
  }

  // 4. HTTP and schedules
  const api = daemonApi(settings, sourceNames, scheduler, metrics, catalog, graced);
  const hosts = new HostAllowlist({ listen: { host: serve.host, port: serve.port }, allowedHosts: serve.allowedHosts, trustProxy: serve.trustProxy, configHint: 'serve.allowedHosts or --allowed-host' });
  const app = buildHttpServer(api, { token: serve.token, protectProbes: serve.protectProbes, hosts, onRefuse: (line) => log('warn', line) });
  // the web dashboard at /, beside /api: its actions go through the same scheduler and need the same token
  await registerDashboard(app, serveDashboardDeps(settings, registry, scheduler, catalog), { token: serve.token });
  try {
    await app.listen({ host: serve.host, port: serve.port });
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    throw new PgkeepError('USAGE', `cannot listen on ${serve.host}:${serve.port} (${code ?? (error as Error).message}): choose another address with --listen or serve.host/serve.port`, { cause: error });
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : serve.port;
  log('info', `pgkeep ${PGKEEP_VERSION} listening on http://${serve.host.includes(':') ? `[${serve.host}]` : serve.host}:${port} (API token ${serve.token ? 'required' : 'not configured: state-changing endpoints disabled'}); state in ${serve.stateDir}`);
  log(hosts.allowsAny ? 'warn' : 'info', hosts.describe(port));
  for (const s of scheduler.schedules()) log('info', `schedule: ${s.kind} of ${s.source} at "${s.cron}"${s.timeZone ? ` (${s.timeZone})` : ''}, next ${s.next ?? 'never'}`);
  if (serve.schedules.length === 0) log('warn', 'no schedules configured (sources.<name>.schedule): serving the API only');
  const missed = scheduler.start({ catchUp: serve.catchUp });

  // 5. the catalog: the first load (in bounded slices, beside the HTTP side), then a refresh for other writers
  // every serve.catalogRefresh (the next one is armed when this one ended: refreshes never pile up)
  let stopTimer = () => undefined as void;
  const periodic = () => {
    stopTimer = clock.setTimer(serve.catalogRefreshMs, () => {
      void catalog.refresh().then(() => {
        if (!stopping) periodic();
      });
    });
  };
  const loadStarted = performance.now();
  void catalog.refresh().then(() => {
    if (stopping) return;
    log('info', `catalog: ${sourceNames.length} source(s), ${catalog.counts.manifests} manifest(s) read in ${((performance.now() - loadStarted) / 1000).toFixed(1)}s; refreshed every ${Math.round(serve.catalogRefreshMs / 1000)}s`);
    periodic();
  });

  // 6. until the signal
  await new Promise<void>((resolve) => {
    if (ctx.signal.aborted) resolve();
    else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
  });
  log('info', `stopping: no new jobs; running jobs have ${Math.round(serve.graceMs / 1000)}s to finish`);
  stopping = true;
  stopTimer();
  catalog.stop();
  // Bounded whatever happens: the grace period for the jobs, then a few seconds for the jobs to
  // wind down after cancellation and for the server to close; past that, serve returns anyway
  // (a job that ignores its signal must not hold the process past a systemd or Kubernetes stop timeout).
  const deadline = withDeadline(serve.graceMs + SHUTDOWN_MARGIN_MS);
  const finished = await deadline.race(
    (async () => {
      await scheduler.stop(serve.graceMs);
      await drained();
      await app.close();
    })(),
  );
  deadline.clear();
  scheduler.flushSkips();
  log(finished ? 'info' : 'warn', finished ? 'stopped' : `stopped: jobs or connections did not end within ${Math.round((serve.graceMs + SHUTDOWN_MARGIN_MS) / 1000)}s of the signal; leaving them`);
  return { jobs: [], missed };
}

/** After the grace period: time for cancelled jobs to clean up and the server to close, within the promised gracePeriod + 5 s. */
const SHUTDOWN_MARGIN_MS = 4000;

/** A timer to race work against: race() resolves true when the work ended first, false at the deadline. */
function withDeadline(ms: number): { race(work: Promise<unknown>): Promise<boolean>; clear(): void } {
  let timer: NodeJS.Timeout | undefined;
  const over = new Promise<boolean>((resolve) => {
    timer = setTimeout(() => resolve(false), ms);
  });
  return {
    race: (work) => Promise.race([work.then(() => true, () => true), over]),
    clear: () => clearTimeout(timer),
  };
}

/** The sources the daemon serves: the config's, or (zero-config) those the repository holds. */
async function knownSources(settings: Settings): Promise<string[]> {
  const configured = configuredSources(settings);
  if (configured.length > 0) return configured;
  try {
    return (await sourcesWithRepositories(settings)).map((s) => s.source);
  } catch {
    return [resolveSource(settings).name];
  }
}

function daemonApi(settings: Settings, sourceNames: string[], scheduler: Scheduler, metrics: PgkeepMetrics, catalog: FleetCatalog, graced: (status: SourceStatus) => SourceStatus): DaemonApi {
  const requireSource = (name: string) => {
    if (!sourceNames.includes(name)) throw new PgkeepError('SOURCE_UNKNOWN', `no source "${name}": the sources are ${sourceNames.join(', ')}`);
    return name;
  };
  /**
   * Every source's database answers SELECT 1, eight at a time (one at a time, 100 sources took seconds). A probe
   * gets the last answers while they are younger than READY_SOURCES_TTL_MS, and (up to a minute old) while newer
   * ones are being asked for: a readiness probe every few seconds stays fast and does not open 100 connections each time.
   */
  let sourceAnswers: { at: number; checks: ReadyCheck[] } | undefined;
  let asking: Promise<ReadyCheck[]> | undefined;
  const askSources = async (): Promise<ReadyCheck[]> => {
    const answers = new Map<string, ReadyCheck>();
    const queue = [...sourceNames];
    const worker = async () => {
      for (let source = queue.shift(); source !== undefined; source = queue.shift()) {
        try {
          const { connection } = resolveSource(settingsForSource(settings, source));
          await withClient(connection, (client) => client.query('SELECT 1'), AbortSignal.timeout(5000));
          answers.set(source, { name: `source ${source}`, ok: true });
        } catch (error) {
          answers.set(source, { name: `source ${source}`, ok: false, message: toPgkeepError(error).message });
        }
      }
    };
    await Promise.all(Array.from({ length: Math.min(READY_PARALLEL, sourceNames.length) }, worker));
    return sourceNames.map((source) => answers.get(source)!);
  };
  const sourceChecks = async (): Promise<ReadyCheck[]> => {
    if (sourceAnswers && Date.now() - sourceAnswers.at < READY_SOURCES_TTL_MS) return sourceAnswers.checks;
    asking ??= askSources()
      .then((checks) => {
        sourceAnswers = { at: Date.now(), checks };
        return checks;
      })
      .finally(() => (asking = undefined));
    // answers a minute old still do while the new ones come; older ones are waited for
    return sourceAnswers && Date.now() - sourceAnswers.at < 6 * READY_SOURCES_TTL_MS ? sourceAnswers.checks : asking;
  };
  /** When the status gauges were last set, and from which catalog version. */
  const gauges = { version: -1, at: 0 };
  const findBackup = async (id: string) => {
    await catalog.whenLoaded();
    const found = catalog.findBackup(id);
    if (!found) throw new PgkeepError('BACKUP_NOT_FOUND', `no backup ${id} in any source (${sourceNames.join(', ')})`);
    return found;
  };
  return {
    version: PGKEEP_VERSION,
    startedAt: new Date(),
    async ready() {
      const checks: ReadyCheck[] = [{ name: 'config', ok: true }];
      // the repositories as the catalog last read them (a short wait at start for its first load)
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([catalog.whenLoaded(), new Promise<void>((resolve) => (timer = setTimeout(resolve, READY_LOAD_WAIT_MS)))]);
      clearTimeout(timer);
      if (!catalog.loaded) checks.push({ name: 'catalog', ok: false, message: `loading: ${catalog.loadedCount} of ${sourceNames.length} source(s) read` });
      for (const source of sourceNames) {
        for (const repository of catalog.repositories(source)) {
          // an empty location is fine: the first backup creates the repository there
          checks.push({ name: `repository ${repository.location}`, ok: !repository.error, message: repository.missing ? 'empty: the first backup creates the repository' : repository.error?.message });
        }
      }
      checks.push(...(await sourceChecks()));
      return checks;
    },
    async metrics() {
      // from the catalog, never the repositories: a scrape costs the same with 10 or 10,000 backups; the gauges are
      // set again when the catalog assessed something, or every few seconds (the start-up grace moves with the clock)
      const now = Date.now();
      if (catalog.version !== gauges.version || now - gauges.at >= GAUGES_MAX_AGE_MS) {
        metrics.updateStatus(catalog.statuses().map(graced));
        Object.assign(gauges, { version: catalog.version, at: now });
      }
      metrics.recordCatalog(catalog.counts);
      metrics.setJobsRunning(scheduler.jobs().filter((j) => j.state === 'running').length);
      return { contentType: metrics.contentType, text: await metrics.text() };
    },
    async sources() {
      const schedules = scheduler.schedules();
      return sourceNames.map((name) => {
        const source = settings.config.sources?.[name] ? resolveSource(settingsForSource(settings, name)) : undefined;
        return {
          name,
          // where it is, never how to log in
          database: source ? { host: source.connection.host, port: source.connection.port, database: source.connection.database, user: source.connection.user } : undefined,
          repositories: source?.repos,
          schedules: schedules.filter((s) => s.source === name).map(({ kind, cron, timeZone, next }) => ({ kind, cron, timeZone, next })),
        };
      });
    },
    async backups(name) {
      await catalog.whenLoaded(requireSource(name));
      return catalog.backups(name).map(({ manifest: m }) => ({ id: m.id, source: m.source, kind: m.kind, labels: m.labels, startedAt: m.startedAt, finishedAt: m.finishedAt, totals: m.totals }));
    },
    async backup(id) {
      const { manifest, pinned } = await findBackup(id);
      return { ...manifest, pinned };
    },
    jobs: () => scheduler.jobs(),
    job: (id) => scheduler.job(id),
    startBackup: (name) => scheduler.submit(requireSource(name), 'logical', 'api'),
    async startVerify(id) {
      const { manifest } = await findBackup(id);
      return scheduler.submit(manifest.source, 'verify', 'api', { target: manifest.id });
    },
  };
}

/** --listen 0.0.0.0:9187, [::1]:9187, or :9187 (host from the config). */
function parseListen(value: string): { host?: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new PgkeepError('USAGE', `--listen takes HOST:PORT, e.g. 127.0.0.1:9187 (got "${value}")`);
  const host = match[1] ?? match[2];
  return { ...(host ? { host } : {}), port };
}

const ServeCommandRequest = z.object({
  once: z.boolean(),
  host: z.string().optional(),
  port: z.number().int().min(0).max(65535).optional(),
  allowedHosts: z.array(z.string()).optional(),
  trustProxy: z.array(z.string()).optional(),
});

/** `pgkeep serve`: runs until the signal; its jobs are the registry's (ctx.registry). */
export const serveCommand: CommandSpec<z.output<typeof ServeCommandRequest>, ServeResult & { once: boolean }> = {
  name: 'serve',
  description: 'run the schedules, the HTTP API (/health, /ready, /metrics, /api) and alerts until SIGTERM',
  options: [
    { flags: '--once', description: 'run the schedules that are due, wait for them, and exit (Kubernetes CronJob)' },
    { flags: '--listen <host:port>', description: 'address of the HTTP API (default: serve.host/serve.port, 127.0.0.1:9187)' },
    { flags: '--allowed-host <host>', description: 'a Host name to answer besides loopback and the listen address (repeatable; name, name:port, *.domain, IP, CIDR; added to serve.allowedHosts)', parse: allowedHostOption },
    { flags: '--trust-proxy <address>', description: 'IP or CIDR of a reverse proxy whose X-Forwarded-Host is read and checked (repeatable; added to serve.trustProxy)', parse: trustedProxyOption },
  ],
  help: { globals: ['config'], examples: ['pgkeep serve -c /etc/pgkeep/pgkeep.yaml', 'pgkeep serve --once   # a Kubernetes CronJob'] },
  daemon: { exitAfterRun: (request) => !request.once },
  needsRegistry: true,
  parse: requestParser(ServeCommandRequest, ({ options }) => ({
    once: Boolean(options.once),
    ...(options.listen === undefined ? {} : parseListen(options.listen as string)),
    allowedHosts: options.allowedHost,
    trustProxy: options.trustProxy,
  })),
  run: async (ctx, request) => ({ ...(await runServe(ctx, request)), once: request.once }),
  print(result, out) {
    if (!result.once) return;
    if (out.json) return out.document({ jobs: result.jobs });
    for (const job of result.jobs) out.line(`${job.state} ${job.kind} of ${job.source}${job.detail ? `: ${job.detail}` : ''}`);
  },
};
