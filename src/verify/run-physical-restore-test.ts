import { chmod, mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { configuredSources, resolveSource, toolPaths, verifySettings, type ResolvedSource, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import type { ConnectionInfo } from '../postgres/connection-info.js';
import { withClient } from '../postgres/pg-client.js';
import { serverBinDir, serverRunning, serverUser, stopServer } from '../postgres/pg-server.js';
import { serverMajor } from '../postgres/pg-tools.js';
import type { PhysicalManifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { describeProbeFailure, runAmcheck, runProbes, type AmcheckResult, type Problem, type ProbeResult } from './restore-checks.js';
import type { CommandContext } from '../commands/command-context.js';
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
  databases: { name: string; amcheck: AmcheckResult }[];
  probes: ProbeResult[];
  problems: Problem[];
  notes: string[];
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
  options: { target?: RecoveryTarget | undefined } = {},
): Promise<PhysicalRestoreTestReport> {
  const { settings } = ctx;
  const target: RecoveryTarget = options.target ?? { kind: 'immediate' };
  const source = drillSource(settings, manifest);
  const restoreCommand = walFetchCommand(settings, ctx.keys, { source: manifest.source, repo: repository.location, encrypted: Boolean(repository.info.encryption) });
  // The programs of the backup's major version: a clear TOOL_MISSING naming the package when absent.
  const binDir = await serverBinDir(Math.floor(serverMajor(manifest.server.versionNum)), source.pgBin);
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
  try {
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
        ['ssl', 'off'],
        ['fsync', 'off'],
        ['hba_file', path.join(pgdata, 'pg_hba.conf')],
      ],
      hba: 'local all all trust\n',
      whileRunning: async () => {
        const connection: ConnectionInfo = { host: pgdata, port, user: source.connection.user, database: 'postgres' };
        const superuser = await withClient(connection, async (c) => (await c.query<{ name: string }>('SELECT rolname AS name FROM pg_catalog.pg_roles WHERE oid = 10')).rows[0]!.name, ctx.signal).catch(() => 'postgres');
        const admin = { ...connection, user: superuser };
        const names = await withClient(admin, async (c) => {
          const recovering = (await c.query<{ r: boolean }>('SELECT pg_catalog.pg_is_in_recovery() AS r')).rows[0]!.r;
          if (recovering) problems.push({ code: 'VERIFY_FAILED', message: 'the recovered server is still in recovery after promotion' });
          return (await c.query<{ datname: string }>('SELECT datname FROM pg_catalog.pg_database WHERE datallowconn AND NOT datistemplate ORDER BY datname')).rows.map((r) => r.datname);
        }, ctx.signal);
        for (const name of names) {
          const db = { ...admin, database: name };
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
