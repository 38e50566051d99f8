/**
 * Streaming multipart upload of a body of unknown length, with bounded memory.
 *
 * A dump's size is not known until pg_dump ends, so the part size cannot be
 * chosen from it. S3 allows at most 10,000 parts of 5 MiB to 5 GiB each (only
 * the last may be smaller) and parts of different sizes. So parts grow: 8 MiB
 * for the first thousand, then doubling every thousand parts (16, 32, …
 * 4 GiB), which keeps small dumps in small parts and still reaches 8 TiB, past
 * S3's 5 TiB object limit. Parts up to `memoryLimit` are held in memory; larger
 * parts are spooled to a private temp file, so memory stays near
 * (queueSize + 1) × memoryLimit whatever the object size. A fixed part size
 * (for servers that want equal parts, such as Cloudflare R2) turns growth off.
 *
 * The upload commits (CompleteMultipartUpload, or one PutObject for a body
 * smaller than the first part) only after the body ended cleanly; any failure
 * aborts the multipart upload and rethrows the body's own error first.
 *
 * No SDK type is used here: the S3 driver supplies the requests as `MultipartTarget`.
 */
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import * as path from 'node:path';
import type { Readable } from 'node:stream';
import { once } from 'node:events';
import { PgkeepError } from '../errors.js';
import { makeTempFolder } from '../local/temp-folders.js';

const MiB = 1024 * 1024;
export const MIN_PART_SIZE = 5 * MiB;
export const MAX_PART_SIZE = 5 * 1024 * MiB;
export const MAX_PARTS = 10_000;
export const DEFAULT_FIRST_PART_SIZE = 8 * MiB;
/** Parts per size step of the growing schedule. */
const PARTS_PER_STEP = 1000;
/** Parts larger than this are spooled to disk instead of held in memory. */
export const DEFAULT_MEMORY_LIMIT = 32 * MiB;

/** One part's bytes: in memory, or in a spool file that can be read again for a retry. */
export type PartBody = { kind: 'memory'; data: Buffer } | { kind: 'file'; size: number; open: () => Readable };

/** The requests of a multipart upload, supplied by the S3 driver. */
export interface MultipartTarget {
  /** Stores a body smaller than the first part in one request. */
  putObject(body: PartBody, signal: AbortSignal): Promise<void>;
  /** Starts a multipart upload; resolves to its upload id. */
  create(signal: AbortSignal): Promise<string>;
  /** Uploads one part; resolves to its ETag. */
  uploadPart(uploadId: string, partNumber: number, body: PartBody, signal: AbortSignal): Promise<string>;
  complete(uploadId: string, parts: { partNumber: number; etag: string }[]): Promise<void>;
  /** Best effort: parts a server keeps anyway are removed by a bucket lifecycle rule. */
  abort(uploadId: string): Promise<void>;
}

export interface MultipartOptions {
  /** Size of part n (1-based). Default: growing from 8 MiB (see growingPartSize). */
  partSize?: (partNumber: number) => number;
  /** Parts uploaded at once. */
  queueSize?: number;
  memoryLimit?: number;
  /** Where large parts are spooled (default: the OS temp folder). */
  spoolDir?: string;
  signal?: AbortSignal;
  /**
   * Called once when the upload stops early (abort, a failed part), so the
   * caller can end a body that may be waiting on its producer, e.g. destroy a Readable.
   */
  stopBody?: (reason: unknown) => void;
}

/** 8 MiB parts, doubling every 1000 parts, capped at 5 GiB: 10,000 parts hold about 8 TiB. */
export function growingPartSize(first: number = DEFAULT_FIRST_PART_SIZE): (partNumber: number) => number {
  return (partNumber) => Math.min(MAX_PART_SIZE, first * 2 ** Math.floor((partNumber - 1) / PARTS_PER_STEP));
}

/** The largest object a part-size schedule can upload within 10,000 parts. */
export function maxObjectSize(partSize: (partNumber: number) => number): number {
  let total = 0;
  for (let n = 1; n <= MAX_PARTS; n++) total += partSize(n);
  return total;
}

/** A part being filled: a preallocated buffer, or a spool file. */
interface PartWriter {
  readonly capacity: number;
  filled: number;
  write(chunk: Buffer): Promise<void>;
  finish(): Promise<PartBody>;
  discard(): Promise<void>;
}

