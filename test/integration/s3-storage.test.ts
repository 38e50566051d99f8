/**
 * The S3 driver against a real S3-compatible server (s3rver on 127.0.0.1, in a
 * child process): the shared conformance suite, then what only S3 has.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { Repository } from '../../src/repository/repository.js';
import { acquireSourceLock } from '../../src/repository/source-lock.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { PROBE_PREFIX, S3Storage, parseS3Url, type S3StorageOptions } from '../../src/storage/s3-storage.js';
import type { Storage } from '../../src/storage/storage.js';
import { startS3Server, type RecordedRequest, type S3TestServer } from '../support/s3-server.js';
import { collect, patternChunk, readAll, storageConformance } from '../support/storage-conformance.js';

const MiB = 1 << 20;

// Nothing here may fall back to the EC2 metadata service or pick up a developer's AWS setup.
for (const name of Object.keys(process.env)) if (name.startsWith('AWS_')) delete process.env[name];
process.env.AWS_EC2_METADATA_DISABLED = 'true';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

function s3Options(server: S3TestServer, extra: S3StorageOptions = {}): S3StorageOptions {
  return {
    endpoint: server.endpoint,
    region: server.region,
    credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    ...extra,
  };
}

function open(server: S3TestServer, url: string, extra: S3StorageOptions = {}): S3Storage {
  const storage = openStorage(url, { s3: s3Options(server, extra) });
  assert.ok(storage instanceof S3Storage);
  return storage;
}

async function putString(storage: Storage, key: string, data: string | Buffer): Promise<void> {
  await storage.put(key, Readable.from([Buffer.from(data)]));
}

/** Runs `fn` over `items` with at most `limit` in flight. */
async function pool<T>(items: T[], limit: number, fn: (item: T) => Promise<void>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: limit }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

function isCode(code: string, message?: RegExp): (error: unknown) => true {
  return (error) => {
    assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${String((error as Error)?.stack ?? error)}`);
    assert.equal(error.code, code, error.message);
    if (message) assert.match(error.message, message);
    return true;
  };
}

/**
 * Pattern chunk `i` of 1 MiB, made once: the multipart tests below stream the same few chunks again and again,
 * and making one byte by byte costs several ms of this process's CPU.
 */
const mibChunks = new Map<number, Buffer>();
function mibChunk(i: number): Buffer {
  let chunk = mibChunks.get(i);
  if (!chunk) mibChunks.set(i, (chunk = patternChunk(i, MiB)));
  return chunk;
}

const objectRequests = (log: RecordedRequest[], keyPart: string) => log.filter((r) => r.path.includes(keyPart));
const isUploadPart = (r: RecordedRequest) => r.method === 'PUT' && /(^|&)partNumber=/.test(r.query);
const isCreateUpload = (r: RecordedRequest) => r.method === 'POST' && /(^|&)uploads(=|&|$)/.test(r.query);
const isComplete = (r: RecordedRequest) => r.method === 'POST' && /(^|&)uploadId=/.test(r.query);
const isAbortUpload = (r: RecordedRequest) => r.method === 'DELETE' && /(^|&)uploadId=/.test(r.query);

// ---- the shared conformance suite, on both kinds of server ------------------

let plain: S3TestServer | undefined;
let conditional: S3TestServer | undefined;
let counter = 0;

async function plainServer(): Promise<S3TestServer> {
  plain ??= await startS3Server();
  return plain;
}
async function conditionalServer(): Promise<S3TestServer> {
  conditional ??= await startS3Server({ conditionalWrites: true });
  return conditional;
}

after(async () => {
  await plain?.stop();
  await conditional?.stop();
});

// s3rver as it is: it ignores If-None-Match, so putIfAbsent is emulated. A fresh bucket each time, used at its root.
storageConformance('s3 (bucket root; server ignores If-None-Match)', async () => {
  const server = await plainServer();
  const bucket = await server.bucket(`conf-${++counter}`);
  return { storage: open(server, `s3://${bucket}`), cleanup: async () => undefined };
});

