import { pipeline, Transform, type Readable, type TransformCallback } from 'node:stream';
import type { Storage } from '../storage/storage.js';
import { encryptStream, type AgeRecipient } from './age.js';
import { HashCounter, type Digest } from './hash-counter.js';
import type { ZstdCodec } from './zstd.js';

export interface StoreOptions {
  codec: ZstdCodec;
  level: number;
  signal?: AbortSignal | undefined;
  /**
   * Must resolve before the object may become visible; a rejection fails the
   * write. Used to wait for the producer's exit status: a pg_dump that dies
   * mid-stream closes its stdout just like one that finished.
   */
  complete?: Promise<void> | undefined;
  /** Called as raw bytes flow (for progress). */
  onRawBytes?: ((total: number) => void) | undefined;
  /** age recipients to encrypt to, after compression; none for an unencrypted repository. */
  encrypt?: AgeRecipient[] | null | undefined;
}

export interface StoredDigests {
  raw: Digest;
  stored: Digest;
}

/**
 * input → SHA-256 (raw) → zstd → [age] → SHA-256 (stored) → storage, with backpressure
 * end to end, so memory stays bounded whatever the size. Rejects with the
 * first failure of any stage; nothing is visible at `key` unless all succeed.
 */
export async function storeStream(storage: Storage, key: string, input: Readable, options: StoreOptions): Promise<StoredDigests> {
  const raw = new HashCounter();
  const stored = new HashCounter();
  if (options.onRawBytes) {
    const report = options.onRawBytes;
    raw.on('data', () => report(raw.size));
  }
  const gate = completionGate(options.complete ?? Promise.resolve());
  const chained = new Promise<void>((resolve, reject) => {
    const compressor = options.codec.compressor({ level: options.level });
    const stages = options.encrypt ? [compressor, encryptStream(options.encrypt)] : [compressor];
    pipeline([input, raw, ...stages, stored, gate], (error) => (error ? reject(error) : resolve()));
  });
  const chainedError = chained.then(() => undefined, (error: unknown) => error ?? new Error('pipeline failed'));
  const put = storage.put(key, gate, { signal: options.signal });
  // The write's own outcome decides: it fails either with the storage's error
  // (disk full) or with whatever failed upstream, passed down through the gate
  // (pg_dump's exit status, zstd). Errors of the other stages are consequences.
  const [written, produced] = await Promise.allSettled([put, options.complete ?? Promise.resolve()]);
  const pipelineError = await chainedError;
  if (written.status === 'rejected') throw written.reason;
  if (produced.status === 'rejected') throw produced.reason;
  if (pipelineError) throw pipelineError;
  return { raw: raw.digest, stored: stored.digest };
}

/** A pass-through whose end waits for `complete`, and fails if it rejects. */
function completionGate(complete: Promise<void>): Transform {
  complete.catch(() => undefined); // observed in _flush; avoid an unhandled rejection meanwhile
  return new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding, callback: TransformCallback) {
      callback(null, chunk);
    },
    flush(callback: TransformCallback) {
      complete.then(
        () => callback(),
        (error: Error) => callback(error),
      );
    },
  });
}
