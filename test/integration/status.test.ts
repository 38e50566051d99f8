import assert from 'node:assert/strict';
import { mkdir, mkdtemp, utimes, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { Repository } from '../../src/repository/repository.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { json } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { cloneBackupAt } from '../support/synthetic-backups.js';

let cluster: PgCluster;
let work: string;

const NOTES = 5000;

useClusterAndWorkFolder('status', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  // 5,000 rows of 128 characters: a dump of some 650 KiB, well above the 100 KiB minimum one test sets, and its
  // first 100 rows alone 98% smaller and below it. Every test backs it up, so more rows would only cost CPU.
  await cluster.query(`CREATE TABLE notes AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, ${NOTES}) g`, [], 'app');
  await cluster.query('CREATE DATABASE other');
  await cluster.query('CREATE TABLE t AS SELECT 1 AS x', [], 'other');
});

/** A folder with a pgkeep.yaml holding one source per entry, each with its own repository; returns the folder and the repositories. */
async function setup(sources: Record<string, { database: string; health?: string[] }>): Promise<{ cwd: string; repos: Record<string, string> }> {
  const cwd = await mkdtemp(path.join(work, 'cfg-'));
  const repos: Record<string, string> = {};
  const lines = ['sources:'];
  for (const [name, { database, health }] of Object.entries(sources)) {
    repos[name] = path.join(cwd, `repo-${name}`);
    lines.push(`  ${name}:`, `    db: ${JSON.stringify(cluster.url(database))}`, `    repo: ${JSON.stringify(repos[name])}`);
    if (health) lines.push('    health:', ...health.map((l) => `      ${l}`));
  }
  await writeFile(path.join(cwd, 'pgkeep.yaml'), `${lines.join('\n')}\n`);
  return { cwd, repos };
}

async function backup(cwd: string, args: string[] = []): Promise<string> {
  const result = await pgkeep(['backup', '--json', ...args], { cwd });
  assert.equal(result.code, 0, result.stderr);
  return json(result).id;
}

async function check(cwd: string, args: string[] = []): Promise<{ code: number | null; lines: string[] }> {
  const result = await pgkeep(['status', '--check', ...args], { cwd });
  assert.equal(result.stderr, '', 'nothing on stderr');
  return { code: result.code, lines: result.stdout.trim().split('\n') };
}

const verificationRecord = (backupId: string, kind: 'integrity' | 'restore-test', ok: boolean, at: Date, problems: string[] = []) => ({
  format: 1 as const,
  backupId,
  source: 'app',
  kind,
  ok,
  startedAt: at.toISOString(),
  finishedAt: new Date(at.getTime() + 1000).toISOString(),
  durationMs: 1000,
  repository: 'test',
  pgkeepVersion: 'test',
  problems,
});

