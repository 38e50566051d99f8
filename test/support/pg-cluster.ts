// Throwaway PostgreSQL clusters for integration tests and the demo.
//
// Every cluster lives in its own temp dir, listens only on 127.0.0.1 with
// password (SCRAM) auth, and is torn down on stop() or, as a last resort, when
// the Node process exits. The password never appears in any argv, because argv
// is visible to every user on the machine via ps.

import { execFile, spawnSync, type ExecFileOptions } from 'node:child_process';
import { createHash, createHmac, pbkdf2Sync, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, rmSync, statfsSync, statSync } from 'node:fs';
import { appendFile, chmod, chown, cp, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { createServer, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import pg from 'pg';
import { setSystemIdentifier } from './set-system-identifier.js';

export interface PgCluster {
  host: string;
  port: number;
  superuser: string;
  password: string;
  dataDir: string;
  socketDir: string;
  binDir: string;
  majorVersion: number;
  /** postgresql://user:pass@127.0.0.1:port/db. Defaults to the superuser and the `postgres` database. */
  url(database?: string, user?: string, password?: string): string;
  /**
   * Runs one statement as the superuser over TCP. On the `postgres` database it
   * reuses one kept session (reset with DISCARD ALL after each statement);
   * on any other database it opens a fresh connection, as a new session there
   * is what DROP DATABASE, CREATE DATABASE ... TEMPLATE and restores expect.
   */
  query<T = any>(sql: string, params?: unknown[], database?: string): Promise<T[]>;
  /** Fast shutdown, then deletes the temp dir. Safe to call more than once. */
  stop(): Promise<void>;
}

export interface StartClusterOptions {
  /** Directory holding initdb, pg_ctl and postgres; defaults to findServerBinDir(). */
  binDir?: string;
  /** Extra server settings, passed as `-c key=value`; they override the test defaults. */
  settings?: Record<string, string>;
  /**
   * Settings written into postgresql.conf (quoted, so values may hold spaces, e.g.
   * archive_command). Unlike `settings` they travel with the data directory, into
   * a physical backup and a cluster recovered from it.
   */
  conf?: Record<string, string>;
  /**
   * WAL segment size in MiB (initdb --wal-segsize; 16 when not given). Tests
   * whose point is recovery, not the size of a segment, take 1: every segment
   * the server archives, pgkeep stores, a base backup carries and a recovery
   * fetches is then 1 MiB of work instead of 16.
   */
  walSegmentSizeMb?: number;
}

/** Server settings for WAL archiving to pgkeep (archive_command runs as the server's OS user). */
export function archivingConf(archiveCommand: string): Record<string, string> {
  return { wal_level: 'replica', archive_mode: 'on', archive_command: archiveCommand, max_wal_senders: '5', archive_timeout: '0' };
}

const HOST = '127.0.0.1';
const SUPERUSER = 'postgres';

// Durability is pointless for a cluster that is deleted after the run, and
// turning it off makes initdb/restore-heavy tests several times faster.
const DEFAULT_SETTINGS: Readonly<Record<string, string>> = {
  listen_addresses: HOST,
  fsync: 'off',
  full_page_writes: 'off',
  synchronous_commit: 'off',
  max_connections: '50',
};

/** Who the server processes run as: undefined means "whoever we are". */
interface RunAs {
  uid: number;
  gid: number;
}

interface RunningCluster {
  binDir: string;
  dataDir: string;
  baseDir: string;
  runAs: RunAs | undefined;
}

const running = new Set<RunningCluster>();
let exitHookInstalled = false;

export function findServerBinDir(): string {
  const fromEnv = process.env.PG_BIN;
  if (fromEnv) {
    if (!hasServerBinaries(fromEnv)) {
      throw new Error(`PG_BIN=${fromEnv} does not contain both initdb and postgres`);
    }
    return fromEnv;
  }
  const root = '/usr/lib/postgresql';
  let versions: string[] = [];
  try {
    versions = readdirSync(root).filter((name) => /^\d+(\.\d+)?$/.test(name));
  } catch {
    // No Debian-style install at all; fall through to the error below.
  }
  versions.sort((a, b) => Number.parseFloat(b) - Number.parseFloat(a));
  for (const version of versions) {
    const binDir = join(root, version, 'bin');
    if (hasServerBinaries(binDir)) return binDir;
  }
  throw new Error(
    'No PostgreSQL server binaries found (looked for /usr/lib/postgresql/<N>/bin with initdb and postgres). ' +
      'Install them with `apt-get install postgresql`, or set PG_BIN to the directory containing initdb, pg_ctl and postgres.',
  );
}

/**
 * The postgres OS user must be able to reach the server programs. A checkout in
 * a private folder (mktemp -d is 0700) hides node_modules' embedded servers from
 * it; then the installation (bin/ with its lib/ and share/ beside it) is copied
 * once into a temp folder everyone can traverse.
 */
const reachableCopies = new Map<string, Promise<string>>();
async function reachableBinDir(binDir: string): Promise<string> {
  if (everyoneCanTraverse(binDir)) return binDir;
  let copy = reachableCopies.get(binDir);
  if (!copy) {
    copy = (async () => {
      const target = await mkdtemp(join(tmpdir(), 'pgkeep-pgbin-'));
      await chmod(target, 0o755);
      await cp(dirname(binDir), target, { recursive: true, verbatimSymlinks: true });
      process.once('exit', () => rmSync(target, { recursive: true, force: true }));
      return join(target, basename(binDir));
    })();
    reachableCopies.set(binDir, copy);
  }
  return copy;
}

function everyoneCanTraverse(path: string): boolean {
  for (let dir = path; ; dir = dirname(dir)) {
    if ((statSync(dir).mode & 0o001) === 0) return false;
    if (dirname(dir) === dir) return true;
  }
}

function hasServerBinaries(binDir: string): boolean {
  return existsSync(join(binDir, 'initdb')) && existsSync(join(binDir, 'postgres'));
}

export async function startCluster(options: StartClusterOptions = {}): Promise<PgCluster> {
  const requestedBinDir = options.binDir ?? findServerBinDir();
  const settings = { ...DEFAULT_SETTINGS, ...(options.settings ?? {}) };
  const serverOptionsFor = (port: number, socketDir: string) =>
    buildServerOptions(port, socketDir, settings);
  // Validate before creating anything so a bad setting doesn't leave a temp dir behind.
  serverOptionsFor(0, '/');

  const runAs = await resolveRunAs();
  const binDir = runAs ? await reachableBinDir(requestedBinDir) : requestedBinDir;
  // mkdtemp creates it 0700, so no other user can reach the password file or the socket.
  const baseDir = await mkdtemp(join(clusterRoot(), 'pgkeep-pg-'));
  const dataDir = join(baseDir, 'data');
  const socketDir = join(baseDir, 'sock');
  const logFile = join(baseDir, 'server.log');
  const pwFile = join(baseDir, 'pwfile');
  const password = randomBytes(24).toString('hex');

  const handle: RunningCluster = { binDir, dataDir, baseDir, runAs };
  try {
    await mkdir(socketDir, { mode: 0o700 });
    // 0600 before the password goes in, so it is never readable by others even briefly.
    await writeFile(pwFile, `${password}\n`, { mode: 0o600 });
    if (runAs) {
      // initdb refuses to run as root, so the whole tree must belong to postgres.
      for (const path of [baseDir, socketDir, pwFile]) await chown(path, runAs.uid, runAs.gid);
    }

    let fromTemplate: boolean;
    try {
      fromTemplate = await makeDataDir(binDir, dataDir, pwFile, runAs, baseDir, options.walSegmentSizeMb);
    } finally {
      await rm(pwFile, { force: true });
    }
    const majorVersion = Number.parseInt((await readFile(join(dataDir, 'PG_VERSION'), 'utf8')).trim(), 10);
    if (options.conf) await appendConf(join(dataDir, 'postgresql.conf'), options.conf);

    // Grabbing a free port and then handing it to the server is inherently racy
    // (another parallel test can take it in between), so retry on bind errors.
    let port = 0;
    for (let attempt = 1; ; attempt++) {
      port = await findFreePort();
      running.add(handle);
      installExitHook();
      try {
        await run(
          join(binDir, 'pg_ctl'),
          ['start', '-D', dataDir, '-l', logFile, '-w', '-t', '60', '-o', serverOptionsFor(port, socketDir)],
          runAs,
          baseDir,
        );
        break;
      } catch (err) {
        // A start that timed out may leave a postmaster still coming up; it
        // must be gone before its directory is deleted underneath it.
        stopImmediatelySync(handle);
        running.delete(handle);
        const log = await tailFile(logFile);
        if (attempt < 3 && /could not bind|address already in use/i.test(log)) continue;
        throw new Error(
          `pg_ctl start failed on port ${port}: ${errorMessage(err)}\n--- server log (tail) ---\n${log}`,
        );
      }
    }

    // A copied template has the template's (discarded) password: set this
    // cluster's own over the socket, where initdb's --auth-local=trust lets
    // the superuser in without one.
    if (fromTemplate) await setSuperuserPassword(socketDir, port, password);
    return makeCluster({ handle, binDir, dataDir, socketDir, port, password, majorVersion });
  } catch (err) {
    await rm(baseDir, { recursive: true, force: true }).catch(() => {});
    throw err;
  }
}

function makeCluster(args: {
  handle: RunningCluster;
  binDir: string;
  dataDir: string;
  socketDir: string;
  port: number;
  password: string;
  majorVersion: number;
}): PgCluster {
  const { handle, port, password } = args;
  let stopping: Promise<void> | undefined;
  const kept = keptSession({ host: HOST, port, user: SUPERUSER, password, database: KEPT_DATABASE });

  return {
    host: HOST,
    port,
    superuser: SUPERUSER,
    password,
    dataDir: args.dataDir,
    socketDir: args.socketDir,
    binDir: args.binDir,
    majorVersion: args.majorVersion,

    url(database = 'postgres', user?: string, userPassword?: string): string {
      // A caller naming another user must supply that user's password; silently
      // pairing it with the superuser password would produce a confusing auth failure.
      const name = user ?? SUPERUSER;
      const secret = user === undefined ? password : userPassword;
      const auth = secret === undefined ? encodeURIComponent(name) : `${encodeURIComponent(name)}:${encodeURIComponent(secret)}`;
      return `postgresql://${auth}@${HOST}:${port}/${encodeURIComponent(database)}`;
    },

    async query<T = any>(sql: string, params: unknown[] = [], database = 'postgres'): Promise<T[]> {
      if (database === KEPT_DATABASE && !stopping) return kept.query<T>(sql, params);
      const client = new pg.Client({ host: HOST, port, user: SUPERUSER, password, database });
      await client.connect();
      try {
        const result = await client.query(sql, params);
        return result.rows as T[];
      } finally {
        await client.end();
      }
    },

    stop(): Promise<void> {
      stopping ??= (async () => {
        // Its own session first: a clean goodbye instead of an admin-shutdown error.
        await kept.close();
        try {
          await run(join(handle.binDir, 'pg_ctl'), ['stop', '-D', handle.dataDir, '-m', 'fast', '-w', '-t', '60'], handle.runAs, handle.baseDir);
        } catch {
          // The server may already be gone (crashed, or stopped by the exit hook);
          // either way the directory still has to be cleaned up.
          stopImmediatelySync(handle);
        } finally {
          running.delete(handle);
          await rm(handle.baseDir, { recursive: true, force: true });
        }
      })();
      return stopping;
    },
  };
}

// The database whose session cluster.query keeps: the one the tests poll and
// run their DDL on, and one no test drops, renames, copies or restores over.
const KEPT_DATABASE = 'postgres';

// Error codes of a server (or a backend) going away: the kept session is then
// dead, not the statement wrong.
const SESSION_GONE = new Set(['57P01', '57P02', '57P03', 'ECONNRESET', 'EPIPE', 'ECONNREFUSED']);

/**
 * One reusable superuser session. A fresh connection is a backend fork plus a
 * SCRAM exchange on both sides (about 7 ms of CPU); the suite's tests call
 * cluster.query thousands of times, mostly on `postgres` (polls, CREATE
 * DATABASE, roles). Each statement leaves the session as a new one would be:
 * DISCARD ALL resets settings, role, temp tables, prepared statements, LISTENs
 * and advisory locks, and a statement that leaves a transaction open (DISCARD
 * ALL then fails) closes the session instead. While idle its socket is
 * unref'd, so a file that never stops its cluster still exits. Concurrent
 * callers get connections of their own, as before.
 */
function keptSession(config: pg.ClientConfig) {
  let idle: pg.Client | undefined;
  const dead = new WeakSet<pg.Client>();
  const socketOf = (client: pg.Client) => (client as unknown as { connection: { stream: Socket } }).connection.stream;
  // ref'd again first: an unref'd socket would let the process exit while end() waits for it
  const end = (client: pg.Client) => {
    socketOf(client).ref();
    return client.end().catch(() => {});
  };

  async function open(): Promise<pg.Client> {
    const client = new pg.Client(config);
    // An idle session hears of a server shutdown as an 'error' event, which must not crash the test process.
    client.on('error', () => dead.add(client));
    client.on('end', () => dead.add(client));
    await client.connect();
    return client;
  }

  async function release(client: pg.Client): Promise<void> {
    if (!dead.has(client) && idle === undefined) {
      try {
        await client.query('DISCARD ALL');
        if (!dead.has(client) && idle === undefined) {
          socketOf(client).unref();
          idle = client;
          return;
        }
      } catch {
        // a transaction left open, or the session is gone: not reusable
      }
    }
    await end(client);
  }

  return {
    async query<T>(sql: string, params: unknown[]): Promise<T[]> {
      let client = idle;
      idle = undefined;
      if (client && dead.has(client)) {
        await end(client);
        client = undefined;
      }
      const reused = client !== undefined;
      if (client) socketOf(client).ref();
      else client = await open();
      let result: pg.QueryResult;
      try {
        result = await client.query(sql, params);
      } catch (err) {
        const code = (err as { code?: string }).code;
        const gone = dead.has(client) || (code !== undefined && SESSION_GONE.has(code)) || /Connection terminated/i.test(errorMessage(err));
        await release(client);
        // A kept session that the server dropped while it sat idle (a restart,
        // a crash test) never ran the statement: once more on a new one.
        if (reused && gone) return this.query<T>(sql, params);
        throw err;
      }
      await release(client);
      return result.rows as T[];
    },
    async close(): Promise<void> {
      const client = idle;
      idle = undefined;
      if (client) await end(client);
    },
  };
}

/** Free space a memory file system must have to hold the clusters of two test files side by side. */
const MEMORY_ROOT_MIN_FREE = 4 * 1024 ** 3;
let chosenRoot: string | undefined;

/**
 * Where clusters live: PGKEEP_TEST_CLUSTER_ROOT if set (`tmpdir` for the
 * system's temp dir), else /dev/shm when it is a memory file system with room
 * to spare, else the temp dir. On ext4 the copy of the initdb template alone
 * cost 0.1-0.4 CPU-s (kernel time) and seconds of wall time per cluster; in
 * memory a cluster's start and stop cost ~0.15 CPU-s instead of ~0.45, and the
 * server's writes get cheaper too. Durability was never wanted (fsync=off), and
 * a small /dev/shm (a container's 64 MB) is passed over. Exported for the
 * tests whose pgkeep makes clusters of its own (pitr's recovered data
 * directories, drills, local scratch clusters): their folders go here too.
 */
export function clusterRoot(): string {
  const fromEnv = process.env.PGKEEP_TEST_CLUSTER_ROOT;
  if (fromEnv) return fromEnv === 'tmpdir' ? tmpdir() : fromEnv;
  if (chosenRoot === undefined) {
    chosenRoot = tmpdir();
    try {
      const memory = '/dev/shm';
      const fs = statfsSync(memory);
      const TMPFS_MAGIC = 0x01021994;
      if (fs.type === TMPFS_MAGIC && fs.bavail * fs.bsize >= MEMORY_ROOT_MIN_FREE && (statSync(memory).mode & 0o1777) === 0o1777) chosenRoot = memory;
    } catch {
      // no /dev/shm: the temp dir
    }
  }
  return chosenRoot;
}

/**
 * The data directory of a new cluster: a copy of a data directory initdb made
 * once (per server version and OS user) with a new system identifier, or, where
 * the server's programs lack pg_resetwal (the npm builds of other versions) or
 * PGKEEP_TEST_INITDB_TEMPLATE=off, initdb itself. A copy takes a fraction of
 * initdb's seconds, and the suite starts some fifty clusters. Returns whether
 * it was copied.
 */
async function makeDataDir(binDir: string, dataDir: string, pwFile: string, runAs: RunAs | undefined, cwd: string, walSegmentSizeMb?: number): Promise<boolean> {
  const template = await initdbTemplate(binDir, runAs, walSegmentSizeMb);
  if (!template) {
    await initdb(binDir, dataDir, pwFile, runAs, cwd, walSegmentSizeMb);
    return false;
  }
  await run('cp', ['-a', template, dataDir], runAs, cwd);
  await setSystemIdentifier(dataDir);
  // The WAL pages carry the old identifier: fresh WAL from the new control file.
  await run(join(binDir, 'pg_resetwal'), ['-f', '-D', dataDir], runAs, cwd);
  return true;
}

const templates = new Map<string, Promise<string | undefined>>();

/**
 * The template data directory for binDir, made by initdb on first use. It
 * lives under PGKEEP_TEST_INITDB_TEMPLATES (scripts/run-tests.mjs points it at
 * its run folder, so each suite run makes its own) or else a folder in the
 * system's temp dir kept between runs; the key holds the server's version, so a
 * new server gets a new template. Parallel test files race to make it: each
 * builds its own and renames it into place, and the loser uses the winner's.
 */
function initdbTemplate(binDir: string, runAs: RunAs | undefined, walSegmentSizeMb?: number): Promise<string | undefined> {
  const templateKey = walSegmentSizeMb === undefined ? binDir : `${binDir}\0${walSegmentSizeMb}`;
  let template = templates.get(templateKey);
  if (!template) {
    template = (async () => {
      if (process.env.PGKEEP_TEST_INITDB_TEMPLATE === 'off' || !existsSync(join(binDir, 'pg_resetwal'))) return undefined;
      const version = (await run(join(binDir, 'postgres'), ['-V'], runAs, '/')).trim();
      const key = createHash('sha256')
        .update(JSON.stringify({ version, user: runAs?.uid ?? process.getuid?.(), harness: 2, ...(walSegmentSizeMb === undefined ? {} : { walSegmentSizeMb }) }))
        .digest('hex')
        .slice(0, 16);
      const root = process.env.PGKEEP_TEST_INITDB_TEMPLATES || join(process.env.PGKEEP_TEST_SYSTEM_TMPDIR ?? tmpdir(), 'pgkeep-initdb-templates');
      await mkdir(root, { recursive: true, mode: 0o755 });
      const target = join(root, key);
      if (existsSync(join(target, 'global', 'pg_control'))) return target;
      const build = await mkdtemp(join(root, 'build-'));
      try {
        const pwFile = join(build, 'pwfile');
        // A password nobody keeps: every copy gets its own after it starts.
        await writeFile(pwFile, `${randomBytes(24).toString('hex')}\n`, { mode: 0o600 });
        if (runAs) for (const path of [build, pwFile]) await chown(path, runAs.uid, runAs.gid);
        await initdb(binDir, join(build, 'data'), pwFile, runAs, build, walSegmentSizeMb);
        // pg_resetwal replaces every copy's WAL anyway: copying it would be 16 MiB for nothing.
        const wal = join(build, 'data', 'pg_wal');
        for (const name of readdirSync(wal)) if (/^[0-9A-F]{24}$/.test(name)) await rm(join(wal, name));
        try {
          await rename(join(build, 'data'), target);
        } catch (err) {
          if (!existsSync(join(target, 'global', 'pg_control'))) throw err;
        }
      } finally {
        await rm(build, { recursive: true, force: true });
      }
      return target;
    })();
    templates.set(templateKey, template);
  }
  return template;
}

const TEST_SCRAM_ITERATIONS = 16;

/** The form PostgreSQL stores (RFC 5802/7677): SCRAM-SHA-256$iterations:salt$StoredKey:ServerKey. */
function scramVerifier(password: string, iterations: number): string {
  const salt = randomBytes(16);
  const salted = pbkdf2Sync(password, salt, iterations, 32, 'sha256');
  const storedKey = createHash('sha256').update(createHmac('sha256', salted).update('Client Key').digest()).digest();
  const serverKey = createHmac('sha256', salted).update('Server Key').digest();
  const b64 = (bytes: Buffer) => bytes.toString('base64');
  return `SCRAM-SHA-256$${iterations}:${b64(salt)}$${b64(storedKey)}:${b64(serverKey)}`;
}

async function setSuperuserPassword(socketDir: string, port: number, password: string): Promise<void> {
  const client = new pg.Client({ host: socketDir, port, user: SUPERUSER, database: 'postgres' });
  await client.connect();
  try {
    // A SCRAM-SHA-256 verifier (what pg_hba asks for, whatever the server's
    // default password_encryption) made here with few iterations: every
    // client (the tests, pgkeep, pg_dump, psql) derives the key from the
    // password on each connection, 4096 rounds of PBKDF2 at the server's
    // default, about a millisecond of CPU each over the suite's thousands of
    // connections. The exchange itself is the same SCRAM as with any count.
    await client.query(`ALTER ROLE ${SUPERUSER} PASSWORD '${scramVerifier(password, TEST_SCRAM_ITERATIONS)}'`);
  } finally {
    await client.end();
  }
}

async function initdb(binDir: string, dataDir: string, pwFile: string, runAs: RunAs | undefined, cwd: string, walSegmentSizeMb?: number): Promise<void> {
  const base = [
    '-D', dataDir,
    '-U', SUPERUSER,
    `--pwfile=${pwFile}`,
    '--auth-local=trust',
    '--auth-host=scram-sha-256',
    '-E', 'UTF8',
    '--no-sync', // the cluster is disposable; skipping the final fsync saves seconds
    ...(walSegmentSizeMb === undefined ? [] : [`--wal-segsize=${walSegmentSizeMb}`]),
  ];
  try {
    await run(join(binDir, 'initdb'), [...base, '--locale=C.UTF-8'], runAs, cwd);
  } catch (first) {
    // Minimal images often lack C.UTF-8; plain C always exists and still gives
    // byte-order collation, which is what deterministic tests want anyway.
    await rm(dataDir, { recursive: true, force: true });
    try {
      await run(join(binDir, 'initdb'), [...base, '--locale=C'], runAs, cwd);
    } catch (second) {
      throw new Error(
        `initdb failed with --locale=C.UTF-8 (${errorMessage(first)}) and with --locale=C (${errorMessage(second)})`,
      );
    }
  }
}

async function appendConf(file: string, conf: Record<string, string>): Promise<void> {
  const lines = Object.entries(conf).map(([key, value]) => {
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(key)) throw new Error(`unsafe server setting name: ${JSON.stringify(key)}`);
    return `${key} = '${value.replace(/\\/g, '\\\\').replace(/'/g, "''")}'`;
  });
  await appendFile(file, `\n# test harness\n${lines.join('\n')}\n`);
}

function buildServerOptions(port: number, socketDir: string, settings: Record<string, string>): string {
  // pg_ctl hands -o to /bin/sh, so anything beyond a conservative character set
  // could be reinterpreted by the shell; reject it rather than attempt quoting.
  const safe = /^[A-Za-z0-9_.,:/+@=-]*$/;
  const parts = ['-p', String(port), '-k', socketDir];
  if (!safe.test(socketDir)) throw new Error(`socket directory path is not shell-safe: ${socketDir}`);
  for (const [key, value] of Object.entries(settings)) {
    if (!/^[A-Za-z_][A-Za-z0-9_.]*$/.test(key)) throw new Error(`unsafe server setting name: ${JSON.stringify(key)}`);
    if (!safe.test(value) || value === '') {
      throw new Error(`unsafe or empty value for server setting ${key}: ${JSON.stringify(value)}`);
    }
    parts.push('-c', `${key}=${value}`);
  }
  return parts.join(' ');
}

async function resolveRunAs(): Promise<RunAs | undefined> {
  if (process.getuid?.() !== 0) return undefined;
  const result = spawnSync('getent', ['passwd', 'postgres'], { encoding: 'utf8' });
  const fields = result.status === 0 ? result.stdout.trim().split(':') : [];
  const uid = Number(fields[2]);
  const gid = Number(fields[3]);
  if (fields.length < 4 || !Number.isInteger(uid) || !Number.isInteger(gid)) {
    throw new Error(
      'Running as root, but there is no `postgres` OS user to run the test server as (PostgreSQL refuses to run as root). ' +
        'Install the server package (`apt-get install postgresql`, which creates the user) or run the tests as a non-root user.',
    );
  }
  return { uid, gid };
}

/** A TCP port on 127.0.0.1 that nothing listens on (for servers a test starts itself). */
export function findFreePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, HOST, () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => (port ? resolve(port) : reject(new Error('could not determine a free port'))));
    });
  });
}

