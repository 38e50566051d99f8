import assert from 'node:assert/strict';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { BufferPool } from '../../src/pipeline/buffer-pool.js';
import { isPgkeepError } from '../../src/errors.js';

describe('BufferPool', () => {
  test('the buffers kept are dropped once none was taken for a while (a daemon does not hold a finished job\'s pool), not while takes go on', async () => {
    const pool = new BufferPool(1024, 4, 150);
    const first = [pool.take(), pool.take()];
    for (const b of first) pool.give(b);
    assert.equal(pool.idle, 2);
    // takes every 50 ms keep it
    for (let i = 0; i < 5; i++) {
      await sleep(50);
      pool.give(pool.take());
    }
    assert.ok(pool.idle >= 1, 'kept while in use');
    await sleep(400);
    assert.equal(pool.idle, 0, 'dropped once idle');
    // and it works as before afterwards
    const again = pool.take();
    pool.give(again);
    assert.equal(pool.idle, 1);
  });

  test('a buffer given back is handed out again, not a new one', () => {
    const pool = new BufferPool(1024);
    const a = pool.take();
    assert.equal(a.length, 1024);
    pool.give(a.subarray(0, 10)); // a part of it identifies it
    assert.equal(pool.idle, 1);
    const b = pool.take();
    assert.equal(b.buffer, a.buffer);
    assert.equal(pool.idle, 0);
  });

  test('never hands out a buffer still in use: every buffer out at once has its own memory', () => {
    const pool = new BufferPool(64);
    const out = new Set<ArrayBufferLike>();
    const held: Buffer[] = [];
    for (let round = 0; round < 200; round++) {
      // take a few, give back some (not in order), and check that what is out never shares memory
      const taken = pool.take();
      assert.ok(!out.has(taken.buffer), 'a buffer still out was handed out again');
      out.add(taken.buffer);
      held.push(taken);
      taken.fill(round & 0xff);
      if (round % 3 === 2) {
        const back = held.splice(round % held.length, 1)[0]!;
        out.delete(back.buffer);
        pool.give(back);
      }
      for (const h of held) assert.equal(pool.owns(h), true);
    }
    assert.equal(pool.outstanding, held.length);
    // the bytes of every buffer still out are what its holder wrote (nobody else wrote into it)
    for (const h of held) assert.ok(h.every((x) => x === h[0]));
  });

  test('a buffer given back twice, or not its own, is refused with INTERNAL', () => {
    const pool = new BufferPool(16);
    const a = pool.take();
    pool.give(a);
    assert.throws(() => pool.give(a), (e) => isPgkeepError(e, 'INTERNAL'));
    assert.throws(() => pool.give(Buffer.alloc(16)), (e) => isPgkeepError(e, 'INTERNAL'));
    assert.equal(pool.owns(Buffer.alloc(16)), false);
  });

  test('keeps at most `keep` idle buffers', () => {
    const pool = new BufferPool(8, 2);
    const taken = [pool.take(), pool.take(), pool.take(), pool.take()];
    for (const t of taken) pool.give(t);
    assert.equal(pool.idle, 2);
    assert.equal(pool.outstanding, 0);
  });
});
