import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { configuredSources, resolveSource, toolPaths, verifySettings, type ResolvedSource, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { faultPoint } from '../fault-points.js';
import type { ConnectionInfo } from '../postgres/connection-info.js';
import { withClient } from '../postgres/pg-client.js';
import { serverBinDir, serverRunning, serverUser, stopServer } from '../postgres/pg-server.js';
import { serverMajor } from '../postgres/pg-tools.js';
import { consistentAt, type PhysicalManifest } from '../repository/manifest.js';
import { readIdentities } from '../repository/repository-keys.js';
import { readTableEstimates, type DatabaseTableEstimates } from '../postgres/table-estimates.js';
import { compareTableEstimates, type TableEstimatesComparison } from './compare-table-estimates.js';
import { archiveRecoveryPoint, findWaldump, type ArchiveRecoveryPoint } from './archive-recovery-point.js';
import type { Repository } from '../repository/repository.js';
import { describeProbeFailure, runAmcheck, runProbes, type AmcheckResult, type Problem, type ProbeResult } from './restore-checks.js';
import type { CommandContext } from '../registry/command-context.js';
import { runPitr, type RecoveryTarget } from '../restore/run-pitr.js';
import { walFetchCommand } from '../restore/wal-fetch-command.js';

export interface PhysicalRestoreTestReport {
  method: 'physical' | 'pitr';
  target: string;
  scratch: string;
  /** Extraction plus WAL replay until the server was promoted: the measured RTO. */
  restoreMs: number;
  extractMs: number;
  replayMs: number;
  walFiles: number;
  walBytes: number;
  recoveryPoint: { redoDoneAt: string | undefined; lastTransactionAt: string | undefined; stoppedAt: string | undefined; timeline: number | undefined };
  /** The table lists and estimates recorded at backup time against the recovered cluster; undefined for a backup of an older pgkeep. */
  facts?: TableEstimatesComparison | undefined;
  /** PITR drills: the window, the target and the proof it was reached, and the RPO the archive gives. */
  pitr?: PitrDrillReport | undefined;
  databases: { name: string; amcheck: AmcheckResult }[];
  probes: ProbeResult[];
  problems: Problem[];
  notes: string[];
}

export interface PitrDrillReport {
  /** From the backup's consistency point to the newest recoverable point of the archive. */
  window: { from: string; to: string };
  /** The time recovered to (chosen at random in the window unless given), or "latest". */
  target: string;
  chosen: 'random' | 'given' | 'latest';
  /** The newest point the archive can recover to, and how that was found. */
  recoverableTo: ArchiveRecoveryPoint;
  /** now - recoverableTo when the archive was read: the RPO the archive actually gives. */
  rpoMs: number;
  /** Commit time of the last transaction replayed (pg_last_xact_replay_timestamp). */
  lastReplayedAt: string | undefined;
  /** The time of the transaction recovery stopped at (before or after it), from the server's log. */
  stopRecordAt: string | undefined;
  /** The recovery stopped at the target: nothing after it replayed, everything up to it did. */
  reached: boolean;
}

/**
 * Restore test of a physical backup: a point-in-time recovery of it into a
 * throwaway data directory (a private temp folder, a server listening only
 * on a Unix socket inside it, not archiving), with WAL fetched through
 * pgkeep wal-fetch, to the end of the backup (recovery_target = immediate)
 * or to `target` (a PITR drill). Once promoted: every database accepts
 * connections, pg_amcheck finds nothing, the probes pass. The server is
 * stopped and the folder removed whatever happened.
 */
export async function runPhysicalRestoreTest(
  ctx: CommandContext,
  repository: Repository,
  manifest: PhysicalManifest,
  options: { target?: RecoveryTarget | undefined; pitrDrill?: boolean | undefined } = {},
): Promise<PhysicalRestoreTestReport> {
  const { settings } = ctx;
  let target: RecoveryTarget = options.target ?? { kind: 'immediate' };
  const drill = Boolean(options.pitrDrill) || target.kind !== 'immediate';
  const source = drillSource(settings, manifest);
  const restoreCommand = walFetchCommand(settings, ctx.keys, { source: manifest.source, repo: repository.location, encrypted: Boolean(repository.info.encryption), entry: ctx.walFetchEntry });
  // The programs of the backup's major version: a clear TOOL_MISSING naming the package when absent.
  const major = Math.floor(serverMajor(manifest.server.versionNum));
  const binDir = await serverBinDir(major, source.pgBin);
  const parent = source.tempDir ?? tmpdir();
  await removeKilledDrills(ctx, parent, binDir);
  const work = await mkdtemp(path.join(parent, 'pgkeep-drill-'));
  // The server's OS user owns the data directory inside; it only needs to pass through.
  await chmod(work, 0o711);
  // Who runs this drill: a later run removes the folder (and stops its server) once this process is gone.
  await writeFile(path.join(work, 'owner.pid'), `${process.pid}\n`, { mode: 0o644 });
  const pgdata = path.join(work, 'data');
  const notes: string[] = [];
  const problems: Problem[] = [];
  const databases: PhysicalRestoreTestReport['databases'] = [];
  let probes: ProbeResult[] = [];
  const recovered = new Map<string, DatabaseTableEstimates['tables']>();
  let window: Omit<PitrDrillReport, 'lastReplayedAt' | 'stopRecordAt' | 'reached'> | undefined;
  let lastReplayedAt: string | undefined;
  try {
    if (drill) {
      // The window: the newest recoverable point of the archive (also the RPO it gives), then a target inside it.
      const identities = repository.info.encryption ? await readIdentities(repository, ctx.keys) : [];
      const waldump = findWaldump(binDir, major);
      if (!waldump) notes.push(`pg_waldump of PostgreSQL ${major} is not installed: the newest recoverable point is the time the newest WAL segment was archived`);
      const point = await archiveRecoveryPoint(repository.walArchive(manifest.source), { scratch: path.join(work, 'wal-scan'), waldump, identities, signal: ctx.signal });
      const measuredAt = Date.now();
      const from = consistentAt(manifest);
      if (!point || point.at <= from) {
        throw new PgkeepError('PITR_NO_BACKUP', `the WAL archive of ${manifest.source} holds no transaction after backup ${manifest.id} became consistent (${from}): there is no point in time to drill to (run verify ${manifest.id} --restore-test)`);
      }
      const chosen = options.target ? (options.target.kind === 'latest' ? 'latest' : 'given') : 'random';
      if (options.target?.kind === 'time') {
        const at = new Date(options.target.value).toISOString();
        if (at <= from) throw new PgkeepError('USAGE', `--target-time ${options.target.value} is before backup ${manifest.id} became consistent (${from}): give a later time or an older backup`);
        // recovery_target_time needs a transaction after the target to stop before; past the newest, recovery ends before reaching it
        if (point.basis === 'commit' && at >= point.at) throw new PgkeepError('USAGE', `--target-time ${options.target.value} is not before the newest transaction in the WAL archive (${point.at}): recovery could not stop there; give an earlier time or --latest`);
      } else if (!options.target) {
        if (point.basis !== 'commit') throw new PgkeepError('TOOL_MISSING', `a PITR drill to a random point needs pg_waldump of PostgreSQL ${major} to find the newest transaction in the archive: install postgresql-${major}, or give --target-time`);
        // strictly inside: a second after consistency (the label's STOP TIME has whole seconds, the stop itself came up to 1 s later), before the newest transaction
        const start = Math.min(Date.parse(from) + 1000, Date.parse(point.at) - 1);
        const span = Date.parse(point.at) - start;
        target = { kind: 'time', value: new Date(start + Math.floor(Math.random() * Math.max(1, span))).toISOString() };
      }
      window = { window: { from, to: point.at }, target: target.kind === 'time' ? new Date(target.value).toISOString() : 'latest', chosen, recoverableTo: point, rpoMs: Math.max(0, measuredAt - Date.parse(point.at)) };
      ctx.info(`PITR drill of ${manifest.id}: recovering to ${window.target} (${chosen}; window ${from} → ${point.at})`);
    }
    const port = 5432; // only names the socket, inside the private folder: no TCP port is opened
    const pitr = await runPitr(ctx, repository, source, {
      pgdata,
      target,
      backup: manifest.id,
      start: true,
      port,
      archiveMode: 'off',
      targetAction: 'promote',
      restoreCommand,
      extraSettings: [
        ['listen_addresses', ''],
        ['unix_socket_directories', pgdata],
        ['logging_collector', 'off'],
        ['log_destination', 'stderr'],
        ['lc_messages', 'C'],
        // times in the log (where recovery stopped) and from the server, in UTC
        ['log_timezone', 'UTC'],
        ['timezone', 'UTC'],
        ['ssl', 'off'],
        ['fsync', 'off'],
        ['hba_file', path.join(pgdata, 'pg_hba.conf')],
      ],
      hba: 'local all all trust\n',
      whileRunning: async () => {
        faultPoint('drill-recovered');
        const connection: ConnectionInfo = { host: pgdata, port, user: source.connection.user, database: 'postgres' };
        const superuser = await withClient(connection, async (c) => (await c.query<{ name: string }>('SELECT rolname AS name FROM pg_catalog.pg_roles WHERE oid = 10')).rows[0]!.name, ctx.signal).catch(() => 'postgres');
        const admin = { ...connection, user: superuser };
        const names = await withClient(admin, async (c) => {
          const recovering = (await c.query<{ r: boolean }>('SELECT pg_catalog.pg_is_in_recovery() AS r')).rows[0]!.r;
          if (recovering) problems.push({ code: 'VERIFY_FAILED', message: 'the recovered server is still in recovery after promotion' });
          const replayed = (await c.query<{ t: Date | null }>('SELECT pg_catalog.pg_last_xact_replay_timestamp() AS t')).rows[0]!.t;
          lastReplayedAt = replayed ? replayed.toISOString() : undefined;
          return (await c.query<{ datname: string }>('SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname')).rows.map((r) => r.datname);
        }, ctx.signal);
        for (const name of names) {
          const db = { ...admin, database: name };
          if (manifest.physical.facts) {
            const tables = await withClient(db, readTableEstimates, ctx.signal).catch(() => undefined);
            if (tables) recovered.set(name, tables);
          }
          try {
            const amcheck = await withClient(db, (c) => runAmcheck(c, db, { pgBin: binDir, signal: ctx.signal }), ctx.signal);
            if (amcheck.note) notes.push(`pg_amcheck on ${name} skipped: ${amcheck.note}`);
            if (!amcheck.ok) problems.push({ code: 'VERIFY_FAILED', message: `pg_amcheck found corruption in database ${name}: ${amcheck.findings[0] ?? 'see its report'}` });
            databases.push({ name, amcheck });
          } catch (error) {
            problems.push({ code: 'VERIFY_FAILED', message: `database ${name} of the recovered cluster: ${(error as Error).message}` });
          }
        }
        const probeDb = { ...admin, database: names.includes(source.connection.database) ? source.connection.database : 'postgres' };
        probes = await withClient(probeDb, (c) => runProbes(c, verifySettings(settings, manifest.source).probes), ctx.signal);
        probes.forEach((p, i) => {
          if (!p.ok) problems.push({ code: 'VERIFY_FAILED', message: describeProbeFailure(p, i) });
        });
      },
    });
    const outcome = pitr.outcome;
    const facts = manifest.physical.facts && compareTableEstimates(manifest.physical.facts.databases, recovered);
    if (facts) {
      // At the end of the backup the catalog is the one the facts were read from; at a later target, tables may rightly have changed since.
      const differences = [
        ...facts.missing.slice(0, 5).map((t) => `table ${t} existed at backup time and is missing after recovery`),
        ...facts.differing.slice(0, 5).map((d) => `table ${d.table} held about ${Math.round(d.recorded)} rows at backup time (pg_class.reltuples), ${Math.round(d.recovered)} after recovery`),
      ];
      if (target.kind === 'immediate') for (const message of differences) problems.push({ code: 'VERIFY_FAILED', message });
      else for (const message of differences) notes.push(`since the backup: ${message}`);
    } else notes.push('the manifest records no table facts (a backup of an older pgkeep): table lists and estimates not compared');
    const pitrReport = window && proveTarget(window, target, lastReplayedAt ?? pgTime(outcome?.lastTransactionAt), outcome?.stoppedAt, problems);
    return {
      method: target.kind === 'immediate' ? 'physical' : 'pitr',
      target: target.kind === 'immediate' ? 'end of backup' : target.kind === 'latest' ? 'latest' : `${target.kind} ${target.value}`,
      scratch: `a throwaway cluster (PostgreSQL ${manifest.server.version.split(' ')[0]}, ${binDir})`,
      restoreMs: (pitr.extractMs ?? 0) + (pitr.replayMs ?? 0),
      extractMs: pitr.extractMs ?? 0,
      replayMs: pitr.replayMs ?? 0,
      walFiles: pitr.walFilesReplayed ?? 0,
      walBytes: (pitr.walFilesReplayed ?? 0) * manifest.physical.segmentSize,
      recoveryPoint: { redoDoneAt: outcome?.redoDoneAt, lastTransactionAt: outcome?.lastTransactionAt, stoppedAt: outcome?.stoppedAt, timeline: outcome?.newTimeline },
      pitr: pitrReport,
      facts,
      databases,
      probes,
      problems,
      notes,
    };
  } finally {
    await rm(work, { recursive: true, force: true }).catch((error: Error) => ctx.warn(`could not remove ${work}: ${error.message}`));
  }
}

/** The backup's source as configured (its role and programs), else what the manifest says. */
function drillSource(settings: Settings, manifest: PhysicalManifest): ResolvedSource {
  const name = settings.options.source ?? (configuredSources(settings).includes(manifest.source) ? manifest.source : undefined);
  try {
    return resolveSource(name === undefined ? settings : { ...settings, options: { ...settings.options, source: name } });
  } catch (error) {
    if (!(error instanceof PgkeepError)) throw error;
    const tools = toolPaths(settings);
    return { name: manifest.source, configured: false, connection: { host: '', port: 5432, user: 'postgres', database: 'postgres' }, backup: {}, repo: '', repos: [], pgBin: tools.pgBin, tempDir: tools.tempDir };
  }
}

/** A time as the server logs it ("2026-12-05 13:50:01.123456+00"), as ISO; undefined when there is none. */
export function pgTime(text: string | undefined): string | undefined {
  const match = /(\d{4}-\d\d-\d\d)[ T](\d\d:\d\d:\d\d(?:\.\d+)?)\s*(Z|UTC|[+-]\d\d(?::?\d\d)?)?/.exec(text ?? '');
  if (!match) return undefined;
  const zone = !match[3] || match[3] === 'UTC' || match[3] === 'Z' ? 'Z' : match[3].length === 3 ? `${match[3]}:00` : match[3].replace(/^([+-]\d\d)(\d\d)$/, '$1:$2');
  const at = Date.parse(`${match[1]}T${match[2]}${zone}`);
  return Number.isNaN(at) ? undefined : new Date(at).toISOString();
}

/**
 * The proof that a drill reached its target. To a time T: the last
 * transaction replayed ended at or before T, and recovery stopped before the
 * first transaction after T (or after one ending exactly at T). To the end
 * of the archive: the last transaction replayed is the newest one archived.
 * Each failed condition is a problem.
 */
export function proveTarget(
  window: Omit<PitrDrillReport, 'lastReplayedAt' | 'stopRecordAt' | 'reached'>,
  target: RecoveryTarget,
  lastReplayedAt: string | undefined,
  stoppedAt: string | undefined,
  problems: Problem[],
): PitrDrillReport {
  const before = problems.length;
  const stop = /recovery stopping (before|after)\b.*?\btime (.+)$/.exec(stoppedAt ?? '');
  const stopRecordAt = pgTime(stop?.[2]);
  if (target.kind === 'time') {
    const at = new Date(target.value).toISOString();
    if (!stop || !stopRecordAt) problems.push({ code: 'VERIFY_FAILED', message: `recovery did not stop at the target ${at}: the server reported no stop at a transaction${stoppedAt ? ` (${stoppedAt})` : ''}` });
    else if (stop[1] === 'before' ? stopRecordAt < at : stopRecordAt > at) problems.push({ code: 'VERIFY_FAILED', message: `recovery stopped ${stop[1]} a transaction of ${stopRecordAt}, on the wrong side of the target ${at}` });
    if (lastReplayedAt && lastReplayedAt > at) problems.push({ code: 'VERIFY_FAILED', message: `recovery replayed a transaction of ${lastReplayedAt}, after the target ${at}` });
  } else if (window.recoverableTo.basis === 'commit' && (!lastReplayedAt || lastReplayedAt < window.recoverableTo.at)) {
    problems.push({ code: 'VERIFY_FAILED', message: `recovery to the end of the archive replayed through ${lastReplayedAt ?? 'no transaction'}, short of the newest archived one (${window.recoverableTo.at})` });
  }
  return { ...window, lastReplayedAt, stopRecordAt, reached: problems.length === before };
}

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
};

/**
 * A drill killed outright (SIGKILL, a crash) leaves its folder and, since
 * pg_ctl detaches the server, a running server: each drill first stops and
 * removes those of drills whose pgkeep process is gone.
 */
async function removeKilledDrills(ctx: CommandContext, parent: string, binDir: string): Promise<void> {
  const entries = await readdir(parent).catch(() => [] as string[]);
  for (const entry of entries.filter((e) => e.startsWith('pgkeep-drill-'))) {
    const folder = path.join(parent, entry);
    const owner = Number((await readFile(path.join(folder, 'owner.pid'), 'utf8').catch(() => '')).trim());
    if (Number.isInteger(owner) && owner > 0 && alive(owner)) continue;
    const pgdata = path.join(folder, 'data');
    if (await serverRunning(pgdata)) {
      await stopServer(binDir, pgdata, serverUser()).catch((error: Error) => ctx.warn(`could not stop the server of an interrupted drill in ${pgdata}: ${error.message}`));
    }
    ctx.info(`removing ${folder}, left by an interrupted restore test`);
    await rm(folder, { recursive: true, force: true });
  }
}