/** Environment for server tools: PG* variables from the caller's shell must not leak in (e.g. PGPORT, PGDATA). */
function serverEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (!key.startsWith('PG')) env[key] = value;
  }
  return env;
}

function spawnOptions(runAs: RunAs | undefined, cwd: string): ExecFileOptions {
  // cwd matters when dropping privileges: the caller's cwd may not be readable
  // by postgres, and initdb/pg_ctl complain if they cannot stat it.
  const options: ExecFileOptions = { cwd, env: serverEnv(), maxBuffer: 16 * 1024 * 1024 };
  if (runAs) {
    options.uid = runAs.uid;
    options.gid = runAs.gid;
    options.env = { ...options.env, HOME: cwd, USER: 'postgres', LOGNAME: 'postgres' };
  }
  return options;
}

function run(file: string, args: string[], runAs: RunAs | undefined, cwd: string): Promise<string> {
  return new Promise((resolve, reject) => {
    execFile(file, args, { ...spawnOptions(runAs, cwd), encoding: 'utf8' }, (error, stdout, stderr) => {
      if (error) {
        const detail = String(stderr).trim() || String(stdout).trim();
        reject(new Error(`${file.split('/').pop()} exited with ${error.code ?? error.signal}: ${detail}`));
      } else {
        resolve(String(stdout));
      }
    });
  });
}

