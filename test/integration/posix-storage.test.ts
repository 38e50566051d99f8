import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, it } from 'node:test';
import { fileURLToPath } from 'node:url';
import { PgkeepError } from '../../src/errors.js';
import { PosixStorage, TEMP_PREFIX } from '../../src/storage/posix-storage.js';
import { collectStream } from '../../src/storage/storage.js';
import { collect, generatedBody, patternChunk, storageConformance } from '../support/storage-conformance.js';

async function tempRoot(): Promise<{ base: string; cleanup(): Promise<void> }> {
  const base = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-posix-'));
  return { base, cleanup: () => fs.rm(base, { recursive: true, force: true }) };
}

// The repository folder does not exist yet: the driver must create it.
storageConformance('posix', async () => {
  const { base, cleanup } = await tempRoot();
  return { storage: new PosixStorage(path.join(base, 'repo')), cleanup };
});

/** Every file (and, unless filesOnly, folder) under `root`, as paths relative to it. */
async function walk(root: string, filesOnly = false): Promise<string[]> {
  const out: string[] = [];
  async function visit(folder: string): Promise<void> {
    let entries;
    try {
      entries = await fs.readdir(folder, { withFileTypes: true });
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return;
      throw error;
    }
    for (const entry of entries) {
      const full = path.join(folder, entry.name);
      if (!filesOnly || !entry.isDirectory()) out.push(path.relative(root, full));
      if (entry.isDirectory()) await visit(full);
    }
  }
  await visit(root);
  return out;
}

async function tempFiles(root: string): Promise<string[]> {
  return (await walk(root)).filter((p) => path.basename(p).startsWith(TEMP_PREFIX));
}

async function mode(file: string): Promise<number> {
  return (await fs.stat(file)).mode & 0o777;
}

