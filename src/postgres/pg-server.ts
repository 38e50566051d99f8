import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { open, readFile, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { runProcess } from './run-process.js';
import { inheritedEnv } from './child-env.js';

/**
 * Running a PostgreSQL server on a data directory pgkeep restored (pitr --start).
 * The server refuses to run as root: then it runs as the `postgres` OS user,
 * which owns the data directory.
 */

export interface ServerUser {
  uid: number;
  gid: number;
  name: string;
}

/** The OS user the server must run as: undefined when pgkeep is not root (it runs as us). */
export function serverUser(): ServerUser | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const fields = spawnSync('getent', ['passwd', 'postgres'], { encoding: 'utf8' }).stdout?.trim().split(':') ?? [];
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (fields.length < 4 || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new PgkeepError('PITR_FAILED', 'pgkeep runs as root, and PostgreSQL refuses to: there is no postgres OS user to run the server as (install the server package, or run pgkeep as the server\'s user)');
  }
  return { uid, gid, name: 'postgres' };
}

/**
 * Folder of the server programs (pg_ctl, postgres) for PostgreSQL `major`:
 * PG_BIN/pgBin, else the Debian layout. A data directory runs only under the
 * server of its own major version, so the folder's `postgres --version` must
 * say `major` (PG_BIN often points at a newer client's folder).
 */
export async function serverBinDir(major: number, pgBin: string | undefined): Promise<string> {
  const candidates = pgBin ? [pgBin] : [`/usr/lib/postgresql/${major}/bin`];
  for (const dir of candidates) {
    if (!existsSync(path.join(dir, 'pg_ctl')) || !existsSync(path.join(dir, 'postgres'))) continue;
    const version = /\(PostgreSQL\)\s+(\d+)/.exec(await runProcess(path.join(dir, 'postgres'), ['--version']))?.[1];
    if (Number(version) === major) return dir;
    throw new PgkeepError(
      'TOOL_MISSING',
      `${dir} holds the PostgreSQL ${version ?? '(unknown)'} server, and the backup is of PostgreSQL ${major}, whose data only its own major version runs: install postgresql-${major} and set PG_BIN to its bin folder (/usr/lib/postgresql/${major}/bin)`,
    );
  }
  throw new PgkeepError(
    'TOOL_MISSING',
    `the PostgreSQL ${major} server (pg_ctl, postgres) is not in ${candidates.join(', ')}: install postgresql-${major}, or set PG_BIN to its bin folder (the backup was taken from PostgreSQL ${major})`,
  );
}

/** Makes `user` own everything under `dir` (the data directory must belong to the server's user). */
export async function chownTree(dir: string, user: ServerUser): Promise<void> {
  await runProcess('chown', ['-R', `${user.uid}:${user.gid}`, dir]);
}

/** Starts the server (pg_ctl start, not waiting: recovery progress is read from its log). */
export async function startServer(binDir: string, dataDir: string, logFile: string, options: { port?: number | undefined; user?: ServerUser | undefined; signal?: AbortSignal }): Promise<void> {
  // The server's own settings come from its data directory, not from our PG* variables.
  const env = inheritedEnv();
  if (options.user) Object.assign(env, { HOME: dataDir, USER: options.user.name, LOGNAME: options.user.name });
  const args = ['start', '-D', dataDir, '-l', logFile, '-W'];
  if (options.port !== undefined) args.push('-o', `-p ${options.port}`);
  await runProcess(path.join(binDir, 'pg_ctl'), args, { env, cwd: dataDir, uid: options.user?.uid, gid: options.user?.gid, signal: options.signal, timeoutMs: 60_000 });
}

/** Fast shutdown of a server pgkeep started (pg_ctl stop -m fast), waiting for it. */
export async function stopServer(binDir: string, dataDir: string, user: ServerUser | undefined): Promise<void> {
  const env = inheritedEnv();
  await runProcess(path.join(binDir, 'pg_ctl'), ['stop', '-D', dataDir, '-m', 'fast', '-w', '-t', '60'], { env, cwd: dataDir, uid: user?.uid, gid: user?.gid, timeoutMs: 90_000 });
}

/** A TCP port nothing listens on right now (for a throwaway server; racy by nature, as every such choice). */
export async function freePort(): Promise<number> {
  const { createServer } = await import('node:net');
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      server.close(() => (typeof address === 'object' && address ? resolve(address.port) : reject(new Error('no free port'))));
    });
  });
}

/** Reads a growing log file from where it was last read. */
export class LogFollower {
  private offset = 0;
  private partial = '';

  constructor(private readonly file: string) {}