async function tailFile(path: string, lines = 30): Promise<string> {
  try {
    return (await readFile(path, 'utf8')).trimEnd().split('\n').slice(-lines).join('\n');
  } catch {
    return '(no server log)';
  }
}

function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

function stopImmediatelySync(handle: RunningCluster): void {
  const { cwd, env, uid, gid } = spawnOptions(handle.runAs, existsSync(handle.baseDir) ? handle.baseDir : '/');
  spawnSync(join(handle.binDir, 'pg_ctl'), ['stop', '-D', handle.dataDir, '-m', 'immediate', '-w', '-t', '30'], {
    cwd,
    env,
    uid,
    gid,
    stdio: 'ignore',
  });
}

function stopAllSync(): void {
  for (const handle of running) {
    stopImmediatelySync(handle);
    rmSync(handle.baseDir, { recursive: true, force: true });
  }
  running.clear();
}

function installExitHook(): void {
  if (exitHookInstalled) return;
  exitHookInstalled = true;
  // Only synchronous work is possible in 'exit', hence spawnSync + immediate mode.
  process.on('exit', stopAllSync);
  // Signals skip 'exit' entirely, and a Ctrl-C'd demo or a test runner timeout
  // (SIGTERM) would otherwise leave postmasters behind. We only take over when
  // nobody else handles the signal, and then re-raise it so the default
  // termination behaviour (and exit status) is unchanged.
  for (const signal of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
    if (process.listenerCount(signal) > 0) continue;
    const onSignal = () => {
      if (process.listenerCount(signal) > 1) return;
      process.removeListener(signal, onSignal);
      stopAllSync();
      process.kill(process.pid, signal);
    };
    process.on(signal, onSignal);
  }
}
