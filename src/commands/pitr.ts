import { appendFile, chmod, readdir, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { makeFolders } from '../local/make-folders.js';
import type { ResolvedSource } from '../config/settings.js';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { childStdinSink, loadStream } from '../pipeline/load-stream.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { chownTree, serverBinDir, serverRunning, serverUser, startServer, stopServer, waitForRecovery, type RecoveryOutcome } from '../postgres/pg-server.js';
import { serverMajor } from '../postgres/pg-tools.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import { parseLsn, segmentNumber, segmentRange, walTimeline } from '../postgres/wal-file.js';
import type { PhysicalManifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { WalArchive } from '../repository/wal-archive.js';
import type { CommandContext } from './command-context.js';
import { identitiesFor } from '../repository/repository-keys.js';
import { z } from 'zod';
import { loadSettings, resolveConnection, resolveSource } from '../config/settings.js';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { collect, positiveInt } from '../registry/option-values.js';
import { formatCount, formatDuration } from '../cli/format.js';
import { openRepository } from '../repository/open-repository.js';
import { runTablePitr, type TablePitrResult } from './pitr-table.js';
import { walFetchCommand } from './wal-fetch-command.js';

export type RecoveryTarget =
  | { kind: 'time'; value: string }
  | { kind: 'lsn'; value: string }
  | { kind: 'xid'; value: string }
  | { kind: 'name'; value: string }
  | { kind: 'latest' }
  /** The end of the backup: the first consistent point (recovery_target = 'immediate'), for restore tests. */
  | { kind: 'immediate' };

export interface PitrRequest {
  pgdata: string;
  target: RecoveryTarget;
  /** What the server does at the target (recovery_target_action); default promote. */
  targetAction?: 'promote' | 'pause' | 'shutdown' | undefined;
  /** A backup id to start from instead of the newest one before the target. */
  backup?: string | undefined;
  start?: boolean | undefined;
  port?: number | undefined;
  dryRun?: boolean | undefined;
  /** Replace a non-empty data directory. */
  force?: boolean | undefined;
  /** preserve: the recovered server archives like the original (after promotion, its new timeline); off: it does not. */
  archiveMode?: 'preserve' | 'off' | undefined;
  /** restore_command: the CLI layer knows the path of the pgkeep executable and the repository flags. */
  restoreCommand: string;
  timeoutMs?: number | undefined;
  /** Further settings for postgresql.auto.conf (a throwaway recovery listens only on a private socket). */
  extraSettings?: [string, string][] | undefined;
  /** Replaces pg_hba.conf (a throwaway recovery trusts its private socket only). */
  hba?: string | undefined;
  /** With --start: runs once recovery reached the target; then the server is stopped (whatever happened). */
  whileRunning?: ((server: { pgdata: string; port: number | undefined }) => Promise<void>) | undefined;
}

export interface PitrPlan {
  backup: { id: string; stopTime: string; stopLsn: string; timeline: number };
  target: RecoveryTarget;
  pgdata: string;
  /** WAL the backup needs to become consistent, and whether the archive holds all of it. */
  walNeeded: { first: string; last: string; present: boolean; missing: string[] };
  /** Archived WAL from the backup on, per timeline: the newest contiguous segment, and the first gap. */
  walAvailable: { timeline: number; last: string | undefined; gapAt: string | undefined }[];
  histories: string[];
}

export interface PitrResult {
  /** Where the recovered server runs (with --start), and the backup it came from. */
  binDir?: string | undefined;
  plan: PitrPlan;
  restored: boolean;
  started: boolean;
  port: number | undefined;
  outcome: RecoveryOutcome | undefined;
  durationMs: number;
  /** Extracting the base backup (with --start also the rest is timed). */
  extractMs?: number | undefined;
  /** From starting the server to the end of recovery: the WAL replay. */
  replayMs?: number | undefined;
  /** WAL files restored from the archive through restore_command. */
  walFilesReplayed?: number | undefined;
}

/**
 * Point-in-time recovery of a source's cluster into a new data directory:
 *
 *  1. pick the physical backup: the newest consistent before the target (or --backup)
 *  2. plan the WAL: the range it needs to be consistent must be archived;
 *     report what follows it per timeline (with --dry-run, stop here)
 *  3. check the data directory: missing or empty, unless --force
 *  4. extract the base tar, checking its checksums, into it (0700)
 *  5. write recovery.signal and the recovery settings (restore_command through pgkeep wal-fetch)
 *  6. as root, hand the directory to the postgres user
 *  7. with --start: start the server and follow its log until it reaches the
 *     target (promoted, paused or shut down), reporting each WAL file replayed
 */
export async function runPitr(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: PitrRequest): Promise<PitrResult> {
  const started = Date.now();
  const { signal } = ctx;
  const pgdata = path.resolve(request.pgdata);

  // 1. the backup
  const manifest = await chooseBackup(repository, source.name, request);
  ctx.info(`recovering ${source.name} from physical backup ${manifest.id} (consistent from ${manifest.physical.stopTime}) ${describeTarget(request.target)}`);

  // 2. the WAL
  const archive = repository.walArchive(source.name);
  const plan = await planWal(archive, manifest, request.target, pgdata);
  if (request.dryRun) return { plan, restored: false, started: false, port: request.port, outcome: undefined, durationMs: Date.now() - started };
  if (!plan.walNeeded.present) {
    throw new PgkeepError('PITR_NO_BACKUP', `the WAL backup ${manifest.id} needs to become consistent is missing from the archive (${plan.walNeeded.missing.slice(0, 3).join(', ')}): check archiving with pgkeep verify --wal, or pick another backup`);
  }

  // The server that will run it, checked before anything is written: only the backup's own major version can.
  const binDir = request.start ? await serverBinDir(Math.floor(serverMajor(manifest.server.versionNum)), source.pgBin) : undefined;

  // 3. the data directory
  await prepareDataDirectory(pgdata, Boolean(request.force));

  // 4. the base tar
  const identities = await identitiesFor(repository, manifest, ctx.keys);
  const object = manifest.objects.find((o) => o.role === 'base')!;
  ctx.info(`extracting ${object.name} into ${pgdata}`);
  try {
    const tar = startProcess('tar', ['-x', '-C', pgdata], { stdin: 'pipe', stdout: 'ignore', signal });
    await settleAll([
      loadStream(repository.storage, repository.objectKey(manifest.source, manifest.id, object.name), object, childStdinSink(tar.stdin!), {
        codec: defaultZstd(),
        identities,
        signal,
        onRawBytes: (bytes) => ctx.progress({ phase: 'extract', bytes, totalBytes: object.raw.size }),
      }),
      tar.done,
    ]);
  } catch (error) {
    // Half a data directory must never be started: leave it empty.
    await emptyDirectory(pgdata).catch(() => undefined);
    throw error;
  }
  throwIfAborted(signal);
  const extractMs = Date.now() - started;

  // 5. recovery settings
  await writeRecoverySettings(pgdata, request, manifest);

  // 6. ownership
  const user = serverUser();
  if (user) await chownTree(pgdata, user);
  await chmod(pgdata, 0o700);
  if (!request.start || binDir === undefined) return { plan, restored: true, started: false, port: request.port, outcome: undefined, durationMs: Date.now() - started, extractMs };

  // 7. run recovery
  const logFile = path.join(pgdata, 'log', 'pgkeep-pitr.log');
  await makeFolders(path.dirname(logFile));
  if (user) await chownTree(path.dirname(logFile), user);
  ctx.info(`starting PostgreSQL on ${pgdata}${request.port ? ` (port ${request.port})` : ''}; log: ${logFile}`);
  const replayStarted = Date.now();
  let walFilesReplayed = 0;
  let running = true;
  await startServer(binDir, pgdata, logFile, { port: request.port, user, signal });
  const poll = setInterval(() => void serverRunning(pgdata).then((alive) => (running = alive)), 500);
  try {
    const outcome = await waitForRecovery(logFile, {
      timeoutMs: request.timeoutMs ?? 600_000,
      signal,
      progress: (line) => {
        if (line.startsWith('replayed WAL file')) walFilesReplayed++;
        ctx.info(line);
      },
      isRunning: () => running,
    });
    const replayMs = Date.now() - replayStarted;
    if (request.whileRunning) await request.whileRunning({ pgdata, port: request.port });
    return { plan, restored: true, started: true, port: request.port, outcome, durationMs: Date.now() - started, binDir, extractMs, replayMs, walFilesReplayed };
  } finally {
    clearInterval(poll);
    if (request.whileRunning && (await serverRunning(pgdata))) await stopServer(binDir, pgdata, user).catch((error: Error) => ctx.warn(`could not stop the recovered server on ${pgdata}: ${error.message}`));
  }
}

function describeTarget(target: RecoveryTarget): string {
  switch (target.kind) {
    case 'latest':
      return 'to the end of the archived WAL';
    case 'immediate':
      return 'to the end of the backup';
    case 'time':
      return `to time ${target.value}`;
    case 'lsn':
      return `to LSN ${target.value}`;
    case 'xid':
      return `to transaction ${target.value}`;
    case 'name':
      return `to restore point "${target.value}"`;
  }
}

/** The newest physical backup that is consistent before the target (or the one asked for). */
async function chooseBackup(repository: Repository, source: string, request: PitrRequest): Promise<PhysicalManifest> {
  if (request.backup) {
    const manifest = await repository.resolveBackup(request.backup, source, 'physical');
    if (manifest.kind !== 'physical') throw new PgkeepError('USAGE', `backup ${manifest.id} is a logical backup: point-in-time recovery needs a physical one (pgkeep backup --physical)`);
    return manifest;
  }
  const backups = (await repository.listBackups(source)).filter((m): m is PhysicalManifest => m.kind === 'physical');
  if (backups.length === 0) throw new PgkeepError('PITR_NO_BACKUP', `no physical backups of source ${source} in ${repository.location}: take one with pgkeep backup --physical`);
  const target = request.target;
  let fits: (m: PhysicalManifest) => boolean = () => true;
  if (target.kind === 'time') {
    const at = new Date(target.value).getTime();
    fits = (m) => new Date(m.physical.stopTime).getTime() <= at;
  } else if (target.kind === 'lsn') {
    const lsn = parseLsn(target.value);
    fits = (m) => parseLsn(m.physical.stopLsn) <= lsn;
  }
  const chosen = backups.filter(fits).at(-1);
  if (!chosen) {
    throw new PgkeepError(
      'PITR_NO_BACKUP',
      `no physical backup of source ${source} is consistent before ${target.kind === 'time' ? `time ${target.value}` : `LSN ${(target as { value: string }).value}`}: ` +
        `the oldest becomes consistent at ${backups[0]!.physical.stopTime} (LSN ${backups[0]!.physical.stopLsn})`,
    );
  }
  return chosen;
}

async function planWal(archive: WalArchive, manifest: PhysicalManifest, target: RecoveryTarget, pgdata: string): Promise<PitrPlan> {
  const p = manifest.physical;
  const names = new Set(await archive.listNames());
  const needed = segmentRange(p.walStart, p.walStop, p.segmentSize);
  const missing = needed.filter((n) => !names.has(n));
  // From the backup's start on, per timeline: how far the archive is contiguous.
  const timelines = [...new Set([...names].filter((n) => /^[0-9A-F]{24}$/.test(n)).map(walTimeline))].filter((t) => t >= p.timeline).sort((a, b) => a - b);
  const walAvailable = timelines.map((timeline) => {
    const onTimeline = [...names].filter((n) => /^[0-9A-F]{24}$/.test(n) && walTimeline(n) === timeline).sort();
    const first = timeline === p.timeline ? segmentNumber(p.walStart, p.segmentSize) : segmentNumber(onTimeline[0]!, p.segmentSize);
    let last: string | undefined;
    let gapAt: string | undefined;
    const have = new Set(onTimeline.map((n) => segmentNumber(n, p.segmentSize)));
    const newest = onTimeline.length ? segmentNumber(onTimeline.at(-1)!, p.segmentSize) : first - 1n;
    for (let n = first; n <= newest; n++) {
      const name = `${timeline.toString(16).toUpperCase().padStart(8, '0')}${(n / (0x100000000n / BigInt(p.segmentSize))).toString(16).toUpperCase().padStart(8, '0')}${(n % (0x100000000n / BigInt(p.segmentSize))).toString(16).toUpperCase().padStart(8, '0')}`;
      if (!have.has(n)) {
        gapAt = name;
        break;
      }
      last = name;
    }
    return { timeline, last, gapAt };
  });
  return {
    backup: { id: manifest.id, stopTime: p.stopTime, stopLsn: p.stopLsn, timeline: p.timeline },
    target,
    pgdata,
    walNeeded: { first: p.walStart, last: p.walStop, present: missing.length === 0, missing },
    walAvailable,
    histories: [...names].filter((n) => n.endsWith('.history')).sort(),
  };
}

async function prepareDataDirectory(pgdata: string, force: boolean): Promise<void> {
  let entries: string[];
  try {
    entries = await readdir(pgdata);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT') throw new PgkeepError('PITR_TARGET_DIR', `cannot use ${pgdata} as the data directory (${(error as NodeJS.ErrnoException).code})`, { cause: error });
    await makeFolders(pgdata);
    return;
  }
  if (entries.length > 0) {
    if (!force) throw new PgkeepError('PITR_TARGET_DIR', `${pgdata} is not empty: recover into a new or empty directory, or add --force to replace its contents`);
    if (await serverRunning(pgdata)) throw new PgkeepError('PITR_TARGET_DIR', `a PostgreSQL server is running on ${pgdata}: stop it first`);
    await emptyDirectory(pgdata);
  }
  await chmod(pgdata, 0o700);
}

async function emptyDirectory(dir: string): Promise<void> {
  for (const entry of await readdir(dir)) await rm(path.join(dir, entry), { recursive: true, force: true });
}

/** Single-quoted for postgresql.conf. */
const confValue = (value: string) => `'${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;

async function writeRecoverySettings(pgdata: string, request: PitrRequest, manifest: PhysicalManifest): Promise<void> {
  const settings: [string, string][] = [['restore_command', request.restoreCommand]];
  const target = request.target;
  // A numeric offset: PostgreSQL rejects time zone abbreviations (even "Z") here, before it loads timezone_abbreviations.
  if (target.kind === 'time') settings.push(['recovery_target_time', new Date(target.value).toISOString().replace('T', ' ').replace('Z', '+00')]);
  if (target.kind === 'lsn') settings.push(['recovery_target_lsn', target.value]);
  if (target.kind === 'xid') settings.push(['recovery_target_xid', target.value]);
  if (target.kind === 'name') settings.push(['recovery_target_name', target.value]);
  if (target.kind === 'immediate') settings.push(['recovery_target', 'immediate']);
  if (target.kind !== 'latest') settings.push(['recovery_target_action', request.targetAction ?? 'promote']);
  settings.push(['recovery_target_timeline', 'latest']);
  if (request.archiveMode === 'off') settings.push(['archive_mode', 'off']);
  if (request.port !== undefined) settings.push(['port', String(request.port)]);
  settings.push(...(request.extraSettings ?? []));
  if (request.hba !== undefined) await writeFile(path.join(pgdata, 'pg_hba.conf'), request.hba, { mode: 0o600 });
  const lines = settings.map(([key, value]) => `${key} = ${confValue(value)}`);
  await appendFile(path.join(pgdata, 'postgresql.auto.conf'), `\n# pgkeep pitr from backup ${manifest.id}, ${new Date().toISOString()}\n${lines.join('\n')}\n`, { mode: 0o600 });
  await rm(path.join(pgdata, 'standby.signal'), { force: true });
  await writeFile(path.join(pgdata, 'recovery.signal'), '', { mode: 0o600 });
}

const PitrCommandRequest = z.object({
  target: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('latest') }),
    z.object({ kind: z.enum(['time', 'lsn', 'xid', 'name']), value: z.string() }),
  ]),
  pgdata: z.string().optional(),
  /** Table-level PITR: these tables out of a throwaway recovered cluster. */
  extractTables: z.array(z.string()).optional(),
  format: z.enum(['sql', 'csv']),
  output: z.string().optional(),
  intoDb: z.string().optional(),
  as: z.string().optional(),
  targetAction: z.enum(['promote', 'pause', 'shutdown']),
  backup: z.string().optional(),
  start: z.boolean(),
  port: z.number().int().positive().optional(),
  archiveMode: z.enum(['preserve', 'off']),
  timeoutMs: z.number().int().positive().optional(),
  dryRun: z.boolean(),
  force: z.boolean(),
});
export type PitrCommandRequest = z.output<typeof PitrCommandRequest>;

