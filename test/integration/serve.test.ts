import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { mkdir, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, describe, test } from 'node:test';
import pg from 'pg';
import { SMTPServer } from 'smtp-server';
import { parse as parseYaml } from 'yaml';
import { json, pgkeep, startServe as startServeDaemon, type ServeDaemon } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { sample } from '../support/prometheus-sample.js';

let cluster: PgCluster;
let work: string;
/** /metrics as the daemon served it after a real backup (the alert rules are checked against it). */
let servedMetrics = '';
const TOKEN = 'test-token-0123456789abcdef';
const PASSWORD = 'Serve-Pässw0rd!';

useClusterAndWorkFolder('serve', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query(`CREATE ROLE app_user LOGIN PASSWORD '${PASSWORD}'`);
  await cluster.query('ALTER DATABASE app OWNER TO app_user');
  await cluster.query('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 20000) g', [], 'app');
  await cluster.query('CREATE TABLE small (id int PRIMARY KEY)', [], 'app');
  await cluster.query('ALTER TABLE items OWNER TO app_user', [], 'app');
  await cluster.query('ALTER TABLE small OWNER TO app_user', [], 'app');
  // The database of the frozen backups (a lock on its table holds pg_dump): of its own, so the tests that
  // freeze a backup run beside the others, whose backups of app go on.
  await cluster.query('CREATE DATABASE frozen OWNER app_user');
  await cluster.query('CREATE TABLE small (id int PRIMARY KEY)', [], 'frozen');
  await cluster.query('CREATE TABLE small_too (id int PRIMARY KEY)', [], 'frozen');
  await cluster.query('ALTER TABLE small OWNER TO app_user', [], 'frozen');
  await cluster.query('ALTER TABLE small_too OWNER TO app_user', [], 'frozen');
});

/** A webhook receiver on loopback that keeps every JSON body (one for the file: tests tell theirs apart by path). */
const received: { path: string; body: any }[] = [];
let hookServer: Server | undefined;
let hookUrl: Promise<string> | undefined;
function webhookUrl(): Promise<string> {
  // one promise, so tests that start together share one receiver
  return (hookUrl ??= startWebhookReceiver());
}
async function startWebhookReceiver(): Promise<string> {
  const server = createServer((request: IncomingMessage, response) => {
    let text = '';
    request.setEncoding('utf8').on('data', (t: string) => (text += t));
    request.on('end', () => {
      received.push({ path: request.url ?? '', body: JSON.parse(text) });
      response.end('ok');
    });
  });
  hookServer = server;
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}
after(() => hookServer?.close());

type Daemon = ServeDaemon;

const running: Daemon[] = [];
after(() => running.forEach((d) => d.child.kill('SIGKILL')));

async function writeConfig(name: string, config: Record<string, unknown>): Promise<string> {
  const file = path.join(work, `${name}.yaml`);
  await writeFile(file, JSON.stringify(config, null, 2)); // JSON is YAML
  return file;
}

function appSource(extra: Record<string, unknown> = {}) {
  return { host: '127.0.0.1', port: cluster.port, user: 'app_user', database: 'app', ...extra };
}

/** Starts `pgkeep serve` on a free port and waits for its "listening" line; killed after the file. */
async function startServe(configFile: string, env: Record<string, string> = {}): Promise<Daemon> {
  const daemon = await startServeDaemon(['--config', configFile], { env: { PGPASSWORD: PASSWORD, ...env } });
  running.push(daemon);
  return daemon;
}

async function call(daemon: Daemon, method: string, url: string, token?: string, options: { json?: boolean } = {}): Promise<{ status: number; body: any; text: string }> {
  // json: an empty body declared as JSON, as `curl -X POST -H 'content-type: application/json'` sends
  const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(options.json ? { 'content-type': 'application/json' } : {}) };
  const response = await fetch(daemon.base + url, { method, headers });
  const text = await response.text();
  let body: any;
  try {
    body = JSON.parse(text);
  } catch {
    body = undefined;
  }
  return { status: response.status, body, text };
}

