import { createHash } from 'node:crypto';
import { open, type FileHandle } from 'node:fs/promises';
import { PgkeepError, abortError } from '../errors.js';
import type { AgeRecipient } from './age.js';
import type { Digest } from './hash-counter.js';
import type { StoredDigests } from './store-stream.js';
import { nativeSyncCompressor } from './zstd.js';

/** Above this, a file is streamed instead: memory holds at most this much compressed output. */
export const IN_MEMORY_LIMIT = 64 << 20;

const READ_SIZE = 1 << 20;

export interface EncodedFile {
  /** The stored bytes: zstd, then age when encrypted. */
  data: Buffer;
  digests: StoredDigests;
}

/**
 * Encodes one local file of at most IN_MEMORY_LIMIT bytes as pgkeep stores
 * it: SHA-256 of the raw bytes, zstd (native, multi-threaded), age when
 * `encrypt` names recipients, SHA-256 of the result. The same format as
 * storeStreamTee writes (one zstd frame, an age file, both digests), in one
 * loop over a reused read buffer with no stream in between: for a 16 MB WAL segment the stream stages cost more than the
 * compression. This is wal-push's path; PostgreSQL waits for every segment.
 * zstd's workers compress while the next piece is read, and the caller's
 * other I/O (its archive checks) proceeds between pieces.
 *
 * `size` is the file's size as measured by the caller. Resolves null when
 * this path cannot be used (zstd-napi missing, the file larger than the
 * limit, or grown since): the caller streams.
 */
export async function encodeFileInMemory(
  file: string,
  options: { level: number; encrypt: AgeRecipient[] | null; size: number; signal?: AbortSignal | undefined },
): Promise<EncodedFile | null> {
  if (options.size > IN_MEMORY_LIMIT) return null;
  const compressor = nativeSyncCompressor({ level: options.level });
  if (!compressor) return null;
  // age only when encrypting: its module is not free to load, and this runs once per WAL segment.
  const sealer = options.encrypt ? await (await import('./age.js')).createAgeSealer(options.encrypt) : null;

  // One buffer for the result, as large as the output can be; pages are touched only as it fills.
  const bound = compressor.bound(options.size);
  const output = new OutputBuffer(sealer ? sealer.prefix.length + sealer.bound(bound) : bound, file);
  // zstd's output is a view of its reused buffer, and age queues what it has not sealed yet: age gets a copy.
  const compressed = sealer ? (bytes: Buffer) => sealer.update(Buffer.from(bytes), output.append) : output.append;
  if (sealer) output.append(sealer.prefix);

  const raw = createHash('sha256');
  let rawSize = 0;
  const input = Buffer.allocUnsafe(READ_SIZE);
  const unreadable = (error: unknown) =>
    new PgkeepError('FILE_NOT_FOUND', `cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? String(error)})`, { cause: error });
  const handle: FileHandle = await open(file, 'r').catch((error: unknown) => {
    throw unreadable(error);
  });
  try {
    for (;;) {
      const { bytesRead } = await handle.read(input, 0, READ_SIZE, null).catch((error: unknown) => {
        throw unreadable(error);
      });
      if (bytesRead === 0) break;
      if (options.signal?.aborted) throw abortError(options.signal);
      rawSize += bytesRead;
      // Grown since it was measured: the output could outgrow its buffer; the caller streams it instead.
      if (rawSize > options.size) return null;
      const chunk = input.subarray(0, bytesRead);
      raw.update(chunk);
      // zstd has copied the chunk into its own buffers when this returns, so `input` can be read into again.
      compressor.update(chunk, compressed);
    }
  } finally {
    await handle.close();
  }
  compressor.end(compressed);
  sealer?.final(output.append);
  return output.result({ size: rawSize, sha256: raw.digest('hex') });
}

/** A fixed buffer filled from the front, hashed as it fills. */
class OutputBuffer {
  private readonly buffer: Buffer;
  private readonly hash = createHash('sha256');
  private size = 0;

  constructor(
    capacity: number,
    private readonly what: string,
  ) {
    this.buffer = Buffer.allocUnsafeSlow(capacity);
  }

  readonly append = (bytes: Buffer): void => {
    if (this.size + bytes.length > this.buffer.length) throw new PgkeepError('INTERNAL', `encoding ${this.what}: the output outgrew its bound of ${this.buffer.length} bytes`);
    this.hash.update(bytes);
    this.size += bytes.copy(this.buffer, this.size);
  };

  result(raw: Digest): EncodedFile {
    return { data: this.buffer.subarray(0, this.size), digests: { raw, stored: { size: this.size, sha256: this.hash.digest('hex') } } };
  }
}
