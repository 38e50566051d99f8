import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { mkdtemp, open, readdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { json, type CliResult } from '../support/cli.js';
import { keygenInProcess as keygen, runCommand as pgkeep } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';

let cluster: PgCluster;
let work: string;
let s3: S3TestServer | undefined;

useClusterAndWorkFolder('multi-repo', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  await cluster.query(`CREATE TABLE notes AS SELECT g AS id, 'note ' || g AS body FROM generate_series(1, 5000) g`, [], 'app');
});

after(async () => {
  await s3?.stop();
});

/**
 * A folder with a pgkeep.yaml whose source "app" writes to `repos`; local
 * ones not made yet are made plain: these tests read and damage each
 * repository's stored objects.
 */
async function configWith(repos: string[], extra = ''): Promise<string> {
  for (const repo of repos) {
    if (!repo.includes('://') && !existsSync(path.join(repo, 'pgkeep.json'))) assert.equal((await pgkeep(['init', '--repo', repo, '--plain'])).code, 0);
  }
  const dir = await mkdtemp(path.join(work, 'cfg-'));
  const lines = ['sources:', '  app:', `    db: ${JSON.stringify(cluster.url('app'))}`, '    repos:', ...repos.map((r) => `      - ${JSON.stringify(r)}`), extra];
  await writeFile(path.join(dir, 'pgkeep.yaml'), `${lines.join('\n')}\n`);
  return dir;
}

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
const backupFolder = (repo: string, id: string) => path.join(repo, 'sources', 'app', 'backups', id);
const manifestIn = (repo: string, id: string) => JSON.parse(readFileSync(path.join(backupFolder(repo, id), 'manifest.json'), 'utf8'));

async function count(database: string): Promise<number> {
  const [row] = await cluster.query<{ n: string }>('SELECT count(*) AS n FROM notes', [], database);
  return Number(row!.n);
}

/** Lines of stderr that are not progress information. */
function errorLines(result: CliResult): string[] {
  return result.stderr.trim().split('\n').filter((l) => l !== '' && !l.startsWith('backing up') && !l.startsWith('verifying') && !l.startsWith('restoring'));
}

