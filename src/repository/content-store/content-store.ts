import { createHash, createHmac } from 'node:crypto';
import { Readable } from 'node:stream';
import { PgkeepError } from '../../errors.js';
import { createAgeSealer, decryptStream, type AgeIdentity, type AgeRecipient } from '../../pipeline/age.js';
import { ContentDefinedChunker, type ChunkSizes } from '../../pipeline/content-defined-chunker.js';
import { nativeChunkCodec, type ChunkCodec } from '../../pipeline/zstd.js';
import { BufferPool } from '../../pipeline/buffer-pool.js';
import { ChunkCompressPool, chunkCompressHereBytes, chunkCompressThreads } from '../../pipeline/chunk-compress-pool.js';
import { collectStream, type ByteRange, type Storage } from '../../storage/storage.js';
import { ContentIndex, encodeIndexFile, INDEX_ENTRY_BYTES, type IndexedPack, type IndexMemoryOptions } from './content-index.js';
import { CHUNK_ID_SIZE, PackBuilder, readPackEntries, type PackEntry } from './pack-file.js';

/** Where the content store keeps its objects, under the repository root. */
export const CONTENT_PREFIX = 'content';
export const PACKS_PREFIX = `${CONTENT_PREFIX}/packs`;
export const INDEX_PREFIX = `${CONTENT_PREFIX}/index`;

/**
 * A read run: neighbouring blobs of one pack read with one request, decompressed into one buffer of at most this much raw data.
 * 1 MiB, not 4: each run's buffer passes through the restore's stream stages, each of which holds at least one whole
 * buffer, so the run size multiplies into the restore's peak memory. Measured on a 755 MB database restored from a
 * local deduplicating repository: ArrayBuffers at the RSS peak 71 MB with 4 MiB runs, 20-33 MB with 1 MiB; peak RSS
 * 163-168 against 134-158 MiB, restore time the same (docs/benchmarks.md).
 */
const RUN_BYTES = 1 << 20;

/**
 * The buffers runs are decompressed into. A consumer that is done with a
 * piece of a stream it read (open()) may give it back (`runBuffers.owns`,
 * then `give`): the parallel loader does, having copied the rows out. Given
 * back, a 1 GB restore decompresses into a few buffers instead of 1,000 new
 * ones, whose garbage (collected late: V8 frees them in bulk) made up most
 * of its ArrayBuffers. A piece not given back is collected as before.
 */
export const runBuffers = new BufferPool(RUN_BYTES, 16);

/**
 * The buffers a run's stored bytes are read into, from storage that reads in place (readInto): given back
 * once the run is decompressed. A run's stored span is at most about its raw size (zstd's frame and the
 * blob headers add a little to incompressible data); a longer one is read as before.
 */
const packReads = new BufferPool(RUN_BYTES + (64 << 10), 16);

/** Stored bytes, and requests, a reader fetches ahead of what it hands out from remote storage (see runsOf); from local storage one run. */
const READ_AHEAD_BYTES = 16 << 20;
// 16 requests in flight from S3 (8 when runs were 4 MiB): smaller runs need more of them to keep the bytes coming; READ_AHEAD_BYTES still caps those
const READ_AHEAD_RUNS = 16;
/**
 * Runs a reader of a chunk list (one level of a deep list) fetches ahead, from any storage: a run of ids
 * names up to 32,768 chunks (512 MiB of 16 KiB data chunks), so one run ahead hides a request's latency,
 * and each level of a stream's list holds at most this many runs, not READ_AHEAD_BYTES.
 */
const LIST_RUNS_AHEAD = 2;

/**
 * A writing session writes an index file once the packs it wrote since the last one hold this many entries
 * (~100 bytes each held until then; a 3 MB index file): a first backup of 1 TB in 16 KiB chunks would
 * otherwise hold ~60 million. A daily backup adds far fewer, so it still writes one file.
 */
export const SESSION_INDEX_ENTRIES = 65_536;

/** Index files read at once while the store opens. */
const INDEX_READS_AHEAD = 4;

/** A chunk list this long or shorter is kept in the manifest itself; a longer one is stored as a stream of its own, one level down. */
export const ROOT_IDS = 64;

/** How a content store cuts, names and seals what it stores. */
export interface ContentSettings {
  sizes: ChunkSizes;
  /** The chunker's seed (derived from the content key in an encrypted repository). */
  seed: Buffer;
  /** The key of chunk ids (HMAC-SHA256) in an encrypted repository; undefined: SHA-256 of the chunk. */
  idKey: Buffer | undefined;
  /**
   * Packs are age-encrypted to these; empty: stored in the clear. Index files
   * are never encrypted: a writer holds no identity, and they name only keyed
   * ids, packs, offsets and sizes (docs/content-store.md).
   */
  recipients: AgeRecipient[];
  /** What opens encrypted packs (readers only). */
  identities: AgeIdentity[];
  /** A pack is closed once its blobs reach this many bytes. */
  packTarget: number;
  /** zstd level of each chunk. */
  level: number;
}

/**
 * What a blob holds: a stream's bytes, or a chunk list (32-byte ids). Lists
 * go into packs of their own that are never encrypted (they hold only keyed
 * ids), so prune and verify can follow every backup's chunks without the
 * repository's identity.
 */
export type BlobKind = 'data' | 'list';

/**
 * A stored stream, as a manifest records it: its size, its number of chunks,
 * and the ids of its chunk list. A list of at most ROOT_IDS ids is the list
 * itself (depth 0); a longer one is stored as a stream of 32-byte ids, whose
 * own list is the root one level up (depth 1, and so on): a 1 GB dump in 16
 * KiB chunks lists 65,536 ids (2 MiB), stored as ~128 chunks, which the
 * manifest names. The lists of two days' dumps share most of their chunks.
 */
export interface StreamRef {
  size: number;
  chunks: number;
  depth: number;
  root: string[];
}

