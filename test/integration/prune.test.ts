import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, utimes, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { setTimeout as delay } from 'node:timers/promises';
import pg from 'pg';
import { formatBytes } from '../../src/cli/format.js';
import { timestampPart } from '../../src/repository/backup-id.js';
import type { Manifest } from '../../src/repository/manifest.js';
import { Repository } from '../../src/repository/repository.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { json, startPgkeep, collect } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';
import { cloneBackupAt, daysAgoAtNoon } from '../support/synthetic-backups.js';
import { storageOf } from '../../src/repository/repository-storage.js';

let cluster: PgCluster;
let work: string;
let s3: S3TestServer | undefined;

useClusterAndWorkFolder('prune', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query(`CREATE TABLE notes AS SELECT g AS id, 'note ' || g AS body FROM generate_series(1, 2000) g`, [], 'app');
});

after(async () => {
  await s3?.stop();
});

const DAY = 86_400_000;
const day = (d: Date) => d.toISOString().slice(0, 10);
const minuteUtc = (ms: number) => new Date(ms).toISOString().slice(0, 16).replace('T', ' ');

/** A folder with a pgkeep.yaml: source "app" on `repos`, with `retention` lines (YAML, indented under the source). */
async function configWith(repos: string[], retention: string[], extra: string[] = []): Promise<string> {
  const dir = await mkdtemp(path.join(work, 'cfg-'));
  const lines = [
    ...extra,
    'sources:',
    '  app:',
    `    db: ${JSON.stringify(cluster.url('app'))}`,
    '    repos:',
    ...repos.map((r) => `      - ${JSON.stringify(r)}`),
    '    retention:',
    ...retention.map((l) => `      ${l}`),
  ];
  await writeFile(path.join(dir, 'pgkeep.yaml'), `${lines.join('\n')}\n`);
  return dir;
}

/** The plan lines of prune's text output for one repository: [action, id, kind, size, why]. */
function planLines(stdout: string): string[][] {
  return stdout
    .split('\n')
    .filter((l) => /^ {2}(keep|delete) /.test(l))
    .map((l) => l.trim().split(/\s{2,}/));
}

interface History {
  real: Manifest;
  ids: Record<'d1' | 'd2' | 'd3' | 'd5a' | 'd5b' | 'd40' | 'label60' | 'pinned400', string>;
  times: Record<string, Date>;
}

/**
 * One real backup, then copies of it back in time: days 1, 2, 3, two on day 5,
 * 40, a before-migration backup of day 60 and one of day 400 (to be pinned).
 */
async function makeHistory(repository: Repository, real: Manifest): Promise<History> {
  const times = {
    d1: daysAgoAtNoon(1),
    d2: daysAgoAtNoon(2),
    d3: daysAgoAtNoon(3),
    d5a: daysAgoAtNoon(5),
    d5b: new Date(daysAgoAtNoon(5).getTime() - 6 * 3_600_000),
    d40: daysAgoAtNoon(40),
    label60: daysAgoAtNoon(60),
    pinned400: daysAgoAtNoon(400),
  };
  const ids = {} as History['ids'];
  for (const [key, at] of Object.entries(times) as [keyof History['ids'], Date][]) {
    const changes = key === 'label60' ? { labels: ['before-migration'] } : {};
    ids[key] = (await cloneBackupAt(repository, real, at, changes)).id;
  }
  return { real, ids, times };
}

const RETENTION = ['keepLast: 2', 'keepDaily: 4', 'keepLabels:', '  before-migration: 90d', 'timeZone: UTC'];

