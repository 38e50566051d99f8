import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { KeySettings } from '../../config/settings.js';
import { faultPoint } from '../../fault-points.js';
import { keepYoungGenerationSmall } from '../../pipeline/keep-young-generation-small.js';
import { storageOf } from '../repository-storage.js';
import type { Repository } from '../repository.js';
import type { BackupObject } from '../manifest.js';
import { acquireContentLock, type ContentLock } from './content-lock.js';
import { ContentStore, type ContentSession, type SessionTotals, type StreamRef } from './content-store.js';

/** Chunks read from the source at a time: a few runs of neighbouring blobs, bounded memory. */
const TRANSFER_BATCH = 256;

/** What copying one stream between repositories that share chunk ids moved. */
export interface TransferTotals {
  /** Chunk ids walked (data and lists, every level). */
  chunks: number;
  /** Chunks the destination lacked (data and lists), sent; their raw bytes, and compressed as stored there (before encryption). */
  sentChunks: number;
  sentRawBytes: number;
  sentCompressedBytes: number;
}
import { contentStoreSettings } from './open-content-store.js';
import { ContentStreamWriter, storeContentStream, type StoreContentOptions, type StoredContent } from './store-content-stream.js';

/**
 * One backup's writing into a deduplicating repository: the shared content
 * lock (prune does not sweep meanwhile) and a session whose packs become
 * visible with its index file, written just before the manifest.
 */
export class ContentWriting {
  private constructor(
    /** The session, once the store's index is read (see begin). */
    private readonly session: Promise<ContentSession>,
    private readonly lock: ContentLock,
  ) {}

  /** Undefined for a repository without a content store. */
  static async begin(repository: Repository, keys: KeySettings, command: string, signal?: AbortSignal): Promise<ContentWriting | undefined> {
    if (!repository.info.content) return undefined;
    // a chunked write keeps objects per new chunk: with V8's young generation left to grow, the backup's peak RSS did (see there)
    keepYoungGenerationSmall();
    // the keys before anything (no index read, no lock): a missing key fails here, before pg_dump starts
    const settings = (await contentStoreSettings(repository, keys, 'write'))!;
    // the lock first: a sweep running now changes the index this writer reads next
    const lock = await acquireContentLock(storageOf(repository)!, 'shared', command, { signal });
    // The index is read while the caller goes on: reading it took 0.4-0.5 s for 120,000 chunks, which a
    // backup spent before starting pg_dump; now pg_dump's own catalog queries run meanwhile, and the first
    // chunk waits for it. A failure to open shows at the first use, and release() still frees the lock.
    const session = ContentStore.open(storageOf(repository)!, settings).then((store) => store.session());
    session.catch(() => undefined);
    return new ContentWriting(session, lock);
  }

  /**
   * Stores one object's stream as chunks. The record has no file: `content`
   * names the chunks, `raw` is the whole stream, and `stored` what this
   * object added to the store (its new chunks, compressed; sha256 of the ref).
   */
  async store(object: Pick<BackupObject, 'name' | 'role' | 'file'>, input: Readable | AsyncIterable<Buffer>, options: StoreContentOptions): Promise<Omit<BackupObject, 'encryption'>> {
    return this.record(object, await storeContentStream(await this.session, input, options));
  }

  /** A writer for one object fed piece by piece (several repositories fed from one stream), and how to record it once ended. */
  begin(object: Pick<BackupObject, 'name' | 'role' | 'file'>): { writer: ContentStreamWriter; finish(): Promise<Omit<BackupObject, 'encryption'>> } {
    const writer = new ContentStreamWriter(this.session);
    return { writer, finish: async () => this.record(object, await writer.end()) };
  }

  private record(object: Pick<BackupObject, 'name' | 'role' | 'file'>, { raw, ref, added }: StoredContent): Omit<BackupObject, 'encryption'> {
    return {
      name: object.name,
      role: object.role,
      ...(object.file === undefined ? {} : { file: object.file }),
      raw,
      stored: { size: added, sha256: createHash('sha256').update(JSON.stringify(ref)).digest('hex') },
      compression: 'zstd',
      content: ref,
    };
  }

  /**
   * Copies one stream from another repository that shares this one's chunk
   * ids (equal chunker fingerprints): walks its chunk list at every level and
   * sends only the chunks (data and list) this repository lacks, each read
   * from the source's packs (checked against its id there), decompressed and
   * re-packed here. The stream ref stays as it is. The new packs become
   * visible with commit()'s index file, then the manifest: a kill before
   * leaves packs no index names.
   */
  async transfer(source: ContentStore, ref: StreamRef, signal?: AbortSignal): Promise<TransferTotals> {
    return transferChunks(await this.session, source, ref, signal);
  }

  /** Writes the last packs and the index file: call right before the manifest. */
  async commit(): Promise<SessionTotals> {
    const session = await this.session;
    await session.flush();
    faultPoint('before-content-index');
    const totals = await session.commit();
    faultPoint('after-content-index');
    return totals;
  }

  /** Gives up, or is done: what was written and not indexed is named by no index (prune removes it after the grace). Ends the session's compression threads; releases the lock. */
  async release(): Promise<void> {
    // its compression threads end now, not when they go idle (a killed job in serve, Ctrl-C)
    await this.session.then((session) => session.close(), () => undefined);
    await this.lock.release().catch(() => undefined);
  }
}

/** ContentWriting.transfer: the chunks of a stream of `source` this session's repository lacks, sent (every level of its lists). */
export async function transferChunks(session: ContentSession, source: ContentStore, ref: StreamRef, signal?: AbortSignal): Promise<TransferTotals> {
  const totals: TransferTotals = { chunks: 0, sentChunks: 0, sentRawBytes: 0, sentCompressedBytes: 0 };
  // No set of every id walked (one string per chunk: O(chunks of the stream)): holds() is true for a
  // chunk this session copied (pending in a pack being filled, then in the index), so a chunk seen again
  // is skipped by it; only a chunk repeated inside the batch being gathered, not yet sent, needs a set.
  const send = async (batch: Buffer[]) => {
    for await (const { id, bytes, kind } of source.readChunks(batch, signal)) {
      const added = await session.copyChunk(id, bytes, kind);
      if (added > 0) {
        totals.sentChunks++;
        totals.sentRawBytes += bytes.length;
        totals.sentCompressedBytes += added;
      }
    }
  };
  // level by level from the root: the lists are read from the source, so a level is known once the one above is
  for (let depth = 0; depth <= ref.depth; depth++) {
    let batch: Buffer[] = [];
    const inBatch = new Set<string>();
    for await (const id of source.chunkIds({ ...ref, depth }, signal)) {
      totals.chunks++;
      if (session.holds(id)) continue;
      const key = id.toString('latin1');
      if (inBatch.has(key)) continue;
      inBatch.add(key);
      batch.push(Buffer.from(id));
      if (batch.length >= TRANSFER_BATCH) {
        await send(batch);
        batch = [];
        inBatch.clear();
      }
    }
    if (batch.length > 0) await send(batch);
  }
  return totals;
}