/** What a session added to the repository. */
export interface SessionTotals {
  /** Bytes of the streams stored (raw). Chunks and bytes count stream data; the lists count only in the packs' stored bytes. */
  rawBytes: number;
  /** Chunks in those streams, and how many of them were new. */
  chunks: number;
  newChunks: number;
  /** Bytes of new chunks before and after compression; and of the packs written (encryption and headers included, lists too). */
  newRawBytes: number;
  newCompressedBytes: number;
  newStoredBytes: number;
  packs: number;
}

/**
 * The content-addressed store of one repository (docs/content-store.md):
 * streams cut into chunks by content, each chunk stored once in a pack and
 * found through the index. This class knows storage keys and bytes; which
 * backup references which stream is the manifest's business.
 */
export class ContentStore {
  private constructor(
    private readonly storage: Storage,
    readonly settings: ContentSettings,
    readonly index: ContentIndex,
  ) {}

  /**
   * Opens the store: reads every index file (the index is held in memory, ~70 bytes per chunk, up to its
   * cap; past it on local disk: see ContentIndex).
   */
  static async open(storage: Storage, settings: ContentSettings, memory?: IndexMemoryOptions): Promise<ContentStore> {
    const index = new ContentIndex(memory);
    const files: { path: string; size: number }[] = [];
    for await (const entry of storage.list(INDEX_PREFIX, { recursive: true })) if (entry.kind === 'object') files.push(entry);
    // sized once from the files' sizes (a version 2 file is 48 bytes per entry; version 1 about as much), not grown while reading
    index.reserve(files.reduce((n, f) => n + Math.floor(f.size / INDEX_ENTRY_BYTES), 0));
    // a few reads in flight (one request's latency each on S3), added in order
    const pending: Promise<Buffer>[] = [];
    const start = (i: number) => {
      const stored = storage.get(files[i]!.path).then(collectStream);
      // awaited in order below; one left behind by an earlier failure must not be an unhandled rejection
      stored.catch(() => undefined);
      pending.push(stored);
    };
    for (let i = 0; i < Math.min(files.length, INDEX_READS_AHEAD); i++) start(i);
    for (let i = 0; i < files.length; i++) {
      const stored = await pending.shift()!;
      if (i + INDEX_READS_AHEAD < files.length) start(i + INDEX_READS_AHEAD);
      const path = files[i]!.path;
      index.addIndexFile(path.slice(path.lastIndexOf('/') + 1), stored, path);
    }
    return new ContentStore(storage, settings, index);
  }

  /** Frees the index's run files, if it spilled any (the store is not used after). */
  close(): void {
    this.index.close();
  }

  /** The id of a chunk in this repository; a chunk given as consecutive pieces has the id of the pieces joined. */
  chunkId(chunk: Buffer | readonly Buffer[]): Buffer {
    const hash = this.settings.idKey ? createHmac('sha256', this.settings.idKey) : createHash('sha256');
    if (Buffer.isBuffer(chunk)) hash.update(chunk);
    else for (const piece of chunk) hash.update(piece);
    return hash.digest();
  }

  /**
   * A new writing session: its packs become visible to others once an index file names them (commit(), or
   * one written every so many entries: see ContentSession). `indexAsItGoes: false` holds every pack's entries
   * until the caller takes them to index them itself (prune's repacking), and leaves this process's index
   * as it is (the packs are not found through it).
   */
  session(options: { indexAsItGoes?: boolean } = {}): ContentSession {
    return new ContentSession(this, this.storage, options.indexAsItGoes ?? true);
  }

  /** The stream a ref names, chunk after chunk, each checked against its id. */
  open(ref: StreamRef, signal?: AbortSignal): Readable {
    return Readable.from(this.bytesOf(ref, signal), { objectMode: false });
  }

  /** The chunk ids of a stream, in order (read level by level from the root). */
  async *chunkIds(ref: StreamRef, signal?: AbortSignal): AsyncGenerator<Buffer> {
    if (ref.depth === 0) {
      for (const hex of ref.root) yield Buffer.from(hex, 'hex');
      return;
    }
    const list = { size: ref.chunks * CHUNK_ID_SIZE, chunks: -1, depth: ref.depth - 1, root: ref.root };
    let rest = Buffer.alloc(0);
    // each level of a deep list is read with its own read-ahead, of LIST_RUNS_AHEAD runs: never a whole level
    for await (const piece of this.bytesOf(list, signal, LIST_RUNS_AHEAD)) {
      const bytes = rest.length > 0 ? Buffer.concat([rest, piece]) : piece;
      const whole = bytes.length - (bytes.length % CHUNK_ID_SIZE);
      for (let at = 0; at < whole; at += CHUNK_ID_SIZE) yield bytes.subarray(at, at + CHUNK_ID_SIZE);
      rest = Buffer.from(bytes.subarray(whole));
    }
    if (rest.length > 0) throw new PgkeepError('CHECKSUM_MISMATCH', `a chunk list ends in the middle of an id (${rest.length} bytes left)`);
  }

  /** Every chunk a stream needs: its data chunks and the chunks of its lists, at every level (what prune keeps). */
  async *listChunkIds(ref: StreamRef, signal?: AbortSignal): AsyncGenerator<Buffer> {
    for (let depth = 0; depth <= ref.depth; depth++) yield* this.chunkIds({ ...ref, depth }, signal);
  }

  /** The raw bytes of chunks by id (each checked), with the kind of the pack each was found in: for repacking. */
  async *readChunks(ids: readonly Buffer[], signal?: AbortSignal): AsyncGenerator<{ id: Buffer; bytes: Buffer; kind: BlobKind }> {
    let at = 0;
    for await (const run of this.runsOf(
      (async function* () {
        yield* ids;
      })(),
      signal,
    )) {
      let offset = 0;
      for (const entry of run.entries) {
        const id = ids[at++]!;
        yield { id, bytes: run.bytes.subarray(offset, offset + entry.rawLength), kind: this.index.kindOf(run.pack) };
        offset += entry.rawLength;
      }
    }
  }

