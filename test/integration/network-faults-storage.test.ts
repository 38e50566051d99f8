/**
 * The S3 driver through a bad network (test/support/fault-proxy.ts between it
 * and s3rver): downloads resume from their last good byte and deliver every
 * byte exactly once; stalls and dead servers fail within the configured
 * timeouts with STORAGE_NETWORK, never as corruption.
 */
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { loadSettings, storageOptions } from '../../src/config/settings.js';
import { PgkeepError } from '../../src/errors.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { withRunSignal } from '../../src/run-signal.js';
import type { S3StorageOptions } from '../../src/storage/s3-storage.js';
import type { Storage } from '../../src/storage/storage.js';
import { startFaultProxy, type FaultProxy } from '../support/fault-proxy.js';
import { startS3Server, type S3TestServer } from '../support/s3-server.js';
import { readAll } from '../support/storage-conformance.js';

for (const name of Object.keys(process.env)) if (name.startsWith('AWS_')) delete process.env[name];
process.env.AWS_EC2_METADATA_DISABLED = 'true';
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED = 'true';

const MiB = 1 << 20;
const sha256 = (data: Buffer) => createHash('sha256').update(data).digest('hex');

let server: S3TestServer;
let proxy: FaultProxy;
let bucket: string;
const data = randomBytes(6 * MiB);

function through(extra: S3StorageOptions = {}, via: FaultProxy = proxy): Storage {
  return openStorage(`s3://${bucket}/repo`, {
    s3: {
      endpoint: via.endpoint,
      region: server.region,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
      idleTimeoutMs: 1000,
      retryBudgetMs: 8000,
      maxAttempts: 5,
      ...extra,
    },
  });
}

function isCode(code: string, pattern?: RegExp) {
  return (error: unknown) => {
    assert.ok(error instanceof PgkeepError, `a PgkeepError, not ${String(error)}`);
    assert.equal(error.code, code, error.message);
    if (pattern) assert.match(error.message, pattern);
    assert.doesNotMatch(error.message, /corrupt/);
    return true;
  };
}

before(async () => {
  server = await startS3Server();
  bucket = await server.bucket('faults');
  proxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(server.endpoint).port) });
  await through({ idleTimeoutMs: 10_000 }).put('big', Readable.from([data]));
});

/** Proxies of single tests, closed at the end. */
const ownProxies: FaultProxy[] = [];
after(async () => {
  for (const own of ownProxies) await own.close();
  await proxy?.close();
  await server?.stop();
});

/** A fault proxy of one test's own: its faults (a stall is the proxy's whole state) and stats are that test's alone. */
async function ownProxy(): Promise<FaultProxy> {
  const own = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(server.endpoint).port) });
  ownProxies.push(own);
  return own;
}

/** Polls `condition` every 10 ms, failing with `what` after `ms`. */
async function until(condition: () => boolean, what: string, ms = 10_000): Promise<void> {
  for (const started = Date.now(); !condition(); await new Promise((resolve) => setTimeout(resolve, 10))) {
    assert.ok(Date.now() - started < ms, what);
  }
}

describe('S3 network settings from the environment', () => {
  it('PGKEEP_S3_* are defaults under explicit options; a bad value is CONFIG_INVALID naming the variable', async () => {
    // The settings read the variables from the environment the CLI hands them (the driver reads none).
    const cwd = await mkdtemp(path.join(tmpdir(), 'pgkeep-s3-env-'));
    try {
      const url = 's3://bucket/p';
      const open = (env: NodeJS.ProcessEnv) => openStorage(url, storageOptions(loadSettings({ repo: url }, { env, cwd }), url));
      assert.throws(() => open({ PGKEEP_S3_IDLE_TIMEOUT: 'soon' }), (e: unknown) => e instanceof PgkeepError && e.code === 'CONFIG_INVALID' && /PGKEEP_S3_IDLE_TIMEOUT/.test(e.message));
      assert.throws(() => open({ PGKEEP_S3_IDLE_TIMEOUT: '2.5s', PGKEEP_S3_MAX_ATTEMPTS: '0' }), (e: unknown) => e instanceof PgkeepError && e.code === 'CONFIG_INVALID' && /PGKEEP_S3_MAX_ATTEMPTS/.test(e.message));
      const env = { PGKEEP_S3_IDLE_TIMEOUT: '2.5s', PGKEEP_S3_MAX_ATTEMPTS: '7' };
      const options = (open(env) as unknown as { options: S3StorageOptions }).options;
      assert.deepEqual([options.idleTimeoutMs, options.maxAttempts, options.retryBudgetMs], [2500, 7, undefined]);
      await writeFile(path.join(cwd, 'pgkeep.yaml'), 's3:\n  idleTimeout: 9s\n  retryBudget: 3s\n');
      const explicit = (open(env) as unknown as { options: S3StorageOptions }).options;
      assert.deepEqual([explicit.idleTimeoutMs, explicit.maxAttempts, explicit.retryBudgetMs], [9000, 7, 3000], 'an explicit option wins');
    } finally {
      await rm(cwd, { recursive: true, force: true });
    }
  });
});

