import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, describe, it } from 'node:test';
import { loadSettings, repositoryUrls, resolveSource } from '../../src/config/settings.js';
import { PgkeepError } from '../../src/errors.js';
import { storeStreamTee } from '../../src/pipeline/store-stream.js';
import { defaultZstd } from '../../src/pipeline/zstd.js';
import type { Storage } from '../../src/storage/storage.js';

const made: string[] = [];
after(async () => {
  await Promise.all(made.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
/** Incompressible input (3 MiB), so stored bytes are about as many as raw ones. */
const input = () => Readable.from(Array.from({ length: 48 }, () => randomBytes(64 * 1024)));

/** A storage whose put collects the body; fails after `failAfter` bytes; each write takes `delayMs`. */
function memoryStorage(options: { failAfter?: number; delayMs?: number } = {}): Storage & { objects: Map<string, Buffer>; received: () => number } {
  const objects = new Map<string, Buffer>();
  let received = 0;
  return {
    location: 'memory',
    capabilities: { posixModes: false, conditionalCreate: true, remote: false },
    objects,
    received: () => received,
    async put(key, body) {
      const chunks: Buffer[] = [];
      await pipeline(
        body,
        new Writable({
          highWaterMark: 16 * 1024,
          write(chunk: Buffer, _encoding, callback) {
            received += chunk.length;
            if (options.failAfter !== undefined && received > options.failAfter) return callback(new PgkeepError('STORAGE_FULL', 'no space left on the repository disk'));
            chunks.push(chunk);
            if (options.delayMs) setTimeout(callback, options.delayMs);
            else callback();
          },
        }),
      );
      objects.set(key, Buffer.concat(chunks));
      return { size: Buffer.concat(chunks).length };
    },
    putIfAbsent: async () => true,
    get: async () => Readable.from([]),
    stat: async () => undefined,
    async *list() {},
    remove: async () => undefined,
    removeFolder: async () => undefined,
    isEmpty: async () => true,
  };
}

describe('storeStreamTee', () => {
  it('writes the same compressed bytes to every branch, with one raw digest', async () => {
    const [a, b] = [memoryStorage(), memoryStorage({ delayMs: 1 })];
    const results = await storeStreamTee([{ storage: a, key: 'k' }, { storage: b, key: 'k' }], input(), { codec: defaultZstd(), level: 3 });
    assert.ok(results.every((r) => r.ok));
    const [ra, rb] = results as { ok: true; digests: { raw: { sha256: string }; stored: { sha256: string } } }[];
    assert.equal(ra!.digests.raw.sha256, rb!.digests.raw.sha256);
    assert.equal(sha(a.objects.get('k')!), ra!.digests.stored.sha256);
    assert.equal(sha(b.objects.get('k')!), rb!.digests.stored.sha256);
  });

  it('detaches a failing branch; the others complete', async () => {
    const [full, good] = [memoryStorage({ failAfter: 64 * 1024 }), memoryStorage({ delayMs: 1 })];
    const results = await storeStreamTee([{ storage: full, key: 'k' }, { storage: good, key: 'k' }], input(), { codec: defaultZstd(), level: 1 });
    assert.equal(results[0]!.ok, false);
    assert.match(String((results[0] as { error: Error }).error.message), /no space left/);
    assert.equal(results[1]!.ok, true);
    assert.ok(!full.objects.has('k'), 'nothing visible in the failed branch');
    assert.ok(good.objects.get('k')!.length > 100_000);
  });

  it('advances at the pace of the slowest branch (bounded buffering)', async () => {
    const [fast, slow] = [memoryStorage(), memoryStorage({ delayMs: 1 })];
    let maxAhead = 0;
    const timer = setInterval(() => (maxAhead = Math.max(maxAhead, fast.received() - slow.received())), 2);
    try {
      const big = Readable.from(Array.from({ length: 960 }, () => randomBytes(64 * 1024))); // 60 MiB: far more than the stages can buffer
      const results = await storeStreamTee([{ storage: fast, key: 'k' }, { storage: slow, key: 'k' }], big, { codec: defaultZstd(), level: 1 });
      assert.ok(results.every((r) => r.ok));
    } finally {
      clearInterval(timer);
    }
    assert.ok(slow.received() > 60 * 1024 * 1024);
    assert.ok(maxAhead < 16 * 1024 * 1024, `the fast branch ran ${maxAhead} bytes ahead`);
  });

  it('rejects with the first cause when every branch fails, and with the producer failure through the gates', async () => {
    const fails = () => memoryStorage({ failAfter: 1000 });
    await assert.rejects(storeStreamTee([{ storage: fails(), key: 'k' }, { storage: fails(), key: 'k' }], input(), { codec: defaultZstd(), level: 1 }), /no space left/);
    const producer = Promise.reject(new PgkeepError('TOOL_FAILED', 'pg_dump failed: boom'));
    await assert.rejects(storeStreamTee([{ storage: memoryStorage(), key: 'k' }, { storage: memoryStorage(), key: 'k' }], input(), { codec: defaultZstd(), level: 1, complete: producer }), /pg_dump failed: boom/);
  });
});

describe('repositories of a source', () => {
  async function settingsIn(yaml: string, options: { repo?: string } = {}, env: Record<string, string> = {}) {
    const cwd = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-repos-'));
    made.push(cwd);
    await fs.writeFile(path.join(cwd, 'pgkeep.yaml'), yaml);
    return { cwd, settings: loadSettings(options, { cwd, env }) };
  }

  it('repos wins over repo at each level; a source\'s own beats the top level; relative to the file', async () => {
    const { cwd, settings } = await settingsIn('repo: ./top\nrepos: [./t1, s3://b/t2]\nsources:\n  app:\n    repo: ./one\n    repos: [./a, s3://bucket/app]\n  other:\n    database: other\n');
    assert.deepEqual(repositoryUrls(settings, 'app'), [path.join(cwd, 'a'), 's3://bucket/app']);
    assert.deepEqual(repositoryUrls(settings, 'other'), [path.join(cwd, 't1'), 's3://b/t2']);
    const { settings: withSource } = await settingsIn('sources:\n  app:\n    repos: [./x, ./y]\n');
    assert.deepEqual(resolveSource(withSource).repos.map((r) => path.basename(r)), ['x', 'y']);
    assert.equal(path.basename(resolveSource(withSource).repo), 'x');
  });

  it('--repo, PGKEEP_REPO and BACKUP_DIR each mean exactly one repository', async () => {
    const yaml = 'sources:\n  app:\n    repos: [./a, ./b]\n';
    assert.deepEqual(repositoryUrls((await settingsIn(yaml, { repo: '/flag' }, { PGKEEP_REPO: '/env' })).settings, 'app'), ['/flag']);
    assert.deepEqual(repositoryUrls((await settingsIn(yaml, {}, { PGKEEP_REPO: '/env', BACKUP_DIR: '/dir' })).settings, 'app'), ['/env']);
    assert.deepEqual(repositoryUrls((await settingsIn(yaml, {}, { BACKUP_DIR: '/dir' })).settings, 'app'), ['/dir']);
  });
});