  /** Reads the chunks of a stream, a run of neighbouring blobs of one pack at a time (one request, one buffer). */
  private async *bytesOf(ref: StreamRef, signal?: AbortSignal, runsAhead?: number): AsyncGenerator<Buffer> {
    let size = 0;
    for await (const run of this.runsOf(this.chunkIds(ref, signal), signal, runsAhead)) {
      size += run.bytes.length;
      yield run.bytes;
    }
    if (ref.chunks >= 0 && size !== ref.size) throw new PgkeepError('CHECKSUM_MISMATCH', `the stream is ${size} bytes, the manifest says ${ref.size}`);
  }

  /**
   * The chunks of these ids, in order, each checked against its id: grouped
   * in runs of neighbouring blobs of one pack (up to RUN_BYTES of raw data),
   * each read with one request and decompressed into one buffer.
   *
   * Reads run ahead of the consumer, so a restore from S3 waits for one
   * request's latency, not one per run: runs are fetched as soon as they are
   * planned while the stored bytes being fetched stay within READ_AHEAD_BYTES
   * and the requests within READ_AHEAD_RUNS (always at least the next run).
   * Local storage (capabilities.remote false) reads one run ahead: its reads
   * come from the page cache, and more would cost memory for nothing.
   * A sealed pack is fetched whole and counts twice (stored and decrypted). Memory: the read-ahead, one run
   * being decompressed, and for sealed packs the two most recent plaintexts.
   */
  private async *runsOf(ids: AsyncIterable<Buffer>, signal?: AbortSignal, most?: number): AsyncGenerator<{ pack: string; entries: PackEntry[]; bytes: Buffer }> {
    const reader = new PackReader(this.storage, this.settings);
    const codec = chunkCodec(this.settings.level);
    const runsAhead = Math.min(most ?? Infinity, this.storage.capabilities.remote ? READ_AHEAD_RUNS : 2);
    type Planned = { pack: string; entries: PackEntry[]; raw: number };
    const ahead: (Planned & { cost: number; blobs: Promise<[PackEntry, Buffer][]> })[] = [];
    let inFlight = 0;
    let lastFetchedPack: string | undefined;
    const fetch = (planned: Planned): void => {
      const sealed = this.index.isSealed(planned.pack);
      // a sealed pack is read whole, once for all its runs in a row
      const cost = sealed ? (planned.pack === lastFetchedPack ? 0 : 2 * this.index.packSize(planned.pack)) : runSpan(planned.entries);
      lastFetchedPack = planned.pack;
      const blobs = reader.read(planned.pack, sealed, planned.entries);
      // awaited in order below; a run abandoned (the consumer stopped, an earlier run failed) must not be an unhandled rejection
      blobs.catch(() => undefined);
      ahead.push({ ...planned, cost, blobs });
      inFlight += cost;
    };
    const decode = async (): Promise<{ pack: string; entries: PackEntry[]; bytes: Buffer }> => {
      const { pack, entries, raw, cost, blobs } = ahead.shift()!;
      inFlight -= cost;
      // A run of under a quarter of RUN_BYTES (a pack's last, a small stream's) gets a buffer of its own size:
      // a pooled 1 MiB one for 20 KB made reading a small backup allocate ~50 times its size, and the commands
      // that do not give pieces back (verify, cat, copy) ran the GC for that memory.
      const bytes = raw > RUN_BYTES || raw < RUN_BYTES / 4 ? Buffer.allocUnsafe(raw) : runBuffers.take().subarray(0, raw);
      let at = 0;
      const read = await blobs;
      for (const [entry, blob] of read) {
        const chunk = bytes.subarray(at, at + entry.rawLength);
        try {
          codec.decompressInto(chunk, blob);
        } catch (error) {
          throw new PgkeepError('CHECKSUM_MISMATCH', `a chunk in pack ${pack} cannot be decompressed: ${(error as Error).message}`, { cause: error });
        }
        if (!this.chunkId(chunk).equals(entry.id)) {
          throw new PgkeepError('CHECKSUM_MISMATCH', `chunk ${entry.id.toString('hex').slice(0, 16)}… in pack ${pack} does not match its id: the pack is damaged`);
        }
        at += entry.rawLength;
      }
      // the stored bytes are decompressed: their buffer, if pooled, serves a later read
      const stored = read[0]?.[1];
      if (stored && packReads.owns(stored)) packReads.give(stored);
      return { pack, entries, bytes };
    };
    let run: Planned | undefined;
    for await (const id of ids) {
      signal?.throwIfAborted();
      const found = this.index.find(id);
      if (!found) throw new PgkeepError('CHECKSUM_MISMATCH', `chunk ${id.toString('hex').slice(0, 16)}… is in no pack of the repository: the backup is damaged (run pgkeep verify)`);
      const last = run?.entries.at(-1);
      const adjacent = run && run.pack === found.pack && last!.offset + last!.length === found.entry.offset && run.raw + found.entry.rawLength <= RUN_BYTES;
      if (run && !adjacent) {
        fetch(run);
        run = undefined;
        // hand out the oldest runs while more than the budget is being fetched (the newest keeps going)
        while (ahead.length > 1 && (inFlight > READ_AHEAD_BYTES || ahead.length >= runsAhead)) yield await decode();
      }
      if (run) {
        run.entries.push(found.entry);
        run.raw += found.entry.rawLength;
      } else run = { pack: found.pack, entries: [found.entry], raw: found.entry.rawLength };
    }
    if (run) fetch(run);
    while (ahead.length > 0) {
      signal?.throwIfAborted();
      yield await decode();
    }
  }

