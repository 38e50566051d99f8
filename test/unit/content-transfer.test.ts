import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, test } from 'node:test';
import { ContentStore, type ContentSettings } from '../../src/repository/content-store/content-store.js';
import { transferChunks } from '../../src/repository/content-store/content-writing.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream } from '../../src/storage/storage.js';

const settings: ContentSettings = {
  sizes: { min: 64, average: 256, max: 1024 },
  seed: Buffer.from('transfer seed'),
  idKey: undefined,
  recipients: [],
  identities: [],
  packTarget: 32 * 1024,
  level: 1,
};

const folder = mkdtempSync(join(tmpdir(), 'pgkeep-transfer-'));
after(() => rmSync(folder, { recursive: true, force: true }));

test('copy between stores sends each chunk the destination lacks once, with no set of every chunk walked: repeats inside a batch, across batches and across levels', async () => {
  const source = await ContentStore.open(openStorage(join(folder, 'source')), settings);
  // 6,000 chunks of 40 bytes (each cut), from 500 distinct ones: a chunk twice in a row (inside one batch of
  // 256), again ~500 chunks later (another batch, long after its pack was written), and lists that repeat too
  const piece = (n: number) => createHash('sha256').update(`piece ${n}`).digest().subarray(0, 40);
  const order: number[] = [];
  for (let i = 0; order.length < 6_000; i++) order.push(i % 500, ...(i % 7 === 0 ? [i % 500] : []));
  const data = Buffer.concat(order.map(piece));
  const session = source.session();
  const stream = session.stream();
  for (const n of order) {
    await stream.write(piece(n));
    await stream.cut();
  }
  const ref = await stream.end();
  await session.commit();
  assert.ok(ref.depth >= 2, `a list two levels deep at least (depth ${ref.depth})`);
  const distinct = new Set<string>();
  for await (const id of source.listChunkIds(ref)) distinct.add(id.toString('hex'));

  // every id read from the source is counted: a chunk read twice would be a chunk sent twice
  let read = 0;
  const readChunks = source.readChunks.bind(source);
  source.readChunks = (ids, signal) => {
    read += ids.length;
    return readChunks(ids, signal);
  };
  const destination = await ContentStore.open(openStorage(join(folder, 'destination')), settings);
  const copying = destination.session();
  const totals = await transferChunks(copying, source, ref);
  await copying.commit();
  assert.equal(totals.sentChunks, distinct.size);
  assert.equal(read, distinct.size, 'each chunk read from the source once');
  assert.equal(destination.index.chunkCount, distinct.size, 'each chunk stored once at the destination');
  assert.ok(totals.chunks > distinct.size * 2, `${totals.chunks} ids walked`);

  const reopened = await ContentStore.open(openStorage(join(folder, 'destination')), settings);
  assert.ok((await collectStream(reopened.open(ref))).equals(data));
  // again: the destination has everything, nothing is read or sent
  read = 0;
  const again = reopened.session();
  assert.equal((await transferChunks(again, source, ref)).sentChunks, 0);
  assert.equal(read, 0);
});
