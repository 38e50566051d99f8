import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe, it } from 'node:test';
import { growingPartSize, maxObjectSize, MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, uploadMultipart, type MultipartTarget, type PartBody } from '../../src/storage/s3-multipart.js';
import { collectStream } from '../../src/storage/storage.js';

const MiB = 1024 * 1024;
const TiB = 1024 * 1024 * MiB;

/** An in-memory stand-in for the S3 requests: the uploader's logic is what is tested here (s3-storage.test.ts runs it against a real server). */
class RecordingTarget implements MultipartTarget {
  parts = new Map<number, Buffer>();
  kinds: PartBody['kind'][] = [];
  single: Buffer | undefined;
  completed: Buffer | undefined;
  aborted = 0;
  failPart: number | undefined;
  inFlight = 0;
  maxInFlight = 0;
  async putObject(body: PartBody): Promise<void> {
    this.single = await read(body);
  }
  async create(): Promise<string> {
    return 'upload-1';
  }
  async uploadPart(_id: string, n: number, body: PartBody): Promise<string> {
    this.inFlight++;
    this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    try {
      await new Promise((resolve) => setTimeout(resolve, 2));
      if (n === this.failPart) throw new Error(`part ${n} refused`);
      this.kinds.push(body.kind);
      this.parts.set(n, await read(body));
      return `"etag-${n}"`;
    } finally {
      this.inFlight--;
    }
  }
  async complete(_id: string, parts: { partNumber: number; etag: string }[]): Promise<void> {
    assert.deepEqual(parts.map((p) => p.partNumber), parts.map((_, i) => i + 1), 'parts complete in order, none missing');
    this.completed = Buffer.concat(parts.map((p) => this.parts.get(p.partNumber)!));
  }
  async abort(): Promise<void> {
    this.aborted++;
  }
}

async function read(body: PartBody): Promise<Buffer> {
  return body.kind === 'memory' ? Buffer.from(body.data) : collectStream(body.open());
}

function pattern(i: number, size: number): Buffer {
  const b = Buffer.alloc(size, i);
  for (let j = 0; j + 4 <= size; j += 4) b.writeUInt32LE((i * 2654435761 + j) >>> 0, j);
  return b;
}

async function* chunks(count: number, size: number, fail?: Error): AsyncGenerator<Buffer> {
  for (let i = 0; i < count; i++) yield pattern(i, size);
  if (fail) throw fail;
}

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

describe('growing part sizes', () => {
  it('start at 8 MiB, double every 1000 parts, never leave S3 limits, and hold a 5 TiB object in 10,000 parts', () => {
    const size = growingPartSize();
    assert.equal(size(1), 8 * MiB);
    assert.equal(size(1000), 8 * MiB);
    assert.equal(size(1001), 16 * MiB);
    assert.equal(size(10_000), 4096 * MiB);
    for (let n = 1; n <= MAX_PARTS; n++) assert.ok(size(n) >= MIN_PART_SIZE && size(n) <= MAX_PART_SIZE, `part ${n}`);
    assert.ok(maxObjectSize(size) >= 5 * TiB, `max object ${maxObjectSize(size) / TiB} TiB`);
    // a fixed 64 MiB (the old default) held only 625 GiB
    assert.ok(maxObjectSize(() => 64 * MiB) < TiB);
    // a 100 GiB dump stays in parts of at most 64 MiB
    let total = 0;
    let n = 0;
    while (total < 100 * 1024 * MiB) total += size(++n);
    assert.ok(size(n) <= 64 * MiB, `part ${n} is ${size(n) / MiB} MiB`);
  });
});