  /** The plaintext of a stored pack (decrypted when sealed). */
  openPack(stored: Buffer, pack: string): Promise<Buffer> {
    return openSealed(stored, this.settings, ContentStore.packKey(pack));
  }

  /** Checks every blob of a plaintext pack: it decompresses to bytes that hash to its id. Throws CHECKSUM_MISMATCH naming the pack. */
  checkPackBlobs(plain: Buffer, pack: string): number {
    let entries: PackEntry[];
    try {
      entries = readPackEntries(plain);
    } catch (error) {
      throw new PgkeepError('CHECKSUM_MISMATCH', `pack ${pack}: ${(error as Error).message}`, { cause: error });
    }
    for (const entry of entries) {
      const chunk = decompress(plain.subarray(entry.offset, entry.offset + entry.length), entry.rawLength, pack);
      if (!this.chunkId(chunk).equals(entry.id)) throw new PgkeepError('CHECKSUM_MISMATCH', `chunk ${entry.id.toString('hex').slice(0, 16)}… in pack ${pack} does not match its id`);
    }
    return entries.length;
  }

  /** The storage key of a pack. */
  static packKey(pack: string): string {
    return `${PACKS_PREFIX}/${pack.slice(0, 2)}/${pack}`;
  }
}

/**
 * New chunks of streams are compressed off the main thread in batches of about this many raw bytes (64
 * chunks of the default 16 KiB): one message each way per batch, not one per chunk. 1 MiB, not 256 or 512
 * KiB: the main thread and the worker wait on each other less; first backup of a 1 GB database, 5.1-5.5 s
 * against 5.4-5.8 s with 256 KiB, +4 MiB peak RSS (docs/benchmarks.md).
 */
const BATCH_BYTES = 1 << 20;
/** Batches sent to the compression threads and not yet applied, at most (the next waits): the chunks in flight, and so the memory, are bounded. */
const MAX_BATCHES_COMPRESSING = 2;

/** New chunks side by side in shared memory, and the frames the compression threads write for them. */
interface Batch {
  input: SharedArrayBuffer;
  inputView: Buffer;
  output: SharedArrayBuffer;
  outputView: Buffer;
  /** Each chunk's raw length, and its id and kind, in the order given. */
  lengths: number[];
  chunks: { id: Buffer; kind: BlobKind }[];
  /** Raw bytes in the batch, and the room their frames may need (the sum of compressBound). */
  used: number;
  room: number;
  /** Once sent: the length of each frame. */
  frames: Promise<number[]> | undefined;
}

/** Copies a chunk, whole or in consecutive pieces, into `target` from `at`. */
function copyChunkInto(chunk: Buffer | readonly Buffer[], target: Buffer, at: number): void {
  if (Buffer.isBuffer(chunk)) chunk.copy(target, at);
  else for (const piece of chunk) at += piece.copy(target, at);
}

/** Whether a chunk of `length` (frames of up to `bound`) fits a batch. */
function fits(batch: Batch, length: number, bound: number): boolean {
  return batch.used + length <= batch.input.byteLength && batch.room + bound <= batch.output.byteLength;
}

/**
 * One writer's additions: new chunks go into packs of its own, written as
 * they fill; an index file names them once their entries reach
 * SESSION_INDEX_ENTRIES (so a first backup of a large database holds a
 * bounded number of entries, not all of them), and commit() writes the last
 * one. Until then no other writer knows those chunks, so a session that dies
 * leaves packs no index names, which prune removes, and indexed chunks no
 * manifest names, which prune sweeps like any unused chunk: the order is
 * still packs, then their index entries, then the manifest.
 */
export class ContentSession {
  /** The pack being filled for each kind of blob: data (sealed when encrypted) and chunk lists (always clear). */
  private readonly packs: Record<BlobKind, PackBuilder>;
  /** A new chunk given in pieces is joined here before it is compressed (grown to the largest such chunk): a Buffer.concat per chunk was garbage. */
  private joinBuffer = Buffer.allocUnsafeSlow(0);
  /** Ids in the packs being filled (not yet indexed anywhere). */
  private readonly pending = new Set<string>();
  /** The packs written that no index file of this session names yet, and their entries. */
  private written: IndexedPack[] = [];
  private writtenEntries = 0;
  /** Every pack this session wrote. */
  private readonly allPacks: string[] = [];
  private readonly codec: ChunkCodec;
  /** The threads compressing new chunks of streams (put()); undefined: compressed here, as they come (chunkCompressThreads() 0). */
  private readonly pool: ChunkCompressPool | undefined;
  /** The batch of new chunks being gathered, the batches being compressed (in the order given), and spare ones. */
  private filling: Batch | undefined;
  private readonly compressing: Batch[] = [];
  private readonly spare: Batch[] = [];
  /** New bytes of streams so far: the first chunkCompressHereBytes() of them are compressed here, the rest by the threads. */
  private newStreamBytes = 0;
  private readonly compressHereBytes = chunkCompressHereBytes();
  /** The pack being written in the background (flushPack), if any. */
  private writing: Promise<void> | undefined;
  readonly totals: SessionTotals = { rawBytes: 0, chunks: 0, newChunks: 0, newRawBytes: 0, newCompressedBytes: 0, newStoredBytes: 0, packs: 0 };

  constructor(
    private readonly store: ContentStore,
    private readonly storage: Storage,
    private readonly indexAsItGoes = true,
  ) {
    const codec = nativeChunkCodec(store.settings.level);
    if (!codec) throw new PgkeepError('TOOL_MISSING', 'a deduplicating repository needs zstd-napi (run npm ci): chunks are compressed one by one');
    this.codec = codec;
    const threads = chunkCompressThreads();
    this.pool = threads > 0 ? new ChunkCompressPool(threads, store.settings.level) : undefined;
    this.packs = { data: new PackBuilder(store.settings.packTarget), list: new PackBuilder(store.settings.packTarget) };
  }

