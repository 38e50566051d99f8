import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { PgkeepError } from '../../errors.js';
import { faultPoint } from '../../fault-points.js';
import { readObject, type Storage } from '../../storage/storage.js';
import { encodeIndexFile, recordEntry, type IndexedPack } from './content-index.js';
import { ContentStore, INDEX_PREFIX, PACKS_PREFIX, SESSION_INDEX_ENTRIES, type StreamRef } from './content-store.js';
import type { PackEntry } from './pack-file.js';
import { weighedGroups } from './weighed-groups.js';

/** Where prune keeps its marks: packs found unused (or mostly unused), and since when. */
export const MARKS_FILE = 'content/prune-marks.json';

export interface ContentPruneOptions {
  /** A pack must have been found unused (or worth repacking) this long before it is deleted or repacked. */
  graceMs: number;
  /** A pack is repacked once this share of its bytes is unused (restic's --max-unused is per repository; ours per pack). */
  repackUnused: number;
  now: Date;
  dryRun: boolean;
  /** Entries per new index file: what a writing session writes (SESSION_INDEX_ENTRIES, or less with a small index cap); smaller in tests. */
  indexFileEntries?: number;
}

export interface ContentPruneResult {
  /** Chunks the backups reference. */
  referencedChunks: number;
  /** Packs deleted (or, with dryRun, that would be), with their bytes. */
  deletedPacks: number;
  deletedBytes: number;
  /** Packs repacked: their used blobs moved to new packs, the old ones deleted. */
  repackedPacks: number;
  /** What repacking freed (old packs minus the new ones). */
  repackFreedBytes: number;
  /** Packs no index names (a writer died before its commit), removed once older than the grace. */
  orphanPacks: number;
  orphanBytes: number;
  /** Unused or mostly unused packs marked now, freed by a prune after the grace, and their bytes. */
  markedPacks: number;
  markedBytes: number;
  /** Repacking needs the identity in an encrypted repository; without it these packs wait. */
  repackSkippedForKey: number;
}

type Marks = Record<string, string>;

/**
 * Sweeps what no backup references out of the content store. The caller
 * holds the exclusive content lock (no writer is running) and gives the refs
 * of every backup in the repository, of every source: a chunk any of them
 * names is kept.
 *
 * The order makes every kill safe (docs/content-store.md): new packs (the
 * used blobs of repacked packs) first, then new index files naming every
 * surviving and new pack of the index files being replaced (each of at most
 * a session's entries, written as they fill: prune holds O(packs), not the
 * entries of what it keeps), then those old index files are removed, and
 * only then the packs. A kill leaves at worst
 * packs no index names, which the next prune removes, or a chunk indexed
 * twice, which is harmless. A pack is deleted or repacked only when an
 * earlier prune marked it at least the grace period ago and it is still
 * unused now.
 */
