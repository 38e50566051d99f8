import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { test } from 'node:test';
import { childStdinSink } from '../../src/pipeline/load-stream.js';

/** Feeds `chunks` to a child that only starts reading after `delaySeconds`, and returns what it counted. */
async function bytesReceived(chunks: Buffer[], delaySeconds: number): Promise<number> {
  const child = spawn('sh', ['-c', `sleep ${delaySeconds}; wc -c`], { stdio: ['pipe', 'pipe', 'inherit'] });
  let out = '';
  child.stdout.setEncoding('utf8').on('data', (t: string) => (out += t));
  const closed = new Promise((resolve) => child.on('close', resolve));
  await pipeline(Readable.from(chunks), childStdinSink(child.stdin));
  await closed;
  return Number(out.trim());
}

test('every byte reaches a child that reads late (nothing still buffered is dropped at the end)', async () => {
  // 70 KiB into a child that is not reading yet: the pipe takes 64 KiB, the
  // tail waits in Node's buffer when the stream finishes, and must still arrive.
  const chunks = Array.from({ length: 7 }, (_, i) => Buffer.alloc(10 * 1024, i));
  assert.equal(await bytesReceived(chunks, 0.3), 7 * 10 * 1024);
  // and more than pipe and buffer hold together
  const many = Array.from({ length: 30 }, (_, i) => Buffer.alloc(10 * 1024, i));
  assert.equal(await bytesReceived(many, 0.3), 30 * 10 * 1024);
});

test('a child that stops reading early does not fail the stream; the rest is drained', async () => {
  const child = spawn('head', ['-c', '10'], { stdio: ['pipe', 'ignore', 'inherit'] });
  const closed = new Promise((resolve) => child.on('close', resolve));
  const chunks = Array.from({ length: 200 }, () => Buffer.alloc(16 * 1024, 65));
  let consumed = 0;
  const source = Readable.from(
    (function* () {
      for (const chunk of chunks) {
        consumed += chunk.length;
        yield chunk;
      }
    })(),
  );
  await pipeline(source, childStdinSink(child.stdin));
  await closed;
  assert.equal(consumed, 200 * 16 * 1024, 'the whole input was read, so checksums upstream see every byte');
});

test('a chunk is reported written only once the child has it: overwriting it then changes nothing the child reads', async () => {
  const child = spawn('sh', ['-c', 'sleep 0.2; cat'], { stdio: ['pipe', 'pipe', 'inherit'] });
  const received: Buffer[] = [];
  child.stdout.on('data', (b: Buffer) => received.push(b));
  const closed = new Promise((resolve) => child.on('close', resolve));
  const chunks = Array.from({ length: 40 }, (_, i) => Buffer.alloc(10 * 1024, i + 1));
  const expected = Buffer.concat(chunks);
  let reported = 0;
  await pipeline(
    Readable.from(chunks),
    childStdinSink(child.stdin, (chunk) => {
      reported++;
      chunk.fill(0); // as a reused buffer would be
    }),
  );
  await closed;
  assert.equal(reported, 40);
  assert.ok(Buffer.concat(received).equals(expected), 'the child read every byte as it was written');
});