  /** A chunk as one buffer: itself, or its pieces copied into joinBuffer (valid until the next call). */
  private whole(chunk: Buffer | readonly Buffer[], length: number): Buffer {
    if (Buffer.isBuffer(chunk)) return chunk;
    if (chunk.length === 1) return chunk[0]!;
    if (this.joinBuffer.length < length) this.joinBuffer = Buffer.allocUnsafeSlow(Math.max(length, 64 << 10));
    copyChunkInto(chunk, this.joinBuffer, 0);
    return this.joinBuffer.subarray(0, length);
  }

  /** Compresses a chunk straight into the pack of its kind (no buffer of its own); its entry. */
  private pack(id: Buffer, chunk: Buffer, kind: BlobKind): PackEntry {
    return this.packs[kind].addWith(id, chunk.length, this.codec.bound(chunk.length), (room) => this.codec.compressInto(room, chunk));
  }

  /** Starts a stream; write its bytes, cut where a boundary matters, then end() for its ref. */
  stream(options: { rootIds?: number } = {}): ContentStream {
    return new ContentStream(this, this.store.settings, 'data', options.rootIds);
  }

  /**
   * Stores one chunk (once per repository) and returns its id: at once, with
   * no promise, unless a full pack has to be written first, or the
   * compression threads are behind (gather). A daily backup's
   * chunks are nearly all known already, ~35,000 a GB, and a promise and an
   * await for each was measurable CPU.
   */
  put(chunk: Buffer | readonly Buffer[], kind: BlobKind): Buffer | Promise<Buffer> {
    const id = this.store.chunkId(chunk);
    const added = this.add(id, chunk, kind);
    return typeof added === 'number' ? id : added.then(() => id);
  }

  /**
   * Counts a chunk of a stream and stores it unless the repository (or this
   * session) has it; the bytes it adds, compressed (0: here already). A
   * promise only when the chunk filled a pack, which is written before it
   * resolves. Handed to the compression threads (after the session's first
   * chunkCompressHereBytes(), never with `here`): 0, the bytes counted when
   * its frame is put in the pack, and a promise only when the caller must
   * wait for the threads.
   */
  private add(id: Buffer, chunk: Buffer | readonly Buffer[], kind: BlobKind, here = false): number | Promise<number> {
    // a chunk given in pieces is joined only when it is new (compressed into a pack)
    const length = Buffer.isBuffer(chunk) ? chunk.length : chunk.reduce((n, piece) => n + piece.length, 0);
    if (kind === 'data') {
      this.totals.chunks++;
      this.totals.rawBytes += length;
    }
    if (this.store.index.has(id)) return 0;
    const key = id.toString('latin1');
    if (this.pending.has(key)) return 0;
    // the first new bytes of a session are compressed here: a daily backup's few new chunks do not start a thread
    if (this.pool && !here) {
      this.newStreamBytes += length;
      if (this.newStreamBytes > this.compressHereBytes) {
        this.pending.add(key);
        const applied = this.gather(id, chunk, length, kind);
        // the bytes it adds are counted once its frame is in the pack (applyOldest): this says only "new"
        return applied ? applied.then(() => 0) : 0;
      }
    }
    const compressed = this.pack(id, this.whole(chunk, length), kind).length;
    this.pending.add(key);
    if (kind === 'data') {
      this.totals.newChunks++;
      this.totals.newRawBytes += length;
      this.totals.newCompressedBytes += compressed;
    }
    if (this.packs[kind].size >= this.store.settings.packTarget) return this.flushPack(kind).then(() => compressed);
    return compressed;
  }

  /**
   * Copies a new chunk into the batch being gathered; a full batch goes to the compression threads, and once
   * more than MAX_BATCHES_COMPRESSING are there, the promise of the oldest one applied (the caller waits:
   * the backpressure that bounds the chunks in flight).
   */
  private gather(id: Buffer, chunk: Buffer | readonly Buffer[], length: number, kind: BlobKind): Promise<void> | undefined {
    const bound = this.codec.bound(length);
    if (this.filling && !fits(this.filling, length, bound)) this.submit();
    const batch = (this.filling ??= this.spareBatch(length, bound));
    copyChunkInto(chunk, batch.inputView, batch.used);
    batch.used += length;
    batch.room += bound;
    batch.lengths.push(length);
    batch.chunks.push({ id, kind });
    return this.compressing.length > MAX_BATCHES_COMPRESSING ? this.applyOldest() : undefined;
  }

  /** A batch with room for at least one chunk of `length`: a spare one, or a new one (larger than BATCH_BYTES only for a chunk that is). */
  private spareBatch(length: number, bound: number): Batch {
    const spare = this.spare.pop();
    if (spare && fits(spare, length, bound)) return spare;
    const bytes = Math.max(BATCH_BYTES, length);
    const input = new SharedArrayBuffer(bytes);
    const output = new SharedArrayBuffer(Math.max(BATCH_BYTES + (BATCH_BYTES >> 2), bound));
    return { input, inputView: Buffer.from(input), output, outputView: Buffer.from(output), lengths: [], chunks: [], used: 0, room: 0, frames: undefined };
  }

  /** Sends the batch being gathered to the compression threads. */
  private submit(): void {
    const batch = this.filling!;
    this.filling = undefined;
    batch.frames = this.pool!.compress(batch.input, batch.lengths, batch.output);
    // awaited in order (applyOldest); one left behind when an earlier one failed must not be an unhandled rejection
    batch.frames.catch(() => undefined);
    this.compressing.push(batch);
  }

