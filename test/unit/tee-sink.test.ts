import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, it } from 'node:test';
import { teeSink } from '../../src/pipeline/load-stream.js';

let work: string;
before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'pgkeep-tee-'));
});
after(async () => {
  if (work) await rm(work, { recursive: true, force: true });
});

const chunks = () => Array.from({ length: 64 }, (_, i) => Buffer.alloc(64 * 1024, i));
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

/** A target that collects what it gets, each write completing after `delayMs`. */
function collector(delayMs: number, highWaterMark = 64 * 1024): Writable & { bytes: Buffer[] } {
  const bytes: Buffer[] = [];
  const sink = new Writable({
    highWaterMark,
    write(chunk: Buffer, _encoding, callback) {
      bytes.push(chunk);
      if (delayMs > 0) setTimeout(callback, delayMs);
      else callback();
    },
  });
  return Object.assign(sink, { bytes });
}

describe('teeSink', () => {
  it('every byte reaches every target, and the end waits for a file to be complete', async () => {
    const file = path.join(work, 'copy');
    const slow = collector(1);
    await pipeline(Readable.from(chunks()), teeSink(slow, createWriteStream(file)));
    const expected = Buffer.concat(chunks());
    assert.equal(sha(Buffer.concat(slow.bytes)), sha(expected));
    assert.equal(sha(await readFile(file)), sha(expected), 'the file is complete once the pipeline resolves');
  });

  it('keeps the pace of its slowest target (backpressure from each)', async () => {
    const fast = collector(0);
    const slow = collector(5, 16 * 1024);
    const tee = teeSink(fast, slow);
    let maxAhead = 0;
    const source = Readable.from(
      (function* () {
        for (const chunk of chunks()) {
          maxAhead = Math.max(maxAhead, fast.bytes.length - slow.bytes.length);
          yield chunk;
        }
      })(),
    );
    await pipeline(source, tee);
    assert.equal(fast.bytes.length, 64);
    assert.equal(slow.bytes.length, 64);
    assert.ok(maxAhead <= 2, `the fast target ran ${maxAhead} chunks ahead of the slow one`);
  });

  it('an error upstream destroys every target with it: none sees a clean end', async () => {
    const a = collector(0);
    const b = collector(0);
    let finished = 0;
    a.on('finish', () => finished++);
    b.on('finish', () => finished++);
    a.on('error', () => undefined);
    b.on('error', () => undefined);
    const source = new Readable({ read() {} });
    const done = pipeline(source, teeSink(a, b));
    source.push(Buffer.from('partial'));
    setImmediate(() => source.destroy(new Error('checksum mismatch')));
    await assert.rejects(done, /checksum mismatch/);
    assert.ok(a.destroyed && b.destroyed);
    assert.equal(finished, 0);
  });

  it('a failing target fails the tee', async () => {
    const good = collector(0);
    good.on('error', () => undefined);
    const bad = new Writable({
      write(_chunk, _encoding, callback) {
        callback(new Error('disk full'));
      },
    });
    await assert.rejects(pipeline(Readable.from(chunks()), teeSink(good, bad)), /disk full/);
    assert.ok(good.destroyed);
  });
});