describe('PosixStorage specifics', () => {
  let base: string;
  let cleanup: () => Promise<void>;
  let savedUmask: number;

  before(async () => {
    ({ base, cleanup } = await tempRoot());
    // A common umask, so a driver relying on default modes would produce 0644/0755.
    savedUmask = process.umask(0o022);
  });

  after(async () => {
    process.umask(savedUmask);
    await cleanup();
  });

  it('declares posix modes and conditional create', () => {
    const storage = new PosixStorage(path.join(base, 'caps'));
    assert.equal(storage.capabilities.posixModes, true);
    assert.equal(storage.capabilities.conditionalCreate, true);
    assert.equal(storage.capabilities.remote, false);
    assert.equal(storage.location, path.join(base, 'caps'));
  });

  it('creates folders 0700 (including the repository root) and files 0600', async () => {
    const root = path.join(base, 'modes');
    const storage = new PosixStorage(root);
    await storage.put('a/b/c.bin', Readable.from([Buffer.from('data')]));
    assert.equal(await storage.putIfAbsent('locks/x.lock', Buffer.from('lock')), true);
    assert.equal(await mode(root), 0o700, 'repository root');
    assert.equal(await mode(path.join(root, 'a')), 0o700, 'folder a');
    assert.equal(await mode(path.join(root, 'a', 'b')), 0o700, 'folder a/b');
    assert.equal(await mode(path.join(root, 'locks')), 0o700, 'folder locks');
    assert.equal(await mode(path.join(root, 'a', 'b', 'c.bin')), 0o600, 'file from put');
    assert.equal(await mode(path.join(root, 'locks', 'x.lock')), 0o600, 'file from putIfAbsent');
    // a replacement keeps the mode
    await storage.put('a/b/c.bin', Readable.from([Buffer.from('other data')]));
    assert.equal(await mode(path.join(root, 'a', 'b', 'c.bin')), 0o600, 'replaced file');
  });

  it('leaves no temp files after a failed put, an aborted put, or putIfAbsent (won or lost)', async () => {
    const root = path.join(base, 'temps');
    const storage = new PosixStorage(root);
    await storage.put('keep/old.bin', Readable.from([Buffer.from('old')]));

    const boom = new Error('producer failed');
    async function* failing(): AsyncGenerator<Buffer> {
      yield patternChunk(0, 1 << 20);
      throw boom;
    }
    await assert.rejects(storage.put('keep/new.bin', Readable.from(failing())), (error) => error === boom);
    assert.deepEqual(await tempFiles(root), []);
    // the failed write did not touch the neighbour
    assert.equal((await fs.readFile(path.join(root, 'keep', 'old.bin'), 'utf8')), 'old');
    await assert.rejects(fs.stat(path.join(root, 'keep', 'new.bin')), { code: 'ENOENT' });

    const controller = new AbortController();
    const body = new Readable({ read() {} });
    const pending = storage.put('keep/aborted.bin', body, { signal: controller.signal });
    body.push(patternChunk(1, 200_000));
    await new Promise((resolve) => setTimeout(resolve, 30));
    assert.equal((await tempFiles(root)).length, 1, 'an in-flight put writes one temp file');
    controller.abort();
    await assert.rejects(pending);
    assert.deepEqual(await tempFiles(root), []);
    await assert.rejects(fs.stat(path.join(root, 'keep', 'aborted.bin')), { code: 'ENOENT' });

    assert.equal(await storage.putIfAbsent('keep/lock', Buffer.from('a')), true);
    assert.equal(await storage.putIfAbsent('keep/lock', Buffer.from('b')), false);
    await Promise.all(Array.from({ length: 10 }, (_, i) => storage.putIfAbsent('keep/race', Buffer.from(String(i)))));
    assert.deepEqual(await tempFiles(root), []);
    assert.deepEqual((await walk(path.join(root, 'keep'))).sort(), ['lock', 'old.bin', 'race']);
  });

  it('does not list leftover temp files (e.g. from a crash)', async () => {
    const root = path.join(base, 'leftover');
    const storage = new PosixStorage(root);
    await storage.put('d/real', Readable.from([Buffer.from('x')]));
    await fs.writeFile(path.join(root, 'd', `${TEMP_PREFIX}real.abcdef`), 'half');
    assert.deepEqual(
      (await collect(storage.list('d'))).map((e) => e.path),
      ['d/real'],
    );
    assert.deepEqual(
      (await collect(storage.list('', { recursive: true }))).map((e) => e.path),
      ['d/real'],
    );
  });

  it('rejects keys that would escape the repository, without touching the filesystem outside', async () => {
    const root = path.join(base, 'escape', 'repo');
    const storage = new PosixStorage(root);
    for (const key of ['../outside.txt', 'a/../../outside.txt']) {
      await assert.rejects(storage.put(key, Readable.from([Buffer.from('x')])), (error) => {
        assert.ok(error instanceof PgkeepError);
        assert.equal(error.code, 'INTERNAL');
        return true;
      });
    }
    await assert.rejects(storage.putIfAbsent('../outside.lock', Buffer.from('x')), PgkeepError);
    await assert.rejects(fs.stat(path.join(base, 'escape', 'outside.txt')), { code: 'ENOENT' });
    await assert.rejects(fs.stat(path.join(base, 'escape', 'outside.lock')), { code: 'ENOENT' });
  });

  it('refuses to remove the repository root with removeFolder', async () => {
    const root = path.join(base, 'rootrm');
    const storage = new PosixStorage(root);
    await storage.put('x', Readable.from([Buffer.from('x')]));
    for (const prefix of ['', '.', '/']) {
      await assert.rejects(storage.removeFolder(prefix), PgkeepError, `removeFolder(${JSON.stringify(prefix)})`);
    }
    assert.equal(await fs.readFile(path.join(root, 'x'), 'utf8'), 'x');
  });

  it('get() streams own their file handle: nothing is left for garbage collection to close', async () => {
    // A FileHandle whose fd was closed by someone else makes Node close it again on GC:
    // EBADF crashes the process, or worse, closes an unrelated file or socket that reused the fd.
    const projectRoot = fileURLToPath(new URL('../..', import.meta.url));
    const driver = fileURLToPath(new URL('../../src/storage/posix-storage.ts', import.meta.url));
    const script = path.join(base, 'gc-check.mts');
    await fs.writeFile(
      script,
      `import { Readable } from 'node:stream';
import { PosixStorage } from ${JSON.stringify(driver)};
const storage = new PosixStorage(process.argv[2]);
await storage.put('obj', Readable.from([Buffer.alloc(100_000, 7)]));
for (let i = 0; i < 5; i++) {
  let n = 0;
  for await (const chunk of await storage.get('obj', i % 2 ? { start: 10 } : undefined)) n += chunk.length;
  if (n !== (i % 2 ? 99_990 : 100_000)) throw new Error('short read ' + n);
}
(await storage.get('obj')).destroy(); // abandoned before reading
await new Promise((resolve) => setTimeout(resolve, 50));
for (let i = 0; i < 3; i++) {
  globalThis.gc();
  await new Promise((resolve) => setTimeout(resolve, 50));
}
console.log('survived');
`,
    );
    const child = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', script, path.join(base, 'gc-repo')], {
      cwd: projectRoot,
      encoding: 'utf8',
      timeout: 60_000,
    });
    assert.equal(child.status, 0, `child failed:\n${child.stderr}`);
    assert.match(child.stdout, /survived/);
    assert.doesNotMatch(child.stderr, /garbage collection/i);
  });

  it('isEmpty counts anything in the folder, and a missing folder is empty', async () => {
    const root = path.join(base, 'emptiness');
    const storage = new PosixStorage(root);
    assert.equal(await storage.isEmpty(), true);
    await fs.mkdir(root);
    assert.equal(await storage.isEmpty(), true);
    await fs.writeFile(path.join(root, 'foreign.txt'), 'not ours');
    assert.equal(await storage.isEmpty(), false);
  });

  describe('on a full filesystem', () => {
    let mountPoint: string | undefined;
    let mountError: string | undefined;

    before(async () => {
      const dir = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-tmpfs-'));
      try {
        execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m,mode=0700', 'tmpfs', dir], { stdio: 'pipe' });
        mountPoint = dir;
      } catch (error) {
        mountError = String((error as { stderr?: Buffer }).stderr ?? (error as Error).message).trim().split('\n')[0] || 'mount failed';
        await fs.rm(dir, { recursive: true, force: true });
      }
    });

    after(async () => {
      if (mountPoint) {
        execFileSync('umount', [mountPoint], { stdio: 'pipe' });
        await fs.rm(mountPoint, { recursive: true, force: true });
      }
    });

    it('maps ENOSPC to STORAGE_FULL and leaves no partial file', async (t) => {
      if (!mountPoint) {
        t.skip(`cannot mount a tmpfs (needs root): ${mountError}`);
        return;
      }
      const storage = new PosixStorage(path.join(mountPoint, 'repo'));
      const { body } = generatedBody(64, 64 * 1024); // 4 MiB into a 1 MiB filesystem
      await assert.rejects(storage.put('sources/app/big.bin', body), (error) => {
        assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${String(error)}`);
        assert.equal(error.code, 'STORAGE_FULL');
        assert.match(error.message, /no space/i);
        return true;
      });
      assert.equal(await storage.stat('sources/app/big.bin'), undefined);
      const files = await walk(mountPoint, true);
      assert.deepEqual(files, [], 'no partial or temp file remains');
      const { bavail, bsize } = await fs.statfs(mountPoint);
      assert.ok(bavail * bsize >= 900 * 1024, `the space is given back (${bavail * bsize} bytes free)`);
      // the storage still works once space is available
      await storage.put('sources/app/small.bin', Readable.from([Buffer.from('fits')]));
      assert.equal((await storage.stat('sources/app/small.bin'))?.size, 4);
    });
  });
});

describe('posix storage: readInto (a reader that reuses its buffers)', () => {
  it('reads a range into the buffer given, the same bytes get() streams; fewer at the end; a missing object is STORAGE_NOT_FOUND', async () => {
    const { base, cleanup } = await tempRoot();
    try {
      const storage = new PosixStorage(path.join(base, 'repo'));
      const data = Buffer.from(Array.from({ length: 300_000 }, (_, i) => (i * 31 + (i >> 8)) & 0xff));
      await storage.put('content/packs/p', Readable.from([data]));
      const into = Buffer.alloc(100_000, 0xee);
      assert.equal(await storage.readInto('content/packs/p', 123_456, into), 100_000);
      assert.ok(into.equals(data.subarray(123_456, 223_456)));
      assert.ok(into.equals(await collectStream(await storage.get('content/packs/p', { start: 123_456, end: 223_456 }))));
      // past the end: what there is, the rest of the buffer untouched
      const tail = Buffer.alloc(1000, 0xee);
      assert.equal(await storage.readInto('content/packs/p', 299_500, tail), 500);
      assert.ok(tail.subarray(0, 500).equals(data.subarray(299_500)));
      assert.ok(tail.subarray(500).every((b) => b === 0xee));
      await assert.rejects(storage.readInto('content/packs/missing', 0, Buffer.alloc(10)), (e) => e instanceof PgkeepError && e.code === 'STORAGE_NOT_FOUND');
    } finally {
      await cleanup();
    }
  });
});