describe('several repositories per source', () => {
  test('two local repositories: one pg_dump, the same raw SHA-256 in both, each with its own stored digests; list shows both', async () => {
    const a = path.join(work, 'two-a');
    const b = path.join(work, 'two-b');
    const cwd = await configWith([a, b]);
    for (const format of ['custom', 'directory']) {
      const backup = await pgkeep(['backup', '--format', format, '--json'], { cwd });
      assert.equal(backup.code, 0, backup.stderr);
      const id = json(backup).id;
      const [ma, mb] = [manifestIn(a, id), manifestIn(b, id)];
      assert.equal(ma.id, mb.id);
      assert.deepEqual(ma.objects.map((o: { name: string }) => o.name), mb.objects.map((o: { name: string }) => o.name));
      for (const [i, object] of ma.objects.entries()) {
        assert.deepEqual(object.raw, mb.objects[i].raw, `raw digest of ${object.name}`);
        assert.equal(sha256(path.join(backupFolder(a, id), object.name)), object.stored.sha256);
        assert.equal(sha256(path.join(backupFolder(b, id), object.name)), mb.objects[i].stored.sha256);
      }
      assert.deepEqual(ma.tables, mb.tables);
      for (const repo of [a, b]) {
        const verify = await pgkeep(['verify', id, '--repo', repo]);
        assert.equal(verify.code, 0, verify.stderr);
      }
    }

    const list = await pgkeep(['list', '--json'], { cwd });
    assert.equal(list.code, 0, list.stderr);
    const listed = json(list);
    assert.equal(listed.length, 2, 'one row per backup, not per copy');
    for (const entry of listed) assert.deepEqual(entry.repositories, [a, b]);
    const text = await pgkeep(['list'], { cwd });
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /REPOS/);
    assert.match(text.stdout, /local1,local2/);
    // --repo still means exactly one repository
    const single = await pgkeep(['list', '--json', '--repo', b], { cwd });
    assert.equal(single.code, 0, single.stderr);
    assert.equal(json(single)[0].repositories, undefined);
  });

  test('one encrypted and one plain repository: each object encrypted only where the repository is', async () => {
    const keyFile = path.join(work, 'multi.key');
    const { publicKey } = await keygen(keyFile);
    const secret = path.join(work, 'enc-secret');
    const plain = path.join(work, 'enc-plain');
    assert.equal((await pgkeep(['init', '--repo', secret, '--plain', '--encrypt', '--recipient', publicKey])).code, 0);
    const cwd = await configWith([secret, plain]);
    const backup = await pgkeep(['backup', '--json'], { cwd });
    assert.equal(backup.code, 0, backup.stderr);
    const id = json(backup).id;
    const [ms, mp] = [manifestIn(secret, id), manifestIn(plain, id)];
    assert.equal(ms.objects[0].name, 'dump.zst.age');
    assert.deepEqual(ms.objects[0].encryption.recipients, [publicKey]);
    assert.equal(mp.objects[0].name, 'dump.zst');
    assert.equal(mp.objects[0].encryption, null);
    assert.deepEqual(ms.objects[0].raw, mp.objects[0].raw);
    assert.notEqual(ms.objects[0].stored.sha256, mp.objects[0].stored.sha256);
    assert.equal(readFileSync(path.join(backupFolder(secret, id), 'dump.zst.age')).subarray(0, 21).toString(), 'age-encryption.org/v1');

    assert.equal((await pgkeep(['verify', id, '--repo', plain])).code, 0);
    const verify = await pgkeep(['verify', id, '--identity', keyFile], { cwd });
    assert.equal(verify.code, 0, verify.stderr);
    assert.match(verify.stderr, new RegExp(`in ${secret.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`), 'the first repository in config order is used');
    const restore = await pgkeep(['restore', 'latest', '--to', 'from_encrypted_first', '--identity', keyFile], { cwd });
    assert.equal(restore.code, 0, restore.stderr);
    assert.equal(await count('from_encrypted_first'), 5000);
  });

  test('a local repository and an S3 bucket', async () => {
    s3 ??= await startS3Server();
    const bucket = await s3.bucket('pgkeep-multi');
    const local = path.join(work, 'with-s3');
    const remote = `s3://${bucket}/app`;
    const cwd = await configWith([local, remote]);
    const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint };
    // plain like the local one (configWith): the test compares the raw records, whose SHA-256 only a plain repository keeps
    assert.equal((await pgkeep(['init', '--repo', remote, '--plain'], { env })).code, 0);
    const backup = await pgkeep(['backup', '--json'], { cwd, env });
    assert.equal(backup.code, 0, backup.stderr);
    const id = json(backup).id;
    const list = await pgkeep(['list'], { cwd, env });
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, new RegExp(`${id}.*local,s3`));
    const listJson = await pgkeep(['list', '--json'], { cwd, env });
    assert.deepEqual(json(listJson)[0].repositories, [local, remote]);
    const verify = await pgkeep(['verify', id, '--repo', remote, '--json'], { cwd, env });
    assert.equal(verify.code, 0, verify.stderr);
    const fromS3 = await pgkeep(['show', id, '--repo', remote, '--json'], { cwd, env });
    assert.deepEqual(json(fromS3).objects[0].raw, manifestIn(local, id).objects[0].raw);
  });

  test('an S3 repository failing mid-backup is detached and the local one completes; per-repository S3 options apply', async () => {
    s3 ??= await startS3Server();
    const bucket = await s3.bucket('pgkeep-failing');
    const local = path.join(work, 'beside-failing-s3');
    const remote = `s3://${bucket}/app`;
    const dir = await mkdtemp(path.join(work, 'cfg-'));
    // the S3 repository has options of its own, next to a plain local one; parts of the smallest size S3 takes
    // (5 MiB, not the default first 8), so a dump of half the rows still goes up in parts
    await writeFile(
      path.join(dir, 'pgkeep.yaml'),
      ['sources:', '  app:', `    db: ${JSON.stringify(cluster.url('app'))}`, '    repos:', `      - ${JSON.stringify(local)}`, `      - url: ${JSON.stringify(remote)}`, '        s3:', '          storageClass: STANDARD_IA', '          sse: AES256', '          partSizeMiB: 5', ''].join('\n'),
    );
    const env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AWS_REGION: s3.region, AWS_ENDPOINT_URL: s3.endpoint };
    // about 6.5 MiB compressed: the dump goes to S3 in 5 MiB parts, while pg_dump is still running. Base64 of 32
    // pseudo-random bytes a row, which zstd can hardly shrink: two thirds of the bytes hex digits took for as much
    await cluster.query(`CREATE TABLE noise AS SELECT g AS id, encode(sha256(int4send(g)), 'base64') AS a FROM generate_series(1, 200000) g`, [], 'app');
    // plain: the requests for the dump's object are checked (a deduplicating repository writes packs)
    for (const repo of [local, remote]) assert.equal((await pgkeep(['init', '--repo', repo, '--plain'], { env })).code, 0);
    try {
      await s3.clearRequests();
      const first = await pgkeep(['backup', '--json'], { cwd: dir, env });
      assert.equal(first.code, 0, first.stderr);
      const dumpWrites = (await s3.requests()).filter((r) => r.path.includes('/dump.zst') && (r.method === 'PUT' || r.query === 'uploads' || r.query.startsWith('uploads')));
      assert.ok(dumpWrites.length > 0, 'the dump was written to S3');
      assert.ok(dumpWrites.filter((r) => r.query.includes('partNumber')).length >= 2, 'the dump went up in parts');
      const create = dumpWrites.find((r) => r.method === 'POST' || !r.query.includes('partNumber'));
      assert.equal(create?.headers['x-amz-storage-class'], 'STANDARD_IA', 'the repository entry\'s storage class');
      assert.equal(create?.headers['x-amz-server-side-encryption'], 'AES256', 'the repository entry\'s SSE');

      // from now on every part upload to this bucket fails, retries included, as a broken endpoint would
      await s3.clearRequests();
      await s3.failNext(1000, { method: 'PUT', pathIncludes: `/${bucket}/`, queryIncludes: 'partNumber' }, 500, 'InternalError');
      const backup = await pgkeep(['backup', '--json'], { cwd: dir, env });
      assert.equal(backup.code, 10, backup.stderr);
      const error = json(backup).error;
      assert.equal(error.code, 'BACKUP_PARTIAL');
      assert.deepEqual(error.details.repositories, [local]);
      assert.equal(error.details.failed[0].repository, remote);
      // the server answers 500 while the part is still being sent, so the client sees either the answer or the closed connection
      assert.match(error.details.failed[0].code, /^STORAGE_(IO|NETWORK)$/);
      assert.match(error.details.failed[0].message, /InternalError|closed the connection \((EPIPE|ECONNRESET)\) while writing or reading s3:\/\/pgkeep-failing\/app\//);
      const log = await s3.requests();
      assert.ok(log.some((r) => r.status === 500 && r.query.includes('partNumber')), 'a part upload failed');
      assert.ok(!log.some((r) => r.method === 'POST' && r.query.includes('uploadId') && r.path.includes('/dump.zst')), 'the upload was never completed');
      const id = error.details.id;
      // where the backup is: local only; verify checks the copies there are and says where it is missing
      const list = await pgkeep(['list', '--json'], { cwd: dir, env });
      assert.deepEqual(json(list).find((b: { id: string }) => b.id === id).repositories, [local]);
      const verify = await pgkeep(['verify', id, '--json'], { cwd: dir, env });
      assert.equal(verify.code, 0, verify.stderr);
      assert.deepEqual(json(verify).copies.map((c: { repository: string; ok: boolean }) => [c.repository, c.ok]), [[local, true]]);
      assert.deepEqual(json(verify).missingFrom, [remote]);
      const inS3 = await pgkeep(['list', '--repo', remote, '--json'], { cwd: dir, env });
      assert.equal(inS3.code, 0, inS3.stderr);
      assert.deepEqual(json(inS3).map((b: { id: string }) => b.id), [json(first).id], 'only the first backup is visible in S3');
    } finally {
      await cluster.query('DROP TABLE IF EXISTS noise', [], 'app');
    }
  });

  test('a repository that fills up mid-backup is detached; the other completes; exit code BACKUP_PARTIAL', async (t) => {
    const mountPoint = await mkdtemp(path.join(work, 'tiny-'));
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=600k,mode=0700', 'tmpfs', mountPoint]);
    if (mounted.status !== 0) return t.skip(`cannot mount a tmpfs here: ${mounted.stderr}`);
    try {
      // ~1 MB stored, beyond the 600 KiB of the tmpfs: base64 of 32 pseudo-random bytes a row, which zstd can hardly
      // shrink (a bytea dumps as hex digits: twice the bytes to dump and restore for as much stored)
      await cluster.query("CREATE TABLE IF NOT EXISTS big AS SELECT g, encode(sha256(int4send(g)), 'base64') AS b FROM generate_series(1, 30000) g", [], 'app');
      const full = path.join(mountPoint, 'repo');
      const good = path.join(work, 'full-good');
      const cwd = await configWith([full, good]);
      const backup = await pgkeep(['backup', '--json'], { cwd });
      assert.equal(backup.code, 10, backup.stderr);
      const lines = errorLines(backup);
      assert.equal(lines.length, 1, `one line of error, got: ${backup.stderr}`);
      assert.match(lines[0]!, /^pgkeep: backup \S+ of app was not written to /);
      assert.ok(lines[0]!.includes(full), 'names the full repository');
      assert.match(lines[0]!, /no space left/);
      assert.ok(lines[0]!.includes(`it is complete in ${good}`));
      const error = json(backup).error;
      assert.equal(error.code, 'BACKUP_PARTIAL');
      assert.deepEqual(error.details.repositories, [good]);
      const id = error.details.id;

      // the good repository has a complete, verifiable backup
      const verify = await pgkeep(['verify', id, '--repo', good]);
      assert.equal(verify.code, 0, verify.stderr);
      // the full one has no visible backup and no temp files
      const backups = path.join(full, 'sources', 'app', 'backups');
      if (existsSync(backups)) assert.deepEqual(await readdir(backups), []);
      const leftovers = spawnSync('find', [full, '-name', '.pgkeep-tmp-*'], { encoding: 'utf8' }).stdout.trim();
      assert.equal(leftovers, '', 'no temp files left');
      assert.ok(!existsSync(path.join(full, 'sources', 'app', 'locks', 'source.lock')), 'the lock was released');

      // list reads both and shows where the backup is; restore finds it in the second
      const list = await pgkeep(['list', '--json'], { cwd });
      assert.equal(list.code, 0, list.stderr);
      assert.deepEqual(json(list).map((b: { id: string; repositories: string[] }) => [b.id, b.repositories]), [[id, [good]]]);
      const restore = await pgkeep(['restore', 'latest', '--to', 'after_partial'], { cwd });
      assert.equal(restore.code, 0, restore.stderr);
      assert.equal(await count('after_partial'), 5000);
    } finally {
      spawnSync('umount', [mountPoint]);
      await cluster.query('DROP TABLE IF EXISTS big', [], 'app');
    }
  });

  test('restore falls back to the next repository when the first copy is corrupt', async () => {
    const a = path.join(work, 'fallback-a');
    const b = path.join(work, 'fallback-b');
    const cwd = await configWith([a, b]);
    const backup = await pgkeep(['backup', '--json'], { cwd });
    assert.equal(backup.code, 0, backup.stderr);
    const id = json(backup).id;
    const object = path.join(backupFolder(a, id), 'dump.zst');
    const handle = await open(object, 'r+');
    const size = (await handle.stat()).size;
    const [byte] = readFileSync(object).subarray(Math.floor(size / 2), Math.floor(size / 2) + 1);
    await handle.write(Buffer.from([byte! ^ 0xff]), 0, 1, Math.floor(size / 2));
    await handle.close();

    // verify checks every copy: the damaged one is named, and so is the intact one restore will use
    const verify = await pgkeep(['verify', id], { cwd });
    assert.equal(verify.code, 7, verify.stderr);
    assert.match(verify.stderr, new RegExp(`\\npgkeep: backup ${id} is damaged in ${a}: .*; the copy in ${b} is intact \\(restore falls back to it\\)\\n$`));
    assert.match(verify.stdout, new RegExp(`${b}:\\n(.*\\n)*backup ${id} is intact`));
    assert.equal((await pgkeep(['verify', id, '--repo', b])).code, 0);

    const restore = await pgkeep(['restore', id, '--to', 'from_fallback', '--json'], { cwd });
    assert.equal(restore.code, 0, restore.stderr);
    assert.match(restore.stderr, /is damaged .*restoring from .*fallback-b instead/);
    assert.equal(await count('from_fallback'), 5000);
    const databases = (await cluster.query<{ datname: string }>('SELECT datname FROM pg_database')).map((r) => r.datname);
    assert.ok(!databases.some((d) => d.includes('_pgkeep_')), 'no half-restored database left');

    // with --repo, only that repository is used: no fallback
    const only = await pgkeep(['restore', id, '--to', 'from_corrupt_only', '--repo', a], { cwd });
    assert.equal(only.code, 7, only.stderr);
    assert.ok(!(await cluster.query<{ datname: string }>('SELECT datname FROM pg_database')).some((r) => r.datname === 'from_corrupt_only'));
  });

  test('repos is validated: a list of URLs, not empty, no duplicates', async () => {
    const dir = await mkdtemp(path.join(work, 'bad-'));
    for (const [yaml, message] of [
      ['repos: ./one\n', /pgkeep\.yaml: repos: "repos" takes a list of repository paths or URLs/],
      ['repos: []\n', /pgkeep\.yaml: repos: "repos" needs at least one repository/],
      ['sources:\n  app:\n    repos: [./a, ./a]\n', /pgkeep\.yaml: sources\.app\.repos: "repos" lists the same repository twice/],
    ] as const) {
      await writeFile(path.join(dir, 'pgkeep.yaml'), yaml);
      const result = await pgkeep(['list'], { cwd: dir });
      assert.equal(result.code, 2, result.stderr);
      assert.match(result.stderr, message);
    }
  });
});