  /**
   * Puts the frames of the oldest batch sent into the packs of their kinds, in the order the chunks came,
   * writing each pack as it fills: the packs, their order and the index files are those of compressing each
   * chunk here as it comes (test/unit/chunk-compress-pool.test.ts).
   */
  private async applyOldest(): Promise<void> {
    const batch = this.compressing.shift()!;
    const frames = await batch.frames!;
    let at = 0;
    for (let i = 0; i < frames.length; i++) {
      const { id, kind } = batch.chunks[i]!;
      const length = frames[i]!;
      const raw = batch.lengths[i]!;
      const from = at;
      // the pack before still being written and this pack's spill buffer full: wait for the write (then a pack buffer)
      if (!this.packs[kind].fits(length)) await this.packWritten();
      this.packs[kind].addWith(id, raw, length, (room) => batch.outputView.copy(room, 0, from, from + length));
      at += length;
      if (kind === 'data') {
        this.totals.newChunks++;
        this.totals.newRawBytes += raw;
        this.totals.newCompressedBytes += length;
      }
      if (this.packs[kind].size >= this.store.settings.packTarget) await this.flushPack(kind, true);
    }
    batch.lengths = [];
    batch.chunks = [];
    batch.used = 0;
    batch.room = 0;
    batch.frames = undefined;
    if (this.spare.length < MAX_BATCHES_COMPRESSING + 1) this.spare.push(batch);
  }

  /** Waits until every chunk given so far is in its pack (packs that filled written): a stream's totals are then its own. */
  async drain(): Promise<void> {
    if (this.filling && this.filling.lengths.length > 0) this.submit();
    while (this.compressing.length > 0) await this.applyOldest();
    await this.packWritten();
  }

  /** Ends the compression threads (a session is not written to after): after commit, or when its writer gives up. */
  close(): void {
    this.pool?.close();
  }

  /** Writes the packs being filled, if any. */
  async flush(): Promise<void> {
    await this.drain();
    await this.flushPack('data');
    await this.flushPack('list');
  }

  /**
   * Closes the pack of a kind and writes it, then records it (index entries, totals, an index file when
   * due). One pack is written at a time, in the order they filled: the packs and index files are the same
   * whether written in the background or not. `inBackground` (a stream's packs, filled from the
   * compression threads' frames): returns once the write has started, so the next pack fills meanwhile,
   * while the disk syncs this one (the threads would otherwise wait for it); the next flush, drain() or
   * commit() waits for it, and throws its error.
   */
  private async flushPack(kind: BlobKind, inBackground = false): Promise<void> {
    const builder = this.packs[kind];
    if (builder.count === 0) return;
    await this.packWritten();
    const { parts, entries } = builder.finish();
    // written in the background: the next pack starts in a spill buffer, not a second pack buffer
    this.packs[kind] = new PackBuilder(this.store.settings.packTarget, inBackground);
    const write = this.writePack(builder, parts, entries, kind);
    if (!inBackground) return write;
    // awaited by the next packWritten(); until then a failure must not be an unhandled rejection
    write.catch(() => undefined);
    this.writing = write;
  }

  /** Waits for the pack being written in the background, if any (throws its error). */
  private async packWritten(): Promise<void> {
    const writing = this.writing;
    this.writing = undefined;
    await writing;
    // its buffer is back in the pool: the packs begun meanwhile move into pack buffers
    this.packs.data.unspill();
    this.packs.list.unspill();
  }

  private async writePack(builder: PackBuilder, parts: Buffer[], entries: PackEntry[], kind: BlobKind): Promise<void> {
    const sealed = kind === 'data' && this.store.settings.recipients.length > 0;
    // pieces all the way to storage: joining them would hold the pack twice
    const stored = sealed ? await seal(parts, this.store.settings) : parts;
    // sealed: the ciphertext is a copy, the plaintext's buffer is free already
    if (sealed) builder.release();
    const hash = createHash('sha256');
    let size = 0;
    for (const part of stored) {
      hash.update(part);
      size += part.length;
    }
    const name = hash.digest('hex');
    await this.storage.put(ContentStore.packKey(name), Readable.from(stored));
    // written: its buffer serves the next pack (not on a failed put: a write still running might read it yet)
    builder.release();
    const indexed: IndexedPack = { pack: name, size, kind, sealed, entries };
    this.written.push(indexed);
    this.writtenEntries += entries.length;
    this.allPacks.push(name);
    // from now on this session (and this process) finds them through the index; not prune's: the entry
    // numbers of its mark bitset must stay good while it moves blobs (an addition may renumber: ContentIndex)
    if (this.indexAsItGoes) this.store.index.addPack(indexed);
    for (const e of entries) this.pending.delete(e.id.toString('latin1'));
    this.totals.packs++;
    this.totals.newStoredBytes += size;
    if (this.indexAsItGoes && this.writtenEntries >= Math.min(SESSION_INDEX_ENTRIES, this.store.index.sessionEntries)) await this.writeIndex();
  }

  /** Writes the index file naming the packs written so far that none names yet. */
  private async writeIndex(): Promise<void> {
    if (this.written.length === 0) return;
    const stored = encodeIndexFile(this.written);
    const name = createHash('sha256').update(stored).digest('hex');
    await this.storage.put(`${INDEX_PREFIX}/${name}`, Readable.from([stored]));
    this.store.index.markFile(name, this.written);
    this.written = [];
    this.writtenEntries = 0;
  }

  /** Writes the last packs, then the index file naming those of the session no index file names yet. After this a manifest may name the streams. */
  async commit(): Promise<SessionTotals> {
    await this.flush();
    await this.writeIndex();
    return this.totals;
  }

  /** Every pack written so far. */
  get packNames(): readonly string[] {
    return this.allPacks;
  }

  /**
   * The packs written that no index file of this session names yet, with their entries, handed over
   * and forgotten here (indexAsItGoes false: the caller indexes them, as it goes).
   */
  takeWrittenPacks(): IndexedPack[] {
    const taken = this.written;
    this.written = [];
    this.writtenEntries = 0;
    return taken;
  }

