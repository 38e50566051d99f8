/**
 * The content store's chunk index at scale, without a database or packs:
 * builds an index of --entries synthetic entries from version 2 index files
 * (encodeIndexFile, 50,000 entries each, made one at a time and handed to
 * the index as ContentStore.open hands it what it reads), then looks up ids
 * that are there and ids that are not, and prints the process's peak RSS.
 *
 *   node --expose-gc --import tsx scripts/index-memory.ts --entries 5000000 [--cap 1000000]
 *
 * --cap is the index's in-memory cap (entries); --cap 0 holds everything in
 * memory (the index before run files). Run one size per process: peak RSS is
 * the process's. docs/benchmarks.md ("The chunk index in bounded memory")
 * has the figures.
 */
import { randomBytes } from 'node:crypto';
import { parseArgs } from 'node:util';
import { ContentIndex, encodeIndexFile, type IndexedPack } from '../src/repository/content-store/content-index.js';

const { values } = parseArgs({ options: { entries: { type: 'string', default: '5000000' }, cap: { type: 'string', default: '1000000' }, lookups: { type: 'string', default: '200000' } } });
const entries = Number(values.entries);
const cap = Number(values.cap) || 2 ** 31;
const lookups = Number(values.lookups);
const PER_FILE = 50_000;
const PER_PACK = 2_500;

const cpu = () => {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
};
const index = new ContentIndex({ memoryEntries: cap });
// as ContentStore.open does: sized from the index files' sizes
index.reserve(entries);
/** Every 997th id, with its pack and offset: looked up afterwards. */
const sample: { id: Buffer; pack: string; offset: number }[] = [];
let made = 0;
const startOpen = cpu();
for (let f = 0; made < entries; f++) {
  const count = Math.min(PER_FILE, entries - made);
  const ids = randomBytes(count * 32);
  const packs: IndexedPack[] = [];
  for (let at = 0; at < count; at += PER_PACK) {
    const pack = randomBytes(32).toString('hex');
    const n = Math.min(PER_PACK, count - at);
    packs.push({ pack, size: n * 8000, kind: 'data', sealed: false, entries: Array.from({ length: n }, (_, k) => ({ id: ids.subarray((at + k) * 32, (at + k + 1) * 32), offset: k * 8000, length: 7000, rawLength: 16384 })) });
    for (let k = 0; k < n; k += 997) sample.push({ id: Buffer.from(ids.subarray((at + k) * 32, (at + k + 1) * 32)), pack, offset: k * 8000 });
  }
  index.addIndexFile(`f${f}`, encodeIndexFile(packs), `f${f}`);
  made += count;
  // this script's own garbage (50,000 entry objects a file) collected now: peak RSS is then the index's, not V8's lazy young generation
  (globalThis as { gc?: () => void }).gc?.();
}
const openCpu = cpu() - startOpen;

const startLookups = cpu();
let found = 0;
for (let i = 0; i < lookups; i++) {
  const s = sample[i % sample.length]!;
  const hit = index.find(s.id);
  if (!hit || hit.pack !== s.pack || hit.entry.offset !== s.offset) throw new Error(`id ${s.id.toString('hex')} not found where it was indexed`);
  found++;
}
let absent = 0;
for (let i = 0; i < lookups; i++) if (!index.has(randomBytes(32))) absent++;
const lookupCpu = cpu() - startLookups;

// what prune and verify do: one pass over every entry
const startScan = cpu();
let scanned = 0;
index.forEachEntry(() => scanned++);
const scanCpu = cpu() - startScan;
if (scanned !== entries || absent !== lookups) throw new Error(`scanned ${scanned} of ${entries}; ${absent} of ${lookups} random ids absent`);

const rss = process.resourceUsage().maxRSS / 1024;
console.log(
  JSON.stringify({
    entries,
    cap: values.cap,
    spilled: index.spilled,
    peakRssMiB: Math.round(rss),
    openCpuS: +openCpu.toFixed(2),
    lookups: { present: found, absent, cpuS: +lookupCpu.toFixed(2), usEach: +((lookupCpu / (2 * lookups)) * 1e6).toFixed(1) },
    scanCpuS: +scanCpu.toFixed(2),
  }),
);
index.close();
