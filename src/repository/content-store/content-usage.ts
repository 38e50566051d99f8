import { PgkeepError } from '../../errors.js';
import { readObject } from '../../storage/storage.js';
import { storageOf } from '../repository-storage.js';
import type { Repository } from '../repository.js';
import { MARKS_FILE } from './content-prune.js';
import { INDEX_PREFIX, PACKS_PREFIX } from './content-store.js';

/** What a deduplicating repository's content store takes on storage, from listings alone. */
export interface ContentUsage {
  packs: number;
  packBytes: number;
  indexFiles: number;
  indexBytes: number;
  /** packBytes + indexBytes: what the store costs. */
  storedBytes: number;
  /**
   * Packs an earlier prune found unused (or worth repacking) and their
   * bytes: a prune after the grace period frees them (a repacked pack frees
   * less: its used blobs move to a new pack). `prune --dry-run` says exactly.
   */
  markedPacks: number;
  markedBytes: number;
}

/**
 * The content store's size from one listing of its packs and one of its
 * index files (sizes as storage reports them: no pack or index file is
 * read), and prune's marks file. Memory: the marks (one entry per marked
 * pack), whatever the number of packs; undefined for a plain repository.
 */
export async function readContentUsage(repository: Repository, signal?: AbortSignal): Promise<ContentUsage | undefined> {
  if (!repository.info.content) return undefined;
  const storage = storageOf(repository);
  if (!storage) throw new PgkeepError('INTERNAL', 'readContentUsage: not an open repository');
  const marked = await readMarkedPacks(await readObject(storage, MARKS_FILE).catch((error: unknown) => (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND' ? undefined : Promise.reject(error))));
  const usage: ContentUsage = { packs: 0, packBytes: 0, indexFiles: 0, indexBytes: 0, storedBytes: 0, markedPacks: 0, markedBytes: 0 };
  for await (const entry of storage.list(PACKS_PREFIX, { recursive: true })) {
    signal?.throwIfAborted();
    if (entry.kind !== 'object') continue;
    usage.packs++;
    usage.packBytes += entry.size;
    if (marked.has(entry.path.slice(entry.path.lastIndexOf('/') + 1))) {
      usage.markedPacks++;
      usage.markedBytes += entry.size;
    }
  }
  for await (const entry of storage.list(INDEX_PREFIX, { recursive: true })) {
    signal?.throwIfAborted();
    if (entry.kind !== 'object') continue;
    usage.indexFiles++;
    usage.indexBytes += entry.size;
  }
  usage.storedBytes = usage.packBytes + usage.indexBytes;
  return usage;
}

/** The pack names in prune's marks ({"<pack>": "<since>"}); a missing or unreadable file marks nothing (prune rewrites it). */
async function readMarkedPacks(bytes: Buffer | undefined): Promise<Set<string>> {
  if (!bytes) return new Set();
  try {
    const parsed = JSON.parse(bytes.toString('utf8')) as unknown;
    return parsed && typeof parsed === 'object' && !Array.isArray(parsed) ? new Set(Object.keys(parsed)) : new Set();
  } catch {
    return new Set();
  }
}

/** The deduplication ratio: logical bytes of every backup over the bytes stored; undefined while nothing is stored. */
export function dedupRatio(logicalBytes: number, storedBytes: number): number | undefined {
  return storedBytes > 0 ? logicalBytes / storedBytes : undefined;
}