export async function pruneContent(storage: Storage, store: ContentStore, refs: readonly StreamRef[], options: ContentPruneOptions): Promise<ContentPruneResult> {
  // 1. mark: every chunk the backups name (lists and data), one bit per index entry. The bit is the
  // entry reads use (the first copy indexed): a second copy of a chunk in another pack is unused,
  // and goes with that pack, while the copy reads use stays. Memory: an eighth of a byte per chunk.
  const used = new Uint8Array(Math.ceil(store.index.chunkCount / 8) + 1);
  let referenced = 0;
  for (const ref of refs) {
    for await (const id of store.listChunkIds(ref)) {
      const n = store.index.numberOf(id);
      // A chunk a backup names that no index entry holds: either the repository lost an index file (whose packs
      // step 3 would then delete as orphans) or the lookup is wrong (a bug: the spilled index once missed ids
      // sharing their first four bytes). Either way a sweep could delete a chunk a backup needs: sweep nothing,
      // as restic's prune refuses a repository whose index lacks a referenced blob.
      if (n < 0) throw new PgkeepError('CHECKSUM_MISMATCH', `chunk ${id.toString('hex').slice(0, 16)}… that a kept backup names is in no pack the index knows: the repository is damaged (run pgkeep verify)`);
      if ((used[n >> 3]! & (1 << (n & 7))) !== 0) continue;
      used[n >> 3]! |= 1 << (n & 7);
      referenced++;
    }
  }
  const isUsed = (n: number) => (used[n >> 3]! & (1 << (n & 7))) !== 0;

  // 2. what each indexed pack holds that is still used: one pass over the entries (read from the index's
  // run files in blocks when it spilled), into per-pack sums (O(packs), not O(chunks))
  const packCount = store.index.packCount;
  const blobBytes = new Float64Array(packCount);
  const keptBytes = new Float64Array(packCount);
  const keptCount = new Float64Array(packCount);
  const entryCount = new Float64Array(packCount);
  store.index.forEachEntry((n, record, at) => {
    const pack = record.readUInt32LE(at + 32);
    const length = record.readUInt32LE(at + 40);
    blobBytes[pack]! += length;
    entryCount[pack]!++;
    if (!isUsed(n)) return;
    keptBytes[pack]! += length;
    keptCount[pack]!++;
  });
  const result: ContentPruneResult = { referencedChunks: referenced, deletedPacks: 0, deletedBytes: 0, repackedPacks: 0, repackFreedBytes: 0, orphanPacks: 0, orphanBytes: 0, markedPacks: 0, markedBytes: 0, repackSkippedForKey: 0 };
  const marks = await readMarks(storage);
  const nextMarks: Marks = {};
  const doomed = new Set<string>();
  const repacking = new Set<number>();
  for (const { pack, number, size, sealed } of store.index.packs()) {
    const kept = keptCount[number]!;
    const unusedBytes = blobBytes[number]! - keptBytes[number]!;
    const worth = kept === 0 || unusedBytes >= blobBytes[number]! * options.repackUnused;
    if (!worth) continue;
    // marked now if no earlier prune did: with a grace of 0 it goes at once
    const since = marks[pack] ?? options.now.toISOString();
    if (options.now.getTime() - Date.parse(since) < options.graceMs) {
      nextMarks[pack] = since;
      result.markedPacks++;
      result.markedBytes += kept === 0 ? size : unusedBytes;
      continue;
    }
    if (kept === 0) {
      doomed.add(pack);
      result.deletedPacks++;
      result.deletedBytes += size;
    } else if (sealed && store.settings.identities.length === 0) {
      // moving blobs out of an encrypted pack means opening it
      nextMarks[pack] = since;
      result.repackSkippedForKey++;
    } else repacking.add(number);
  }
  // the packs being repacked are doomed too, once their used blobs are in new packs (step 4)
  for (const number of repacking) doomed.add(store.index.packName(number));

  // 3. orphans: packs no index file names, old enough not to be a writer's uncommitted session
  const orphans: string[] = [];
  for await (const entry of storage.list(PACKS_PREFIX, { recursive: true })) {
    if (entry.kind !== 'object') continue;
    const name = entry.path.slice(entry.path.lastIndexOf('/') + 1);
    if (store.index.hasPack(name) || options.now.getTime() - entry.modified.getTime() < options.graceMs) continue;
    orphans.push(entry.path);
    result.orphanPacks++;
    result.orphanBytes += entry.size;
  }
  if (options.dryRun) {
    result.repackedPacks = repacking.size;
    return result;
  }

  // New index files are written as they fill, each of at most `perFile` entries (what a writing session
  // writes), so prune holds a bounded number of entries, not those of every pack it keeps or moves.
  const perFile = Math.max(1, options.indexFileEntries ?? Math.min(SESSION_INDEX_ENTRIES, store.index.sessionEntries));
  const files = new IndexFileWriter(storage, perFile);

  // 4. repack: the used blobs of each into new packs (a session of its own), a group of packs of at most
  // `perFile` used entries at a time: their entries gathered with one scan of the index, each pack's in
  // offset order (neighbours are read with one request); the new packs written so far are indexed as it goes
  if (repacking.size > 0) {
    const session = store.session({ indexAsItGoes: false });
    const moved = async () => {
      for (const p of session.takeWrittenPacks()) {
        result.repackFreedBytes -= p.size;
        await files.add(p, true);
      }
    };
    for (const group of weighedGroups([...repacking], (number) => keptCount[number]!, perFile)) {
      const keep = new Map<number, PackEntry[]>(group.map((number) => [number, []]));
      store.index.forEachEntry((n, record, at) => {
        if (isUsed(n)) keep.get(record.readUInt32LE(at + 32))?.push(recordEntry(record, at));
      });
      for (const [number, entries] of keep) {
        const pack = store.index.packName(number);
        entries.sort((x, y) => x.offset - y.offset);
        for await (const chunk of store.readChunks(entries.map((e) => e.id))) await session.putRaw(chunk.id, chunk.bytes, chunk.kind);
        result.repackedPacks++;
        result.repackFreedBytes += store.index.packSize(pack);
      }
      await moved();
    }
    await session.flush();
    await moved();
  }

  // 5. new index files for what survives of the index files that name a doomed pack: a group of packs of
  // at most `perFile` entries at a time, found with one scan of the index
  const affected = store.index.fileNames.filter((file) => store.index.packsOf(file).some((p) => doomed.has(p)));
  const survivors = new Set(affected.flatMap((file) => store.index.packsOf(file)).filter((p) => !doomed.has(p) && store.index.hasPack(p)));
  const numberOf = new Map<string, number>();
  for (const { pack, number } of store.index.packs()) if (survivors.has(pack)) numberOf.set(pack, number);
  for (const group of weighedGroups([...survivors], (pack) => entryCount[numberOf.get(pack)!]!, perFile)) {
    const entries = store.index.entriesOf(group);
    for (const pack of group) await files.add({ pack, size: store.index.packSize(pack), kind: store.index.kindOf(pack), sealed: store.index.isSealed(pack), entries: entries.get(pack)! });
  }
  await files.finish();
  faultPoint('mid-content-sweep');
  // 6. the old index files, then the packs. Names are hashes of the bytes, so what this prune just wrote
  // may carry the name of something it is removing: after a prune killed here, the next one repacks the
  // same blobs into a pack of the same name as the killed one's (which it finds unused), and may write the
  // same index file. Removing those names would remove what was just written: they stay.
  const written = new Set(files.packs.map((p) => ContentStore.packKey(p)));
  for (const file of affected) if (!files.names.has(file)) await storage.remove(`${INDEX_PREFIX}/${file}`);
  for (const pack of doomed) if (!written.has(ContentStore.packKey(pack))) await storage.remove(ContentStore.packKey(pack));
  for (const key of orphans) if (!written.has(key)) await storage.remove(key);
  await storage.put(MARKS_FILE, Readable.from([Buffer.from(`${JSON.stringify(nextMarks)}\n`)]));
  return result;
}

