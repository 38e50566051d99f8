import { appendFile, chmod, readdir, rm, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { makeFolders } from '../local/make-folders.js';
import type { ResolvedSource } from '../config/settings.js';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { childStdinSink } from '../pipeline/load-stream.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { chownTree, serverBinDir, serverRunning, serverUser, startServer, stopServer, waitForRecovery, type RecoveryOutcome } from '../postgres/pg-server.js';
import { serverMajor } from '../postgres/pg-tools.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import { parseLsn, segmentNumber, segmentRange, walTimeline } from '../postgres/wal-file.js';
import type { PhysicalManifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { WalArchive } from '../repository/wal-archive.js';
import type { CommandContext } from '../registry/command-context.js';
import { identitiesFor } from '../repository/repository-keys.js';

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
      repository.loadObject(manifest, object, childStdinSink(tar.stdin!), {
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