async function waitForJob(daemon: Daemon, id: string, token: string, states = ['succeeded', 'failed', 'cancelled', 'skipped'], timeoutMs = 60_000): Promise<any> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const { body } = await call(daemon, 'GET', `/api/jobs/${id}`, token);
    if (states.includes(body?.job?.state)) return body.job;
    if (Date.now() > deadline) throw new Error(`job ${id} still ${body?.job?.state}; serve said: ${daemon.stderr()}`);
    await sleep(50);
  }
}

/**
 * Holds an exclusive lock on a table of database frozen ("small" or "small_too") until released: a pg_dump of it
 * waits on it, a backup frozen mid-flight. The two tests that freeze a backup lock a table each, so neither waits
 * for the other's lock when they run at the same time.
 */
async function lockSmallTable(table: 'small' | 'small_too' = 'small'): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: cluster.url('frozen') });
  await client.connect();
  await client.query('BEGIN');
  await client.query(`LOCK TABLE ${table} IN ACCESS EXCLUSIVE MODE`);
  return {
    release: async () => {
      await client.query('ROLLBACK').catch(() => undefined);
      await client.end();
    },
  };
}

// Each test has its own daemon, configuration, state and repository, and most of their time is spent waiting
// (a daemon starting, a job, a grace period, the stuck timer): two at a time, longest first.
describe('pgkeep serve', { concurrency: 2 }, () => {
  test('API: token required, backups through the API, /metrics after a real backup, failure alert once', async () => {
    const repo = path.join(work, 'repo-api');
    const hook = await webhookUrl();
    const config = await writeConfig('api', {
      repo,
      serve: { token: TOKEN, stateDir: path.join(work, 'state-api') },
      notify: { webhooks: [{ url: `${hook}/generic` }, { url: `${hook}/slack`, format: 'slack' }] },
      sources: {
        app: appSource({ retention: { keepLast: 5 } }),
        // nothing listens there: its backups fail
        broken: { host: '127.0.0.1', port: 1, user: 'x', database: 'x', repo: path.join(work, 'repo-broken') },
      },
    });
    const daemon = await startServe(config);

    // probes are open, the API is not
    assert.equal((await call(daemon, 'GET', '/health')).status, 200);
    for (const [method, url] of [
      ['GET', '/api/sources'],
      ['GET', '/api/jobs'],
      ['POST', '/api/sources/app/backups'],
    ] as const) {
      assert.equal((await call(daemon, method, url)).status, 401, `${method} ${url} without a token`);
      assert.equal((await call(daemon, method, url, 'wrong-token')).status, 401, `${method} ${url} with a wrong token`);
    }
    const sources = await call(daemon, 'GET', '/api/sources', TOKEN);
    assert.equal(sources.status, 200);
    assert.deepEqual(sources.body.sources.map((s: any) => s.name), ['app', 'broken']);
    assert.ok(!sources.text.includes(PASSWORD));

    // a backup through the API
    const started = await call(daemon, 'POST', '/api/sources/app/backups', TOKEN, { json: true });
    assert.equal(started.status, 202, started.text);
    const job = await waitForJob(daemon, started.body.job.id, TOKEN);
    assert.equal(job.state, 'succeeded', JSON.stringify(job));
    assert.match(job.detail, /pruned 0, kept 1/, 'prune ran after the backup');
    const backups = await call(daemon, 'GET', '/api/sources/app/backups', TOKEN);
    assert.deepEqual(backups.body.backups.map((b: any) => b.id), [job.backupId]);
    const manifest = JSON.parse(readFileSync(path.join(repo, 'sources', 'app', 'backups', job.backupId, 'manifest.json'), 'utf8'));
    assert.equal((await call(daemon, 'GET', `/api/backups/${job.backupId}`, TOKEN)).body.backup.totals.rawBytes, manifest.totals.rawBytes);
    assert.equal((await call(daemon, 'GET', '/api/backups/20000101T000000Z', TOKEN)).status, 404);
    assert.equal((await call(daemon, 'GET', '/api/sources/nope/backups', TOKEN)).status, 404);

    // metrics after the real backup
    const metrics = (await call(daemon, 'GET', '/metrics')).text;
    servedMetrics = metrics;
    assert.equal(sample(metrics, 'pgkeep_backup_last_size_bytes', { source: 'app', kind: 'logical' }), manifest.totals.rawBytes);
    assert.equal(sample(metrics, 'pgkeep_backup_last_success_timestamp_seconds', { source: 'app' }), Date.parse(manifest.finishedAt) / 1000);
    assert.equal(sample(metrics, 'pgkeep_backups_total', { source: 'app', result: 'success' }), 1);
    assert.equal(sample(metrics, 'pgkeep_backups_total', { source: 'app', result: 'failure' }), 0);
    assert.equal(sample(metrics, 'pgkeep_backup_count', { source: 'app', repository: repo }), 1);
    assert.ok(sample(metrics, 'pgkeep_repository_size_bytes', { source: 'app' })! > 0);
    assert.equal(sample(metrics, 'pgkeep_health_problems', { source: 'app' }), 0);
    assert.ok(sample(metrics, 'process_resident_memory_bytes', {})! > 0, 'process metrics');

    // verify through the API
    const verify = await call(daemon, 'POST', `/api/backups/${job.backupId}/verify`, TOKEN);
    assert.equal(verify.status, 202, verify.text);
    assert.equal((await waitForJob(daemon, verify.body.job.id, TOKEN)).state, 'succeeded');

    // a failing source: one alert per channel, not one per failure
    for (let i = 0; i < 2; i++) {
      const failing = await call(daemon, 'POST', '/api/sources/broken/backups', TOKEN);
      const ended = await waitForJob(daemon, failing.body.job.id, TOKEN);
      assert.equal(ended.state, 'failed');
      assert.equal(ended.error.code, 'DB_UNREACHABLE');
    }
    const deadline = Date.now() + 10_000;
    const failureAlerts = () => received.filter((r) => (r.path === '/generic' && r.body.event === 'backup_failed') || (r.path === '/slack' && r.body.text?.includes('logical failed')));
    while (failureAlerts().length < 2 && Date.now() < deadline) await sleep(50);
    await sleep(300);
    const generic = received.filter((r) => r.path === '/generic' && r.body.event === 'backup_failed');
    assert.equal(generic.length, 1, JSON.stringify(received.map((r) => r.body)));
    assert.equal(generic[0]!.body.source, 'broken');
    assert.match(generic[0]!.body.message, /DB_UNREACHABLE/);
    const slack = received.filter((r) => r.path === '/slack' && /broken: logical failed/.test(r.body.text));
    assert.equal(slack.length, 1);
    const brokenJobs = await call(daemon, 'GET', '/api/jobs?source=broken&state=failed&limit=1', TOKEN);
    assert.equal(brokenJobs.body.total, 2);
    assert.equal(brokenJobs.body.jobs.length, 1);
    assert.equal((await call(daemon, 'GET', '/api/jobs?limit=0', TOKEN)).status, 400);
    const metricsAfter = (await call(daemon, 'GET', '/metrics')).text;
    assert.equal(sample(metricsAfter, 'pgkeep_backups_total', { source: 'broken', result: 'failure' }), 2);

    // the history outlives the process
    daemon.child.kill('SIGTERM');
    const result = await daemon.done;
    assert.equal(result.code, 0, result.stderr);
    // secrets: not in the log, the state files or any answer
    for (const text of [result.stderr, result.stdout, readFileSync(path.join(work, 'state-api', 'jobs.jsonl'), 'utf8'), readFileSync(path.join(work, 'state-api', 'alerts.json'), 'utf8'), JSON.stringify(received)]) {
      assert.ok(!text.includes(PASSWORD), 'the database password leaked');
      assert.ok(!text.includes(TOKEN), 'the API token leaked');
    }
    const again = await startServe(config);
    const jobs = await call(again, 'GET', '/api/jobs', TOKEN);
    assert.ok(jobs.body.jobs.some((j: any) => j.id === job.id && j.state === 'succeeded'));
    again.child.kill('SIGTERM');
    assert.equal((await again.done).code, 0);
  });

  test('a stuck backup (pg_dump waiting on a lock, no bytes) is cancelled, failed with JOB_STUCK and alerted once', async () => {
    const repo = path.join(work, 'repo-stuck');
    const hook = await webhookUrl();
    const config = await writeConfig('stuck', {
      repo,
      // the least the scheduler resolves: it looks for stuck jobs every second (at least)
      serve: { token: TOKEN, stuckAfter: '1s', stateDir: path.join(work, 'state-stuck') },
      notify: { webhooks: [{ url: `${hook}/stuck` }] },
      sources: { app: appSource({ database: 'frozen' }) },
    });
    const locker = await lockSmallTable();
    try {
      const daemon = await startServe(config);
      const started = await call(daemon, 'POST', '/api/sources/app/backups', TOKEN);
      const job = await waitForJob(daemon, started.body.job.id, TOKEN, ['succeeded', 'failed', 'cancelled'], 60_000); // returns when the job ends; the bound only matters on a machine under heavy load (a run at load 20 took over 30 s)
      assert.equal(job.state, 'failed');
      assert.equal(job.error.code, 'JOB_STUCK');
      assert.match(job.error.message, /logical of app made no progress for 1s: cancelled/);
      const backups = path.join(repo, 'sources', 'app', 'backups');
      assert.deepEqual(existsSync(backups) ? readdirSync(backups) : [], [], 'nothing partial left');
      const deadline = Date.now() + 10_000;
      while (!received.some((r) => r.path === '/stuck' && r.body.event === 'job_stuck') && Date.now() < deadline) await sleep(50);
      assert.equal(received.filter((r) => r.path === '/stuck' && r.body.event === 'job_stuck').length, 1);
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.done).code, 0);
    } finally {
      await locker.release();
    }
  });

  test('SIGTERM mid-backup: the backup is cancelled after the grace period, nothing partial is left, exit 0', async () => {
    const repo = path.join(work, 'repo-sigterm');
    // plain: the backup in flight shows as its folder (a deduplicating repository writes packs only as they fill)
    assert.equal((await runCommand(['init', '--repo', repo, '--plain'])).code, 0);
    const config = await writeConfig('sigterm', { repo, serve: { token: TOKEN, gracePeriod: '1s', stateDir: path.join(work, 'state-sigterm') }, sources: { app: appSource({ database: 'frozen' }) } });
    // pg_dump waits on this lock: a backup frozen mid-flight
    const locker = await lockSmallTable('small_too');
    try {
      const daemon = await startServe(config);
      const started = await call(daemon, 'POST', '/api/sources/app/backups', TOKEN);
      assert.equal(started.status, 202);
      await waitForJob(daemon, started.body.job.id, TOKEN, ['running']);
      const backups = path.join(repo, 'sources', 'app', 'backups');
      const deadline = Date.now() + 20_000;
      while (!(existsSync(backups) && readdirSync(backups).length > 0) && Date.now() < deadline) await sleep(20);
      assert.ok(readdirSync(backups).length > 0, 'the backup is in flight');
      daemon.child.kill('SIGTERM');
      const result = await daemon.done;
      assert.equal(result.code, 0, result.stderr);
      assert.match(result.stderr, /cancelling logical of app/);
      assert.deepEqual(readdirSync(backups), [], 'no partial backup left');
      const history = readFileSync(path.join(work, 'state-sigterm', 'jobs.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
      assert.equal(history.filter((r) => r.id === started.body.job.id).at(-1).state, 'cancelled');
      const list = await runCommand(['list', '--repo', repo, '--json']);
      assert.deepEqual(json(list), []);
    } finally {
      await locker.release();
    }
  });

  test('serve --once runs what is due and exits', async () => {
    const repo = path.join(work, 'repo-once');
    const config = await writeConfig('once', { repo, serve: { stateDir: path.join(work, 'state-once') }, sources: { app: appSource({ schedule: { logical: '* * * * *', timeZone: 'UTC' } }) } });
    const result = await pgkeep(['serve', '--once', '--config', config], { env: { PGPASSWORD: PASSWORD } });
    assert.equal(result.code, 0, result.stderr);
    assert.match(result.stdout, /^succeeded logical of app: backup \d{8}T\d{6}Z/m);
    assert.equal(json(await runCommand(['list', '--repo', repo, '--json'])).length, 1);

    // a job that fails: the exit code of its error, one line naming it
    const broken = await writeConfig('once-broken', {
      repo: path.join(work, 'repo-once-broken'),
      serve: { stateDir: path.join(work, 'state-once-broken') },
      sources: { down: { host: '127.0.0.1', port: 1, user: 'x', database: 'x', schedule: { logical: '* * * * *' } } },
    });
    const failed = await pgkeep(['serve', '--once', '--config', broken]);
    assert.equal(failed.code, 3, failed.stderr);
    assert.match(failed.stderr, /^pgkeep: 1 of 1 job\(s\) failed; logical of down: cannot connect to PostgreSQL at 127\.0\.0\.1:1/m);
  });

  test('the dashboard is served at /: a logged-in "backup now" runs as a serve job (history, /api/jobs), a visitor without a session cannot', async () => {
    const config = await writeConfig('dashboard', {
      repo: path.join(work, 'repo-dashboard'),
      serve: { stateDir: path.join(work, 'state-dashboard'), token: TOKEN },
      sources: { app: { ...appSource(), schedule: { logical: '0 3 * * *', timeZone: 'UTC' } } },
    });
    const daemon = await startServe(config);
    try {
      const page = await fetch(`${daemon.base}/`);
      assert.equal(page.status, 200);
      assert.match(page.headers.get('content-type') ?? '', /text\/html/);
      const overview = await page.text();
      assert.match(overview, /app/);
      assert.match(overview, /no successful backup yet/);
      // the next run comes from serve's scheduler
      const fragment = await (await fetch(`${daemon.base}/fragments/overview`)).text();
      assert.match(fragment, /T03:00|03:00/, 'the next scheduled run (03:00 UTC) is shown');

      // no session: refused, and no job was submitted
      const anonymous = await fetch(`${daemon.base}/actions/backup`, { method: 'POST', body: new URLSearchParams({ source: 'app', csrf: 'x' }), redirect: 'manual' });
      assert.equal(anonymous.status, 403);
      assert.deepEqual((await call(daemon, 'GET', '/api/jobs', TOKEN)).body.jobs, []);

      // log in with the API token, read the CSRF token from the confirmation page, start the backup
      const login = await fetch(`${daemon.base}/login`, { method: 'POST', body: new URLSearchParams({ token: TOKEN }), redirect: 'manual' });
      assert.equal(login.status, 303);
      const cookie = (login.headers.get('set-cookie') ?? '').split(';')[0]!;
      assert.match(cookie, /^pgkeep_session=/);
      const confirm = await (await fetch(`${daemon.base}/confirm?action=backup&source=app`, { headers: { cookie } })).text();
      const csrf = /name="csrf" value="([^"]+)"/.exec(confirm)?.[1];
      assert.ok(csrf, 'the confirmation form carries a CSRF token');
      const started = await fetch(`${daemon.base}/actions/backup`, { method: 'POST', headers: { cookie }, body: new URLSearchParams({ source: 'app', csrf: csrf! }), redirect: 'manual' });
      assert.equal(started.status, 303, await started.text());
      const jobId = decodeURIComponent(/started=([^&]+)/.exec(started.headers.get('location') ?? '')![1]!);
      const job = await waitForJob(daemon, jobId, TOKEN);
      assert.equal(job.state, 'succeeded', JSON.stringify(job));
      assert.equal(job.kind, 'logical');
      assert.equal(job.trigger, 'api');
      const jobsPage = await (await fetch(`${daemon.base}/fragments/jobs`)).text();
      assert.ok(jobsPage.includes(job.backupId), 'the jobs view lists the job with its backup');
    } finally {
      daemon.child.kill('SIGTERM');
      assert.equal((await daemon.done).code, 0);
    }
  });

  test('without a token: state-changing endpoints are disabled (403), reads work on loopback; no token on 0.0.0.0 is refused', async () => {
    const config = await writeConfig('notoken', { repo: path.join(work, 'repo-notoken'), serve: { stateDir: path.join(work, 'state-notoken') }, sources: { app: appSource() } });
    const daemon = await startServe(config);
    const post = await call(daemon, 'POST', '/api/sources/app/backups');
    assert.equal(post.status, 403);
    assert.equal(post.body.error.code, 'API_DISABLED');
    assert.equal((await call(daemon, 'POST', '/api/sources/app/backups', 'anything')).status, 403);
    assert.equal((await call(daemon, 'GET', '/api/sources')).status, 200);
    const none = await call(daemon, 'GET', '/api/sources/app/backups');
    assert.equal(none.status, 200, 'no repository yet: no backups');
    assert.deepEqual(none.body.backups, []);
    const ready = await call(daemon, 'GET', '/ready');
    assert.equal(ready.status, 200, ready.text);
    daemon.child.kill('SIGTERM');
    assert.equal((await daemon.done).code, 0);

    const refused = await pgkeep(['serve', '--config', config, '--listen', '0.0.0.0:0']);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /^pgkeep: refusing to listen on 0\.0\.0\.0 without an API token/m);
  });

  test('notify test: a webhook on loopback and email through a real SMTP server', async () => {
    const mails: { from: string; to: string[]; text: string }[] = [];
    const smtp = new SMTPServer({
      authOptional: true,
      disabledCommands: ['STARTTLS'],
      onAuth(auth, _session, callback) {
        callback(null, { user: auth.username });
      },
      onData(stream, session, callback) {
        let text = '';
        stream.setEncoding('utf8').on('data', (t: string) => (text += t));
        stream.on('end', () => {
          mails.push({ from: (session.envelope.mailFrom as { address: string }).address, to: session.envelope.rcptTo.map((r) => r.address), text });
          callback();
        });
      },
    });
    await new Promise<void>((resolve) => smtp.listen(0, '127.0.0.1', resolve));
    try {
      const port = (smtp.server.address() as AddressInfo).port;
      const hook = await webhookUrl();
      const config = await writeConfig('notify', {
        notify: {
          webhooks: [{ url: `${hook}/discord`, format: 'discord' }],
          email: { host: '127.0.0.1', port, from: 'pgkeep@example.test', to: ['ops@example.test'] },
        },
      });
      const before = received.length;
      // the command's behaviour (channels, messages, exit code): in process
      const result = await runCommand(['notify', 'test', '--config', config, '--json']);
      assert.equal(result.code, 0, result.stderr);
      assert.deepEqual(json(result).channels.map((c: any) => c.ok), [true, true]);
      const discord = received.slice(before).find((r) => r.path === '/discord');
      assert.match(discord!.body.content, /pgkeep test message/);
      assert.equal(mails.length, 1);
      assert.equal(mails[0]!.from, 'pgkeep@example.test');
      assert.deepEqual(mails[0]!.to, ['ops@example.test']);
      assert.match(mails[0]!.text, /Subject: \[pgkeep\] pgkeep test message/);

      // a channel that cannot deliver: named, exit code of NOTIFY_FAILED, the other still gets it
      const broken = await writeConfig('notify-broken', {
        notify: { webhooks: [{ url: 'http://127.0.0.1:1/hook' }], email: { host: '127.0.0.1', port, from: 'pgkeep@example.test', to: ['ops@example.test'] } },
      });
      const failed = await runCommand(['notify', 'test', '--config', broken]);
      assert.equal(failed.code, 15);
      assert.match(failed.stderr, /^pgkeep: 1 of 2 channel\(s\) failed: webhook 127\.0\.0\.1:1: cannot deliver/m);
      assert.equal(mails.length, 2);
    } finally {
      await new Promise<void>((resolve) => smtp.close(() => resolve()));
    }
  });

  test('/ready lists what is unreachable with 503', async () => {
    // a folder that holds something else is no repository
    await mkdir(path.join(work, 'repo-unready'), { recursive: true });
    await writeFile(path.join(work, 'repo-unready', 'notes.txt'), 'not a backup');
    const config = await writeConfig('unready', {
      repo: path.join(work, 'repo-unready'),
      serve: { stateDir: path.join(work, 'state-unready') },
      sources: { gone: { host: '127.0.0.1', port: 1, user: 'x', database: 'x' } },
    });
    const daemon = await startServe(config);
    const ready = await call(daemon, 'GET', '/ready');
    assert.equal(ready.status, 503);
    assert.deepEqual(ready.body.failing.map((c: any) => c.name).sort(), [`repository ${path.join(work, 'repo-unready')}`, 'source gone'].sort());
    daemon.child.kill('SIGTERM');
    assert.equal((await daemon.done).code, 0);
  });

  test('a bad cron expression is refused at start, naming the key', async () => {
    const config = await writeConfig('badcron', { repo: path.join(work, 'repo-bad'), serve: { stateDir: path.join(work, 'state-bad') }, sources: { app: appSource({ schedule: { check: 'every day' } }) } });
    const result = await pgkeep(['serve', '--once', '--config', config]);
    assert.equal(result.code, 2);
    assert.match(result.stderr, new RegExp(`^pgkeep: ${path.basename(config).replace(/[.]/g, '\\.')}: sources\\.app\\.schedule\\.check: "every day" is not a valid cron expression`, 'm'));
  });
});

