/**
 * pgkeep's off-site path through a bad network: the CLI against s3rver behind
 * test/support/fault-proxy.ts (resets, mid-response closes, stalls, a killed
 * server). Every test has a bound on time; the timeouts are small
 * (PGKEEP_S3_IDLE_TIMEOUT=3s, 1s for the stalls) so the file stays fast.
 *
 * The runs through resets and mid-response closes, and the one whose first GET
 * fails, run in process (test/support/run-command.ts): they end with every
 * request answered or its socket destroyed. The stalls, the signals and the
 * killed server stay real processes: run in process, a stalled run leaves a
 * socket through the proxy open and the file never exits, and a backup that
 * cannot release its source lock through the stalled link leaves a lock of a
 * live pid (this one) that holds off the next writers; a process's exit frees
 * both. The look-ups after a stalled run (a list, a show, through a proxy
 * that no longer stalls) and the backup the stalled verify of several copies
 * reads run in process, one at a time (runInTurn).
 *
 * Those real processes mostly wait (for an idle timeout, a grace period, the
 * clean-up deadline after an abort), so they run at the same time, each
 * through a fault proxy of its own (a stall is the proxy's whole state) and,
 * where it writes, into a repository of its own (one writer per source and
 * repository): the file's wall time is then about its longest wait, not their
 * sum. Four at a time: they are seven, the longest (the stalled backup, whose
 * clean-up requests each wait out the idle timeout) takes about 11 s and the
 * others 4 to 9 s, mostly asleep, so four lanes end about when the longest
 * does (two lanes took 22 s). The in-process tests run one at a time before
 * them (runCommand sets the S3 variables in this process's environment for
 * its run).
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync, readdirSync } from 'node:fs';
import { copyFile, mkdir, readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { collect, json, pgkeep, startPgkeep } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase } from '../support/db-compare.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';

let cluster: PgCluster;
let work: string;
let s3: S3TestServer;
let proxy: FaultProxy;
let repo: string;
/** Repositories of the concurrent writers (see below): the stalled backup's, the SIGTERMed backup's, serve's. */
let stallRepo: string;
let sigtermRepo: string;
let serveRepo: string;

useClusterAndWorkFolder('network', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  // about 3 MiB stored: big enough for resets in the middle of a download (the first test asserts > 2 MiB). Base64
  // of 32 pseudo-random bytes a row, which zstd can hardly shrink: half the rows and bytes that hex digits, which
  // it halves, took for as much stored (less to dump, load and compare, the same to transfer)
  await cluster.query(`CREATE TABLE noise AS SELECT g AS id, encode(sha256(int4send(g)), 'base64') AS a FROM generate_series(1, 90000) g`, [], 'app');
  await cluster.query(`CREATE TABLE notes (id int PRIMARY KEY, body text)`, [], 'app');
  await cluster.query(`INSERT INTO notes SELECT g, 'note ' || g FROM generate_series(1, 3000) g`, [], 'app');
});

before(async () => {
  s3 = await startS3Server();
  proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(s3.endpoint).port) });
  repo = `s3://${await s3.bucket('offsite')}/app`;
  [stallRepo, sigtermRepo, serveRepo] = [`${repo}-stall`, `${repo}-sigterm`, `${repo}-serve`];
});

after(async () => {
  await proxy?.close();
  await s3?.stop();
});

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** Through the proxy (the shared one unless `through` is given), with small timeouts. */
const env = (extra: Record<string, string> = {}, through: FaultProxy = proxy) => ({
  DATABASE_URL: cluster.url('app'),
  AWS_ACCESS_KEY_ID: s3.accessKeyId,
  AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
  AWS_REGION: s3.region,
  AWS_ENDPOINT_URL: through.endpoint,
  PGKEEP_S3_CONNECT_TIMEOUT: '2s',
  // small, so stalls fail fast, but not so small that a loaded test machine trips it
  PGKEEP_S3_IDLE_TIMEOUT: '3s',
  PGKEEP_S3_RETRY_BUDGET: '10s',
  ...extra,
});

