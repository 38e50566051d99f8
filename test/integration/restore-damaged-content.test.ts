import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { copyFile, cp, readdir } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { json } from '../support/cli.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

/**
 * A damaged backup whose zstd stream still decodes: the damage is only found
 * by the SHA-256 checks at the end of the object, after pg_restore has already
 * choked on the bad row. The restore must still report the damage
 * (CHECKSUM_MISMATCH, exit 7; what lets a restore fall back to another
 * repository), not pg_restore's complaint about it, and leave no database.
 */

let cluster: PgCluster;
let work: string;
let pristine: string;
let id: string;
const env = () => ({ DATABASE_URL: cluster.url('app') });

useClusterAndWorkFolder('damaged-content', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query('CREATE TABLE numbers (n int PRIMARY KEY, label text)', [], 'app');
  await cluster.query("INSERT INTO numbers SELECT g, 'row ' || g FROM generate_series(1, 20000) g", [], 'app');
  // dumped after numbers: pg_restore learns of the bad row (at the end of its COPY) well before the stream ends.
  // Its size is the point only that far: ~6 MB of COPY text after numbers' ~0.3 MB, many times what the pipe
  // into pg_restore and the streams before it hold, so the child fails with most of the stream still unread
  // (600,000 rows, 27 MB, made every run dump, compress, decompress and drain 4 times as much for nothing more)
  await cluster.query("CREATE TABLE zz_more AS SELECT g AS n, md5(g::text) AS note FROM generate_series(1, 150000) g", [], 'app');
  pristine = path.join(work, 'pristine');
  // plain: the tests damage a row inside the stored dump object (a damaged chunk of a deduplicating repository: dedup.test.ts)
  assert.equal((await pgkeep(['init', '--repo', pristine, '--plain'])).code, 0);
  const backup = await pgkeep(['backup', '--repo', pristine, '--json'], { env: env() });
  assert.equal(backup.code, 0, backup.stderr);
  id = json(backup).id;
});

/** The damaged dump object, made once for the file (each test gets a copy of it in a repository of its own). */
let damagedObject: string | undefined;

/** A copy of the repository whose dump has one COPY value changed ("12345" → "12x45"), recompressed as valid zstd. */
async function damagedCopy(name: string): Promise<string> {
  const repo = path.join(work, name);
  await cp(pristine, repo, { recursive: true });
  const folder = path.join(repo, 'sources', 'app', 'backups', id);
  const object = (await readdir(folder)).find((f) => f.startsWith('dump') && f.endsWith('.zst'))!;
  const file = path.join(folder, object);
  if (damagedObject) {
    await copyFile(damagedObject, file);
    return repo;
  }
  const raw = spawnSync('zstd', ['-q', '-d', '-c', file], { maxBuffer: 1 << 30 }).stdout;
  const at = raw.indexOf(Buffer.from('12345\trow 12345'));
  assert.ok(at > 0, 'the row is in the dump');
  raw[at + 2] = 'x'.charCodeAt(0);
  const recompressed = spawnSync('zstd', ['-q', '-3', '-c', '-o', file, '-f'], { input: raw });
  assert.equal(recompressed.status, 0, String(recompressed.stderr));
  // kept outside the repository, which the test's restore reads
  damagedObject = path.join(work, 'damaged-dump.zst');
  await copyFile(file, damagedObject);
  return repo;
}

async function databases(): Promise<string[]> {
  return (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database ORDER BY 1')).map((r) => r.datname);
}

describe('restore of a backup whose content was altered but still decompresses', () => {
  for (const args of [[], ['--jobs', '2']]) {
    test(`restore ${args.join(' ') || '(streamed)'}: reported as a damaged backup, and nothing is left behind`, async () => {
      const repo = await damagedCopy(`damaged-${args.length}`);
      const before = await databases();
      const result = await pgkeep(['restore', id, '--repo', repo, '--to', `from_damaged_${args.length}`, ...args], { env: env() });
      assert.equal(result.code, 7, result.stderr);
      assert.match(result.stderr, /corrupt/);
      assert.deepEqual(await databases(), before);
    });
  }
});