function expectedPlan(h: History): string[][] {
  const size = formatBytes(h.real.totals.storedBytes);
  const until = minuteUtc(h.times.label60!.getTime() + 90 * DAY);
  return [
    ['keep', h.real.id, 'logical', size, `newest successful backup, last 2, daily ${day(new Date(h.real.startedAt))}`],
    ['keep', h.ids.d1, 'logical', size, `last 2, daily ${day(h.times.d1!)}`],
    ['keep', h.ids.d2, 'logical', size, `daily ${day(h.times.d2!)}`],
    ['keep', h.ids.d3, 'logical', size, `daily ${day(h.times.d3!)}`],
    ['delete', h.ids.d5a, 'logical', size, 'no rule keeps it'],
    ['delete', h.ids.d5b, 'logical', size, 'no rule keeps it'],
    ['delete', h.ids.d40, 'logical', size, 'no rule keeps it'],
    ['keep', h.ids.label60, 'logical', size, `label before-migration (until ${until})`],
    ['keep', h.ids.pinned400, 'logical', size, 'pinned'],
  ];
}

async function s3Env(): Promise<{ env: Record<string, string>; s3: S3TestServer }> {
  s3 ??= await startS3Server({ conditionalWrites: true });
  return { s3, env: { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint } };
}

async function openRepo(url: string): Promise<Repository> {
  const options = url.startsWith('s3://') && s3 ? { s3: { endpoint: s3.endpoint, region: s3.region, forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } } } : {};
  return Repository.open(openStorage(url, options));
}