async function databases(): Promise<string[]> {
  return (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY 1')).map((r) => r.datname);
}

function clean(through: FaultProxy = proxy): void {
  through.dropAll();
  through.set({});
  through.resetStats();
}

// The concurrent tests below define their own env() and clean() on their own proxy, over these.
const envThrough = env;
const cleanThrough = clean;

/**
 * The runs of the concurrent tests that are not what they test (a look-up after a stalled run, a backup before one),
 * in process and one at a time: runCommand sets the S3 variables in this process's environment for its run, so two
 * at once would read each other's. The spawned runs beside them pass theirs explicitly.
 */
let inProcessTurn: Promise<unknown> = Promise.resolve();
function runInTurn(args: string[], env: Record<string, string>): ReturnType<typeof runCommand> {
  const run = inProcessTurn.then(() => runCommand(args, { env }));
  inProcessTurn = run.catch(() => undefined);
  return run;
}

/** Proxies of the concurrent tests, closed at the end. */
const ownProxies: FaultProxy[] = [];
after(async () => {
  for (const own of ownProxies) await own.close();
});

/** A fault proxy of one test's own in front of the S3 server: its faults and stats are that test's alone. */
async function ownProxy(): Promise<FaultProxy> {
  const own = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(s3.endpoint).port) });
  ownProxies.push(own);
  return own;
}

