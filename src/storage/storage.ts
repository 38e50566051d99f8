import type { Readable } from 'node:stream';
import { PgkeepError } from '../errors.js';

/**
 * The one interface every storage driver (posix, S3, ...) implements. Paths are
 * relative, '/'-separated keys inside the repository; drivers map them to files
 * or object keys. Commands and the repository layer never ask which driver they
 * hold: what differs is described by `capabilities`.
 */
export interface Storage {
  /** Where this storage points, for messages; never contains credentials. */
  readonly location: string;
  readonly capabilities: StorageCapabilities;

  /**
   * Stores everything `body` yields at `path`. The object becomes visible only
   * once `body` has ended cleanly and the bytes are durable; if `body` errors
   * (or `signal` aborts), nothing is left at `path` and the promise rejects with
   * the body's error. Replaces an existing object atomically.
   */
  put(path: string, body: Readable, options?: PutOptions): Promise<PutResult>;

  /** Creates `path` with `data` only if nothing is there yet; false if it exists. */
  putIfAbsent(path: string, data: Buffer): Promise<boolean>;

  /** Streams the object, or the byte range [start, end) of it. Rejects STORAGE_NOT_FOUND. */
  get(path: string, range?: ByteRange): Promise<Readable>;

  /**
   * Optional, for drivers that read in place (a local file): reads the bytes at [start, start + into.length)
   * of the object into `into` and returns how many there were (fewer at its end). Lets a reader reuse its
   * buffers where get() makes new ones for every read. Rejects as get() does.
   */
  readInto?(path: string, start: number, into: Buffer): Promise<number>;

  /** Size and modification time, or undefined when nothing is at `path`. */
  stat(path: string): Promise<StorageStat | undefined>;

  /**
   * Lists what is under `prefix` (a folder path, '' for the root). Non-recursive
   * listings also return sub-folders as `{ kind: 'folder' }`. Order is by path.
   */
  list(prefix: string, options?: { recursive?: boolean }): AsyncIterable<StorageEntry>;

  /** Removes one object; removing what is not there is not an error. */
  remove(path: string): Promise<void>;

  /** Removes everything under a folder path. */
  removeFolder(prefix: string): Promise<void>;

  /** True when no object is stored yet (a fresh location); a write still in flight is not one. */
  isEmpty(): Promise<boolean>;
}

export interface StorageCapabilities {
  /** The driver enforces POSIX modes (0700 folders, 0600 files). */
  readonly posixModes: boolean;
  /** put/putIfAbsent are atomic against concurrent writers on other hosts. */
  readonly conditionalCreate: boolean;
  /** Each request is a network round trip: readers gain by fetching several ahead (a local file is read from the page cache). */
  readonly remote: boolean;
}

export interface PutOptions {
  signal?: AbortSignal;
}

export interface PutResult {
  size: number;
}

export interface ByteRange {
  start: number;
  /** Exclusive. */
  end?: number;
}

export interface StorageStat {
  size: number;
  modified: Date;
}

export type StorageEntry =
  | { kind: 'object'; path: string; size: number; modified: Date }
  | { kind: 'folder'; path: string };

/** Joins key segments with '/', rejecting segments that could escape the repository. */
export function joinKey(...segments: string[]): string {
  const parts: string[] = [];
  for (const segment of segments) {
    for (const part of segment.split('/')) {
      if (part === '' ) continue;
      if (part === '.' || part === '..') throw new PgkeepError('INVALID_NAME', `invalid storage key ${JSON.stringify(segments.join('/'))}: "${part}" may not be part of it`);
      parts.push(part);
    }
  }
  return parts.join('/');
}

/** Reads a whole (small) object into memory. */
export async function readObject(storage: Storage, path: string): Promise<Buffer> {
  return collectStream(await storage.get(path));
}

/** Buffers everything a (small) stream yields. */
export async function collectStream(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of stream) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}
