import assert from 'node:assert/strict';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { readdir, readFile } from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import pg from 'pg';
import { collect, json, startPgkeep } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

let cluster: PgCluster;
let work: string;
const PASSWORD = 'S3cr3t-Pässw0rd!#%';

useClusterAndWorkFolder('interrupt', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query(`CREATE ROLE app_user LOGIN CREATEDB PASSWORD '${PASSWORD.replace(/'/g, "''")}'`);
  await cluster.query('ALTER DATABASE app OWNER TO app_user');
  // ~31 MB of rows zstd can hardly shrink (about 21 MB stored): the SIGKILL test kills the backup once 256 KiB are
  // stored, so it is still mid-stream, with about 80 times that to go; twice the size cost 1 s more to make here.
  // Base64 of 48 pseudo-random bytes a row, one SHA-384 each: what three md5s in hex digits gave (as much stored),
  // at half the CPU to make and two thirds of the bytes to dump.
  await cluster.query("CREATE TABLE big AS SELECT g AS id, encode(sha384(int4send(g)), 'base64') AS payload FROM generate_series(1, 400000) g", [], 'app');
  await cluster.query('CREATE TABLE small (id int PRIMARY KEY)', [], 'app');
  await cluster.query('ALTER TABLE big OWNER TO app_user', [], 'app');
  await cluster.query('ALTER TABLE small OWNER TO app_user', [], 'app');
  // The secrets test's own database, of the same owner: what it checks (argv, output, files) does not depend on
  // the size, and a backup and a restore of the ~100 MB above would cost seconds of CPU.
  await cluster.query('CREATE DATABASE secrets OWNER app_user');
  await cluster.query('CREATE TABLE small (id int PRIMARY KEY, note text)', [], 'secrets');
  await cluster.query('INSERT INTO small SELECT g, md5(g::text) FROM generate_series(1, 1000) g', [], 'secrets');
  await cluster.query('ALTER TABLE small OWNER TO app_user', [], 'secrets');
});

const env = (database = 'app') => ({ DATABASE_URL: cluster.url(database, 'app_user', PASSWORD) });

/** Holds ACCESS EXCLUSIVE on a table so pg_dump (which takes ACCESS SHARE first) waits: a backup frozen mid-flight. */
async function holdTableLock(table: string, database = 'app'): Promise<{ release(): Promise<void> }> {
  const client = new pg.Client({ connectionString: cluster.url(database) });
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

/**
 * The children of `pid`. The tests poll this every few milliseconds: the kernel's list of the main thread's children
 * (node spawns from its main thread) is one small read, where a walk of /proc reads a file per process on the machine.
 * The walk stays for a kernel without that list (CONFIG_PROC_CHILDREN).
 */
function childrenOf(pid: number): number[] {
  try {
    return readFileSync(`/proc/${pid}/task/${pid}/children`, 'utf8').trim().split(' ').filter(Boolean).map(Number);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'ENOENT' || !existsSync(`/proc/${pid}`)) return [];
  }
  const found: number[] = [];
  for (const entry of readdirSync('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      const stat = readFileSync(`/proc/${entry}/stat`, 'utf8');
      const ppid = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]);
      if (ppid === pid) found.push(Number(entry));
    } catch {
      // the process ended while we looked
    }
  }
  return found;
}

function commandOf(pid: number): string {
  try {
    return readFileSync(`/proc/${pid}/cmdline`, 'utf8').replace(/\0/g, ' ');
  } catch {
    return '';
  }
}

function isRunning(pid: number): boolean {
  try {
    const state = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]?.[0];
    return state !== undefined && state !== 'Z';
  } catch {
    return false;
  }
}

async function waitFor(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000, everyMs = 10): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