  /** New complete lines since the last call. */
  async lines(): Promise<string[]> {
    const size = await stat(this.file).then((s) => s.size, () => 0);
    if (size <= this.offset) return [];
    const handle = await open(this.file, 'r');
    try {
      const buffer = Buffer.alloc(size - this.offset);
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, this.offset);
      this.offset += bytesRead;
      const text = this.partial + buffer.subarray(0, bytesRead).toString('utf8');
      const lines = text.split('\n');
      this.partial = lines.pop() ?? '';
      return lines;
    } finally {
      await handle.close();
    }
  }
}

/** Where recovery ended, as the server logged it. */
export interface RecoveryOutcome {
  /** "promoted", "paused" or "shut down". */
  state: 'promoted' | 'paused' | 'shut down';
  /** The server's own line about where it stopped, e.g. "recovery stopping before commit of transaction 740, time 2026-…". */
  stoppedAt: string | undefined;
  /** LSN where redo ended. */
  redoDoneAt: string | undefined;
  /** Commit time of the last replayed transaction. */
  lastTransactionAt: string | undefined;
  /** Timeline a promoted server continues on. */
  newTimeline: number | undefined;
}

/**
 * Follows the server log until recovery reaches its end: the server promoted
 * (and accepts connections), paused at the target, or shut down at it.
 * Reports each WAL file restored and the consistency point through `progress`.
 * Fails PITR_FAILED on a FATAL error, when the server exits otherwise, or at the timeout.
 */
export async function waitForRecovery(logFile: string, options: { timeoutMs: number; signal: AbortSignal; progress: (line: string) => void; isRunning: () => boolean }): Promise<RecoveryOutcome> {
  const log = new LogFollower(logFile);
  const outcome: Omit<RecoveryOutcome, 'state'> = { stoppedAt: undefined, redoDoneAt: undefined, lastTransactionAt: undefined, newTimeline: undefined };
  const deadline = Date.now() + options.timeoutMs;
  let fatal: string | undefined;
  let promoting = false;
  /** The lines before a FATAL one often say why (an invalid setting, a missing file). */
  const recent: string[] = [];
  for (;;) {
    throwIfAborted(options.signal);
    for (const line of await log.lines()) {
      const message = line.replace(/^.*?(LOG|FATAL|PANIC|ERROR|WARNING|HINT|DETAIL):\s+/, '');
      let match: RegExpExecArray | null;
      if ((match = /restored log file "([^"]+)" from archive/.exec(line))) options.progress(`replayed WAL file ${match[1]}`);
      else if ((match = /consistent recovery state reached at ([0-9A-F/]+)/.exec(line))) options.progress(`consistent at ${match[1]}`);
      else if (/recovery stopping (before|after|at)/.test(line)) outcome.stoppedAt = message;
      else if ((match = /redo done at ([0-9A-F/]+)/.exec(line))) outcome.redoDoneAt = match[1];
      else if ((match = /last completed transaction was at log time (.+)$/.exec(line))) outcome.lastTransactionAt = match[1]!.trim();
      else if ((match = /selected new timeline ID: (\d+)/.exec(line))) {
        outcome.newTimeline = Number(match[1]);
        promoting = true;
      } else if (/archive recovery complete/.test(line)) promoting = true;
      else if (/database system is ready to accept connections/.test(line) && promoting) return { state: 'promoted', ...outcome };
      else if (/pausing at the end of recovery|recovery has paused/.test(line)) return { state: 'paused', ...outcome };
      else if (/shutdown at recovery target/.test(line)) return { state: 'shut down', ...outcome };
      else if (/\b(FATAL|PANIC):/.test(line)) fatal ??= [...recent.filter((l) => /invalid|error|could not/i.test(l)), message].join('; ');
      recent.push(message);
      if (recent.length > 3) recent.shift();
    }
    if (fatal) throw new PgkeepError('PITR_FAILED', `the recovered server stopped: ${fatal} (log: ${logFile})`);
    if (!options.isRunning()) throw new PgkeepError('PITR_FAILED', `the recovered server exited before recovery ended (log: ${logFile})`);
    if (Date.now() > deadline) throw new PgkeepError('PITR_FAILED', `recovery did not finish within ${Math.round(options.timeoutMs / 1000)} s (the server is still running; log: ${logFile})`);
    await new Promise((resolve) => setTimeout(resolve, 200));
  }
}

/** True while a postmaster runs on `dataDir` (postmaster.pid names a live process). */
export async function serverRunning(dataDir: string): Promise<boolean> {
  const text = await readFile(path.join(dataDir, 'postmaster.pid'), 'utf8').catch(() => undefined);
  const pid = Number(text?.split('\n')[0]);
  if (!Number.isInteger(pid) || pid <= 0) return false;
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
