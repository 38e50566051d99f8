/**
 * The behaviour every Storage driver (posix now, S3 later) must share. A driver
 * test calls `storageConformance('name', makeStorage)`; each test gets a fresh,
 * empty storage from `makeStorage` and calls its `cleanup` afterwards.
 */
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { afterEach, beforeEach, describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import type { Storage, StorageEntry } from '../../src/storage/storage.js';

export interface StorageFixture {
  storage: Storage;
  cleanup(): Promise<void>;
}

const MiB = 1 << 20;

/** Deterministic, poorly compressible bytes: chunk `i` of a stream is always the same. */
export function patternChunk(index: number, size: number): Buffer {
  const out = Buffer.allocUnsafe(size);
  let x = (index * 2654435761 + 12345) >>> 0 || 1;
  for (let i = 0; i < size; i++) {
    // xorshift32
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

/** A body produced by an async generator, as pipelines hand them to put(). */
export function generatedBody(chunks: number, chunkSize: number, tail = 0): { body: Readable; expected: Buffer } {
  const parts: Buffer[] = [];
  for (let i = 0; i < chunks; i++) parts.push(patternChunk(i, chunkSize));
  if (tail > 0) parts.push(patternChunk(chunks, tail));
  async function* produce(): AsyncGenerator<Buffer> {
    for (const part of parts) {
      await new Promise((resolve) => setImmediate(resolve));
      yield part;
    }
  }
  return { body: Readable.from(produce(), { objectMode: false }), expected: Buffer.concat(parts) };
}

export async function readAll(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string));
  return Buffer.concat(chunks);
}

export async function collect(iterable: AsyncIterable<StorageEntry>): Promise<StorageEntry[]> {
  const entries: StorageEntry[] = [];
  for await (const entry of iterable) entries.push(entry);
  return entries;
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}

async function getBuffer(storage: Storage, key: string, range?: { start: number; end?: number }): Promise<Buffer> {
  return readAll(await storage.get(key, range));
}

async function putBuffer(storage: Storage, key: string, data: Buffer | string): Promise<void> {
  const result = await storage.put(key, Readable.from([Buffer.from(data)]));
  assert.equal(result.size, Buffer.byteLength(data));
}

/** A body the test drives by hand: `push` bytes, then `end()` or `fail(error)`. */
function manualBody(): { body: Readable; push(data: Buffer): void; end(): void; fail(error: Error): void } {
  const body = new Readable({ read() {} });
  return {
    body,
    push: (data) => void body.push(data),
    end: () => void body.push(null),
    fail: (error) => void body.destroy(error),
  };
}

function assertNotFound(error: unknown): true {
  assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${String(error)}`);
  assert.equal(error.code, 'STORAGE_NOT_FOUND');
  return true;
}

export function storageConformance(driverName: string, makeStorage: () => Promise<StorageFixture>): void {
  describe(`Storage conformance: ${driverName}`, () => {
    let fixture: StorageFixture;
    let storage: Storage;

    beforeEach(async () => {
      fixture = await makeStorage();
      storage = fixture.storage;
    });

    afterEach(async () => {
      await fixture.cleanup();
    });

    describe('put / get', () => {
      it('round-trips a small object at a nested key', async () => {
        await putBuffer(storage, 'a/b/c.txt', 'hello storage');
        assert.equal((await getBuffer(storage, 'a/b/c.txt')).toString('utf8'), 'hello storage');
      });

      it('round-trips an empty object', async () => {
        const result = await storage.put('empty', Readable.from([]));
        assert.equal(result.size, 0);
        assert.equal((await getBuffer(storage, 'empty')).length, 0);
        assert.equal((await storage.stat('empty'))?.size, 0);
      });

      it('round-trips a multi-MiB body produced by a generator, reporting its size', async () => {
        const { body, expected } = generatedBody(80, 64 * 1024, 12_345); // 5 MiB + 12345 bytes
        const result = await storage.put('big/object.bin', body);
        assert.equal(result.size, expected.length);
        const back = await getBuffer(storage, 'big/object.bin');
        assert.equal(back.length, expected.length);
        assert.equal(sha256(back), sha256(expected));
        assert.equal((await storage.stat('big/object.bin'))?.size, expected.length);
      });

      it('put replaces an existing object', async () => {
        await putBuffer(storage, 'k/obj', 'first version, longer than the second');
        await putBuffer(storage, 'k/obj', 'second');
        assert.equal((await getBuffer(storage, 'k/obj')).toString('utf8'), 'second');
        assert.equal((await storage.stat('k/obj'))?.size, 'second'.length);
        const listed = await collect(storage.list('k'));
        assert.deepEqual(
          listed.map((e) => e.path),
          ['k/obj'],
        );
      });

      it('a replacement is invisible until its body has ended: readers see the old object whole', async () => {
        const old = patternChunk(1, 300_000);
        await putBuffer(storage, 'r/obj', old);
        const manual = manualBody();
        const replacement = storage.put('r/obj', manual.body);
        manual.push(patternChunk(2, 200_000));
        await new Promise((resolve) => setTimeout(resolve, 50));
        // mid-write: the old object, complete, and nothing else is visible
        assert.equal(sha256(await getBuffer(storage, 'r/obj')), sha256(old));
        assert.equal((await storage.stat('r/obj'))?.size, old.length);
        assert.deepEqual(
          (await collect(storage.list('r'))).map((e) => e.path),
          ['r/obj'],
        );
        manual.push(patternChunk(3, 100));
        manual.end();
        const result = await replacement;
        const expected = Buffer.concat([patternChunk(2, 200_000), patternChunk(3, 100)]);
        assert.equal(result.size, expected.length);
        assert.equal(sha256(await getBuffer(storage, 'r/obj')), sha256(expected));
      });

      it('a new object is not visible (stat, list) while its put is still in progress', async () => {
        const manual = manualBody();
        const pending = storage.put('inflight/new.bin', manual.body);
        manual.push(patternChunk(4, 100_000));
        await new Promise((resolve) => setTimeout(resolve, 50));
        assert.equal(await storage.stat('inflight/new.bin'), undefined);
        const listed = await collect(storage.list('', { recursive: true }));
        assert.deepEqual(listed, []);
        manual.end();
        await pending;
        assert.equal((await storage.stat('inflight/new.bin'))?.size, 100_000);
      });

      it('a put whose body errors mid-way rejects with that error and leaves nothing at the key', async () => {
        const boom = new Error('body failed mid-way');
        async function* failing(): AsyncGenerator<Buffer> {
          yield patternChunk(0, MiB);
          await new Promise((resolve) => setImmediate(resolve));
          yield patternChunk(1, MiB);
          throw boom;
        }
        await assert.rejects(storage.put('fail/obj.bin', Readable.from(failing())), (error) => {
          assert.equal(error, boom);
          return true;
        });
        assert.equal(await storage.stat('fail/obj.bin'), undefined);
        await assert.rejects(storage.get('fail/obj.bin'), assertNotFound);
        const all = await collect(storage.list('', { recursive: true }));
        assert.deepEqual(all, [], `nothing may be listed after a failed put, got ${JSON.stringify(all)}`);
        assert.deepEqual(await collect(storage.list('fail')), []);
      });

      it('a put whose body is destroyed with an error by its producer leaves nothing', async () => {
        const manual = manualBody();
        const pending = storage.put('fail2/obj.bin', manual.body);
        manual.push(patternChunk(5, 500_000));
        await new Promise((resolve) => setTimeout(resolve, 30));
        const boom = new Error('producer died');
        manual.fail(boom);
        await assert.rejects(pending, (error) => {
          assert.equal(error, boom);
          return true;
        });
        assert.equal(await storage.stat('fail2/obj.bin'), undefined);
        assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
      });

      it('a put whose body fails at once, before the driver reads it, rejects with that error and leaves nothing', async () => {
        const manual = manualBody();
        const pending = storage.put('fail3/obj.bin', manual.body);
        const boom = new Error('producer died at once');
        manual.fail(boom);
        await assert.rejects(pending, (error) => {
          assert.equal(error, boom);
          return true;
        });
        assert.equal(await storage.stat('fail3/obj.bin'), undefined);
        assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
      });

      it('a put aborted through its AbortSignal mid-way rejects and leaves nothing', async () => {
        const manual = manualBody();
        const controller = new AbortController();
        const pending = storage.put('abort/obj.bin', manual.body, { signal: controller.signal });
        manual.push(patternChunk(6, 500_000));
        await new Promise((resolve) => setTimeout(resolve, 30));
        controller.abort();
        await assert.rejects(pending);
        assert.equal(await storage.stat('abort/obj.bin'), undefined);
        assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
        await assert.rejects(storage.get('abort/obj.bin'), assertNotFound);
      });

      it('a put with an already-aborted signal rejects and leaves nothing', async () => {
        const controller = new AbortController();
        controller.abort();
        await assert.rejects(storage.put('abort2/obj.bin', Readable.from([Buffer.from('never')]), { signal: controller.signal }));
        assert.equal(await storage.stat('abort2/obj.bin'), undefined);
        assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
      });

      it('get of a missing key rejects with STORAGE_NOT_FOUND', async () => {
        await assert.rejects(storage.get('no/such/key'), assertNotFound);
        await putBuffer(storage, 'present/x', 'x');
        await assert.rejects(storage.get('present/y'), assertNotFound);
      });

      it('get of a key that is only a folder (prefix of other keys) rejects with STORAGE_NOT_FOUND', async () => {
        await putBuffer(storage, 'folder/inner.txt', 'inner');
        assert.equal(await storage.stat('folder'), undefined);
        const outcome = await storage.get('folder').then(
          (stream) => {
            stream.destroy();
            return 'get resolved with a stream';
          },
          (error: unknown) => error,
        );
        assertNotFound(outcome);
      });
    });

    describe('ranged get', () => {
      const data = Buffer.from(Array.from({ length: 4096 }, (_, i) => (i * 7 + 3) & 0xff));

      it('returns [start, end) with end exclusive', async () => {
        await putBuffer(storage, 'range/obj', data);
        assert.deepEqual(await getBuffer(storage, 'range/obj', { start: 10, end: 20 }), data.subarray(10, 20));
        assert.deepEqual(await getBuffer(storage, 'range/obj', { start: 0, end: 1 }), data.subarray(0, 1));
        assert.deepEqual(await getBuffer(storage, 'range/obj', { start: 4095, end: 4096 }), data.subarray(4095, 4096));
      });

      it('with only start returns from start to the end', async () => {
        await putBuffer(storage, 'range/obj', data);
        assert.deepEqual(await getBuffer(storage, 'range/obj', { start: 100 }), data.subarray(100));
        assert.deepEqual(await getBuffer(storage, 'range/obj', { start: 0 }), data);
      });

      it('works across MiB boundaries of a large object', async () => {
        const { body, expected } = generatedBody(3, MiB);
        await storage.put('range/big', body);
        const start = MiB - 7;
        const end = 2 * MiB + 9;
        const part = await getBuffer(storage, 'range/big', { start, end });
        assert.equal(part.length, end - start);
        assert.deepEqual(part, expected.subarray(start, end));
      });

      it('an empty range [n, n) yields no bytes', async () => {
        await putBuffer(storage, 'range/obj', data);
        assert.equal((await getBuffer(storage, 'range/obj', { start: 5, end: 5 })).length, 0);
        assert.equal((await getBuffer(storage, 'range/obj', { start: 0, end: 0 })).length, 0);
      });

      it('a range reaching past the end stops at the end', async () => {
        await putBuffer(storage, 'range/obj', data);
        assert.deepEqual(await getBuffer(storage, 'range/obj', { start: 4000, end: 10_000 }), data.subarray(4000));
      });

      it('ranged get of a missing key rejects with STORAGE_NOT_FOUND', async () => {
        await assert.rejects(storage.get('range/missing', { start: 0, end: 10 }), assertNotFound);
      });
    });

    describe('putIfAbsent', () => {
      it('creates once, then returns false and leaves the content unchanged', async () => {
        assert.equal(await storage.putIfAbsent('locks/one.lock', Buffer.from('first')), true);
        assert.equal(await storage.putIfAbsent('locks/one.lock', Buffer.from('second, longer')), false);
        assert.equal((await getBuffer(storage, 'locks/one.lock')).toString('utf8'), 'first');
        assert.equal((await storage.stat('locks/one.lock'))?.size, 5);
        assert.deepEqual(
          (await collect(storage.list('locks'))).map((e) => e.path),
          ['locks/one.lock'],
        );
      });

      it('returns false when an object was stored there with put', async () => {
        await putBuffer(storage, 'locks/put.lock', 'from put');
        assert.equal(await storage.putIfAbsent('locks/put.lock', Buffer.from('other')), false);
        assert.equal((await getBuffer(storage, 'locks/put.lock')).toString('utf8'), 'from put');
      });

      it('succeeds again after the object was removed', async () => {
        assert.equal(await storage.putIfAbsent('locks/again.lock', Buffer.from('a')), true);
        await storage.remove('locks/again.lock');
        assert.equal(await storage.putIfAbsent('locks/again.lock', Buffer.from('b')), true);
        assert.equal((await getBuffer(storage, 'locks/again.lock')).toString('utf8'), 'b');
      });

      it('10 concurrent putIfAbsent on one key: exactly one wins and its content is stored', async () => {
        const attempts = Array.from({ length: 10 }, (_, i) => Buffer.from(`writer-${i}`));
        const results = await Promise.all(attempts.map((data) => storage.putIfAbsent('race/the.lock', data)));
        const winners = results.flatMap((won, i) => (won ? [i] : []));
        assert.equal(winners.length, 1, `exactly one writer must win, got ${JSON.stringify(results)}`);
        const stored = (await getBuffer(storage, 'race/the.lock')).toString('utf8');
        assert.equal(stored, `writer-${winners[0]}`);
        assert.deepEqual(
          (await collect(storage.list('race'))).map((e) => e.path),
          ['race/the.lock'],
        );
      });
    });

    describe('stat', () => {
      it('gives the size and a recent modification time', async () => {
        const before = Date.now();
        await putBuffer(storage, 's/obj', Buffer.alloc(1234, 1));
        const st = await storage.stat('s/obj');
        assert.ok(st, 'stat of a stored object is defined');
        assert.equal(st.size, 1234);
        assert.ok(st.modified instanceof Date);
        // allow coarse clocks and filesystem timestamp granularity
        assert.ok(Math.abs(st.modified.getTime() - before) < 60_000, `modified ${st.modified.toISOString()} is not recent`);
      });

      it('is undefined for missing keys and for folders', async () => {
        assert.equal(await storage.stat('nothing/here'), undefined);
        await putBuffer(storage, 'dir/file', 'x');
        assert.equal(await storage.stat('dir'), undefined);
        assert.equal(await storage.stat('dir/other'), undefined);
      });
    });

    describe('list', () => {
      async function seed(): Promise<void> {
        for (const key of ['dir/b.txt', 'dir/a.txt', 'dir/sub/c.txt', 'dir/sub/deeper/d.txt', 'dir/sub2/e.txt', 'top.txt']) {
          await putBuffer(storage, key, `content of ${key}`);
        }
      }

      it('non-recursive lists objects and sub-folders directly under the prefix, sorted by path', async () => {
        await seed();
        const entries = await collect(storage.list('dir'));
        assert.deepEqual(
          entries.map((e) => [e.kind, e.path]),
          [
            ['object', 'dir/a.txt'],
            ['object', 'dir/b.txt'],
            ['folder', 'dir/sub'],
            ['folder', 'dir/sub2'],
          ],
        );
        const a = entries[0]!;
        assert.equal(a.kind, 'object');
        if (a.kind === 'object') {
          assert.equal(a.size, Buffer.byteLength('content of dir/a.txt'));
          assert.ok(a.modified instanceof Date);
        }
      });

      it('a trailing slash on the prefix gives the same listing', async () => {
        await seed();
        const withSlash = await collect(storage.list('dir/'));
        assert.deepEqual(
          withSlash.map((e) => e.path),
          ['dir/a.txt', 'dir/b.txt', 'dir/sub', 'dir/sub2'],
        );
      });

      it("non-recursive listing of the root ('') gives top-level folders and objects", async () => {
        await seed();
        assert.deepEqual(
          (await collect(storage.list(''))).map((e) => [e.kind, e.path]),
          [
            ['folder', 'dir'],
            ['object', 'top.txt'],
          ],
        );
      });

      it('recursive lists every object under the prefix with full keys and no folders', async () => {
        await seed();
        const entries = await collect(storage.list('dir', { recursive: true }));
        assert.ok(entries.every((e) => e.kind === 'object'), 'recursive listings have no folder entries');
        assert.deepEqual(
          entries.map((e) => e.path),
          ['dir/a.txt', 'dir/b.txt', 'dir/sub/c.txt', 'dir/sub/deeper/d.txt', 'dir/sub2/e.txt'],
        );
        const all = await collect(storage.list('', { recursive: true }));
        assert.deepEqual(
          all.map((e) => e.path).sort(),
          ['dir/a.txt', 'dir/b.txt', 'dir/sub/c.txt', 'dir/sub/deeper/d.txt', 'dir/sub2/e.txt', 'top.txt'],
        );
        for (const entry of all) {
          if (entry.kind === 'object') assert.equal(entry.size, Buffer.byteLength(`content of ${entry.path}`));
        }
      });

      it('recursive listing is ordered by full path even when names sort before "/"', async () => {
        // '-' and '.' sort before '/': "b-x/..." and "b.txt" come before "b/..." by path.
        for (const key of ['p/b/inner.txt', 'p/b-x/inner.txt', 'p/b.txt', 'p/a.txt']) await putBuffer(storage, key, key);
        const paths = (await collect(storage.list('p', { recursive: true }))).map((e) => e.path);
        const byPath = [...paths].sort((x, y) => (x < y ? -1 : x > y ? 1 : 0));
        assert.deepEqual(paths, byPath);
        assert.equal(paths.length, 4);
      });

      it('a missing prefix yields nothing', async () => {
        await seed();
        assert.deepEqual(await collect(storage.list('missing')), []);
        assert.deepEqual(await collect(storage.list('missing/deeper', { recursive: true })), []);
        assert.deepEqual(await collect(storage.list('di')), [], 'a prefix is a folder, not a string prefix');
      });

      it('listing a fresh storage yields nothing', async () => {
        assert.deepEqual(await collect(storage.list('')), []);
        assert.deepEqual(await collect(storage.list('', { recursive: true })), []);
      });
    });

    describe('remove / removeFolder / isEmpty', () => {
      it('remove deletes an object and is idempotent', async () => {
        await putBuffer(storage, 'rm/a', 'a');
        await putBuffer(storage, 'rm/b', 'b');
        await storage.remove('rm/a');
        assert.equal(await storage.stat('rm/a'), undefined);
        await assert.rejects(storage.get('rm/a'), assertNotFound);
        await storage.remove('rm/a'); // again: not an error
        await storage.remove('never/existed');
        assert.deepEqual(
          (await collect(storage.list('rm'))).map((e) => e.path),
          ['rm/b'],
        );
      });

      it('removeFolder removes everything under the folder and nothing else', async () => {
        for (const key of ['f/a', 'f/sub/b', 'f/sub/deep/c', 'fx/keep', 'g/keep', 'f.txt']) await putBuffer(storage, key, key);
        await storage.removeFolder('f');
        const rest = (await collect(storage.list('', { recursive: true }))).map((e) => e.path).sort();
        assert.deepEqual(rest, ['f.txt', 'fx/keep', 'g/keep']);
        assert.equal(await storage.stat('f/a'), undefined);
        assert.deepEqual(await collect(storage.list('f', { recursive: true })), []);
        assert.ok(!(await collect(storage.list(''))).some((e) => e.path === 'f'), 'the removed folder is not listed');
      });

      it('removeFolder of a missing folder is not an error', async () => {
        await putBuffer(storage, 'keep/x', 'x');
        await storage.removeFolder('no/such/folder');
        assert.equal((await storage.stat('keep/x'))?.size, 1);
      });

      it('isEmpty is true for a fresh storage, false once something is stored, true again once removed', async () => {
        assert.equal(await storage.isEmpty(), true);
        await putBuffer(storage, 'only.txt', 'x');
        assert.equal(await storage.isEmpty(), false);
        await storage.remove('only.txt');
        assert.equal(await storage.isEmpty(), true);
      });

      it('isEmpty is false after a putIfAbsent and after a nested put', async () => {
        assert.equal(await storage.putIfAbsent('lock', Buffer.from('x')), true);
        assert.equal(await storage.isEmpty(), false);
        await storage.remove('lock');
        await putBuffer(storage, 'deep/down/obj', 'x');
        assert.equal(await storage.isEmpty(), false);
      });
    });
  });
}
