import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { HashCounter, type Digest } from '../../src/pipeline/hash-counter.js';

const data = Buffer.concat([randomBytes(3 << 20), Buffer.alloc(12_345, 0x41)]);
const digest: Digest = { size: data.length, sha256: createHash('sha256').update(data).digest('hex') };

function chunked(buffer: Buffer, size = 100_000): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buffer.length; i += size) parts.push(buffer.subarray(i, i + size));
  return Readable.from(parts);
}

/** A sink that records what reached it and whether the stream ended cleanly for it. */
function sink(): { stream: Writable; received: () => Buffer; finalCalled: () => boolean } {
  const chunks: Buffer[] = [];
  let finalCalled = false;
  const stream = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
    final(callback) {
      finalCalled = true;
      callback();
    },
  });
  return { stream, received: () => Buffer.concat(chunks), finalCalled: () => finalCalled };
}

function checksumMismatch(what: string): (error: unknown) => true {
  return (error) => {
    assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${String(error)}`);
    assert.equal(error.code, 'CHECKSUM_MISMATCH');
    assert.ok(error.message.includes(what), error.message);
    return true;
  };
}

describe('HashCounter', () => {
  it('passes the bytes through unchanged and its digest matches crypto sha256', async () => {
    const counter = new HashCounter();
    const out = sink();
    await pipeline(chunked(data), counter, out.stream);
    assert.ok(out.received().equals(data));
    assert.equal(counter.size, data.length);
    assert.deepEqual(counter.digest, digest);
  });

  it('the digest of an empty stream is the sha256 of nothing', async () => {
    const counter = new HashCounter();
    await pipeline(Readable.from([]), counter, sink().stream);
    assert.deepEqual(counter.digest, { size: 0, sha256: createHash('sha256').digest('hex') });
  });

  it('reading the digest before the end is an error', async () => {
    const counter = new HashCounter();
    assert.throws(() => counter.digest);
    counter.write(Buffer.from('abc'));
    assert.equal(counter.size, 3);
    assert.throws(() => counter.digest);
    counter.destroy();
  });

  it('with a matching expect, the stream completes', async () => {
    const counter = new HashCounter({ digest, what: 'data.bin' });
    const out = sink();
    await pipeline(chunked(data), counter, out.stream);
    assert.ok(out.finalCalled());
    assert.deepEqual(counter.digest, digest);
  });

  it('fewer bytes than expected fail the stream with CHECKSUM_MISMATCH before the end reaches downstream', async () => {
    const counter = new HashCounter({ digest, what: 'data.bin' });
    const out = sink();
    await assert.rejects(pipeline(chunked(data.subarray(0, data.length - 1)), counter, out.stream), checksumMismatch('data.bin'));
    assert.equal(out.finalCalled(), false, 'downstream never sees a clean end');
  });

  it('more bytes than expected fail the stream with CHECKSUM_MISMATCH, passing on no more than expected', async () => {
    const counter = new HashCounter({ digest, what: 'data.bin' });
    const out = sink();
    await assert.rejects(pipeline(chunked(Buffer.concat([data, Buffer.from('x')])), counter, out.stream), checksumMismatch('data.bin'));
    assert.equal(out.finalCalled(), false);
    assert.ok(out.received().length <= data.length, `${out.received().length} bytes went downstream`);
  });

  it('same size but different bytes fail the stream with CHECKSUM_MISMATCH', async () => {
    const corrupt = Buffer.from(data);
    corrupt[1_000_000] = corrupt[1_000_000]! ^ 0x01;
    const counter = new HashCounter({ digest, what: 'sources/app/backups/x/data.zst' });
    const out = sink();
    await assert.rejects(pipeline(chunked(corrupt), counter, out.stream), (error: unknown) => {
      checksumMismatch('sources/app/backups/x/data.zst')(error);
      assert.match((error as Error).message, /SHA-256/);
      return true;
    });
    assert.equal(out.finalCalled(), false);
  });

  it('a wrong recorded size with the right hash still fails', async () => {
    const counter = new HashCounter({ digest: { size: digest.size + 1, sha256: digest.sha256 }, what: 'obj' });
    await assert.rejects(pipeline(chunked(data), counter, sink().stream), checksumMismatch('obj'));
  });
});