// Most of these wait (a paused consumer, an idle timeout, a budget): they run at the same time, the first through
// the shared proxy, each other through a proxy of its own (the killed server's test has its own server too).
describe('S3 reads through a bad network', { timeout: 120_000, concurrency: true }, () => {
  it('resets mid-download: resumed with ranged GETs, every byte exactly once', async () => {
    for (const [i, mode] of [
      { resetProbability: 0.5, resetWithinBytes: 2 * MiB },
      { closeProbability: 0.5, closeWithinBytes: 2 * MiB },
    ].entries()) {
      proxy.set(mode);
      proxy.resetStats();
      const started = Date.now();
      for (let round = 0; round < 3; round++) {
        const got = await readAll(await through({ maxAttempts: 10 }).get('big'));
        assert.equal(got.length, data.length, `mode ${i}`);
        assert.equal(sha256(got), sha256(data), `mode ${i}: the same bytes`);
      }
      const stats = proxy.stats();
      assert.ok(stats.resets + stats.closes > 0, `mode ${i}: the proxy cut connections (${JSON.stringify(stats)})`);
      assert.ok(Date.now() - started < 30_000);
    }
    // a range, resumed: the same bytes as the slice
    proxy.set({ resetProbability: 0.6, resetWithinBytes: 256 * 1024 });
    const part = await readAll(await through({ maxAttempts: 10 }).get('big', { start: 1000, end: 3 * MiB + 17 }));
    assert.equal(sha256(part), sha256(data.subarray(1000, 3 * MiB + 17)));
  });

  it('a slow consumer is not a network failure: a response that timed out while held paused is reopened without counting', async () => {
    const proxy = await ownProxy();
    // one attempt only: a counted failure would fail the read
    const stream = await through({ maxAttempts: 1 }, proxy).get('big');
    const chunks: Buffer[] = [];
    let paused = false;
    for await (const chunk of stream) {
      chunks.push(chunk as Buffer);
      if (!paused && chunks.length === 4) {
        paused = true;
        // longer than the 1 s idle timeout: the server's response times out meanwhile
        await new Promise((resolve) => setTimeout(resolve, 2500));
      }
    }
    const got = Buffer.concat(chunks);
    assert.equal(sha256(got), sha256(data));
    assert.ok(proxy.stats().connections >= 2, `the download was reopened (${JSON.stringify(proxy.stats())})`);
  });

  it('a stall: STORAGE_NETWORK naming the idle timeout, within the budget', async () => {
    const proxy = await ownProxy();
    proxy.set({ stallAfterBytes: 1 * MiB });
    const started = Date.now();
    const stream = await through({ retryBudgetMs: 3000 }, proxy).get('big');
    await assert.rejects(readAll(stream), isCode('STORAGE_NETWORK', /could not read s3:\/\/faults\/repo\/big at byte \d+ of 6291456 .*no byte for 1 s \(idle timeout\)/));
    const took = Date.now() - started;
    assert.ok(took < 8_000, `failed in ${took} ms`);
    proxy.dropAll();
    proxy.set({});
  });

  it('an interrupt aborts a stalled read and a stalled request at once', async () => {
    const proxy = await ownProxy();
    proxy.set({ stallAfterBytes: 1 * MiB });
    const controller = new AbortController();
    const slow = through({ idleTimeoutMs: 60_000, retryBudgetMs: 60_000 }, proxy);
    const stream = await withRunSignal(controller.signal, () => slow.get('big'));
    const reading = readAll(stream);
    await until(() => proxy.stats().stalled, 'the link stalled');
    const connections = proxy.stats().connections;
    const stat = withRunSignal(controller.signal, () => slow.stat('big'));
    // the HEAD is under way on a connection of its own, into the stalled link
    await until(() => proxy.stats().connections > connections, 'the HEAD connected');
    const started = Date.now();
    controller.abort(new PgkeepError('ABORTED', 'interrupted by SIGTERM'));
    await assert.rejects(reading, isCode('ABORTED'));
    await assert.rejects(stat, isCode('ABORTED'));
    assert.ok(Date.now() - started < 1000);
    proxy.dropAll();
    proxy.set({});
  });

  it('a killed server: STORAGE_NETWORK, not corruption', async () => {
    const local = await startS3Server();
    const b = await local.bucket('killed');
    const localProxy = await startFaultProxy({ host: '127.0.0.1', port: Number(new URL(local.endpoint).port) });
    const storage = openStorage(`s3://${b}/r`, {
      s3: {
        endpoint: localProxy.endpoint,
        region: local.region,
        credentials: { accessKeyId: local.accessKeyId, secretAccessKey: local.secretAccessKey },
        idleTimeoutMs: 1000,
        retryBudgetMs: 3000,
        maxAttempts: 3,
      },
    });
    try {
      await storage.put('x', Readable.from([data.subarray(0, 3 * MiB)]));
      localProxy.set({ delayMs: 20 });
      const stream = await storage.get('x');
      const reading = readAll(stream);
      await new Promise((resolve) => setTimeout(resolve, 100));
      await local.stop();
      localProxy.dropAll();
      const started = Date.now();
      await assert.rejects(reading, isCode('STORAGE_NETWORK', /could not read s3:\/\/killed\/r\/x at byte/));
      assert.ok(Date.now() - started < 10_000);
      await assert.rejects(storage.stat('x'), isCode('STORAGE_NETWORK'));
    } finally {
      await localProxy.close();
      await local.stop().catch(() => undefined);
    }
  });
});