  /**
   * Stores a chunk read from another repository under the id it has there
   * (copy between repositories with the same chunker fingerprint), unless this
   * repository has it already. The id is recomputed here: equal fingerprints
   * promise equal ids, and a chunk must never be filed under an id this
   * repository would not give it. Returns the bytes it adds (compressed), 0
   * when it was here already.
   */
  async copyChunk(id: Buffer, chunk: Buffer, kind: BlobKind): Promise<number> {
    if (!this.store.chunkId(chunk).equals(id)) {
      throw new PgkeepError('INTERNAL', `chunk ${id.toString('hex').slice(0, 16)}… gets another id in the destination: the two repositories do not share chunk ids (their chunker fingerprints should have differed)`);
    }
    // compressed here, as before, after what streams gave: a copy's chunks come one at a time, each awaited
    await this.drain();
    return this.add(id, chunk, kind, true);
  }

  /** Whether this repository (its index, or this session) holds a chunk. */
  holds(id: Buffer): boolean {
    return this.store.index.has(id) || this.pending.has(id.toString('latin1'));
  }

  /** Stores a chunk whose id is known, even though the index has it (prune moves used blobs out of a pack it deletes). */
  async putRaw(id: Buffer, chunk: Buffer, kind: BlobKind): Promise<void> {
    await this.drain();
    const key = id.toString('latin1');
    if (this.pending.has(key)) return;
    this.pack(id, chunk, kind);
    this.pending.add(key);
    if (this.packs[kind].size >= this.store.settings.packTarget) await this.flushPack(kind);
  }
}

/**
 * One stream being stored through a session. Its chunk list is a cascade
 * (docs/content-store.md, "Writing a stream"): the ids are held up to
 * `rootIds` (what a ref names itself); past that, each full buffer of ids
 * goes on, as it fills, into a list stream one level down, whose own ids
 * cascade the same way. Each level holds at most `rootIds` ids and its
 * chunker's current chunk, whatever the stream's length: the whole list used
 * to be held to the end (32 bytes per chunk, ~200 MiB for a 100 GiB dump).
 * A list stream's chunker sees the same bytes as when the whole list was
 * written at the end, in the same order, and its cuts do not depend on how
 * the bytes are split into writes: the chunks, their ids and the ref are
 * those of the earlier code, byte for byte (test/unit/content-stream-cascade.test.ts),
 * so new backups deduplicate against old lists.
 */
export class ContentStream {
  private readonly chunker: ContentDefinedChunker;
  /** The ids not yet handed down, side by side (32 bytes each, not a Buffer object per chunk): at most rootIds. */
  private ids: Buffer;
  private held = 0;
  /** Every id of this stream, handed down or not. */
  private count = 0;
  private size = 0;
  /** The stream of this stream's chunk list, one level down: once the list is longer than rootIds. */
  private next: ContentStream | undefined;

  constructor(
    private readonly session: ContentSession,
    private readonly settings: ContentSettings,
    private readonly kind: BlobKind,
    /** ROOT_IDS; smaller only in tests, to reach a deeper list cheaply (a ref's depth tells readers how deep it is). */
    private readonly rootIds = ROOT_IDS,
  ) {
    this.chunker = new ContentDefinedChunker(settings.sizes, settings.seed);
    this.ids = Buffer.allocUnsafe(CHUNK_ID_SIZE * rootIds);
  }

  async write(data: Buffer): Promise<void> {
    this.size += data.length;
    for (const pieces of this.chunker.writePieces(data)) {
      const id = this.session.put(pieces, this.kind);
      // a promise only when a full pack is written, or a full buffer of ids goes down a level (once per rootIds chunks)
      const pushed = this.push(id instanceof Promise ? await id : id);
      if (pushed) await pushed;
    }
  }

  /** Ends the current chunk here (a table's data starts: a change in one table never moves another's chunks). */
  async cut(): Promise<void> {
    const pieces = this.chunker.cutPieces();
    if (pieces) await this.push(await this.session.put(pieces, this.kind));
  }

  /** Ends the stream: its ref, with the chunk list stored one level down while it is longer than rootIds. */
  async end(): Promise<StreamRef> {
    await this.cut();
    const { depth, root } = await this.endList();
    // the chunks still being compressed: in their packs before the caller reads what this stream added
    await this.session.drain();
    return { size: this.size, chunks: this.count, depth, root };
  }

  /** The root of this stream's list and its depth: the ids held, or (once they went down) the root of the level below, ended here. */
  private async endList(): Promise<{ depth: number; root: string[] }> {
    if (!this.next) {
      const root: string[] = [];
      for (let at = 0; at < this.held * CHUNK_ID_SIZE; at += CHUNK_ID_SIZE) root.push(this.ids.toString('hex', at, at + CHUNK_ID_SIZE));
      return { depth: 0, root };
    }
    if (this.held > 0) await this.next.write(this.ids.subarray(0, this.held * CHUNK_ID_SIZE));
    this.held = 0;
    // the level below ends where the list ends (its last chunk cut there), as it always has
    await this.next.cut();
    const below = await this.next.endList();
    return { depth: below.depth + 1, root: below.root };
  }

  /** Adds an id; a promise when the buffer was full and went down a level first. */
  private push(id: Buffer): Promise<void> | undefined {
    this.count++;
    if (this.held < this.rootIds) {
      id.copy(this.ids, this.held * CHUNK_ID_SIZE);
      this.held++;
      return undefined;
    }
    // a new buffer, not the full one reused: the level below's chunker holds views into what it was given
    const full = this.ids;
    this.ids = Buffer.allocUnsafe(CHUNK_ID_SIZE * this.rootIds);
    id.copy(this.ids, 0);
    this.held = 1;
    this.next ??= new ContentStream(this.session, this.settings, 'list', this.rootIds);
    return this.next.write(full);
  }
}

/** Reads blobs out of packs: a ranged read in the clear, the whole pack when encrypted (the two most recent kept for the runs that follow). */
class PackReader {
  private readonly plaintexts = new Map<string, Promise<Buffer>>();