function tempFiles(repo: string): { path: string; size: number }[] {
  const found: { path: string; size: number }[] = [];
  // Files and folders come and go while a backup runs (the lock's temp file, a
  // removed backup folder): whatever vanishes between listing and stat is skipped.
  const walk = (dir: string) => {
    let entries;
    try {
      entries = readdirSync(dir, { withFileTypes: true });
    } catch {
      return;
    }
    for (const entry of entries) {
      const full = path.join(dir, entry.name);
      if (entry.isDirectory()) walk(full);
      else if (entry.name.startsWith('.pgkeep-tmp-')) {
        try {
          found.push({ path: full, size: statSync(full).size });
        } catch {
          // gone already
        }
      }
    }
  };
  walk(repo);
  return found;
}

/**
 * Plain: these tests see a backup in flight by its object growing in its
 * folder; a deduplicating repository writes packs only as they fill (its
 * kills: dedup.test.ts and faults.test.ts).
 */
async function plainRepository(repo: string): Promise<void> {
  const init = await runCommand(['init', '--repo', repo, '--plain']);
  assert.equal(init.code, 0, init.stderr);
}

async function backupFolders(repo: string): Promise<string[]> {
  const dir = path.join(repo, 'sources', 'app', 'backups');
  return existsSync(dir) ? readdir(dir) : [];
}

describe('killing a backup at any moment leaves no visible backup', () => {
  for (const signal of ['SIGINT', 'SIGTERM'] as const) {
    test(`${signal} while pg_dump is waiting: pg_dump stopped, temp files and folder removed, exit ${signal === 'SIGINT' ? 130 : 143}`, async () => {
      const repo = path.join(work, `repo-${signal}`);
      await plainRepository(repo);
      const lock = await holdTableLock('small');
      try {
        const child = startPgkeep(['backup', '--repo', repo], { env: env() });
        const done = collect(child);
        let stderr = '';
        child.stderr!.on('data', (t: string) => (stderr += t));
        await waitFor('the backup to be in flight', () => tempFiles(repo).length > 0 && childrenOf(child.pid!).some((p) => commandOf(p).includes('pg_dump'))).catch((error: Error) => {
          child.kill('SIGKILL');
          throw new Error(`${error.message}; pgkeep said: ${stderr}`);
        });
        const pgDump = childrenOf(child.pid!).find((p) => commandOf(p).includes('pg_dump'))!;
        child.kill(signal);
        const result = await done;
        assert.equal(result.code, signal === 'SIGINT' ? 130 : 143, result.stderr);
        assert.match(result.stderr, new RegExp(`interrupted by ${signal}`));
        await waitFor('pg_dump to exit', () => !isRunning(pgDump), 10_000);
        assert.deepEqual(tempFiles(repo), []);
        assert.deepEqual(await backupFolders(repo), []);
        assert.ok(!existsSync(path.join(repo, 'sources', 'app', 'locks', 'source.lock')), 'the source lock is released');
      } finally {
        await lock.release();
      }
    });
  }

  test('SIGKILL mid-stream: invisible to list, removed by the next backup', async () => {
    const repo = path.join(work, 'repo-kill');
    await plainRepository(repo);
    const child = startPgkeep(['backup', '--repo', repo], { env: env() });
    const done = collect(child);
    await waitFor('bytes in the repository', () => tempFiles(repo).some((f) => f.size > 256 * 1024), 30_000, 2);
    child.kill('SIGKILL');
    const killedAt = Date.now();
    const result = await done;
    assert.equal(result.signal, 'SIGKILL');

    const folders = await backupFolders(repo);
    assert.equal(folders.length, 1, 'the interrupted backup left its folder (no manifest)');
    assert.ok(!existsSync(path.join(repo, 'sources', 'app', 'backups', folders[0]!, 'manifest.json')));
    const list = await runCommand(['list', '--repo', repo, '--json']);
    assert.equal(list.code, 0, list.stderr);
    assert.deepEqual(json(list), [], 'list shows no backup');

    // The dead process's lock is stale (its pid is gone): the next backup takes over and cleans up. What it backs
    // up is not what is checked (the clean-up and its completion are): the table's ~50 MB were only there to keep
    // the killed backup mid-stream, and backing them up again cost a second of CPU. The tests after this one only
    // lock `small`.
    await cluster.query('TRUNCATE big', [], 'app');
    const next = await runCommand(['backup', '--repo', repo], { env: env() });
    assert.equal(next.code, 0, next.stderr);
    assert.match(next.stderr, new RegExp(`removed 1 interrupted backup\\(s\\) in .*repo-kill: ${folders[0]}`));
    // The leftover is gone; the one folder left is the new, complete backup (it may reuse
    // the freed id when both fall in the same second).
    const remaining = await backupFolders(repo);
    assert.equal(remaining.length, 1);
    const manifest = JSON.parse(await readFile(path.join(repo, 'sources', 'app', 'backups', remaining[0]!, 'manifest.json'), 'utf8'));
    assert.ok(Date.parse(manifest.startedAt) >= killedAt, 'the backup left is the one taken after the kill');
    assert.deepEqual(tempFiles(repo), []);
  });

  test('a second backup of the same source waits for nobody: it says who holds the lock', async () => {
    const repo = path.join(work, 'repo-lock');
    const lock = await holdTableLock('small');
    try {
      const first = startPgkeep(['backup', '--repo', repo], { env: env() });
      const firstDone = collect(first);
      await waitFor('the first backup to hold the lock', () => existsSync(path.join(repo, 'sources', 'app', 'locks', 'source.lock')));
      const second = await runCommand(['backup', '--repo', repo], { env: env() });
      assert.equal(second.code, 5);
      assert.match(second.stderr, new RegExp(`source app is locked by "pgkeep backup" \\(pid ${first.pid} `));
      first.kill('SIGTERM');
      await firstDone;
    } finally {
      await lock.release();
    }
  });
});

