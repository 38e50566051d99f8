import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { chown, mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { PgkeepError, throwIfAborted } from '../errors.js';
import type { ConnectionInfo } from './connection-info.js';
import { runProcess, startProcess, type RunningProcess } from './run-process.js';
import { inheritedEnv } from './child-env.js';

/** A throwaway PostgreSQL server for restore tests, reachable only through a socket in its private folder. */
export interface ScratchCluster {
  readonly connection: ConnectionInfo;
  /** e.g. "15" (the data folder's PG_VERSION). */
  readonly version: string;
  readonly binDir: string;
  /** Fast shutdown, then the folder is removed. Safe to call more than once. */
  stop(): Promise<void>;
}

export interface ScratchClusterOptions {
  /** Folder of initdb and postgres (PG_BIN / pgBin); default the newest /usr/lib/postgresql/<N>/bin. */
  pgBin?: string | undefined;
  tempDir?: string | undefined;
  /** The superuser initdb creates: naming it after the backup's role lets plain dumps set owners. */
  superuser?: string | undefined;
  signal?: AbortSignal | undefined;
  /** How long the server may take to accept connections. */
  startTimeoutMs?: number | undefined;
}

/** The socket "port": the socket lives in a private folder, so no number can clash. */
const SOCKET_PORT = 5432;

// Nothing of this server has to survive it: durability off makes the restore faster.
const SERVER_SETTINGS = ['listen_addresses=', 'fsync=off', 'full_page_writes=off', 'synchronous_commit=off', 'max_connections=20', `port=${SOCKET_PORT}`];

/**
 * Starts a throwaway cluster from the server programs on this machine:
 * initdb into a private temp folder (0700), then `postgres` with no TCP
 * listener, trust authentication only over the socket in that folder, and
 * durability off. As root it runs as the `postgres` OS user (PostgreSQL
 * refuses to run as root). The server is a child of this process; stop()
 * shuts it down and removes the folder, and a process exit does the same as
 * a last resort. (A SIGKILL of pgkeep cannot: then the folder, named
 * pgkeep-scratch-*, and its server are left to remove by hand.)
 */
export async function startScratchCluster(options: ScratchClusterOptions = {}): Promise<ScratchCluster> {
  const binDir = findServerBinDir(options.pgBin);
  const runAs = postgresUserIfRoot();
  const parent = options.tempDir ?? tmpdir();
  if (runAs) assertTraversable(parent);
  const base = await mkdtemp(path.join(parent, 'pgkeep-scratch-'));
  const dataDir = path.join(base, 'data');
  const superuser = options.superuser ?? 'postgres';
  let server: RunningProcess | undefined;
  let version = '';
  const removeSync = () => {
    if (server && server.child.exitCode === null && server.child.signalCode === null) server.child.kill('SIGQUIT');
    rmSync(base, { recursive: true, force: true });
  };
  process.once('exit', removeSync);
  const asServer = {
    env: serverEnv(runAs ? { HOME: base, USER: 'postgres', LOGNAME: 'postgres' } : {}),
    cwd: base,
    uid: runAs?.uid,
    gid: runAs?.gid,
  };
  try {
    if (runAs) await chown(base, runAs.uid, runAs.gid);
    const initdb = path.join(binDir, 'initdb');
    const initArgs = ['-D', dataDir, '-U', superuser, '--auth=trust', '-E', 'UTF8', '--no-sync'];
    try {
      await runProcess(initdb, [...initArgs, '--locale=C.UTF-8'], { ...asServer, signal: options.signal });
    } catch (error) {
      throwIfAborted(options.signal);
      // Minimal systems may lack C.UTF-8; C always exists.
      await rm(dataDir, { recursive: true, force: true });
      await runProcess(initdb, [...initArgs, '--locale=C'], { ...asServer, signal: options.signal }).catch((second: unknown) => {
        throw new PgkeepError('TOOL_FAILED', `initdb could not create the scratch cluster: ${(second as Error).message}`, { cause: error });
      });
    }
    version = (await readFile(path.join(dataDir, 'PG_VERSION'), 'utf8')).trim();
    server = await startServer(path.join(binDir, 'postgres'), ['-D', dataDir, '-k', base, ...SERVER_SETTINGS.flatMap((s) => ['-c', s])], asServer, options);
  } catch (error) {
    removeSync();
    process.off('exit', removeSync);
    throw error;
  }

  let stopping: Promise<void> | undefined;
  const running = server;
  return {
    connection: { host: base, port: SOCKET_PORT, user: superuser, database: 'postgres' },
    version,
    binDir,
    stop: () =>
      (stopping ??= (async () => {
        // SIGINT is PostgreSQL's fast shutdown: sessions are ended, no checkpoint wait for clients.
        running.child.kill('SIGINT');
        const killer = setTimeout(() => running.child.kill('SIGKILL'), 30_000);
        await running.done.catch(() => undefined);
        clearTimeout(killer);
        await rm(base, { recursive: true, force: true });
        process.off('exit', removeSync);
      })()),
  };
}

/** Starts `postgres` and resolves once it accepts connections (it says so on stderr). */
function startServer(
  postgres: string,
  args: string[],
  spawnOptions: { env: NodeJS.ProcessEnv; cwd: string; uid: number | undefined; gid: number | undefined },
  options: ScratchClusterOptions,
): Promise<RunningProcess> {
  return new Promise((resolve, reject) => {
    let ready = false;
    const server = startProcess(postgres, args, {
      ...spawnOptions,
      stdout: 'ignore',
      onStderrLine: (line) => {
        if (!ready && line.includes('database system is ready to accept connections')) {
          ready = true;
          clearTimeout(timer);
          options.signal?.removeEventListener('abort', onAbort);
          resolve(server);
        }
      },
      isErrorLine: (line) => /FATAL|ERROR|PANIC/.test(line),
    });
    const fail = (error: PgkeepError) => {
      if (ready) return;
      ready = true;
      clearTimeout(timer);
      options.signal?.removeEventListener('abort', onAbort);
      server.child.kill('SIGQUIT');
      server.done.catch(() => undefined).finally(() => reject(error));
    };
    const onAbort = () => fail(new PgkeepError('ABORTED', 'interrupted while starting the scratch cluster'));
    const timer = setTimeout(() => fail(new PgkeepError('TOOL_FAILED', 'the scratch PostgreSQL server did not accept connections within 60 s')), options.startTimeoutMs ?? 60_000);
    options.signal?.addEventListener('abort', onAbort, { once: true });
    server.done.then(
      () => fail(new PgkeepError('TOOL_FAILED', 'the scratch PostgreSQL server exited at start')),
      (error: PgkeepError) => fail(error.code === 'TOOL_FAILED' ? new PgkeepError('TOOL_FAILED', `the scratch PostgreSQL server did not start: ${error.message}`, { cause: error }) : error),
    );
  });
}

/** PG_BIN/pgBin when it holds the server programs, else the newest Debian-style installation. */
export function findServerBinDir(pgBin: string | undefined): string {
  const has = (dir: string) => existsSync(path.join(dir, 'initdb')) && existsSync(path.join(dir, 'postgres'));
  if (pgBin && has(pgBin)) return pgBin;
  const root = '/usr/lib/postgresql';
  const majors = existsSync(root)
    ? readdirSync(root)
        .filter((d) => /^\d+$/.test(d))
        .map(Number)
        .sort((a, b) => b - a)
    : [];
  for (const major of majors) {
    const dir = path.join(root, String(major), 'bin');
    if (has(dir)) return dir;
  }
  throw new PgkeepError(
    'TOOL_MISSING',
    `--scratch local needs the PostgreSQL server programs (initdb, postgres)${pgBin ? `, which are not in ${pgBin}` : ''}: install them (apt-get install postgresql), or use --scratch same-server or --scratch postgresql://…`,
  );
}

function postgresUserIfRoot(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const result = spawnSync('getent', ['passwd', 'postgres'], { encoding: 'utf8' });
  const fields = result.status === 0 ? result.stdout.trim().split(':') : [];
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (fields.length < 4 || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new PgkeepError('TOOL_FAILED', 'running as root, and PostgreSQL refuses to run as root: create a "postgres" OS user (the server package does) or run pgkeep as another user');
  }
  return { uid, gid };
}

/** As root the server runs as postgres, which must reach its folder: every folder above it needs o+x. */
function assertTraversable(folder: string): void {
  for (let dir = path.resolve(folder); ; dir = path.dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) {
      throw new PgkeepError('CONFIG_INVALID', `the postgres OS user cannot reach ${folder} (${dir} has no search permission for others): set PGKEEP_TEMP_DIR or tempDir to a folder it can reach, e.g. /tmp`);
    }
    if (path.dirname(dir) === dir) return;
  }
}

/** The caller's environment without PG* settings (PGDATA, PGPORT must not steer the scratch server). */
function serverEnv(extra: Record<string, string>): NodeJS.ProcessEnv {
  return { ...inheritedEnv(), ...extra };
}