describe('pgkeep status', () => {
  test('a fresh backup is healthy: status shows it, --check prints OK and exits 0', async () => {
    const { cwd, repos } = await setup({ app: { database: 'app' } });
    const id = await backup(cwd);
    const ok = await check(cwd);
    assert.equal(ok.code, 0);
    assert.deepEqual(ok.lines, ['OK: app healthy']);

    const text = await pgkeep(['status'], { cwd });
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split('\n');
    assert.equal(lines[0], 'app: healthy');
    assert.match(lines[1]!, new RegExp(`^  last backup +${id} \\(logical\\), finished \\d+s ago, ([\\d.]+ KiB stored|[\\d.]+ [KM]iB, [\\d.]+ KiB added), took `)); // plain, or deduplicating: logical size, bytes added
    assert.match(lines[2]!, /^  last failure +none$/);
    assert.match(lines[3]!, /^  last verified +never$/);
    assert.match(lines[4]!, /^  restore test +none$/);
    assert.match(lines[5]!, new RegExp(`^  repository +${repos.app}: 1 backup\\(s\\), [\\d.]+ KiB( added)?$`));
    // a deduplicating repository (the default) adds a line with its figures
    assert.match(lines.slice(6).filter((line) => !/^  deduplication  .* ratio [\d.]+x$/.test(line))[0]!, /^  pitr +not archiving$/);

    const status = json(await pgkeep(['status', '--json'], { cwd }));
    assert.equal(status.healthy, true);
    assert.equal(status.sources[0].lastBackup.id, id);
    assert.deepEqual(status.sources[0].pitr, { archiving: false, window: null });
    assert.deepEqual(status.sources[0].findings, []);
  });

  test('no backup yet, and no successful backup within max-age (26h by default)', async () => {
    const { cwd, repos } = await setup({ app: { database: 'app' } });
    const none = await check(cwd);
    assert.equal(none.code, 2);
    assert.deepEqual(none.lines, ['app: no successful backup yet: run pgkeep backup']);

    // a real backup, moved 3 days back
    const id = await backup(cwd);
    const repository = await Repository.open(openStorage(repos.app!));
    const real = await repository.readManifest('app', id);
    const old = await cloneBackupAt(repository, real, new Date(Date.now() - 3 * 86_400_000));
    await repository.removeBackup('app', id);
    const stale = await check(cwd);
    assert.equal(stale.code, 2);
    assert.deepEqual(stale.lines, [`app: no successful backup within 26h: the last, ${old.id}, finished 3d ago`]);
    const asJson = json(await pgkeep(['status', '--check', '--json'], { cwd }));
    assert.equal(asJson.healthy, false);
    assert.deepEqual(asJson.sources[0].findings.map((f: { code: string }) => f.code), ['BACKUP_TOO_OLD']);

    // the threshold is per source
    const relaxed = await setup({ app: { database: 'app', health: ['backupMaxAge: 4d'] } });
    const fresh = await backup(relaxed.cwd);
    const relaxedRepository = await Repository.open(openStorage(relaxed.repos.app!));
    await cloneBackupAt(relaxedRepository, await relaxedRepository.readManifest('app', fresh), new Date(old.startedAt));
    await relaxedRepository.removeBackup('app', fresh);
    assert.equal((await check(relaxed.cwd)).code, 0);
  });

  test('the last backup failed: a real failed run is recorded and reported until a backup succeeds', async () => {
    const { cwd } = await setup({ app: { database: 'app' } });
    await backup(cwd);
    const failed = await pgkeep(['backup', '--db', cluster.url('no_such_db')], { cwd });
    assert.equal(failed.code, 3, failed.stderr);
    const message = failed.stderr.trim().replace(/^pgkeep: /, '');
    assert.match(message, /database "no_such_db" does not exist/);

    const result = await check(cwd);
    assert.equal(result.code, 2);
    assert.equal(result.lines.length, 1);
    assert.match(result.lines[0]!, /^app: the last backup failed \d+s ago: /);
    assert.ok(result.lines[0]!.endsWith(message), result.lines[0]);
    const status = json(await pgkeep(['status', '--json'], { cwd }));
    assert.equal(status.sources[0].lastFailure.code, 'DB_MISSING');
    assert.ok(!JSON.stringify(status).includes('password'), 'no secrets');

    await backup(cwd);
    assert.equal((await check(cwd)).code, 0, 'a later success clears it');
    const after = await pgkeep(['status'], { cwd });
    assert.match(after.stdout, /last failure +\d+s ago: database "no_such_db" does not exist/, 'the failure is still shown, as history');
  });

  test('the newest backup is much smaller than the previous one, or below the minimum size', async () => {
    const { cwd } = await setup({ app: { database: 'app', health: ['minSize: 100KiB'] } });
    await backup(cwd);
    assert.equal((await check(cwd)).code, 0);
    await cluster.query('CREATE TABLE notes_saved AS SELECT * FROM notes', [], 'app');
    try {
      await cluster.query('DELETE FROM notes WHERE id > 100', [], 'app');
      await cluster.query('DROP TABLE notes_saved', [], 'app');
      const small = await backup(cwd);
      const result = await check(cwd);
      assert.equal(result.code, 2);
      assert.equal(result.lines.length, 2, result.lines.join('\n'));
      assert.match(result.lines[0]!, new RegExp(`^app: backup ${small} is 9\\d% smaller than the previous one \\([\\d.]+ KiB dumped, \\S+ [\\d.]+ [KM]iB\\): check the database was not emptied or the wrong one dumped$`));
      assert.match(result.lines[1]!, new RegExp(`^app: backup ${small} dumped [\\d.]+ KiB, below the minimum of 100 KiB: an empty or wrong database\\?$`));
      // a schema-only backup is not compared with full ones
      const { cwd: other } = await setup({ app: { database: 'app' } });
      await backup(other);
      await backup(other, ['--schema-only']);
      assert.equal((await check(other)).code, 0);
    } finally {
      await cluster.query(`INSERT INTO notes SELECT g, repeat(md5(g::text), 4) FROM generate_series(101, ${NOTES}) g`, [], 'app');
    }
  });

  test('verification and restore tests: failed, too old, missing', async () => {
    const { cwd, repos } = await setup({ app: { database: 'app', health: ['restoreTestMaxAge: 7d'] } });
    const id = await backup(cwd);
    const repository = await Repository.open(openStorage(repos.app!));
    assert.deepEqual((await check(cwd)).lines, ['app: no logical restore test yet (required every 7d): run pgkeep verify latest --restore-test']);

    await repository.writeVerification(verificationRecord(id, 'restore-test', true, new Date(Date.now() - 10 * 86_400_000)));
    assert.deepEqual((await check(cwd)).lines, ['app: the last logical restore test passed 10d ago, longer ago than 7d: run pgkeep verify latest --restore-test']);

    await repository.writeVerification(verificationRecord(id, 'restore-test', false, new Date(Date.now() - 3_600_000), ['table public.notes: 20000 rows in the backup, 19999 restored']));
    assert.deepEqual((await check(cwd)).lines, [`app: the last logical restore test (of ${id}, 60m ago) failed: table public.notes: 20000 rows in the backup, 19999 restored`]);

    await repository.writeVerification(verificationRecord(id, 'restore-test', true, new Date(Date.now() - 60_000)));
    assert.equal((await check(cwd)).code, 0);
    // records without a drill kind (older pgkeep) are logical restore tests; the newest run and the newest success of each kind
    const drills = json(await pgkeep(['status', '--json'], { cwd })).sources[0].drills;
    assert.deepEqual(Object.keys(drills), ['logical-restore-test']);
    assert.equal(drills['logical-restore-test'].last.ok, true);
    assert.equal(drills['logical-restore-test'].lastSuccess.finishedAt, drills['logical-restore-test'].last.finishedAt);

    await repository.writeVerification(verificationRecord(id, 'integrity', false, new Date(Date.now() - 30_000), ['dump.zst: SHA-256 differs from the manifest']));
    const damaged = await check(cwd);
    assert.equal(damaged.code, 2);
    assert.equal(damaged.lines.length, 1);
    assert.match(damaged.lines[0]!, new RegExp(`^app: backup ${id} failed verification \\d+s ago: dump\\.zst: SHA-256 differs from the manifest$`));
    const text = await pgkeep(['status'], { cwd });
    assert.match(text.stdout, /last verified +integrity FAILED \d+s ago/);
    assert.match(text.stdout, /restore test +ok \d+s ago/);
  });

  test('WAL archive lag (a seam until WAL archiving lands): "not archiving" without WAL, a finding when the newest WAL is too old', async () => {
    const { cwd, repos } = await setup({ app: { database: 'app', health: ['archiveLagMax: 15m'] } });
    await backup(cwd);
    assert.equal((await check(cwd)).code, 0);
    const segment = path.join(repos.app!, 'sources', 'app', 'wal', '00000001', '000000010000000000000003.zst');
    await mkdir(path.dirname(segment), { recursive: true });
    await writeFile(segment, 'x');
    const hourAgo = new Date(Date.now() - 3_600_000);
    await utimes(segment, hourAgo, hourAgo);
    const lagging = await check(cwd);
    assert.deepEqual(lagging.lines, ['app: WAL archiving is behind: the last segment was archived 60m ago, more than 15m: check archive_command and pg_stat_archiver']);
    const status = json(await pgkeep(['status', '--json'], { cwd }));
    assert.equal(status.sources[0].pitr.archiving, true);
    assert.ok(status.sources[0].pitr.archiveLagMs >= 3_600_000);
  });

  test('several sources: --check prints only the problems, naming each source; --source narrows', async () => {
    const { cwd } = await setup({ app: { database: 'app' }, other: { database: 'other' } });
    await backup(cwd, ['--source', 'app']);
    const result = await check(cwd);
    assert.equal(result.code, 2);
    assert.deepEqual(result.lines, ['other: no successful backup yet: run pgkeep backup']);
    assert.deepEqual((await check(cwd, ['--source', 'app'])).lines, ['OK: app healthy']);
    const bad = await pgkeep(['status', '--source', 'nope'], { cwd });
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^pgkeep: no source "nope" in pgkeep.yaml: the sources are app, other/);
  });

  test('an unreadable repository is a problem, not a crash', async () => {
    const cwd = await mkdtemp(path.join(work, 'cfg-'));
    const foreign = path.join(cwd, 'not-a-repo');
    await mkdir(foreign);
    await writeFile(path.join(foreign, 'notes.txt'), 'mine');
    await writeFile(path.join(cwd, 'pgkeep.yaml'), `sources:\n  app:\n    db: ${JSON.stringify(cluster.url('app'))}\n    repos: [${JSON.stringify(foreign)}]\n`);
    const result = await check(cwd);
    assert.equal(result.code, 2);
    assert.deepEqual(result.lines, [`app: cannot read ${foreign}: ${foreign} is not a pgkeep repository (no pgkeep.json, and it is not empty): choose an empty or new location with --repo`]);
  });
});