describe('pgkeep prune', () => {
  test('on a local and an S3 repository: --dry-run explains every backup and changes nothing; then prune deletes exactly that', async () => {
    const { env } = await s3Env();
    const bucket = await s3!.bucket('pgkeep-prune');
    const local = path.join(work, 'repo-local');
    const remote = `s3://${bucket}/app`;
    const cwd = await configWith([local, remote], RETENTION);

    const backup = await pgkeep(['backup', '--json'], { cwd, env });
    assert.equal(backup.code, 0, backup.stderr);
    const histories: History[] = [];
    for (const url of [local, remote]) {
      const repository = await openRepo(url);
      const real = await repository.readManifest('app', json(backup).id);
      histories.push(await makeHistory(repository, real));
    }
    // the same ids in both (same clock arithmetic)
    assert.deepEqual(histories[0]!.ids, histories[1]!.ids);
    const h = histories[0]!;

    // a verification record of a backup that will go, and of one that stays
    for (const url of [local, remote]) {
      const repository = await openRepo(url);
      for (const id of [h.ids.d40, h.ids.d1]) {
        await repository.writeVerification({ format: 1, backupId: id, source: 'app', kind: 'integrity', ok: true, startedAt: new Date().toISOString(), finishedAt: new Date().toISOString(), durationMs: 5, repository: url, pgkeepVersion: 'test', problems: [] });
      }
    }
    // records of a backup that is already gone (a prune killed between removing it and its records)
    const gone = timestampPart(new Date(Date.now() - 100 * DAY));
    await (await openRepo(local)).writeVerification({ format: 1, backupId: gone, source: 'app', kind: 'integrity', ok: true, startedAt: new Date().toISOString(), finishedAt: new Date().toISOString(), durationMs: 5, repository: local, pgkeepVersion: 'test', problems: [] });
    // leftovers in the local repository: one interrupted 3 hours ago, one "running" (written a minute ago)
    const oldLeftover = timestampPart(new Date(Date.now() - 3 * 3_600_000));
    const youngLeftover = timestampPart(new Date(Date.now() - 5 * 60_000));
    for (const [id, ageMs] of [[oldLeftover, 3 * 3_600_000], [youngLeftover, 60_000]] as const) {
      const folder = path.join(local, 'sources', 'app', 'backups', id);
      await mkdir(folder, { recursive: true });
      await writeFile(path.join(folder, 'dump.zst'), 'partial');
      const at = new Date(Date.now() - ageMs);
      await utimes(path.join(folder, 'dump.zst'), at, at);
    }

    const pin = await pgkeep(['pin', h.ids.pinned400, '--reason', 'audit 2025'], { cwd, env });
    assert.equal(pin.code, 0, pin.stderr);
    assert.match(pin.stdout, new RegExp(`^pinned app/${h.ids.pinned400} in ${local}, ${remote}: prune will never delete it`));

    // --dry-run: the plan, line by line, for each repository; nothing changes
    const dry = await pgkeep(['prune', '--dry-run'], { cwd, env });
    assert.equal(dry.code, 0, dry.stderr);
    const sections = dry.stdout.split(/\n(?=app in )/);
    assert.equal(sections.length, 2, dry.stdout);
    assert.ok(sections[0]!.startsWith(`app in ${local} (dry run): keep-last 2, keep-daily 4, keep-labels before-migration=90d, time zone UTC\n`), sections[0]);
    assert.ok(sections[1]!.startsWith(`app in ${remote} (dry run): `), sections[1]);
    // each repository's own sizes: deduplicating ones chunk with seeds of their own, so what a backup added differs a little
    sections.forEach((section, i) => assert.deepEqual(planLines(section), expectedPlan(histories[i]!)));
    const localLines = sections[0]!.split('\n');
    assert.ok(localLines.some((l) => l.startsWith(`  remove  ${oldLeftover}  leftover of an interrupted backup (last written `)), sections[0]);
    assert.ok(localLines.some((l) => l.startsWith(`  skip    ${youngLeftover}  incomplete and written to within the hour`)), sections[0]);
    const size = formatBytes(3 * h.real.totals.storedBytes);
    assert.ok(localLines.includes(`  dry run: would delete 3 backup(s) (${size}), 1 leftover(s); nothing was changed`), sections[0]);
    assert.ok(sections[1]!.includes(`  dry run: would delete 3 backup(s) (${formatBytes(3 * histories[1]!.real.totals.storedBytes)}), 0 leftover(s); nothing was changed`), sections[1]);
    const listed = await pgkeep(['list', '--json'], { cwd, env });
    assert.equal(json(listed).length, 9, 'dry run deleted nothing');
    assert.ok(existsSync(path.join(local, 'sources', 'app', 'backups', oldLeftover)));

    // --json dry run: the same decisions
    const dryJson = json(await pgkeep(['prune', '--dry-run', '--json'], { cwd, env }));
    assert.equal(dryJson.dryRun, true);
    assert.deepEqual(
      dryJson.reports[0].backups.map((b: { action: string; id: string; reasons: string[] }) => [b.action, b.id, b.reasons.join(', ')]),
      expectedPlan(h).map(([action, id, , , why]) => [action, id, why]),
    );

    // the real prune
    const real = await pgkeep(['prune', '--json'], { cwd, env });
    assert.equal(real.code, 0, real.stderr);
    const result = json(real);
    for (const report of result.reports) {
      assert.deepEqual(report.backups.filter((b: { done: boolean }) => b.done).map((b: { id: string }) => b.id).sort(), [h.ids.d5a, h.ids.d5b, h.ids.d40].sort());
    }
    for (const url of [local, remote]) {
      const repository = await openRepo(url);
      const remaining = (await repository.listBackupFolders('app')).map((f) => f.id).sort();
      const expected = [h.real.id, h.ids.d1, h.ids.d2, h.ids.d3, h.ids.label60, h.ids.pinned400];
      if (url === local) expected.push(youngLeftover);
      assert.deepEqual(remaining, expected.sort(), `${url}: only kept backups (and the young leftover) remain`);
      assert.equal((await repository.listVerifications('app', h.ids.d40)).length, 0, 'verification records of a deleted backup go with it');
      assert.equal((await repository.listVerifications('app', h.ids.d1)).length, 1, 'those of kept backups stay');
      assert.equal((await repository.listVerifications('app', gone)).length, 0, 'orphaned records go too');
    }
    assert.ok(!existsSync(path.join(local, 'sources', 'app', 'backups', h.ids.d40)), 'no folder left of a deleted backup');
    assert.ok(!existsSync(path.join(local, 'sources', 'app', 'locks', 'source.lock')), 'the lock was released');
    // what stayed still verifies, in both repositories
    for (const repo of [local, remote]) {
      const verify = await pgkeep(['verify', h.ids.d3, '--repo', repo], { cwd, env });
      assert.equal(verify.code, 0, verify.stderr);
    }
    // a second prune has nothing to delete
    const again = await pgkeep(['prune'], { cwd, env });
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, /deleted 0 backup\(s\) \(0 B\), 0 leftover\(s\); kept 6 backup\(s\)/);

    // list and show mark the pinned backup; unpin lets the policy delete it
    const list = await pgkeep(['list', '--json'], { cwd, env });
    assert.deepEqual(json(list).filter((b: { pinned: boolean }) => b.pinned).map((b: { id: string }) => b.id), [h.ids.pinned400]);
    const listText = await pgkeep(['list'], { cwd, env });
    assert.match(listText.stdout.split('\n').find((l) => l.startsWith(h.ids.pinned400))!, /\bpinned\b/);
    const show = await pgkeep(['show', h.ids.pinned400], { cwd, env });
    assert.match(show.stdout, /^pinned\s+yes, by \S+@\S+ at \S+: audit 2025$/m);
    const unpin = await pgkeep(['unpin', h.ids.pinned400], { cwd, env });
    assert.equal(unpin.code, 0, unpin.stderr);
    assert.match(unpin.stdout, /^unpinned app\//);
    const after = json(await pgkeep(['prune', '--json'], { cwd, env }));
    assert.deepEqual(after.reports[0].backups.filter((b: { action: string }) => b.action === 'delete').map((b: { id: string; reasons: string[] }) => [b.id, b.reasons]), [[h.ids.pinned400, ['no rule keeps it']]]);
  });

  test('flags override the config; without any rule prune refuses and deletes nothing', async () => {
    const repo = path.join(work, 'repo-flags');
    const cwd = await configWith([repo], ['timeZone: UTC']);
    const backup = await pgkeep(['backup', '--json'], { cwd });
    assert.equal(backup.code, 0, backup.stderr);
    const repository = await openRepo(repo);
    const real = await repository.readManifest('app', json(backup).id);
    const old = await cloneBackupAt(repository, real, daysAgoAtNoon(10));
    const older = await cloneBackupAt(repository, real, daysAgoAtNoon(20));

    const refused = await pgkeep(['prune'], { cwd });
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /^pgkeep: no retention policy for source app: set retention: .* nothing was deleted\n$/);
    assert.equal((await repository.listBackups('app')).length, 3);

    // BACKUP_RETENTION_DAYS is max-age
    const env = await pgkeep(['prune', '--dry-run'], { cwd, env: { BACKUP_RETENTION_DAYS: '15' } });
    assert.equal(env.code, 0, env.stderr);
    assert.deepEqual(planLines(env.stdout).map(([action, id, , , why]) => [action, id, why]), [
      ['keep', real.id, 'newest successful backup, within max-age 15d'],
      ['keep', old.id, 'within max-age 15d'],
      ['delete', older.id, 'older than max-age 15d'],
    ]);
    // a flag beats the environment
    const flag = await pgkeep(['prune', '--dry-run', '--max-age', '5d'], { cwd, env: { BACKUP_RETENTION_DAYS: '15' } });
    assert.deepEqual(planLines(flag.stdout).map(([action]) => action), ['keep', 'delete', 'delete']);

    for (const [args, message] of [
      [['--keep-last', 'three'], /^pgkeep: --keep-last must be a whole number, 0 to switch the rule off \(got "three"\)/],
      [['--keep-within', '2 weeks'], /^pgkeep: --keep-within: "2 weeks" is not a duration/],
      [['--time-zone', 'Moon/Base'], /^pgkeep: --time-zone: "Moon\/Base" is not a time zone/],
      [['--keep-label', 'nolabel'], /^pgkeep: --keep-label takes LABEL=DURATION/],
    ] as const) {
      const bad = await pgkeep(['prune', ...args], { cwd });
      assert.equal(bad.code, 2, bad.stderr);
      assert.match(bad.stderr, message);
    }
    const badEnv = await pgkeep(['prune'], { cwd, env: { BACKUP_RETENTION_DAYS: 'ten' } });
    assert.equal(badEnv.code, 2);
    assert.match(badEnv.stderr, /^pgkeep: BACKUP_RETENTION_DAYS must be a whole number of days \(got "ten"\)/);

    // a second source whose repository no backup has created yet: nothing to prune there, not an error
    const never = path.join(work, 'never-backed-up');
    await writeFile(path.join(cwd, 'pgkeep.yaml'), `sources:\n  app:\n    db: ${JSON.stringify(cluster.url('app'))}\n    repo: ${JSON.stringify(repo)}\n  other:\n    db: ${JSON.stringify(cluster.url('app'))}\n    repo: ${JSON.stringify(never)}\n`);
    const pruned = await pgkeep(['prune', '--keep-last', '1', '--time-zone', 'UTC'], { cwd });
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.ok(pruned.stdout.includes(`\nother in ${never}: keep-last 1, time zone UTC\n  deleted 0 backup(s) (0 B), 0 leftover(s); kept 0 backup(s)\n`), pruned.stdout);
    assert.ok(!existsSync(never), 'prune creates no repository');
    assert.deepEqual((await repository.listBackups('app')).map((m) => m.id), [real.id]);
  });

  test('zero-config, as the old scripts ran it: DATABASE_URL, BACKUP_DIR and BACKUP_RETENTION_DAYS', async () => {
    const cwd = await mkdtemp(path.join(work, 'zero-'));
    const repo = path.join(cwd, 'backups');
    const env = { DATABASE_URL: cluster.url('app'), BACKUP_DIR: repo, BACKUP_RETENTION_DAYS: '7' };
    const first = await pgkeep(['backup', '--json'], { cwd, env });
    assert.equal(first.code, 0, first.stderr);
    const repository = await openRepo(repo);
    const old = await cloneBackupAt(repository, await repository.readManifest('app', json(first).id), daysAgoAtNoon(8));
    const status = await pgkeep(['status', '--check'], { cwd, env });
    assert.deepEqual([status.code, status.stdout.trim()], [0, 'OK: app healthy']);
    const pruned = await pgkeep(['prune'], { cwd, env });
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.ok(pruned.stdout.startsWith(`app in ${repo}: max-age 7d, time zone `), pruned.stdout);
    assert.deepEqual(planLines(pruned.stdout).map(([action, id, , , why]) => [action, id, why]), [
      ['keep', json(first).id, 'newest successful backup, within max-age 7d'],
      ['delete', old.id, 'older than max-age 7d'],
    ]);
    assert.deepEqual((await repository.listBackups('app')).map((m) => m.id), [json(first).id]);
    const missing = await pgkeep(['pin', '20200101T000000Z'], { cwd, env });
    assert.equal(missing.code, 6);
    assert.match(missing.stderr, /^pgkeep: no backup 20200101T000000Z/);
    const notPinned = await pgkeep(['unpin', 'latest'], { cwd, env });
    assert.equal(notPinned.code, 0, notPinned.stderr);
    assert.equal(notPinned.stdout.trim(), `app/${json(first).id} was not pinned (nothing changed)`);
  });

  test('a backup running in another process holds the lock: prune exits LOCK_HELD naming it, and deletes nothing', async () => {
    const repo = path.join(work, 'repo-locked');
    const cwd = await configWith([repo], ['keepLast: 1']);
    const first = await pgkeep(['backup', '--json'], { cwd });
    assert.equal(first.code, 0, first.stderr);
    const repository = await openRepo(repo);
    await cloneBackupAt(repository, await repository.readManifest('app', json(first).id), daysAgoAtNoon(3));

    // freeze a second backup mid-flight: pg_dump waits for this table lock
    const client = new pg.Client({ connectionString: cluster.url('app') });
    await client.connect();
    await client.query('BEGIN');
    await client.query('LOCK TABLE notes IN ACCESS EXCLUSIVE MODE');
    const running = startPgkeep(['backup'], { cwd });
    const done = collect(running);
    try {
      const lockFile = path.join(repo, 'sources', 'app', 'locks', 'source.lock');
      for (let i = 0; i < 200 && !existsSync(lockFile); i++) await delay(50);
      assert.ok(existsSync(lockFile), 'the running backup took the lock');

      const prune = await pgkeep(['prune'], { cwd });
      assert.equal(prune.code, 5, prune.stderr);
      assert.equal(
        prune.stderr.trim(),
        `pgkeep: source app is locked by "pgkeep backup" (pid ${running.pid} on ${hostname()}, since ${JSON.parse(readFileSync(lockFile, 'utf8')).started}): wait for it to finish`,
      );
      assert.match(prune.stdout, /not pruned: source app is locked by "pgkeep backup"/);
      const asJson = await pgkeep(['prune', '--json'], { cwd });
      assert.equal(asJson.code, 5);
      const error = json(asJson).error;
      assert.equal(error.code, 'LOCK_HELD');
      assert.equal(error.details.pid, running.pid);
      assert.equal(error.details.host, hostname());
      assert.equal((await repository.listBackups('app')).length, 2, 'nothing deleted while locked');
      // a dry run reads without the lock
      const dry = await pgkeep(['prune', '--dry-run'], { cwd });
      assert.equal(dry.code, 0, dry.stderr);
      assert.equal(planLines(dry.stdout).filter(([action]) => action === 'delete').length, 1);
    } finally {
      await client.query('ROLLBACK');
      await client.end();
    }
    const backupDone = await done;
    assert.equal(backupDone.code, 0, backupDone.stderr);
    const prune = await pgkeep(['prune'], { cwd });
    assert.equal(prune.code, 0, prune.stderr);
    assert.equal((await repository.listBackups('app')).length, 1);
  });

  test('on S3, a lock held by a process on another host is respected and named', async () => {
    const { env } = await s3Env();
    const bucket = await s3!.bucket('pgkeep-prune-lock');
    const remote = `s3://${bucket}/app`;
    const cwd = await configWith([remote], ['keepLast: 1']);
    const backup = await pgkeep(['backup', '--json'], { cwd, env });
    assert.equal(backup.code, 0, backup.stderr);
    const repository = await openRepo(remote);
    await cloneBackupAt(repository, await repository.readManifest('app', json(backup).id), daysAgoAtNoon(2));
    const owner = { pid: 4242, host: 'backup-host-2', command: 'backup', started: '2026-11-21T02:00:00.000Z' };
    assert.equal(await storageOf(repository)!.putIfAbsent('sources/app/locks/source.lock', Buffer.from(JSON.stringify(owner))), true);

    const prune = await pgkeep(['prune'], { cwd, env });
    assert.equal(prune.code, 5, prune.stderr);
    assert.equal(
      prune.stderr.trim(),
      `pgkeep: source app is locked by "pgkeep backup" (pid 4242 on backup-host-2, since 2026-11-21T02:00:00.000Z): wait for it to finish, or if it is no longer running there, remove ${remote}/sources/app/locks/source.lock`,
    );
    assert.equal((await repository.listBackups('app')).length, 2);
    await storageOf(repository)!.remove('sources/app/locks/source.lock');
    const after = await pgkeep(['prune'], { cwd, env });
    assert.equal(after.code, 0, after.stderr);
    assert.equal((await repository.listBackups('app')).length, 1);
  });

  test('on an S3 server that ignores conditional writes, prune warns that the lock cannot exclude other hosts', async () => {
    const plain = await startS3Server({ conditionalWrites: false });
    try {
      const bucket = await plain.bucket('pgkeep-prune-plain');
      const remote = `s3://${bucket}/app`;
      const env = { AWS_ACCESS_KEY_ID: plain.accessKeyId, AWS_SECRET_ACCESS_KEY: plain.secretAccessKey, AWS_REGION: plain.region, AWS_ENDPOINT_URL: plain.endpoint };
      const cwd = await configWith([remote], ['keepLast: 1']);
      assert.equal((await pgkeep(['backup'], { cwd, env })).code, 0);
      const prune = await pgkeep(['prune'], { cwd, env });
      assert.equal(prune.code, 0, prune.stderr);
      assert.equal(prune.stderr.trim(), `pgkeep: warning: ${remote} ignores conditional writes (If-None-Match), so the lock of app cannot exclude other hosts: make sure no backup or prune of app runs elsewhere now`);
    } finally {
      await plain.stop();
    }
  });
});
