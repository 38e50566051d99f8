import { finished, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PgkeepError } from '../errors.js';
import { decryptStream, type AgeIdentity } from './age.js';
import { HashCounter, type Digest } from './hash-counter.js';
import type { ZstdCodec } from './zstd.js';

/**
 * What the pipeline checks a stored object against: its name (for messages),
 * the raw and stored sizes and SHA-256s, and whether it is encrypted. A
 * manifest's object record is one; the pipeline knows no manifest.
 */
export interface ObjectToLoad {
  name: string;
  raw: Digest;
  stored: Digest;
  /** Not null: the object is age-encrypted. */
  encryption: object | null;
}

/**
 * Where stored bytes come from: one byte stream per key. A storage driver is
 * one; the pipeline needs nothing else of it (it knows no storage and no
 * repository format: the caller chooses the key).
 */
export interface ByteSource {
  get(key: string): Promise<Readable>;
}

export interface LoadOptions {
  codec: ZstdCodec;
  signal?: AbortSignal | undefined;
  onRawBytes?: ((total: number) => void) | undefined;
  /** Identities for objects the manifest says are encrypted. */
  identities?: AgeIdentity[] | undefined;
}

/**
 * storage → SHA-256 (stored, checked) → [age -d] → zstd -d → SHA-256 (raw, checked) → sink.
 * Every byte is checked against the manifest while it streams; a mismatch or a
 * decompression failure rejects with CHECKSUM_MISMATCH naming the object, and
 * the sink is destroyed rather than ended, so it never sees a clean end. A read
 * that fails (after the storage's own retries) rejects with the storage's error
 * (readError), never CHECKSUM_MISMATCH.
 */
export async function loadStream(storage: ByteSource, key: string, object: ObjectToLoad, sink: Writable, options: LoadOptions): Promise<void> {
  let input: Readable;
  try {
    input = await storage.get(key);
  } catch (error) {
    // The sink must not wait for bytes that will never come: a child process
    // (pg_restore, psql, tar) reading it would wait on its stdin forever, and
    // the command with it (a restore whose first GET failed hung this way).
    const failure =
      error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND'
        ? new PgkeepError('STORAGE_NOT_FOUND', `object ${object.name} of the backup is missing (${key}): the backup is damaged, see pgkeep verify`, { cause: error })
        : error;
    // The error is thrown to the caller below; the sink's copy of it needs a listener.
    sink.on('error', () => undefined);
    sink.destroy(failure instanceof Error ? failure : new Error(String(failure)));
    throw failure;
  }
  // A read that failed (the network, the disk) is not corrupt bytes: remember that the input failed,
  // because the pipeline passes its error on to every later stage, the decompressor included.
  let inputError: unknown;
  input.once('error', (error: unknown) => {
    inputError ??= error;
  });
  const stored = new HashCounter({ digest: object.stored, what: `object ${object.name} (stored bytes)` });
  const raw = new HashCounter({ digest: object.raw, what: `object ${object.name} (after decompression)` });
  if (options.onRawBytes) {
    const report = options.onRawBytes;
    raw.on('data', () => report(raw.size));
  }
  const decompressor = options.codec.decompressor();
  // Bytes that zstd cannot decode are corrupt bytes: remember that it was zstd that failed.
  let decompressError: Error | undefined;
  decompressor.once('error', (error: Error) => {
    decompressError ??= error;
  });
  try {
    const decrypt = object.encryption ? [decryptStream(requireIdentities(object, options.identities), { what: `object ${object.name}` })] : [];
    await pipeline([input, stored, ...decrypt, decompressor, raw, sink], ...(options.signal ? [{ signal: options.signal }] : []));
  } catch (error) {
    if (inputError !== undefined && !options.signal?.aborted) throw readError(object.name, inputError);
    if (error instanceof PgkeepError && error.code === 'CHECKSUM_MISMATCH') throw error;
    if (decompressError && decompressError !== inputError && !options.signal?.aborted) {
      throw new PgkeepError('CHECKSUM_MISMATCH', `object ${object.name} is corrupt: zstd cannot decode it (${decompressError.message})`, { cause: decompressError });
    }
    throw error;
  }
}