export type PitrCommandResult = { pitr: PitrResult; table?: undefined } | { table: TablePitrResult; pitr?: undefined };

const TARGET_KINDS = { targetTime: 'time', targetLsn: 'lsn', targetXid: 'xid', targetName: 'name' } as const;

/** `pgkeep pitr`: point-in-time recovery into a data directory, or of tables (--extract-table). */
export const pitrCommand: CommandSpec<PitrCommandRequest, PitrCommandResult> = {
  name: 'pitr',
  description: 'point-in-time recovery: restore the newest physical backup before the target into a new data directory, set up recovery through pgkeep wal-fetch, and (--start) run it',
  options: [
    { flags: '--pgdata <dir>', description: 'data directory to recover into (created 0700; must be empty unless --force)' },
    { flags: '--extract-table <table>', description: 'table-level PITR: recover a throwaway cluster, dump this table (repeatable) to --output, remove the cluster', parse: collect },
    { flags: '--format <format>', description: 'with --extract-table: sql (pg_dump) or csv', choices: ['sql', 'csv'], default: 'sql' },
    { flags: '--output <file>', description: 'with --extract-table: the file to write' },
    { flags: '--into-db <url>', description: 'with --extract-table: load the table into this database (postgresql://…) instead of a file' },
    { flags: '--as <name>', description: "with --into-db: the new table's name (never an existing one)" },
    { flags: '--target-time <time>', description: 'recover up to this time (e.g. "2026-11-21 14:05:00+00")' },
    { flags: '--target-lsn <lsn>', description: 'recover up to this WAL location (e.g. 0/3000060)' },
    { flags: '--target-xid <xid>', description: 'recover up to this transaction id' },
    { flags: '--target-name <name>', description: 'recover up to this restore point (pg_create_restore_point)' },
    { flags: '--latest', description: 'recover to the end of the archived WAL' },
    { flags: '--target-action <action>', description: 'what the server does at the target', choices: ['promote', 'pause', 'shutdown'], default: 'promote' },
    { flags: '--backup <id>', description: 'start from this physical backup instead of the newest one before the target' },
    { flags: '--start', description: 'start the server and wait until recovery reaches the target' },
    { flags: '--port <n>', description: 'port of the recovered server (written to postgresql.auto.conf)', parse: positiveInt('--port') },
    { flags: '--archive-mode <mode>', description: 'preserve: the recovered server archives its new timeline like the original; off: it does not', choices: ['preserve', 'off'], default: 'preserve' },
    { flags: '--timeout <seconds>', description: 'with --start: how long to wait for recovery (default 600)', parse: positiveInt('--timeout') },
    { flags: '--dry-run', description: 'print the plan (backup, WAL needed and available) and change nothing' },
    { flags: '--force', description: "replace the contents of a non-empty --pgdata (never a running server's)" },
    { flags: '--delta', description: 'same as --force for now: the data directory is restored in full' },
  ],
  help: {
    globals: ['config', 'repo', 'source', 'identity'],
    examples: ["pgkeep pitr --source main --pgdata /var/lib/postgresql/restored --target-time '2026-11-21 14:05:00+00' --start", 'pgkeep pitr --source main --latest --extract-table public.orders --output orders.sql'],
  },
  parse: requestParser(PitrCommandRequest, ({ options }) => {
    const targets = (['targetTime', 'targetLsn', 'targetXid', 'targetName', 'latest'] as const).filter((k) => options[k] !== undefined);
    if (targets.length !== 1) throw new PgkeepError('USAGE', 'pitr needs exactly one of --target-time, --target-lsn, --target-xid, --target-name or --latest');
    const key = targets[0]!;
    const target: RecoveryTarget = key === 'latest' ? { kind: 'latest' } : { kind: TARGET_KINDS[key], value: String(options[key]) };
    if (target.kind === 'time' && Number.isNaN(new Date(target.value).getTime())) throw new PgkeepError('USAGE', `--target-time "${target.value}" is not a time: use e.g. "2026-11-21 14:05:00+00" or 2026-11-21T14:05:00Z`);
    if (target.kind === 'lsn' && !/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(target.value)) throw new PgkeepError('USAGE', `--target-lsn "${target.value}" is not an LSN: expected the form 0/3000060`);
    if (target.kind === 'xid' && !/^\d+$/.test(target.value)) throw new PgkeepError('USAGE', `--target-xid "${target.value}" is not a transaction id (a whole number)`);
    return {
      target,
      pgdata: options.pgdata === undefined ? undefined : path.resolve(String(options.pgdata)),
      extractTables: options.extractTable,
      format: options.format,
      output: options.output === undefined ? undefined : path.resolve(String(options.output)),
      intoDb: options.intoDb,
      as: options.as,
      targetAction: options.targetAction,
      backup: options.backup,
      start: Boolean(options.start),
      port: options.port,
      archiveMode: options.archiveMode,
      timeoutMs: options.timeout === undefined ? undefined : (options.timeout as number) * 1000,
      dryRun: Boolean(options.dryRun),
      force: Boolean(options.force || options.delta),
    };
  }),
  async run(ctx, request) {
    const { settings } = ctx;
    const source = resolveSource(settings);
    const repository = await openRepository(settings, { source: source.name });
    // restore_command runs this same pgkeep, as the server's user, with the same repository and keys.
    const restoreCommand = walFetchCommand(settings, ctx.keys, { source: source.name, repo: source.repo, encrypted: Boolean(repository.info.encryption) });
    if (request.extractTables) {
      if (request.pgdata || request.start || request.dryRun) throw new PgkeepError('USAGE', '--extract-table recovers into a throwaway cluster of its own: leave out --pgdata, --start and --dry-run');
      if (!request.output && !request.intoDb) throw new PgkeepError('USAGE', '--extract-table needs --output FILE, or --into-db URL --as NAME');
      const intoDb = request.intoDb === undefined ? undefined : resolveConnection(loadSettings({ ...settings.options, db: request.intoDb }, { env: settings.env, cwd: settings.cwd }), undefined);
      const table = await runTablePitr(ctx, repository, source, {
        target: request.target,
        backup: request.backup,
        tables: request.extractTables,
        format: request.format,
        output: request.output,
        intoDb,
        as: request.as,
        restoreCommand,
        timeoutMs: request.timeoutMs,
      });
      return { table };
    }
    if (!request.pgdata) throw new PgkeepError('USAGE', 'pitr needs --pgdata DIR (or --extract-table T --output FILE)');
    const pitr = await runPitr(ctx, repository, source, {
      pgdata: request.pgdata,
      target: request.target,
      targetAction: request.targetAction,
      backup: request.backup,
      start: request.start,
      port: request.port,
      dryRun: request.dryRun,
      force: request.force,
      archiveMode: request.archiveMode,
      restoreCommand,
      timeoutMs: request.timeoutMs,
    });
    return { pitr };
  },
  print(result, out) {
    if (result.table) printTablePitr(result.table, out);
    else printPitr(result.pitr, out);
  },
};