// With AWS's If-None-Match semantics: a fresh prefix each time, in a bucket that holds other prefixes too.
storageConformance('s3 (prefix; conditional writes)', async () => {
  const server = await conditionalServer();
  const bucket = await server.bucket('shared');
  const storage = open(server, `s3://${bucket}/team/pgkeep-${++counter}`);
  // a neighbour whose keys share the string prefix must never show up
  await putString(open(server, `s3://${bucket}/team`), `pgkeep-${counter}x/neighbour`, 'n');
  return { storage, cleanup: async () => undefined };
});

// ---- S3 specifics -----------------------------------------------------------

describe('S3Storage specifics', () => {
  let server: S3TestServer;
  let native: S3TestServer;

  before(async () => {
    server = await plainServer();
    native = await conditionalServer();
  });

  describe('URLs and options', () => {
    it('parses s3://bucket/prefix, normalises slashes, and describes itself without credentials', () => {
      assert.deepEqual(parseS3Url('s3://bucket'), { bucket: 'bucket', prefix: '' });
      assert.deepEqual(parseS3Url('s3://bucket/'), { bucket: 'bucket', prefix: '' });
      assert.deepEqual(parseS3Url('s3://my.bucket-1/a//b/c/'), { bucket: 'my.bucket-1', prefix: 'a/b/c' });
      const storage = openStorage('s3://bucket/a//b/', { s3: { credentials: { accessKeyId: 'AKIDSECRETISH', secretAccessKey: 'topsecret' } } });
      assert.equal(storage.location, 's3://bucket/a/b');
      assert.deepEqual(storage.capabilities, { posixModes: false, conditionalCreate: false, remote: true });
      assert.doesNotMatch(JSON.stringify(storage.location), /AKID|topsecret/);
    });

    it('refuses credentials, queries, bad bucket names and ".." in the URL, without echoing secrets', () => {
      assert.throws(() => openStorage('s3://AKIAEXAMPLE:hunter2@bucket/x'), (error) => {
        isCode('CONFIG_INVALID')(error);
        assert.doesNotMatch((error as Error).message, /hunter2|AKIAEXAMPLE/);
        return true;
      });
      assert.throws(() => openStorage('s3://bucket/x?region=eu-west-1'), isCode('CONFIG_INVALID', /query/));
      assert.throws(() => openStorage('s3://b/x'), isCode('CONFIG_INVALID', /bucket name/));
      assert.throws(() => openStorage('s3:///x'), isCode('CONFIG_INVALID'));
      assert.throws(() => openStorage('s3://bucket/a/../b'), PgkeepError);
      assert.throws(() => openStorage('gs://bucket/x'), isCode('CONFIG_INVALID', /gs:\/\//));
    });

    it('validates options', () => {
      assert.throws(() => openStorage('s3://bucket', { s3: { partSize: MiB } }), isCode('CONFIG_INVALID', /partSize/));
      assert.throws(() => openStorage('s3://bucket', { s3: { pageSize: 1001 } }), isCode('CONFIG_INVALID', /pageSize/));
      assert.throws(() => openStorage('s3://bucket', { s3: { kmsKeyId: 'k' } }), isCode('CONFIG_INVALID', /aws:kms/));
    });

    it('keys cannot escape the prefix', async () => {
      const storage = open(server, `s3://${await server.bucket('escape')}/repo`);
      await assert.rejects(storage.put('../outside', Readable.from([Buffer.from('x')])), PgkeepError);
      await assert.rejects(storage.putIfAbsent('a/../../outside', Buffer.from('x')), PgkeepError);
      assert.deepEqual(await collect(open(server, 's3://escape').list('', { recursive: true })), []);
    });
  });

  describe('the AWS default chain', () => {
    const saved = { ...process.env };
    after(() => {
      for (const name of Object.keys(process.env)) if (!(name in saved)) delete process.env[name];
      Object.assign(process.env, saved);
    });

    it('takes credentials, region and endpoint from AWS_* variables, with path-style addressing for the endpoint', async () => {
      const bucket = await server.bucket('from-env');
      process.env.AWS_ACCESS_KEY_ID = server.accessKeyId;
      process.env.AWS_SECRET_ACCESS_KEY = server.secretAccessKey;
      process.env.AWS_REGION = 'eu-central-1';
      // localhost, not an IP: virtual-hosted addressing would ask for from-env.localhost
      process.env.AWS_ENDPOINT_URL_S3 = server.endpoint.replace('127.0.0.1', 'localhost');
      try {
        await server.clearRequests();
        const storage = openStorage(`s3://${bucket}/env-repo`);
        await putString(storage, 'hello.txt', 'from the environment');
        assert.equal((await readAll(await storage.get('hello.txt'))).toString(), 'from the environment');
        const put = (await server.requests()).find((r) => r.method === 'PUT');
        assert.equal(put?.path, `/${bucket}/env-repo/hello.txt`, 'path-style request');
      } finally {
        for (const name of ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_REGION', 'AWS_ENDPOINT_URL_S3']) delete process.env[name];
      }
    });

    it('takes them from a profile (AWS_PROFILE with shared config and credentials files)', async () => {
      const bucket = await server.bucket('from-profile');
      const dir = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-aws-'));
      try {
        await fs.writeFile(path.join(dir, 'config'), `[profile pgkeep-test]\nregion = us-west-2\nendpoint_url = ${server.endpoint}\n`);
        await fs.writeFile(path.join(dir, 'credentials'), `[pgkeep-test]\naws_access_key_id = ${server.accessKeyId}\naws_secret_access_key = ${server.secretAccessKey}\n`);
        process.env.AWS_CONFIG_FILE = path.join(dir, 'config');
        process.env.AWS_SHARED_CREDENTIALS_FILE = path.join(dir, 'credentials');
        process.env.AWS_PROFILE = 'pgkeep-test';
        const storage = openStorage(`s3://${bucket}`);
        await putString(storage, 'p.txt', 'from a profile');
        assert.deepEqual(
          (await collect(storage.list(''))).map((e) => e.path),
          ['p.txt'],
        );
      } finally {
        for (const name of ['AWS_CONFIG_FILE', 'AWS_SHARED_CREDENTIALS_FILE', 'AWS_PROFILE']) delete process.env[name];
        await fs.rm(dir, { recursive: true, force: true });
      }
    });
  });

  describe('listing many keys', () => {
    it('pages through 30 keys 7 at a time: recursive, non-recursive with folders, removeFolder, isEmpty', async () => {
      const bucket = await server.bucket('paged');
      const storage = open(server, `s3://${bucket}/repo`, { pageSize: 7 });
      const objects = Array.from({ length: 30 }, (_, i) => `many/obj-${String(i).padStart(3, '0')}`);
      const nested = Array.from({ length: 10 }, (_, i) => `many/dir-${String(i).padStart(2, '0')}/inner`);
      await pool([...objects, ...nested], 8, (key) => putString(storage, key, key));
      await server.clearRequests();

      const all = (await collect(storage.list('many', { recursive: true }))).map((e) => e.path);
      assert.deepEqual(all, [...objects, ...nested].sort());
      const lists = (await server.requests()).filter((r) => r.method === 'GET' && r.query.includes('list-type=2'));
      assert.equal(lists.length, Math.ceil(40 / 7), 'one request per page of 7');
      assert.ok(lists.slice(1).every((r) => r.query.includes('continuation-token=')));

      const direct = await collect(storage.list('many'));
      assert.deepEqual(
        direct.map((e) => `${e.kind}:${e.path}`),
        [...nested.map((k) => `folder:${k.replace('/inner', '')}`), ...objects.map((k) => `object:${k}`)].sort((a, b) =>
          a.split(':')[1]! < b.split(':')[1]! ? -1 : 1,
        ),
      );

      await server.clearRequests();
      await storage.removeFolder('many');
      // s3rver deletes a batch's keys in parallel and sometimes trips over its own folder
      // clean-up (HTTP 500): the SDK retries those, so count the batches that succeeded
      const deletes = (await server.requests()).filter((r) => r.method === 'POST' && r.query.startsWith('delete') && r.status === 200);
      assert.equal(deletes.length, Math.ceil(40 / 7), 'one DeleteObjects per page');
      assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
      assert.equal(await storage.isEmpty(), true);
    });

    it('lists and removes more than 1000 keys with the default page size', async () => {
      const bucket = await server.bucket('thousands');
      const storage = open(server, `s3://${bucket}/r`);
      // One key past a page: the second list page and the second DeleteObjects
      // batch are what is tested. The keys are stored straight into the
      // server's store (s3rver's own object files): writing is not the subject,
      // and 1,001 PUTs through the SDK cost seconds of CPU on both sides.
      const keys = Array.from({ length: 1_001 }, (_, i) => `big/k${String(i).padStart(5, '0')}`);
      await server.seed(bucket, keys.map((key) => `r/${key}`), 'x');
      assert.deepEqual(await readAll(await storage.get(keys[1_000]!)), Buffer.from('x'), 'a seeded object reads back through the driver');
      await server.clearRequests();
      const listed = await collect(storage.list('big', { recursive: true }));
      assert.equal(listed.length, keys.length);
      assert.deepEqual(
        listed.map((e) => e.path),
        keys,
      );
      assert.equal((await collect(storage.list('big'))).length, keys.length, 'non-recursive too');
      await storage.removeFolder('big');
      const log = await server.requests();
      const ok = log.filter((r) => r.status === 200);
      assert.equal(ok.filter((r) => r.method === 'GET' && r.query.includes('list-type=2') && !r.query.includes('delimiter')).length, 2 + 2);
      assert.equal(ok.filter((r) => r.method === 'POST' && r.query.startsWith('delete')).length, 2, 'two DeleteObjects batches (1000 + 1)');
      assert.equal(await storage.isEmpty(), true);
    });
  });

  describe('multipart uploads', () => {
    it('streams 11 MiB in 5 MiB parts (the last one short) and reads it back whole and by range', async () => {
      const bucket = await server.bucket('multipart');
      const storage = open(server, `s3://${bucket}/mp`, { partSize: 5 * MiB, queueSize: 2 });
      // three parts, more than the queue's two, and a short last one: the size beyond that is not the subject (the 128 MiB test's is)
      const chunks = 11;
      const hash = createHash('sha256');
      async function* produce(): AsyncGenerator<Buffer> {
        for (let i = 0; i < chunks; i++) {
          const chunk = mibChunk(i);
          hash.update(chunk);
          yield chunk;
        }
      }
      await server.clearRequests();
      const result = await storage.put('dump.zst', Readable.from(produce()));
      assert.equal(result.size, chunks * MiB);

      const log = objectRequests(await server.requests(), '/mp/dump.zst');
      assert.equal(log.filter(isCreateUpload).length, 1);
      assert.equal(log.filter(isUploadPart).length, 3, '5 + 5 + 1 MiB');
      assert.equal(log.filter(isComplete).length, 1);

      const back = createHash('sha256');
      let size = 0;
      for await (const chunk of await storage.get('dump.zst')) {
        back.update(chunk as Buffer);
        size += (chunk as Buffer).length;
      }
      assert.equal(size, chunks * MiB);
      assert.equal(back.digest('hex'), hash.digest('hex'));
      const start = 5 * MiB - 3;
      const part = await readAll(await storage.get('dump.zst', { start, end: start + 10 }));
      assert.deepEqual(part, Buffer.concat([mibChunk(4), mibChunk(5)]).subarray(MiB - 3, MiB + 7));
      assert.equal((await storage.stat('dump.zst'))?.size, chunks * MiB);
    });

    it('memory stays bounded by the part size, not the object size (128 MiB in 5 MiB parts)', async (t) => {
      const bucket = await server.bucket('memory');
      const storage = open(server, `s3://${bucket}`, { partSize: 5 * MiB, queueSize: 2 });
      const pool = Array.from({ length: 16 }, (_, i) => mibChunk(i));
      const body = (mib: number) =>
        Readable.from(
          (async function* () {
            for (let i = 0; i < mib; i++) yield Buffer.from(pool[i % pool.length]!); // a fresh buffer each time, as a pipeline makes
          })(),
        );
      await storage.put('warm-up', body(6)); // the SDK's modules and both sockets of the queue (two parts) are not what is measured
      const baseline = process.memoryUsage().rss;
      let peak = baseline;
      const sampler = setInterval(() => {
        peak = Math.max(peak, process.memoryUsage().rss);
      }, 5);
      try {
        // 128 MiB: a body held whole would grow RSS by at least that, a third more than the bound below (the
        // bounded upload grows by ~40 MiB); each MiB more is only more work for s3rver, which stores it twice
        assert.equal((await storage.put('big', body(128))).size, 128 * MiB);
      } finally {
        clearInterval(sampler);
      }
      const growth = (peak - baseline) / MiB;
      t.diagnostic(`RSS grew by ${growth.toFixed(1)} MiB while uploading 128 MiB`);
      // about (queueSize + 1) parts in flight plus garbage not yet collected; buffering the body would be 128 MiB
      assert.ok(growth < 96, `RSS grew by ${growth.toFixed(1)} MiB while uploading 128 MiB`);
      assert.equal((await storage.stat('big'))?.size, 128 * MiB);
    });

    it('spools parts too large for memory to private temp files, retries a failed part from its file, and removes the files', async () => {
      const bucket = await server.bucket('spool');
      const spoolDir = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-spool-test-'));
      try {
        const storage = open(server, `s3://${bucket}`, { partSize: 6 * MiB, partMemoryLimit: 5 * MiB, spoolDir });
        // three parts: the first (spooled, failed and retried from its file), another spooled one, a short last one
        const data = Array.from({ length: 13 }, (_, i) => mibChunk(i));
        await server.clearRequests();
        // the first part upload fails as a throttled server would answer: the file is read again for the retry
        await server.failNext(1, { method: 'PUT', pathIncludes: 'spooled' }, 503, 'SlowDown');
        let sawSpoolFile = false;
        async function* produce(): AsyncGenerator<Buffer> {
          for (const chunk of data) {
            yield chunk;
            if (!sawSpoolFile) sawSpoolFile = (await fs.readdir(spoolDir)).length > 0;
          }
        }
        assert.equal((await storage.put('spooled', Readable.from(produce()))).size, 13 * MiB);
        assert.ok(sawSpoolFile, 'parts were spooled to the spool folder');
        const log = objectRequests(await server.requests(), '/spooled');
        assert.equal(log.filter((r) => isUploadPart(r) && r.status === 503).length, 1, 'the injected failure happened');
        assert.equal(log.filter((r) => isUploadPart(r) && r.status === 200).length, 3, '6 + 6 + 1 MiB');
        assert.equal(sha256(await readAll(await storage.get('spooled'))), sha256(Buffer.concat(data)));
        assert.deepEqual(await fs.readdir(spoolDir), [], 'nothing left in the spool folder');
      } finally {
        await fs.rm(spoolDir, { recursive: true, force: true });
      }
    });

    it('a body failing mid-multipart rejects with the body error, aborts the upload, and leaves nothing visible', async () => {
      const bucket = await server.bucket('mp-fail');
      const storage = open(server, `s3://${bucket}`, { partSize: 5 * MiB });
      await server.clearRequests();
      const boom = new Error('pg_dump: error: query failed: connection lost');
      async function* failing(): AsyncGenerator<Buffer> {
        for (let i = 0; i < 12; i++) {
          yield mibChunk(i);
          await new Promise((resolve) => setTimeout(resolve, 5));
        }
        throw boom;
      }
      await assert.rejects(storage.put('sources/app/backups/x/dump.zst', Readable.from(failing())), (error) => {
        assert.equal(error, boom);
        return true;
      });
      const log = objectRequests(await server.requests(), 'dump.zst');
      assert.ok(log.filter(isUploadPart).length >= 1, 'parts were uploaded before the failure');
      assert.equal(log.filter(isComplete).length, 0, 'never completed');
      assert.equal(log.filter((r) => r.method === 'PUT' && !isUploadPart(r)).length, 0, 'no single PutObject either');
      const aborts = log.filter(isAbortUpload);
      assert.equal(aborts.length, 1, 'the multipart upload was aborted');
      // s3rver answers AbortMultipartUpload with 405; the failure is not fatal and nothing is visible
      assert.equal(await storage.stat('sources/app/backups/x/dump.zst'), undefined);
      assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
      assert.equal(await storage.isEmpty(), true);
    });

    it('an abort mid-multipart stops at once, cancels the upload and leaves nothing', async () => {
      const bucket = await server.bucket('mp-abort');
      const storage = open(server, `s3://${bucket}`, { partSize: 5 * MiB });
      await server.clearRequests();
      const controller = new AbortController();
      let produced = 0;
      async function* endless(): AsyncGenerator<Buffer> {
        for (let i = 0; ; i++) {
          produced++;
          yield mibChunk(i % 16);
          await new Promise((resolve) => setImmediate(resolve));
        }
      }
      const body = Readable.from(endless());
      const pending = storage.put('obj', body, { signal: controller.signal });
      while ((await server.requests()).filter(isUploadPart).length < 2) await new Promise((resolve) => setTimeout(resolve, 10));
      const abortedAt = Date.now();
      controller.abort();
      await assert.rejects(pending, isCode('ABORTED'));
      assert.ok(Date.now() - abortedAt < 5_000, 'the abort took effect quickly');
      assert.ok(body.destroyed, 'the body was destroyed');
      const after = produced;
      await new Promise((resolve) => setTimeout(resolve, 50));
      assert.equal(produced, after, 'the producer is no longer read');
      const log = await server.requests();
      assert.equal(log.filter(isComplete).length, 0);
      assert.equal(await storage.stat('obj'), undefined);
      assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
    });

    it('applies the storage class and server-side encryption (aws:kms + key) to uploads, and SSE to locks', async () => {
      const bucket = await server.bucket('sse');
      const storage = open(server, `s3://${bucket}/enc`, { partSize: 5 * MiB, storageClass: 'STANDARD_IA', sse: 'aws:kms', kmsKeyId: 'alias/pgkeep-test' });
      await server.clearRequests();
      await putString(storage, 'small', 'small object');
      await storage.put('large', Readable.from(Array.from({ length: 6 }, (_, i) => mibChunk(i)))); // two parts: a multipart upload
      assert.equal(await storage.putIfAbsent('lock', Buffer.from('l')), true);
      const log = await server.requests();
      const expectSse = (r: RecordedRequest | undefined, what: string): void => {
        assert.ok(r, what);
        assert.equal(r.headers['x-amz-server-side-encryption'], 'aws:kms', what);
        assert.equal(r.headers['x-amz-server-side-encryption-aws-kms-key-id'], 'alias/pgkeep-test', what);
      };
      const small = log.find((r) => r.method === 'PUT' && r.path.endsWith('/enc/small'));
      expectSse(small, 'single PutObject');
      assert.equal(small!.headers['x-amz-storage-class'], 'STANDARD_IA');
      const create = log.find((r) => isCreateUpload(r) && r.path.endsWith('/enc/large'));
      expectSse(create, 'CreateMultipartUpload');
      assert.equal(create!.headers['x-amz-storage-class'], 'STANDARD_IA');
      const lock = log.filter((r) => r.method === 'PUT' && r.path.endsWith('/enc/lock')).at(-1);
      expectSse(lock, 'putIfAbsent');
      assert.equal(lock!.headers['x-amz-storage-class'], undefined, 'locks keep the default class');

      const aes = open(server, `s3://${bucket}/aes`, { sse: 'AES256' });
      await server.clearRequests();
      await putString(aes, 'x', 'x');
      const put = (await server.requests()).find((r) => r.method === 'PUT');
      assert.equal(put?.headers['x-amz-server-side-encryption'], 'AES256');
      assert.equal(put?.headers['x-amz-server-side-encryption-aws-kms-key-id'], undefined);
    });
  });

  describe('conditional writes', () => {
    it('detects a server that ignores If-None-Match and says so in capabilities', async () => {
      const storage = open(server, `s3://${await server.bucket('cond-plain')}/r`);
      assert.equal(await storage.detectConditionalCreate(), false);
      assert.equal(storage.capabilities.conditionalCreate, false);
      assert.equal(await storage.putIfAbsent('l', Buffer.from('a')), true);
      assert.equal(await storage.putIfAbsent('l', Buffer.from('b')), false);
      // the probe object is gone and was never listed
      const raw = await collect(open(server, 's3://cond-plain').list('', { recursive: true }));
      assert.deepEqual(
        raw.map((e) => e.path),
        ['r/l'],
      );
    });

    it('uses If-None-Match: * where the server honours it, and declares conditionalCreate', async () => {
      const storage = open(native, `s3://${await native.bucket('cond-native')}/r`);
      assert.equal(storage.capabilities.conditionalCreate, false, 'not claimed before it is known');
      assert.equal(await storage.detectConditionalCreate(), true);
      assert.equal(storage.capabilities.conditionalCreate, true);
      await native.clearRequests();
      assert.equal(await storage.putIfAbsent('l', Buffer.from('a')), true);
      assert.equal(await storage.putIfAbsent('l', Buffer.from('b')), false);
      const log = (await native.requests()).filter((r) => r.path.endsWith('/r/l'));
      assert.deepEqual(
        log.map((r) => [r.method, r.headers['if-none-match'], r.status]),
        [
          ['PUT', '*', 200],
          ['PUT', '*', 412],
        ],
        'one conditional PUT each, no HeadObject',
      );
    });

    it('two storages (as two hosts would) racing on one key: exactly one wins', async () => {
      const bucket = await native.bucket('cond-race');
      const storages = Array.from({ length: 4 }, () => open(native, `s3://${bucket}/r`, { conditionalWrites: 'native' }));
      const results = await Promise.all(storages.flatMap((s, i) => [0, 1].map((j) => s.putIfAbsent('the.lock', Buffer.from(`${i}-${j}`)))));
      assert.equal(results.filter(Boolean).length, 1, JSON.stringify(results));
    });

    it('a repository and its source lock work on S3 with the same layout as on disk', async () => {
      const bucket = await native.bucket('repo-layout');
      const storage = open(native, `s3://${bucket}/backups`);
      const repo = await Repository.open(storage, { createIfEmpty: true });
      assert.equal(repo.location, `s3://${bucket}/backups`);
      const lock = await acquireSourceLock(storage, 'app', 'backup');
      await assert.rejects(acquireSourceLock(open(native, `s3://${bucket}/backups`), 'app', 'backup'), isCode('LOCK_HELD'));
      assert.deepEqual(
        (await collect(storage.list('', { recursive: true }))).map((e) => e.path),
        ['pgkeep.json', 'sources/app/locks/source.lock'],
      );
      await lock.release();
      const again = await Repository.open(open(native, `s3://${bucket}/backups`));
      assert.equal(again.info.id, repo.info.id);
    });

    it('a repository another host created between the look for pgkeep.json and the listing is opened, not called foreign (first backups at once)', async () => {
      const bucket = await native.bucket('created-meanwhile');
      const url = `s3://${bucket}/repo`;
      let other: Repository | undefined;
      // this opener's listing comes after another job created the repository and recorded its source (serve runs
      // several first backups into one new repository at once): it failed with REPO_NOT_PGKEEP
      const racing = open(native, url);
      const isEmpty = racing.isEmpty.bind(racing);
      racing.isEmpty = async () => {
        other ??= await Repository.open(open(native, url), { createIfEmpty: true });
        await other.ensureSource('db01', 'db01');
        return isEmpty();
      };
      const opened = await Repository.open(racing, { createIfEmpty: true });
      assert.equal(opened.info.id, other!.info.id);
    });

    it('ignores leftover probe objects (e.g. after a crash) in listings and isEmpty', async () => {
      const bucket = await server.bucket('probe-left');
      await putString(open(server, `s3://${bucket}`), `repo/${PROBE_PREFIX}deadbeef`, 'probe');
      const storage = open(server, `s3://${bucket}/repo`);
      assert.equal(await storage.isEmpty(), true);
      assert.deepEqual(await collect(storage.list('')), []);
    });
  });

  describe('errors', () => {
    it('a missing bucket: REPO_MISSING naming the bucket, for listing, reading and writing', async () => {
      const storage = open(server, 's3://no-such-bucket/repo');
      const missing = isCode('REPO_MISSING', /bucket no-such-bucket does not exist.*: create it or check --repo/);
      await assert.rejects(storage.isEmpty(), missing);
      await assert.rejects(collect(storage.list('')), missing);
      await assert.rejects(storage.get('pgkeep.json'), missing);
      await assert.rejects(storage.put('x', Readable.from([Buffer.from('x')])), missing);
      await assert.rejects(Repository.open(storage, { createIfEmpty: true }), missing);
      assert.equal(await storage.stat('x'), undefined, 'HEAD cannot tell a missing bucket from a missing key');
    });

    it('an unknown access key: STORAGE_ACCESS for every operation, with neither the key id nor the secret in the message', async () => {
      const bucket = await server.bucket('creds');
      const credentials = { accessKeyId: 'AKIAWRONGKEY0000', secretAccessKey: 'wrong-secret-value-1' };
      const storage = openStorage(`s3://${bucket}/r`, { s3: { endpoint: server.endpoint, region: server.region, credentials, maxAttempts: 1 } });
      const attempts = [
        () => storage.isEmpty(),
        () => collect(storage.list('', { recursive: true })),
        () => storage.put('k', Readable.from([Buffer.from('x')])),
        () => storage.putIfAbsent('k', Buffer.from('x')),
        () => storage.stat('k'),
        () => storage.get('k'),
        () => storage.remove('k'),
        () => storage.removeFolder('f'),
      ];
      for (const attempt of attempts) {
        await assert.rejects(attempt(), (error) => {
          isCode('STORAGE_ACCESS', /access denied to s3:\/\/creds\/r/)(error);
          const text = `${(error as Error).message} ${JSON.stringify((error as PgkeepError).details ?? {})}`;
          assert.ok(!text.includes(credentials.secretAccessKey), text);
          assert.ok(!text.includes(credentials.accessKeyId), text);
          return true;
        });
      }
    });

    it('a wrong secret (SignatureDoesNotMatch): STORAGE_ACCESS saying so', async () => {
      // s3rver checks that the access key id exists but does not verify SigV4
      // signatures, so the server's answer to a wrong secret is injected here.
      const bucket = await server.bucket('signature');
      const storage = open(server, `s3://${bucket}`, { maxAttempts: 1 });
      await server.failNext(1, { pathIncludes: '/signature' }, 403, 'SignatureDoesNotMatch');
      await assert.rejects(storage.isEmpty(), isCode('STORAGE_ACCESS', /SignatureDoesNotMatch.*secret access key does not match/));
      await server.failNext(1, { method: 'PUT', pathIncludes: '/signature/k' }, 403, 'AccessDenied');
      await assert.rejects(storage.put('k', Readable.from([Buffer.from('x')])), isCode('STORAGE_ACCESS', /AccessDenied.*bucket policy/));
    });

    it('an unreachable endpoint: STORAGE_NETWORK naming the endpoint', async () => {
      const port = await new Promise<number>((resolve) => {
        const probe = createServer();
        probe.listen(0, '127.0.0.1', () => {
          const { port } = probe.address() as { port: number };
          probe.close(() => resolve(port));
        });
      });
      const storage = openStorage('s3://bucket/repo', {
        s3: { endpoint: `http://127.0.0.1:${port}`, region: 'us-east-1', credentials: { accessKeyId: 'a', secretAccessKey: 'b' }, maxAttempts: 2 },
      });
      const started = Date.now();
      const unreachable = isCode('STORAGE_NETWORK', new RegExp(`cannot reach the S3 endpoint http://127\\.0\\.0\\.1:${port}.*ECONNREFUSED`));
      await assert.rejects(storage.isEmpty(), unreachable);
      await assert.rejects(storage.stat('x'), unreachable);
      const body = Readable.from([Buffer.from('data')]);
      await assert.rejects(storage.put('x', body), unreachable);
      assert.ok(body.destroyed);
      assert.ok(Date.now() - started < 20_000);
    });

    it('retries throttling and 5xx with backoff, then reports the server error', async () => {
      const bucket = await server.bucket('retries');
      const storage = open(server, `s3://${bucket}`, { maxAttempts: 3 });
      await server.clearRequests();
      await server.failNext(2, { method: 'PUT', pathIncludes: '/retries/flaky' }, 503, 'SlowDown');
      await putString(storage, 'flaky', 'eventually');
      assert.equal((await readAll(await storage.get('flaky'))).toString(), 'eventually');
      const puts = (await server.requests()).filter((r) => r.method === 'PUT');
      assert.deepEqual(
        puts.map((r) => r.status),
        [503, 503, 200],
      );

      await server.failNext(3, { method: 'GET', pathIncludes: '/retries/flaky' }, 500, 'InternalError');
      await assert.rejects(storage.get('flaky'), isCode('STORAGE_IO', /InternalError \(HTTP 500\) after 3 attempts/));
    });
  });
});