/**
 * The error of an object that could not be read: the storage's own (S3's
 * STORAGE_NETWORK after its retries, STORAGE_NOT_FOUND…) or, for a plain I/O
 * error, STORAGE_IO. Never CHECKSUM_MISMATCH: nothing was judged.
 */
export function readError(name: string, error: unknown): PgkeepError {
  if (error instanceof PgkeepError) return error;
  const code = (error as NodeJS.ErrnoException | null)?.code;
  const message = error instanceof Error ? error.message : String(error);
  return new PgkeepError('STORAGE_IO', `could not read object ${name}: ${message}${code && !message.includes(code) ? ` (${code})` : ''}`, { cause: error });
}

/** The identities to decrypt `object` with; CONFIG_INVALID naming what to pass when there are none. */
export function requireIdentities(object: Pick<ObjectToLoad, 'name'>, identities: AgeIdentity[] | undefined): AgeIdentity[] {
  if (!identities || identities.length === 0) {
    throw new PgkeepError('CONFIG_INVALID', `object ${object.name} is encrypted: pass --identity FILE, or set PGKEEP_AGE_IDENTITY_FILE or PGKEEP_PASSPHRASE`);
  }
  return identities;
}

/**
 * A sink that forwards to a child's stdin with backpressure, and once the child
 * stops reading (it exited, or it only needed the start, like pg_restore --list)
 * discards the rest, so the checksums upstream still see every byte. The
 * child's exit status is judged separately.
 */
export function childStdinSink(stdin: Writable, written?: (chunk: Buffer) => void): Writable {
  let open = true;
  const closed = () => {
    open = false;
  };
  stdin.on('error', closed);
  stdin.on('close', closed);
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, callback) {
      if (!open) return callback();
      const ok = stdin.write(chunk, (error) => {
        if (error) closed();
        // the pipe has taken the bytes: its caller may reuse the buffer
        else written?.(chunk);
      });
      if (ok || !open) return callback();
      const resume = () => {
        stdin.off('drain', resume);
        stdin.off('close', resume);
        callback();
      };
      stdin.on('drain', resume);
      stdin.on('close', resume);
    },
    final(callback) {
      if (open) stdin.end();
      callback();
    },
    destroy(error, callback) {
      // Called after a clean finish too (autoDestroy): then stdin was ended in
      // final() and must be left to flush. Only a failed stream cuts the child
      // off, so it never sees a clean end of incomplete input.
      if (error && open) stdin.destroy();
      callback(error);
    },
  });
}

/**
 * A sink that writes every chunk to each of `targets`, with backpressure from
 * all of them: a write completes once every target has taken the chunk (or
 * drained). It finishes only when every target has finished (for a file: its
 * data is written and it is closed). If one target fails, the tee fails with
 * its error; if the tee is destroyed with an error (a checksum mismatch
 * upstream), every target is destroyed with it, so none sees a clean end.
 */
export function teeSink(...targets: Writable[]): Writable {
  let ended = false;
  const tee: Writable = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, callback) {
      let waiting = 0;
      const drained = () => {
        if (--waiting === 0) callback();
      };
      for (const target of targets) {
        if (!target.write(chunk)) {
          waiting++;
          target.once('drain', drained);
        }
      }
      if (waiting === 0) callback();
    },
    final(callback) {
      ended = true;
      let waiting = targets.length;
      let failed = false;
      if (waiting === 0) return callback();
      for (const target of targets) {
        finished(target, { readable: false }, (error) => {
          if (failed) return;
          if (error) {
            failed = true;
            callback(error);
          } else if (--waiting === 0) callback();
        });
        target.end();
      }
    },
    destroy(error, callback) {
      // After a clean finish (autoDestroy) the targets have finished on their own.
      if (error || !ended) for (const target of targets) target.destroy(error ?? new Error('tee destroyed before its end'));
      callback(error);
    },
  });
  for (const target of targets) target.on('error', (error) => tee.destroy(error));
  return tee;
}

/** A sink that throws the bytes away (for objects that only need checking). */
export function discardSink(): Writable {
  return new Writable({
    highWaterMark: 1 << 20,
    write(_chunk, _encoding, callback) {
      callback();
    },
  });
}