  constructor(
    private readonly storage: Storage,
    private readonly settings: ContentSettings,
  ) {}

  async read(pack: string, sealed: boolean, entries: PackEntry[]): Promise<[PackEntry, Buffer][]> {
    const key = ContentStore.packKey(pack);
    if (!sealed) {
      const start = entries[0]!.offset;
      const end = entries.at(-1)!.offset + entries.at(-1)!.length;
      const bytes = await this.fetchRange(key, pack, start, end);
      if (bytes.length !== end - start) throw new PgkeepError('CHECKSUM_MISMATCH', `pack ${pack} is cut short (${bytes.length} of ${end - start} bytes at ${start})`);
      return entries.map((e) => [e, bytes.subarray(e.offset - start, e.offset - start + e.length)]);
    }
    let opening = this.plaintexts.get(pack);
    if (!opening) {
      opening = (async () => {
        const plain = await openSealed(await this.fetch(key, pack), this.settings, key);
        // the header says where each blob is; a pack whose header disagrees with the index is damaged
        readPackEntries(plain);
        return plain;
      })();
      opening.catch(() => this.plaintexts.delete(pack));
      this.plaintexts.set(pack, opening);
      // runs already planned hold their own promise: forgetting an older pack here only means a later run reads it again
      for (const old of this.plaintexts.keys()) if (this.plaintexts.size > 2) this.plaintexts.delete(old);
    }
    const plain = await opening;
    return entries.map((e) => {
      if (e.offset + e.length > plain.length) throw new PgkeepError('CHECKSUM_MISMATCH', `pack ${pack} is cut short`);
      return [e, plain.subarray(e.offset, e.offset + e.length)];
    });
  }

  /** A ranged read: into a pooled buffer when local storage reads in place (the caller gives it back to packReads), else fetch(). */
  private async fetchRange(key: string, pack: string, start: number, end: number): Promise<Buffer> {
    // local storage only: a remote one reads ahead through get(), several requests at once (runsOf)
    if (!this.storage.readInto || this.storage.capabilities.remote || end - start > packReads.size) return this.fetch(key, pack, { start, end });
    const buffer = packReads.take();
    try {
      return buffer.subarray(0, await this.storage.readInto(key, start, buffer.subarray(0, end - start)));
    } catch (error) {
      packReads.give(buffer);
      throw packError(error, pack);
    }
  }

  private async fetch(key: string, pack: string, range?: ByteRange): Promise<Buffer> {
    try {
      return await collectPack(await this.storage.get(key, range));
    } catch (error) {
      throw packError(error, pack);
    }
  }
}

/**
 * The bytes of a pack read, as collectStream gives them, but a read that came
 * in one piece (a local run's ranged read usually does) is returned as it is:
 * Buffer.concat would copy it, and a restore reads every stored byte this way
 * (285 MB of copies per GB restored, garbage the moment they were made).
 * The pieces are only read from (subarrays decompressed), never written to.
 */
async function collectPack(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return chunks.length === 1 ? chunks[0]! : Buffer.concat(chunks);
}

/** The stored bytes of one ranged read of a run. */
function runSpan(entries: readonly PackEntry[]): number {
  return entries.at(-1)!.offset + entries.at(-1)!.length - entries[0]!.offset;
}

function packError(error: unknown, pack: string): PgkeepError {
  if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') return new PgkeepError('CHECKSUM_MISMATCH', `pack ${pack} is missing from the repository`, { cause: error });
  return error instanceof PgkeepError ? error : new PgkeepError('STORAGE_IO', `reading pack ${pack} failed: ${(error as Error).message}`, { cause: error });
}

/** Reading many chunks: one codec per process (its contexts are reused, never shared by two runs at once: JavaScript is single-threaded and each call is synchronous). */
let sharedCodec: ChunkCodec | undefined;
function chunkCodec(level: number): ChunkCodec {
  sharedCodec ??= nativeChunkCodec(level) ?? undefined;
  if (!sharedCodec) throw new PgkeepError('TOOL_MISSING', 'a deduplicating repository needs zstd-napi (run npm ci): chunks are compressed one by one');
  return sharedCodec;
}

function decompress(blob: Buffer, rawLength: number, pack: string): Buffer {
  try {
    const chunk = Buffer.allocUnsafe(rawLength);
    chunkCodec(3).decompressInto(chunk, blob);
    return chunk;
  } catch (error) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `a chunk in pack ${pack} cannot be decompressed: ${(error as Error).message}`, { cause: error });
  }
}

/** The stored form of a pack: as is, or one age file to the recipients. */
async function seal(plain: readonly Buffer[], settings: ContentSettings): Promise<Buffer[]> {
  if (settings.recipients.length === 0) return [...plain];
  const sealer = await createAgeSealer(settings.recipients);
  const parts = [sealer.prefix];
  for (const piece of plain) sealer.update(piece, (c) => parts.push(Buffer.from(c)));
  sealer.final((c) => parts.push(Buffer.from(c)));
  return parts;
}

/** The plaintext of a stored pack. */
async function openSealed(stored: Buffer, settings: ContentSettings, key: string): Promise<Buffer> {
  if (settings.identities.length === 0) throw new PgkeepError('USAGE', `${key} is encrypted: reading it needs the repository's identity (--identity-file or the passphrase)`);
  try {
    return await collectStream(Readable.from([stored]).pipe(decryptStream(settings.identities)));
  } catch (error) {
    // a wrong identity is the reader's problem, anything else the pack's
    if (error instanceof PgkeepError && error.code !== 'CHECKSUM_MISMATCH') throw error;
    throw new PgkeepError('CHECKSUM_MISMATCH', `pack ${key.slice(key.lastIndexOf('/') + 1)} is damaged: ${(error as Error).message}`, { cause: error });
  }
}