async function readMarks(storage: Storage): Promise<Marks> {
  try {
    const parsed = JSON.parse((await readObject(storage, MARKS_FILE)).toString('utf8')) as unknown;
    return parsed && typeof parsed === 'object' ? (parsed as Marks) : {};
  } catch (error) {
    if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') return {};
    // unreadable marks only delay the sweep: every pack is marked afresh
    return {};
  }
}

/**
 * Prune's new index files, each written once the packs given reach `perFile` entries (a pack is never
 * split between two files), and the last by finish(). A kill between two of them leaves packs named by
 * an old and a new index file, which is harmless (the first read wins), and the old files still there.
 */
class IndexFileWriter {
  private pending: IndexedPack[] = [];
  private entries = 0;
  /** The names of the index files written, and the new packs they name (repacked: see the removals). */
  readonly names = new Set<string>();
  readonly packs: string[] = [];

  constructor(
    private readonly storage: Storage,
    private readonly perFile: number,
  ) {}

  async add(pack: IndexedPack, fresh = false): Promise<void> {
    if (this.pending.length > 0 && this.entries + pack.entries.length > this.perFile) await this.write();
    this.pending.push(pack);
    this.entries += pack.entries.length;
    if (fresh) this.packs.push(pack.pack);
  }

  async finish(): Promise<void> {
    if (this.pending.length > 0) await this.write();
  }

  private async write(): Promise<void> {
    const stored = encodeIndexFile(this.pending);
    const name = createHash('sha256').update(stored).digest('hex');
    await this.storage.put(`${INDEX_PREFIX}/${name}`, Readable.from([stored]));
    this.names.add(name);
    this.pending = [];
    this.entries = 0;
    faultPoint('after-prune-index-file');
  }
}