// after the suite: it reads the /metrics the API test kept
test('the example alert rules parse and use only metrics /metrics exposes', async () => {
  const rules = parseYaml(readFileSync(path.resolve(import.meta.dirname, '../../docs/prometheus-alerts.yml'), 'utf8'));
  assert.ok(Array.isArray(rules.groups) && rules.groups.length > 0);
  assert.ok(servedMetrics, 'the API test ran first and kept /metrics');
  const exposed = new Set([...servedMetrics.matchAll(/^# TYPE (\S+) /gm)].map((m) => m[1]!));
  const alerts = rules.groups.flatMap((g: any) => {
    assert.equal(typeof g.name, 'string');
    return g.rules;
  });
  const names = alerts.map((r: any) => r.alert);
  for (const wanted of ['PgkeepBackupStale', 'PgkeepBackupFailed', 'PgkeepBackupTooSmall', 'PgkeepRestoreTestFailing', 'PgkeepWalArchiveLag']) assert.ok(names.includes(wanted), wanted);
  for (const rule of alerts) {
    assert.equal(typeof rule.expr, 'string', `${rule.alert}: expr`);
    assert.ok(rule.labels?.severity, `${rule.alert}: severity`);
    assert.ok(rule.annotations?.summary, `${rule.alert}: summary`);
    const used = rule.expr.match(/\bpgkeep_[a-z_]+/g) ?? [];
    assert.ok(used.length > 0, `${rule.alert} uses a pgkeep metric`);
    for (const name of used) assert.ok(exposed.has(name), `${rule.alert} uses ${name}, which /metrics does not expose`);
    assert.equal((rule.expr.match(/\(/g) ?? []).length, (rule.expr.match(/\)/g) ?? []).length, `${rule.alert}: balanced parentheses`);
  }
});