describe('the off-site path through a bad network', { concurrency: 1, timeout: 300_000 }, () => {
  let source: Awaited<ReturnType<typeof snapshotDatabase>>;

  test('a backup over a clean link (the starting point)', { timeout: 60_000 }, async () => {
    // plain: the faults below cut the transfer of one big object (the dump), up and down
    assert.equal((await runCommand(['init', '--repo', repo, '--plain'], { env: env() })).code, 0);
    const backup = await runCommand(['backup', '--repo', repo, '--json'], { env: env() });
    assert.equal(backup.code, 0, backup.stderr);
    const stored = json(backup).totals.storedBytes as number;
    assert.ok(stored > 2 << 20, `the dump is big enough to be cut mid-download (${stored} bytes)`);
    source = await snapshotDatabase(cluster, 'app');
  });

  test('a restore through 50% connection resets succeeds, and restores the same database', { timeout: 90_000 }, async () => {
    clean();
    proxy.set({ resetProbability: 0.5, resetWithinBytes: 1 << 20 });
    const restore = await runCommand(['restore', 'latest', '--repo', repo, '--to', 'through_resets'], { env: env() });
    assert.equal(restore.code, 0, restore.stderr);
    assert.ok(proxy.stats().resets > 0, `the proxy reset connections: ${JSON.stringify(proxy.stats())}`);
    assert.deepEqual(diffSnapshots(source, await snapshotDatabase(cluster, 'through_resets')), []);
  });

  test('a verify through resets and mid-response closes succeeds and records a passed verification', { timeout: 90_000 }, async () => {
    clean();
    proxy.set({ resetProbability: 0.3, resetWithinBytes: 1 << 20, closeProbability: 0.5, closeWithinBytes: 1 << 20 });
    const verify = await runCommand(['verify', 'latest', '--repo', repo], { env: env() });
    assert.equal(verify.code, 0, verify.stderr);
    const stats = proxy.stats();
    assert.ok(stats.resets + stats.closes > 0, `the proxy cut connections: ${JSON.stringify(stats)}`);
    clean();
    const show = await runCommand(['show', 'latest', '--repo', repo, '--json'], { env: env() });
    assert.equal(json(show).verification?.ok, true, show.stdout);
  });

  test('a copy from S3 through resets succeeds and verifies at the destination', { timeout: 90_000 }, async () => {
    clean();
    proxy.set({ resetProbability: 0.5, resetWithinBytes: 1 << 20 });
    const to = path.join(work, 'copy-dest');
    const copy = await runCommand(['copy', 'latest', '--from', repo, '--to', to, '--json'], { env: env() });
    assert.equal(copy.code, 0, copy.stderr);
    assert.ok(proxy.stats().resets > 0, `the proxy reset connections: ${JSON.stringify(proxy.stats())}`);
    clean();
    const verify = await runCommand(['verify', 'latest', '--repo', to], { env: env() });
    assert.equal(verify.code, 0, verify.stderr);
  });

  test('a restore whose first GET of the dump fails ends promptly (pg_restore is not left waiting on its stdin)', { timeout: 60_000 }, async () => {
    clean();
    // every attempt at the dump fails before a byte of it arrives: storage.get itself rejects
    await s3.failNext(5, { method: 'GET', pathIncludes: 'dump.zst' }, 500, 'InternalError'); // maxAttempts: all of them
    const started = Date.now();
    const restore = await runCommand(['restore', 'latest', '--repo', repo, '--to', 'first_get_failed'], { env: env() });
    const took = Date.now() - started;
    assert.equal(restore.code, 5, restore.stderr);
    assert.match(restore.stderr, /InternalError \(HTTP 500\) after 5 attempts/);
    assert.ok(took < 20_000, `ended after ${took} ms`);
    assert.ok(!(await databases()).includes('first_get_failed'), 'no half-made database');
  });

  describe('real processes that wait (stalls, signals, resets), at the same time', { concurrency: 4 }, () => {
    // Longest first, so that the lanes end about together. The repositories the writers below use: one each
    // (a stalled writer's lock would hold off another), made here, one at a time, while no other test runs.
    // What two tests compare with after their stalled run is read here too, in process, while nothing else runs
    // (runCommand sets the S3 variables in this process's environment): the backups of the stalled backup's
    // repository, and the shared repository's last verification (no test before the stalled verify changes it).
    let stallRepoBackups: unknown[];
    let lastVerification: string | undefined;
    before(async () => {
      for (const dest of [stallRepo, sigtermRepo, serveRepo]) assert.equal((await runCommand(['init', '--repo', dest, '--plain'], { env: env() })).code, 0);
      stallRepoBackups = json(await runCommand(['list', '--repo', stallRepo, '--json'], { env: env() }));
      const shown = json(await runCommand(['show', 'latest', '--repo', repo, '--json'], { env: env() }));
      lastVerification = shown.verification?.verifiedAt ?? shown.verification?.startedAt;
    });

    test('a backup to S3 that stalls fails within the timeouts, says so, and publishes nothing', { timeout: 60_000 }, async () => {
      const proxy = await ownProxy();
      const env = (extra: Record<string, string> = {}) => envThrough(extra, proxy);
      const clean = () => cleanThrough(proxy);
      const repo = stallRepo;
      const before = stallRepoBackups;
      proxy.set({ stallAfterBytes: 300 * 1024 });
      const started = Date.now();
      const backup = await pgkeep(['backup', '--repo', repo], { env: env({ PGKEEP_S3_IDLE_TIMEOUT: '1s', PGKEEP_S3_MAX_ATTEMPTS: '2' }) });
      const took = Date.now() - started;
      clean();
      assert.equal(backup.code, 16, backup.stderr);
      assert.match(backup.stderr, /did not answer in time .*no byte for 1 s \(idle timeout\)/);
      assert.ok(took < 30_000, `failed after ${took} ms`);
      const afterList = json(await runInTurn(['list', '--repo', repo, '--json'], env()));
      assert.equal(afterList.length, before.length, 'no new backup is listed');
    });

    test('serve: SIGTERM during a stalled job cancels it after the grace period and aborts its requests at once', { timeout: 60_000 }, async () => {
      const proxy = await ownProxy();
      const env = (extra: Record<string, string> = {}) => envThrough(extra, proxy);
      const clean = () => cleanThrough(proxy);
      const repo = serveRepo;
      const url = new URL(cluster.url('app'));
      const config = path.join(work, 'serve.yaml');
      await writeFile(
        config,
        JSON.stringify({
          repo,
          serve: { stateDir: path.join(work, 'serve-state'), gracePeriod: '1s' },
          sources: { app: { host: url.hostname, port: Number(url.port), user: decodeURIComponent(url.username), database: 'app', schedule: { logical: '* * * * *', timeZone: 'UTC' } } },
        }),
      );
      proxy.set({ stallAfterBytes: 300 * 1024 });
      const child = startPgkeep(['serve', '--once', '--config', config], { env: env({ PGPASSWORD: decodeURIComponent(url.password), PGKEEP_S3_IDLE_TIMEOUT: '5m', PGKEEP_S3_REQUEST_TIMEOUT: '10m' }) });
      const done = collect(child);
      for (let i = 0; i < 400 && !proxy.stats().stalled; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(proxy.stats().stalled, 'the job stalled on the network');
      await new Promise((r) => setTimeout(r, 500));
      const started = Date.now();
      child.kill('SIGTERM');
      const result = await done;
      const took = Date.now() - started;
      // 1 s of grace, then the job's requests are aborted and its clean-up gets 3 s at most
      assert.ok(took < 8_000, `serve exited ${took} ms after SIGTERM; stderr: ${result.stderr}`);
      assert.match(result.stderr, /cancelling logical of app .*the grace period is over/);
      assert.match(result.stderr, /cancelled logical of app .*pgkeep serve is stopping/);
      clean();
    });

    test('SIGTERM during a stalled backup to S3 exits within seconds', { timeout: 60_000 }, async () => {
      const proxy = await ownProxy();
      const env = (extra: Record<string, string> = {}) => envThrough(extra, proxy);
      const clean = () => cleanThrough(proxy);
      const repo = sigtermRepo;
      proxy.set({ stallAfterBytes: proxy.stats().bytes + 300 * 1024 });
      // long timeouts: only the signal can end it quickly
      const child = startPgkeep(['backup', '--repo', repo], { env: env({ PGKEEP_S3_IDLE_TIMEOUT: '5m', PGKEEP_S3_REQUEST_TIMEOUT: '10m' }) });
      const done = collect(child);
      for (let i = 0; i < 300 && !proxy.stats().stalled; i++) await new Promise((r) => setTimeout(r, 50));
      assert.ok(proxy.stats().stalled, 'the upload stalled');
      await new Promise((r) => setTimeout(r, 500));
      const started = Date.now();
      child.kill('SIGTERM');
      const result = await done;
      const took = Date.now() - started;
      assert.ok(took < 6_000, `exited ${took} ms after SIGTERM`);
      assert.equal(result.code, 143, result.stderr);
      assert.match(result.stderr, /interrupted by SIGTERM/);
      clean();
    });

    test('a stall fails within the configured timeouts, says so, is not called corrupt, and leaves no database', { timeout: 60_000 }, async () => {
      const proxy = await ownProxy();
      const env = (extra: Record<string, string> = {}) => envThrough(extra, proxy);
      proxy.set({ stallAfterBytes: 512 * 1024 });
      const started = Date.now();
      const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'through_stall'], { env: env({ PGKEEP_S3_IDLE_TIMEOUT: '1s', PGKEEP_S3_MAX_ATTEMPTS: '2', PGKEEP_S3_RETRY_BUDGET: '4s' }) });
      const took = Date.now() - started;
      assert.equal(restore.code, 16, restore.stderr);
      assert.match(restore.stderr, /no byte for 1 s \(idle timeout\)/);
      assert.doesNotMatch(restore.stderr, /corrupt/);
      assert.ok(took < 20_000, `failed after ${took} ms`);
      assert.ok(!(await databases()).includes('through_stall'), 'no half-made database');
    });

    test('wal-fetch through resets: the right segment or a clear error, never a partial file', { timeout: 120_000 }, async () => {
      const proxy = await ownProxy();
      const env = (extra: Record<string, string> = {}) => envThrough(extra, proxy);
      await cluster.query('CREATE TABLE IF NOT EXISTS walt (id int)');
      await cluster.query('INSERT INTO walt SELECT generate_series(1, 20000)');
      const { name } = (await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!;
      const file = path.join(work, 'wal-src', name);
      await mkdir(path.dirname(file), { recursive: true });
      await copyFile(path.join(cluster.dataDir, 'pg_wal', name), file);
      const original = await readFile(file);
      const wal = (args: string[], extra: Record<string, string> = {}) => pgkeep(args, { env: env(extra) });
      const pushed = await wal(['wal-push', file, '--source', 'app', '--repo', repo]);
      assert.equal(pushed.code, 0, pushed.stderr);

      proxy.set({ resetProbability: 0.6, resetWithinBytes: 64 * 1024 });
      // five fetches, each as PostgreSQL's restore_command runs it, at the same time: each mostly waits out the
      // backoff between its attempts
      const outcomes = await Promise.all(
        Array.from({ length: 5 }, async (_, i) => {
          const dest = path.join(work, `wal-out-${i}`);
          await mkdir(dest);
          const fetched = await wal(['wal-fetch', name, path.join(dest, 'seg'), '--source', 'app', '--repo', repo], { PGKEEP_S3_RETRY_BUDGET: '3s' });
          if (fetched.code === 0) {
            assert.equal(sha256(await readFile(path.join(dest, 'seg'))), sha256(original), 'the right segment');
            return 'ok';
          }
          assert.equal(fetched.code, 16, fetched.stderr);
          assert.match(fetched.stderr, /^pgkeep: .*(could not read|closed the connection|cannot reach)/);
          assert.doesNotMatch(fetched.stderr, /corrupt/);
          assert.deepEqual(readdirSync(dest), [], 'no partial file');
          return 'error';
        }),
      );
      assert.ok(proxy.stats().resets > 0, `the proxy reset connections: ${JSON.stringify(proxy.stats())}`);
      assert.ok(outcomes.includes('ok'), outcomes.join(','));
    });

    test('a verify that cannot read through a stall says so, and stores no verdict', { timeout: 60_000 }, async () => {
      const proxy = await ownProxy();
      const env = (extra: Record<string, string> = {}) => envThrough(extra, proxy);
      const clean = () => cleanThrough(proxy);
      proxy.set({ stallAfterBytes: 512 * 1024 });
      const verify = await pgkeep(['verify', 'latest', '--repo', repo], { env: env({ PGKEEP_S3_IDLE_TIMEOUT: '1s', PGKEEP_S3_MAX_ATTEMPTS: '2', PGKEEP_S3_RETRY_BUDGET: '3s' }) });
      assert.equal(verify.code, 16, verify.stderr);
      assert.match(verify.stderr, /could not read dump\.zst of backup .* \(not a verdict on the backup: nothing was recorded\)/);
      assert.doesNotMatch(verify.stderr, /corrupt/);
      clean();
      const afterShow = await runInTurn(['show', 'latest', '--repo', repo, '--json'], env());
      assert.equal(json(afterShow).verification?.ok, true, 'the last verification is still the passed one');
      assert.equal(json(afterShow).verification?.verifiedAt ?? json(afterShow).verification?.startedAt, lastVerification);
    });

    test('verify of several copies: an off-site copy that cannot be read is "could not be verified", not damaged', { timeout: 60_000 }, async () => {
      const proxy = await ownProxy();
      const env = (extra: Record<string, string> = {}) => envThrough(extra, proxy);
      const clean = () => cleanThrough(proxy);
      const local = path.join(work, 'copies-local');
      const config = path.join(work, 'copies.yaml');
      const url = new URL(cluster.url('app'));
      const offsite = `${repo}-copies`;
      await writeFile(
        config,
        JSON.stringify({
          sources: { app: { host: url.hostname, port: Number(url.port), user: decodeURIComponent(url.username), database: 'app', repos: [local, offsite] } },
        }),
      );
      const cfgEnv = env({ PGPASSWORD: decodeURIComponent(url.password), DATABASE_URL: '' });
      // the backup the stalled verify reads: made in process (in turn), before the proxy stalls
      const backup = await runInTurn(['backup', '--config', config], cfgEnv);
      assert.equal(backup.code, 0, backup.stderr);
      proxy.set({ stallAfterBytes: 64 * 1024 });
      const verify = await pgkeep(['verify', 'latest', '--config', config], { env: { ...cfgEnv, PGKEEP_S3_IDLE_TIMEOUT: '1s', PGKEEP_S3_MAX_ATTEMPTS: '2', PGKEEP_S3_RETRY_BUDGET: '2s' } });
      clean();
      assert.equal(verify.code, 16, verify.stderr);
      assert.match(verify.stderr, /could not be verified everywhere; the copy in s3:\/\/.* could not be read .*; the copy in .*copies-local is intact/);
      assert.doesNotMatch(verify.stderr, /damaged|corrupt/);
    });
  });

  test('a killed S3 server is never reported as corruption', { timeout: 60_000 }, async () => {
    clean();
    proxy.set({ delayMs: 5 });
    const child = startPgkeep(['restore', 'latest', '--repo', repo, '--to', 'server_killed'], { env: env({ PGKEEP_S3_RETRY_BUDGET: '3s' }) });
    const done = collect(child);
    for (let i = 0; i < 300 && proxy.stats().bytes < 600 * 1024; i++) await new Promise((r) => setTimeout(r, 20));
    await s3.stop();
    proxy.dropAll();
    const started = Date.now();
    const result = await done;
    assert.ok(Date.now() - started < 20_000);
    assert.equal(result.code, 16, result.stderr);
    assert.match(result.stderr, /could not read|cannot reach|closed the connection/);
    assert.doesNotMatch(result.stderr, /corrupt/);
    assert.ok(!(await databases()).includes('server_killed'), 'no half-made database');
    assert.ok(!existsSync(path.join(work, 'server_killed')));
  });
});