describe('secrets', () => {
  test('the password is in no process argv, no output and no repository file', async () => {
    const repo = path.join(work, 'repo-secrets');
    const lock = await holdTableLock('small', 'secrets');
    let child;
    try {
      child = startPgkeep(['backup', '--repo', repo, '--label', 'secrets'], { env: env('secrets') });
      const done = collect(child);
      await waitFor('pg_dump to run', () => childrenOf(child!.pid!).some((p) => commandOf(p).includes('pg_dump')));
      // Every process on the machine: argv is what `ps` shows to every user.
      const leaks = readdirSync('/proc')
        .filter((e) => /^\d+$/.test(e))
        .map((pid) => commandOf(Number(pid)))
        .filter((cmd) => cmd.includes(PASSWORD) || cmd.includes(encodeURIComponent(PASSWORD)));
      assert.deepEqual(leaks, []);
      await lock.release();
      const result = await done;
      assert.equal(result.code, 0, result.stderr);
      // in process: its output is what is checked (the argv of every process was, above, while the backup ran)
      const restore = await runCommand(['restore', 'latest', '--repo', repo, '--to', 'secret_copy'], { env: env('secrets') });
      assert.equal(restore.code, 0, restore.stderr);
      for (const output of [result.stdout, result.stderr, restore.stdout, restore.stderr]) {
        assert.ok(!output.includes(PASSWORD) && !output.includes(encodeURIComponent(PASSWORD)), `output leaks the password: ${output}`);
      }
      const files: string[] = [];
      const walk = (dir: string) => {
        for (const entry of readdirSync(dir, { withFileTypes: true })) {
          const full = path.join(dir, entry.name);
          if (entry.isDirectory()) walk(full);
          else files.push(full);
        }
      };
      walk(repo);
      assert.ok(files.length >= 3);
      for (const file of files.filter((f) => f.endsWith('.json'))) {
        const text = await readFile(file, 'utf8');
        assert.ok(!text.includes(PASSWORD) && !text.includes(encodeURIComponent(PASSWORD)), `${file} holds the password`);
      }
    } finally {
      await lock.release().catch(() => undefined);
    }
  });
});