/** Uploads everything `body` yields; resolves to the number of bytes stored. */
export async function uploadMultipart(target: MultipartTarget, body: AsyncIterable<Buffer>, options: MultipartOptions = {}): Promise<{ size: number; parts: number }> {
  const partSize = options.partSize ?? growingPartSize();
  const queueSize = options.queueSize ?? 2;
  const memoryLimit = options.memoryLimit ?? DEFAULT_MEMORY_LIMIT;
  const stop = new AbortController();
  stop.signal.addEventListener('abort', () => options.stopBody?.(stop.signal.reason), { once: true });
  const onAbort = () => stop.abort(options.signal!.reason);
  if (options.signal?.aborted) onAbort();
  options.signal?.addEventListener('abort', onAbort, { once: true });

  let spoolDir: string | undefined;
  const spoolFolder = async () => (spoolDir ??= await makeTempFolder(options.spoolDir, 'upload'));
  let uploadId: string | undefined;
  let partNumber = 0;
  let size = 0;
  let failure: { error: unknown } | undefined;
  const etags: { partNumber: number; etag: string }[] = [];
  const inflight = new Set<Promise<void>>();
  let part: PartWriter | undefined;

  const newPart = async (): Promise<PartWriter> => {
    partNumber++;
    if (partNumber > MAX_PARTS) throw new PgkeepError('STORAGE_IO', `the object is larger than ${MAX_PARTS} parts (${formatBytes(size)} so far): use a larger S3 part size (s3.partSizeMiB)`);
    const capacity = partSize(partNumber);
    return capacity <= memoryLimit ? memoryPart(capacity) : filePart(capacity, path.join(await spoolFolder(), `part-${partNumber}`));
  };

  /** Starts uploading a full part, waiting for a free slot first (backpressure on the body). */
  const send = async (full: PartWriter): Promise<void> => {
    const number = partNumber;
    const partBody = await full.finish();
    uploadId ??= await target.create(stop.signal);
    while (inflight.size >= queueSize) await Promise.race(inflight);
    if (failure) throw failure.error;
    const id = uploadId;
    const task = target
      .uploadPart(id, number, partBody, stop.signal)
      .then((etag) => void etags.push({ partNumber: number, etag }))
      .catch((error: unknown) => {
        failure ??= { error };
        stop.abort(error);
      })
      .finally(() => {
        inflight.delete(task);
        return full.discard();
      });
    inflight.add(task);
  };

  try {
    for await (const data of body) {
      if (stop.signal.aborted) throw stop.signal.reason;
      let chunk = data;
      size += chunk.length;
      while (chunk.length > 0) {
        part ??= await newPart();
        const take = Math.min(chunk.length, part.capacity - part.filled);
        await part.write(take === chunk.length ? chunk : chunk.subarray(0, take));
        chunk = chunk.subarray(take);
        if (part.filled === part.capacity) {
          const full = part;
          part = undefined;
          await send(full);
        }
      }
      if (failure) throw failure.error;
    }
    if (stop.signal.aborted) throw stop.signal.reason;

    if (uploadId === undefined) {
      // Smaller than one part: a single request.
      const only = part ?? (await newPart());
      part = undefined;
      try {
        await target.putObject(await only.finish(), stop.signal);
      } finally {
        await only.discard();
      }
      return { size, parts: 1 };
    }
    if (part && part.filled > 0) {
      const last = part;
      part = undefined;
      await send(last);
    }
    while (inflight.size > 0) await Promise.race(inflight);
    if (failure) throw failure.error;
    await target.complete(uploadId, etags.sort((a, b) => a.partNumber - b.partNumber));
    return { size, parts: etags.length };
  } catch (error) {
    stop.abort(error);
    await Promise.allSettled([...inflight]);
    if (uploadId !== undefined) await target.abort(uploadId).catch(() => undefined);
    throw error;
  } finally {
    options.signal?.removeEventListener('abort', onAbort);
    await part?.discard();
    if (spoolDir) await rm(spoolDir, { recursive: true, force: true });
  }
}

/** The first buffer of a part in memory: most objects (manifests, index files, small packs) fit in it. */
const FIRST_PART_BUFFER = 64 << 10;

function memoryPart(capacity: number): PartWriter {
  // Filled in place: no second copy when it is sent. It grows (doubling, up to the part's capacity) as the
  // body comes: a part allocated whole at once (8 MiB and more) for every object, a 300-byte manifest too,
  // made a command writing many small objects allocate gigabytes (content-store.test.ts: 2.4 GB for 302
  // objects) and run the GC for them. A full part costs the copies of its doublings, ~its size once more.
  let buffer: Buffer | undefined = Buffer.allocUnsafeSlow(Math.min(capacity, FIRST_PART_BUFFER));
  const writer: PartWriter = {
    capacity,
    filled: 0,
    async write(chunk) {
      const need = writer.filled + chunk.length;
      if (need > buffer!.length) {
        const grown = Buffer.allocUnsafeSlow(Math.min(capacity, Math.max(need, 2 * buffer!.length)));
        buffer!.copy(grown, 0, 0, writer.filled);
        buffer = grown;
      }
      chunk.copy(buffer!, writer.filled);
      writer.filled += chunk.length;
    },
    async finish() {
      return { kind: 'memory', data: buffer!.subarray(0, writer.filled) };
    },
    async discard() {
      buffer = undefined;
    },
  };
  return writer;
}

function filePart(capacity: number, file: string): PartWriter {
  let out: WriteStream | undefined = createWriteStream(file, { mode: 0o600 });
  const failed = once(out, 'error').then(([error]) => Promise.reject(error as Error));
  failed.catch(() => undefined);
  const writer: PartWriter = {
    capacity,
    filled: 0,
    async write(chunk) {
      writer.filled += chunk.length;
      if (!out!.write(chunk)) await Promise.race([once(out!, 'drain'), failed]);
    },
    async finish() {
      const stream = out!;
      out = undefined;
      await Promise.race([new Promise<void>((resolve) => stream.end(resolve)), failed]);
      return { kind: 'file', size: writer.filled, open: () => createReadStream(file) };
    },
    async discard() {
      out?.destroy();
      out = undefined;
      await rm(file, { force: true });
    },
  };
  return writer;
}

function formatBytes(bytes: number): string {
  return bytes >= 1024 * MiB ? `${(bytes / 1024 / MiB).toFixed(1)} GiB` : `${Math.round(bytes / MiB)} MiB`;
}
