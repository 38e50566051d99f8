import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { chmod, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, test } from 'node:test';
import { json, pgkeep } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { archivingConf, type PgCluster } from '../support/pg-cluster.js';
import { archiveCommand, giveToServer } from '../support/server-folder.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';

// The repository must exist before the server starts archiving into it.
const shared = path.join(tmpdir(), `pgkeep-walrepo-${randomBytes(6).toString('hex')}`);
const repo = path.join(shared, 'repo');
const SOURCE = 'main';

let cluster: PgCluster;
let work: string;

before(async () => {
  await mkdir(shared, { mode: 0o755 });
  await chmod(shared, 0o755);
  const init = await runCommand(['init', '--repo', repo]);
  assert.equal(init.code, 0, init.stderr);
  giveToServer(shared);
});
after(async () => {
  await rm(shared, { recursive: true, force: true });
});

useClusterAndWorkFolder(
  'wal',
  async (c, w) => {
    cluster = c;
    work = w;
  },
  { conf: archivingConf(archiveCommand(repo, SOURCE)) },
);

const sha256 = (bytes: Buffer) => createHash('sha256').update(bytes).digest('hex');

/** `pgkeep keygen --output file`, in process (the key is what matters here): a new age identity at `file`, and its public key. */
async function keygen(file: string): Promise<{ file: string; publicKey: string }> {
  const result = await runCommand(['keygen', '--output', file, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return { file, publicKey: json<{ publicKey: string }>(result).publicKey };
}
const wal = (args: string[], extra: { env?: Record<string, string> } = {}) => pgkeep(args, { ...extra });

/** Writes, switches WAL, and waits until the server reports the segment archived; returns its name. */
async function archiveOneSegment(): Promise<string> {
  await cluster.query('CREATE TABLE IF NOT EXISTS t (id int)');
  await cluster.query('INSERT INTO t SELECT generate_series(1, 1000)');
  const { name } = (await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!;
  for (let i = 0; i < 200; i++) {
    const [stats] = await cluster.query<{ last: string | null; failed: string | null }>('SELECT last_archived_wal AS last, last_failed_wal AS failed FROM pg_stat_archiver');
    if (stats!.last !== null && stats!.last >= name) return name;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`segment ${name} was not archived in time; pg_stat_archiver: ${JSON.stringify(await cluster.query('SELECT * FROM pg_stat_archiver'))}`);
}

/**
 * One segment the server archived, and its bytes (read from pg_wal at once, before a checkpoint can recycle it):
 * made once, for every test that needs a real segment to push by hand. A segment more from the server would prove
 * nothing more, and costs the server a switch and a wal-push.
 */
let archived: Promise<{ segment: string; original: Buffer }> | undefined;
function archivedSegment(): Promise<{ segment: string; original: Buffer }> {
  archived ??= (async () => {
    const segment = await archiveOneSegment();
    return { segment, original: await readFile(path.join(cluster.dataDir, 'pg_wal', segment)) };
  })();
  return archived;
}

/** A copy of the archived segment, under its own name, in a new folder `folder` of the work folder. */
async function segmentCopy(folder: string): Promise<{ segment: string; file: string; original: Buffer }> {
  const { segment, original } = await archivedSegment();
  const file = path.join(work, folder, segment);
  await mkdir(path.dirname(file), { recursive: true });
  await writeFile(file, original);
  return { segment, file, original };
}

function tempLeftovers(dir: string): string[] {
  return readdirSync(dir).filter((f) => f.includes('pgkeep-tmp'));
}

// One suite, its parts in order: they share one cluster and one archive (npm test runs with --test-concurrency=2).
describe('WAL archive', { concurrency: 1 }, () => {
  describe('WAL archiving (archive_command = pgkeep wal-push)', { concurrency: 1 }, () => {
    let segment: string;
    let original: Buffer;

    before(async () => {
      ({ segment, original } = await archivedSegment());
    });

    test('the server archives through pgkeep; wal-fetch returns the exact bytes via a temp file', async () => {
      const record = JSON.parse(readFileSync(path.join(repo, 'sources', SOURCE, 'wal', segment.slice(0, 8), `${segment}.json`), 'utf8'));
      assert.equal(record.raw.sha256, sha256(original));
      assert.ok(record.stored.size < original.length / 2, `a mostly empty segment compresses (${record.stored.size} bytes stored)`);
      const { id } = (await cluster.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_control_system()'))[0]!;
      assert.equal(record.systemIdentifier, id);
      assert.equal(JSON.parse(readFileSync(path.join(repo, 'sources', SOURCE, 'wal', 'archive.json'), 'utf8')).systemIdentifier, id);

      const dest = path.join(work, 'fetched');
      await mkdir(dest);
      const fetched = await wal(['wal-fetch', segment, path.join(dest, 'RECOVERYXLOG'), '--source', SOURCE, '--repo', repo]);
      assert.equal(fetched.code, 0, fetched.stderr);
      assert.equal(sha256(await readFile(path.join(dest, 'RECOVERYXLOG'))), sha256(original));
      assert.deepEqual(tempLeftovers(dest), []);
    });

    test('pushing the same segment again succeeds; different content is refused and the archived copy kept', async () => {
      const { file: copy } = await segmentCopy('again');
      const same = await wal(['wal-push', copy, '--source', SOURCE, '--repo', repo]);
      assert.equal(same.code, 0, same.stderr);
      assert.match(same.stderr, /already archived with identical content/);

      const changed = Buffer.from(original);
      changed[changed.length - 100] = changed[changed.length - 100]! ^ 0xff;
      await writeFile(copy, changed);
      const different = await wal(['wal-push', copy, '--source', SOURCE, '--repo', repo]);
      assert.equal(different.code, 11, different.stderr);
      assert.match(different.stderr, /^pgkeep: .*already archived .*different content/);
      assert.equal(different.stderr.trim().split('\n').length, 1);

      const back = path.join(work, 'again', 'back');
      assert.equal((await wal(['wal-fetch', segment, back, '--source', SOURCE, '--repo', repo])).code, 0);
      assert.equal(sha256(await readFile(back)), sha256(original), 'the first copy is still what the archive returns');
    });

    test('a segment from another cluster (system identifier in its page header) is refused', async () => {
      const foreign = Buffer.from(original);
      foreign.writeBigUInt64LE(foreign.readBigUInt64LE(24) + 1n, 24);
      const file = path.join(work, 'foreign', '0000000100000000000000F0');
      await mkdir(path.dirname(file), { recursive: true });
      await writeFile(file, foreign);
      const result = await wal(['wal-push', file, '--source', SOURCE, '--repo', repo]);
      assert.equal(result.code, 11, result.stderr);
      assert.match(result.stderr, /belongs to the cluster with system identifier \d+, but this file comes from \d+/);
      assert.equal(existsSync(path.join(repo, 'sources', SOURCE, 'wal', '00000001', '0000000100000000000000F0.json')), false);
    });

    test('wal-fetch of a segment that is not archived exits 1 and writes nothing', async () => {
      const dest = path.join(work, 'missing');
      await mkdir(dest);
      const result = await wal(['wal-fetch', '0000000100000000000000FE', path.join(dest, 'RECOVERYXLOG'), '--source', SOURCE, '--repo', repo]);
      assert.equal(result.code, 1);
      assert.match(result.stderr, /0000000100000000000000FE is not in the WAL archive of source main/);
      assert.deepEqual(readdirSync(dest), []);
      // The full CLI (global options first) reaches the same command.
      const viaMain = await pgkeep(['--repo', repo, '--source', SOURCE, 'wal-fetch', '0000000100000000000000FE', path.join(dest, 'x')]);
      assert.equal(viaMain.code, 1, viaMain.stderr);
    });

    test('a damaged archived object fails wal-fetch with CHECKSUM_MISMATCH and leaves no file', async () => {
      const history = path.join(work, 'hist', '00000007.history');
      await mkdir(path.dirname(history), { recursive: true });
      await writeFile(history, '1\t0/3000000\tno recovery target specified\n');
      assert.equal((await wal(['wal-push', history, '--source', SOURCE, '--repo', repo])).code, 0);
      const dest = path.join(work, 'hist', 'out');
      await mkdir(dest);
      const ok = await wal(['wal-fetch', '00000007.history', path.join(dest, 'h'), '--source', SOURCE, '--repo', repo]);
      assert.equal(ok.code, 0, ok.stderr);
      assert.equal(await readFile(path.join(dest, 'h'), 'utf8'), '1\t0/3000000\tno recovery target specified\n');

      const folder = path.join(repo, 'sources', SOURCE, 'wal', '00000007');
      const object = readdirSync(folder).find((f) => f.endsWith('.zst'))!;
      const bytes = await readFile(path.join(folder, object));
      bytes[bytes.length - 5] = bytes[bytes.length - 5]! ^ 0x55;
      await writeFile(path.join(folder, object), bytes);
      const bad = await wal(['wal-fetch', '00000007.history', path.join(dest, 'h2'), '--source', SOURCE, '--repo', repo]);
      assert.equal(bad.code, 7, bad.stderr);
      assert.match(bad.stderr, /corrupt/);
      assert.deepEqual(readdirSync(dest), ['h']);
    });

    test('bad input: not a WAL file name, unknown source characters, no repository', async () => {
      const notWal = path.join(work, 'notes.txt');
      await writeFile(notWal, 'hello');
      const r1 = await wal(['wal-push', notWal, '--source', SOURCE, '--repo', repo]);
      assert.equal(r1.code, 11);
      assert.match(r1.stderr, /is not a WAL file/);
      const r2 = await wal(['wal-push', notWal, '--source', '../x', '--repo', repo]);
      assert.equal(r2.code, 2);
      const r3 = await wal(['wal-fetch', '000000010000000000000001', path.join(work, 'y'), '--source', SOURCE, '--repo', path.join(work, 'nothing-here')]);
      assert.equal(r3.code, 5);
      assert.match(r3.stderr, /no pgkeep repository at .*pgkeep init/);
    });
  });

  describe('WAL archive in an S3 repository', { concurrency: 1 }, () => {
    let s3: S3TestServer | undefined;
    after(async () => {
      await s3?.stop();
    });

    test('wal-push / wal-fetch through s3://bucket/prefix (the S3 driver loaded on demand), plain and encrypted', async () => {
      s3 = await startS3Server();
      const aws = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint };
      const bucket = await s3.bucket('pgkeep-wal');
      const key = path.join(work, 's3.key');
      const { publicKey } = await keygen(key);
      const { segment, file, original } = await segmentCopy('s3-src');
      const kinds = [
        ['plain', []],
        ['encrypted', ['--encrypt', '--recipient', publicKey]],
      ] as const;
      // one init at a time (runCommand sets the AWS variables in this process for its run) ...
      for (const [prefix, init] of kinds) {
        const created = await runCommand(['init', '--repo', `s3://${bucket}/${prefix}`, ...init], { env: aws });
        assert.equal(created.code, 0, created.stderr);
      }
      // ... then the two repositories' real wal-push and wal-fetch processes side by side: each mostly waits for its
      // program to start and load the S3 driver
      await Promise.all(
        kinds.map(async ([prefix]) => {
          const s3Repo = `s3://${bucket}/${prefix}`;
          const pushed = await wal(['wal-push', file, '--source', 'main', '--repo', s3Repo], { env: aws });
          assert.equal(pushed.code, 0, pushed.stderr);
          const again = await wal(['wal-push', file, '--source', 'main', '--repo', s3Repo], { env: aws });
          assert.equal(again.code, 0, again.stderr);
          assert.match(again.stderr, /identical content/);
          const dest = path.join(work, `s3-out-${prefix}`);
          await mkdir(dest);
          const fetched = await wal(['wal-fetch', segment, path.join(dest, 'seg'), '--source', 'main', '--repo', s3Repo], { env: { ...aws, PGKEEP_AGE_IDENTITY_FILE: key } });
          assert.equal(fetched.code, 0, fetched.stderr);
          assert.equal(sha256(await readFile(path.join(dest, 'seg'))), sha256(original));
          const missing = await wal(['wal-fetch', '0000000100000000000000FD', path.join(dest, 'none'), '--source', 'main', '--repo', s3Repo], { env: aws });
          assert.equal(missing.code, 1, missing.stderr);
          assert.deepEqual(readdirSync(dest), ['seg']);
        }),
      );
    });
  });

  describe('WAL archive in an encrypted repository', { concurrency: 1 }, () => {
    test('segments are stored as age files; wal-fetch needs and uses the identity', async () => {
      const key = path.join(work, 'wal.key');
      const { publicKey } = await keygen(key);
      const encRepo = path.join(work, 'enc');
      assert.equal((await runCommand(['init', '--repo', encRepo, '--encrypt', '--recipient', publicKey])).code, 0);

      const { segment, file, original } = await segmentCopy('enc-src');
      const pushed = await wal(['wal-push', file, '--source', 'enc', '--repo', encRepo]);
      assert.equal(pushed.code, 0, pushed.stderr);
      const folder = path.join(encRepo, 'sources', 'enc', 'wal', segment.slice(0, 8));
      const object = readdirSync(folder).find((f) => f.endsWith('.zst.age'))!;
      assert.ok(object, `an .age object in ${readdirSync(folder)}`);
      assert.match(readFileSync(path.join(folder, object)).subarray(0, 30).toString('latin1'), /^age-encryption\.org\/v1/);

      const dest = path.join(work, 'enc-out');
      await mkdir(dest);
      const noKey = await wal(['wal-fetch', segment, path.join(dest, 'seg'), '--source', 'enc', '--repo', encRepo]);
      assert.equal(noKey.code, 2, noKey.stderr);
      assert.match(noKey.stderr, /encrypted: pass --identity/);
      assert.deepEqual(readdirSync(dest), []);
      const withKey = await wal(['wal-fetch', segment, path.join(dest, 'seg'), '--source', 'enc', '--repo', encRepo], { env: { PGKEEP_AGE_IDENTITY_FILE: key } });
      assert.equal(withKey.code, 0, withKey.stderr);
      assert.equal(sha256(await readFile(path.join(dest, 'seg'))), sha256(original));
    });

    test('without zstd-napi (PGKEEP_ZSTD=cli) wal-push streams through the zstd program; the in-memory path reads the result as identical', async () => {
      const key = path.join(work, 'wal.key');
      const { segment, file, original } = await segmentCopy('stream-src');
      for (const [name, repository] of [['plain', path.join(work, 'streamed')], ['encrypted', path.join(work, 'enc')]] as const) {
        if (name === 'plain') assert.equal((await runCommand(['init', '--repo', repository])).code, 0);
        const streamed = await wal(['wal-push', file, '--source', 'streamed', '--repo', repository], { env: { PGKEEP_ZSTD: 'cli' } });
        assert.equal(streamed.code, 0, `${name}: ${streamed.stderr}`);
        const again = await wal(['wal-push', file, '--source', 'streamed', '--repo', repository]);
        assert.equal(again.code, 0, `${name}: ${again.stderr}`);
        assert.match(again.stderr, /already archived with identical content/, name);
        const out = path.join(work, `streamed-${name}`);
        const fetched = await wal(['wal-fetch', segment, out, '--source', 'streamed', '--repo', repository], { env: { PGKEEP_AGE_IDENTITY_FILE: key } });
        assert.equal(fetched.code, 0, `${name}: ${fetched.stderr}`);
        assert.equal(sha256(await readFile(out)), sha256(original), name);
      }
    });
  });
});
