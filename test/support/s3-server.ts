/**
 * A real S3-compatible server for tests: s3rver on 127.0.0.1, a random free
 * port, a temp folder, in a CHILD process. s3rver's continuation tokens use DES,
 * which Node 17+ only offers with --openssl-legacy-provider; the child gets that
 * flag so the test process itself does not need it.
 *
 * Two additions run in front of s3rver, inside the child:
 * - a request log (method, path, query and the headers the driver is expected
 *   to send), so tests can check what went over the wire;
 * - optional `conditionalWrites`: AWS S3's `If-None-Match: *` on PutObject and
 *   CompleteMultipartUpload (412 PreconditionFailed when the key exists,
 *   serialised per key), which s3rver itself ignores;
 * - `failNext`: the next N matching requests get an error status (e.g. 503
 *   SlowDown), to test retries.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

export interface RecordedRequest {
  method: string;
  /** Decoded path, e.g. /bucket/prefix/key */
  path: string;
  /** The raw query string without '?' */
  query: string;
  headers: Record<string, string>;
  status: number;
}

export interface S3TestServer {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** s3rver's store on disk: an object's last-modified time is its file's mtime there (tests that need an old object set it). */
  dataDirectory: string;
  /** Creates a bucket (directly in the store) and returns its name. */
  bucket(name: string): Promise<string>;
  /**
   * Stores `keys` in `bucket`, each holding `body`, directly in s3rver's store
   * (no HTTP request, none logged): for tests whose subject is reading many
   * objects, not writing them.
   */
  seed(bucket: string, keys: string[], body: string): Promise<void>;
  /** Requests seen since the start or the last clearRequests(). */
  requests(): Promise<RecordedRequest[]>;
  clearRequests(): Promise<void>;
  /** The next `count` requests matching method (and path substring) answer `status` with S3 error `code`. */
  failNext(count: number, match: { method?: string; pathIncludes?: string; queryIncludes?: string }, status: number, code: string): Promise<void>;
  stop(): Promise<void>;
}

const CHILD_SCRIPT = String.raw`
'use strict';
const S3rver = require(process.env.S3RVER_MODULE);
const directory = process.env.S3RVER_DIR;
const conditionalWrites = process.env.S3RVER_CONDITIONAL === '1';
const RECORDED_HEADERS = ['if-none-match', 'if-match', 'x-amz-storage-class', 'x-amz-server-side-encryption',
  'x-amz-server-side-encryption-aws-kms-key-id', 'content-md5', 'content-length', 'range'];
const log = [];
const faults = [];
const keyLocks = new Map();

function xmlError(ctx, status, code, message) {
  ctx.status = status;
  ctx.type = 'application/xml';
  ctx.body = '<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>' + code + '</Code><Message>' + message +
    '</Message><RequestId>test</RequestId></Error>';
}

function withKeyLock(key, fn) {
  const previous = keyLocks.get(key) || Promise.resolve();
  const run = previous.then(fn, fn);
  const settled = run.then(() => undefined, () => undefined);
  keyLocks.set(key, settled);
  return run.finally(() => { if (keyLocks.get(key) === settled) keyLocks.delete(key); });
}

const server = new S3rver({
  address: '127.0.0.1',
  port: 0,
  silent: true,
  directory,
  vhostBuckets: false,
  allowMismatchedSignatures: false,
});

async function front(ctx, next) {
  const [pathname, query = ''] = ctx.url.split('?');
  let decoded;
  try { decoded = decodeURIComponent(pathname); } catch { decoded = pathname; }
  const entry = { method: ctx.method, path: decoded, query, headers: {}, status: 0 };
  for (const name of RECORDED_HEADERS) if (ctx.headers[name] !== undefined) entry.headers[name] = String(ctx.headers[name]);
  for (const name of Object.keys(ctx.headers)) if (name.startsWith('x-amz-checksum-')) entry.headers[name] = String(ctx.headers[name]);
  log.push(entry);
  if (log.length > 20000) log.shift();
  try {
    const fault = faults.find((f) => f.count > 0 && (!f.method || f.method === ctx.method) && (!f.pathIncludes || decoded.includes(f.pathIncludes)) && (!f.queryIncludes || query.includes(f.queryIncludes)));
    if (fault) {
      fault.count--;
      xmlError(ctx, fault.status, fault.code, 'injected by the test server');
      return;
    }
    const params = new URLSearchParams(query);
    const isPutObject = ctx.method === 'PUT' && !params.has('partNumber') && !params.has('uploadId') && !ctx.headers['x-amz-copy-source'];
    const isComplete = ctx.method === 'POST' && params.has('uploadId');
    const segments = decoded.split('/');
    const bucket = segments[1];
    const key = segments.slice(2).join('/');
    if (conditionalWrites && (isPutObject || isComplete) && ctx.headers['if-none-match'] === '*' && bucket && key) {
      await withKeyLock(bucket + '/' + key, async () => {
        if (await server.store.existsObject(bucket, key)) {
          xmlError(ctx, 412, 'PreconditionFailed', 'At least one of the pre-conditions you specified did not hold');
          return;
        }
        await next();
      });
      return;
    }
    await next();
    entry.status = ctx.status;
  } catch (error) {
    entry.status = (error && (error.status || error.statusCode)) || 500;
    throw error;
  } finally {
    if (!entry.status) entry.status = ctx.status;
  }
}
server.middleware.unshift(front);

process.on('message', async (message) => {
  const reply = (value) => process.send({ id: message.id, ...value });
  try {
    switch (message.op) {
      case 'bucket':
        await server.store.putBucket(message.name);
        return reply({ ok: true });
      case 'seed': {
        // straight into s3rver's store, as its PutObject handler stores them: no request, no log entry
        const S3Object = require(require('path').join(require('path').dirname(process.env.S3RVER_MODULE), 'models', 'object'));
        const body = Buffer.from(message.body, 'utf8');
        for (let i = 0; i < message.keys.length; i += 64) {
          await Promise.all(message.keys.slice(i, i + 64).map((key) => server.store.putObject(new S3Object(message.bucket, key, body, { 'content-type': 'application/octet-stream' }))));
        }
        return reply({ ok: true });
      }
      case 'requests':
        return reply({ ok: true, value: log });
      case 'clear':
        log.length = 0;
        return reply({ ok: true });
      case 'fail':
        faults.push({ count: message.count, method: message.method, pathIncludes: message.pathIncludes, queryIncludes: message.queryIncludes, status: message.status, code: message.code });
        return reply({ ok: true });
      default:
        return reply({ ok: false, error: 'unknown op ' + message.op });
    }
  } catch (error) {
    reply({ ok: false, error: String(error && error.stack || error) });
  }
});
process.on('disconnect', () => process.exit(0));

server.run().then(
  (address) => process.send({ ready: true, port: address.port }),
  (error) => { console.error(error); process.exit(1); },
);
`;

