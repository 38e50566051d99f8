/**
 * A content store stream's memory against its length, without a database:
 * stores --mib MiB of incompressible but repeating bytes (one random block of
 * --block MiB over and over, so the chunks and the index stay those of one
 * block, and only the stream's chunk list grows with its length) into a
 * fresh posix store in TMPDIR, with chunks of --average bytes, then walks its
 * chunk ids back (what restore, cat, verify, copy and prune do), and prints
 * the process's peak RSS after each step.
 *
 *   node --expose-gc --import tsx scripts/stream-list-memory.ts --mib 4096 --average 1024
 *
 * Run one size per process: peak RSS is the process's. docs/benchmarks.md
 * ("A stream's chunk list in bounded memory") has the figures.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { ContentStore } from '../src/repository/content-store/content-store.js';
import { openStorage } from '../src/storage/open-storage.js';

const { values } = parseArgs({ options: { mib: { type: 'string', default: '1024' }, block: { type: 'string', default: '4' }, average: { type: 'string', default: '1024' } } });
const total = Number(values.mib) * 2 ** 20;
const average = Number(values.average);
const block = randomBytes(Number(values.block) * 2 ** 20);
const PIECE = 1 << 20;

const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const peak = () => Math.round(process.resourceUsage().maxRSS / 1024);
const folder = mkdtempSync(join(tmpdir(), 'pgkeep-list-memory-'));
try {
  const store = await ContentStore.open(openStorage(folder), {
    sizes: { min: average / 4, average, max: average * 4 },
    seed: Buffer.from('list memory'),
    idKey: undefined,
    recipients: [],
    identities: [],
    packTarget: 4 << 20,
    level: 1,
  });
  const session = store.session();
  const stream = session.stream();
  const start = cpu();
  for (let at = 0; at < total; at += PIECE) {
    const from = at % block.length;
    await stream.write(block.subarray(from, Math.min(from + PIECE, block.length, from + total - at)));
    // V8's garbage collected now and then: peak RSS is then what the process holds, not how lazily V8 collects
    if (at % (256 * PIECE) === 0) (globalThis as { gc?: () => void }).gc?.();
  }
  const ref = await stream.end();
  await session.commit();
  const writeCpu = cpu() - start;
  const afterWrite = peak();
  let ids = 0;
  for await (const _ of store.chunkIds(ref)) ids++;
  if (ids !== ref.chunks) throw new Error(`walked ${ids} ids, the ref says ${ref.chunks}`);
  console.log(
    JSON.stringify({ mib: total / 2 ** 20, average, chunks: ref.chunks, listMiB: +((ref.chunks * 32) / 2 ** 20).toFixed(1), depth: ref.depth, indexEntries: store.index.chunkCount, writeCpuSeconds: +writeCpu.toFixed(1), peakRssMiBAfterWrite: afterWrite, peakRssMiBAfterWalk: peak() }),
  );
  store.close();
} finally {
  rmSync(folder, { recursive: true, force: true });
}