describe('uploadMultipart', () => {
  let spool: string;
  before(async () => {
    spool = await mkdtemp(path.join(tmpdir(), 'pgkeep-multipart-'));
  });
  after(async () => rm(spool, { recursive: true, force: true }));

  it('a body smaller than the first part is one PutObject', async () => {
    const target = new RecordingTarget();
    const result = await uploadMultipart(target, chunks(3, 1000), { partSize: () => 5 * MiB });
    assert.deepEqual(result, { size: 3000, parts: 1 });
    assert.equal(target.single?.length, 3000);
    assert.equal(target.parts.size, 0);
  });

  it('an empty body is an empty object', async () => {
    const target = new RecordingTarget();
    assert.deepEqual(await uploadMultipart(target, chunks(0, 1)), { size: 0, parts: 1 });
    assert.equal(target.single?.length, 0);
  });

  it('splits chunks across part boundaries exactly, keeps at most queueSize parts in flight, and completes in order', async () => {
    const target = new RecordingTarget();
    const data: Buffer[] = [];
    async function* body() {
      for (let i = 0; i < 23; i++) {
        const c = pattern(i, 1_000_003); // never aligned with the parts
        data.push(c);
        yield c;
      }
    }
    const sizes = [5 * MiB, 6 * MiB, 7 * MiB];
    const result = await uploadMultipart(target, body(), { partSize: (n) => sizes[Math.min(n - 1, 2)]!, queueSize: 2 });
    const whole = Buffer.concat(data);
    assert.equal(result.size, whole.length);
    assert.equal(sha(target.completed!), sha(whole));
    assert.deepEqual([...target.parts.keys()].sort((a, b) => a - b).map((n) => target.parts.get(n)!.length), [5 * MiB, 6 * MiB, 7 * MiB, whole.length - 18 * MiB]);
    assert.ok(target.maxInFlight <= 2, `at most 2 parts at once, saw ${target.maxInFlight}`);
  });

  it('spools parts above the memory limit to private files, reads them back, and removes them', async () => {
    const target = new RecordingTarget();
    const result = await uploadMultipart(target, chunks(14, MiB), { partSize: () => 5 * MiB, memoryLimit: 4 * MiB, spoolDir: spool });
    assert.equal(result.size, 14 * MiB);
    assert.deepEqual(target.kinds, ['file', 'file', 'file']);
    assert.equal(sha(target.completed!), sha(Buffer.concat(Array.from({ length: 14 }, (_, i) => pattern(i, MiB)))));
    assert.deepEqual(await readdir(spool), [], 'no spool file or folder left');
  });

  it('the body failing rethrows its error, aborts the upload, never completes, and removes spool files', async () => {
    const target = new RecordingTarget();
    const boom = new Error('pg_dump: error: connection lost');
    await assert.rejects(uploadMultipart(target, chunks(12, MiB, boom), { partSize: () => 5 * MiB, memoryLimit: 4 * MiB, spoolDir: spool }), (e) => e === boom);
    assert.equal(target.completed, undefined);
    assert.equal(target.aborted, 1);
    assert.deepEqual(await readdir(spool), []);
  });

  it('a part failing stops reading the body, aborts, and rejects with that failure', async () => {
    const target = new RecordingTarget();
    target.failPart = 2;
    let read = 0;
    async function* endless() {
      for (let i = 0; ; i++) {
        read++;
        yield pattern(i, MiB);
      }
    }
    await assert.rejects(uploadMultipart(target, endless(), { partSize: () => 5 * MiB }), /part 2 refused/);
    assert.equal(target.aborted, 1);
    assert.equal(target.completed, undefined);
    assert.ok(read < 40, `the body was not read on after the failure (${read} MiB read)`);
  });

  it('an abort signal stops the upload with its reason', async () => {
    const target = new RecordingTarget();
    const controller = new AbortController();
    const reason = new Error('stopped by SIGTERM');
    async function* slow() {
      for (let i = 0; ; i++) {
        if (i === 7) controller.abort(reason);
        yield pattern(i, MiB);
        await new Promise((resolve) => setImmediate(resolve));
      }
    }
    await assert.rejects(uploadMultipart(target, slow(), { partSize: () => 5 * MiB, signal: controller.signal }), (e) => e === reason);
    assert.equal(target.completed, undefined);
    assert.equal(target.aborted, 1);
  });

  it('refuses to go past 10,000 parts with a clear error', async () => {
    const target = new RecordingTarget();
    target.uploadPart = async () => '"e"';
    // a part size of 1 byte makes the 10,001st part come quickly (the limit, not S3's minimum, is tested)
    await assert.rejects(uploadMultipart(target, chunks(3, 4000), { partSize: () => 1 }), (e: Error & { code?: string }) => {
      assert.equal(e.code, 'STORAGE_IO');
      assert.match(e.message, /larger than 10000 parts.*part size/);
      return true;
    });
    assert.equal(target.aborted, 1);
  });
});