export async function startS3Server(options: { conditionalWrites?: boolean } = {}): Promise<S3TestServer> {
  const dir = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-s3rver-'));
  const script = path.join(dir, 'server.cjs');
  const data = path.join(dir, 'data');
  await fs.mkdir(data);
  await fs.writeFile(script, CHILD_SCRIPT);
  const require = createRequire(import.meta.url);
  const child: ChildProcess = spawn(process.execPath, [script], {
    stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
    env: {
      PATH: process.env.PATH ?? '',
      NODE_OPTIONS: '--openssl-legacy-provider',
      S3RVER_MODULE: require.resolve('s3rver'),
      S3RVER_DIR: data,
      S3RVER_CONDITIONAL: options.conditionalWrites ? '1' : '0',
    },
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8').on('data', (text: string) => {
    stderr = (stderr + text).slice(-4000);
  });

  const port = await new Promise<number>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`s3rver did not start within 20 s: ${stderr}`)), 20_000);
    const onMessage = (message: { ready?: boolean; port?: number }): void => {
      if (message.ready && message.port) {
        clearTimeout(timer);
        child.off('message', onMessage);
        child.off('exit', onExit);
        resolve(message.port);
      }
    };
    const onExit = (code: number | null): void => {
      clearTimeout(timer);
      reject(new Error(`s3rver exited (${code}) before it was ready: ${stderr}`));
    };
    child.on('message', onMessage);
    child.once('exit', onExit);
  });

  let nextId = 1;
  const pending = new Map<number, { resolve(value: unknown): void; reject(error: Error): void }>();
  child.on('message', (message: { id?: number; ok?: boolean; value?: unknown; error?: string }) => {
    if (message.id === undefined) return;
    const waiter = pending.get(message.id);
    if (!waiter) return;
    pending.delete(message.id);
    if (message.ok) waiter.resolve(message.value);
    else waiter.reject(new Error(`s3rver helper: ${message.error}`));
  });
  child.on('exit', () => {
    for (const waiter of pending.values()) waiter.reject(new Error(`s3rver exited: ${stderr}`));
    pending.clear();
  });
  const call = (message: Record<string, unknown>): Promise<unknown> =>
    new Promise((resolve, reject) => {
      const id = nextId++;
      pending.set(id, { resolve, reject });
      child.send({ ...message, id });
    });

  let stopped = false;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    accessKeyId: 'S3RVER',
    secretAccessKey: 'S3RVER',
    region: 'us-east-1',
    dataDirectory: data,
    bucket: async (name) => {
      await call({ op: 'bucket', name });
      return name;
    },
    seed: async (bucket, keys, body) => void (await call({ op: 'seed', bucket, keys, body })),
    requests: async () => (await call({ op: 'requests' })) as RecordedRequest[],
    clearRequests: async () => void (await call({ op: 'clear' })),
    failNext: async (count, match, status, code) => void (await call({ op: 'fail', count, ...match, status, code })),
    stop: async () => {
      if (stopped) return;
      stopped = true;
      if (child.exitCode === null && child.signalCode === null) {
        const exited = new Promise((resolve) => child.once('exit', resolve));
        child.kill('SIGTERM');
        await exited;
      }
      await fs.rm(dir, { recursive: true, force: true });
    },
  };
}