// Printing for a terminal (moved from src/cli/print.ts)

function printPitr(result: PitrResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  const { plan } = result;
  const target = plan.target.kind === 'latest' ? 'the end of the archived WAL' : plan.target.kind === 'immediate' ? 'the end of the backup' : `${plan.target.kind} ${plan.target.value}`;
  out.line(`backup   ${plan.backup.id} (timeline ${plan.backup.timeline}, consistent from ${plan.backup.stopTime}, LSN ${plan.backup.stopLsn})`);
  out.line(`target   ${target}`);
  out.line(`WAL      ${plan.walNeeded.first}..${plan.walNeeded.last} needed for consistency: ${plan.walNeeded.present ? 'all archived' : `MISSING ${plan.walNeeded.missing.join(', ')}`}`);
  for (const t of plan.walAvailable) {
    out.line(`         timeline ${t.timeline}: archived through ${t.last ?? '-'}${t.gapAt ? `, first gap at ${t.gapAt}` : ', no gap'}`);
  }
  if (plan.histories.length > 0) out.line(`         timeline histories: ${plan.histories.join(', ')}`);
  if (!result.restored) return out.line(`dry run: nothing was changed (data directory would be ${plan.pgdata})`);
  out.line(`restored into ${plan.pgdata} with recovery.signal and restore_command = pgkeep wal-fetch`);
  if (!result.started || !result.outcome) {
    out.line(`start it with: pg_ctl start -D ${plan.pgdata}${result.port ? ` -o "-p ${result.port}"` : ''} (as the server's OS user)`);
    return;
  }
  const o = result.outcome;
  out.line(`recovery ${o.state}${o.newTimeline ? ` on new timeline ${o.newTimeline}` : ''} in ${formatDuration(result.durationMs)}`);
  if (o.stoppedAt) out.line(`stopped: ${o.stoppedAt}`);
  if (o.redoDoneAt) out.line(`redo done at ${o.redoDoneAt}${o.lastTransactionAt ? `; last transaction committed at ${o.lastTransactionAt}` : ''}`);
  if (result.port) out.line(`the server is running on port ${result.port}`);
}

function printTablePitr(result: TablePitrResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  const { plan, outcome } = result.pitr;
  out.line(`recovered a throwaway cluster from backup ${plan.backup.id}${outcome?.stoppedAt ? ` (${outcome.stoppedAt})` : ''}, then removed it`);
  for (const t of result.tables) out.line(`${t.name}: ${formatCount(t.rows)} rows`);
  out.line(result.loadedIntoDatabase ? `loaded into ${result.output}` : `wrote ${result.output} (${result.format})`);
}
