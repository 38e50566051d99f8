import { PassThrough, pipeline, Transform, Writable, type Readable, type TransformCallback } from 'node:stream';
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
  /** Sees every raw chunk, in order, before compression (e.g. to count rows); must not keep or change it. */
  onRawChunk?: ((chunk: Buffer) => void) | undefined;
  /** age recipients to encrypt to, after compression; none for an unencrypted repository. */
  encrypt?: AgeRecipient[] | null | undefined;
}

export interface StoredDigests {
  raw: Digest;
  stored: Digest;
}

/**
 * Where stored bytes go: one put per key. A storage driver is one; the
 * pipeline needs nothing else of it (the repository chooses the key).
 */
export interface ByteSink {
  put(key: string, body: Readable, options?: { signal?: AbortSignal }): Promise<unknown>;
}

/** One repository's branch of a tee'd store: where to write, and how to encrypt there. */
export interface StoreTarget {
  storage: ByteSink;
  key: string;
  /** age recipients of this repository; none for an unencrypted one. */
  encrypt?: AgeRecipient[] | null | undefined;
}

export type BranchResult = { ok: true; digests: StoredDigests } | { ok: false; error: unknown };

/**
 * input → SHA-256 (raw) → zstd, once, then teed to one branch per target:
 * [age] → SHA-256 (stored) → completion gate → storage.put. The tee advances
 * at the pace of the slowest branch still healthy. A branch whose write fails
 * is detached (the tee stops writing to it; its put left nothing visible) and
 * the others go on. Resolves with one result per target, in order; rejects
 * only when every branch failed, with the first failure.
 */
export async function storeStreamTee(targets: StoreTarget[], input: Readable, options: StoreOptions): Promise<BranchResult[]> {
  const raw = new HashCounter();
  if (options.onRawBytes || options.onRawChunk) {
    const { onRawBytes, onRawChunk } = options;
    raw.on('data', (chunk: Buffer) => {
      onRawChunk?.(chunk);
      onRawBytes?.(raw.size);
    });
  }
  const complete = options.complete ?? Promise.resolve();
  complete.catch(() => undefined);
  const failures: unknown[] = [];
  const branches = targets.map((target) => startBranch(target, complete, options.signal, failures));
  const tee = branchTee(branches, failures);
  const upstream = new Promise<void>((resolve, reject) => {
    pipeline([input, raw, options.codec.compressor({ level: options.level }), tee], (error) => (error ? reject(error) : resolve()));
  });
  const upstreamError = upstream.then(() => undefined, (error: unknown) => error ?? new Error('pipeline failed'));
  const results = await Promise.all(branches.map((b) => b.result));
  if (results.every((r) => !r.ok)) {
    // Every branch failed: settle the producer, then report the first cause.
    await Promise.allSettled([complete]);
    await upstreamError;
    throw failures[0] ?? (results[0] as { error: unknown }).error;
  }
  const pipelineError = await upstreamError;
  if (pipelineError) throw pipelineError;
  return results.map((r) => (r.ok ? { ok: true, digests: { raw: raw.digest, stored: r.digests.stored } } : r));
}

interface Branch {
  input: PassThrough;
  failed: boolean;
  result: Promise<BranchResult>;
}

function startBranch(target: StoreTarget, complete: Promise<void>, signal: AbortSignal | undefined, failures: unknown[]): Branch {
  const input = new PassThrough({ highWaterMark: 1 << 20 });
  const stored = new HashCounter();
  const gate = completionGate(complete);
  const stages = target.encrypt ? [encryptStream(target.encrypt)] : [];
  const chained = new Promise<void>((resolve, reject) => {
    pipeline([input, ...stages, stored, gate], (error) => (error ? reject(error) : resolve()));
  });
  const chainedError = chained.then(() => undefined, (error: unknown) => error ?? new Error('pipeline failed'));
  const branch: Branch = { input, failed: false, result: undefined as unknown as Promise<BranchResult> };
  const fail = (error: unknown): BranchResult => {
    if (!branch.failed) {
      branch.failed = true;
      failures.push(error);
      input.destroy(error instanceof Error ? error : new Error(String(error)));
    }
    return { ok: false, error };
  };
  branch.result = target.storage.put(target.key, gate, { signal }).then(
    async (): Promise<BranchResult> => {
      const error = await chainedError;
      return error ? fail(error) : { ok: true, digests: { raw: { size: 0, sha256: '' }, stored: stored.digest } };
    },
    (error: unknown) => fail(error),
  );
  return branch;
}

/** Writes every chunk to each healthy branch; a write completes once each has taken it (or was detached). */
function branchTee(branches: Branch[], failures: unknown[]): Writable {
  let ended = false;
  const allFailed = () => branches.every((b) => b.failed);
  const everyBranchFailed = () => (failures[0] instanceof Error ? failures[0] : new Error('every repository failed'));
  return new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, callback) {
      if (allFailed()) return callback(everyBranchFailed());
      const healthy = branches.filter((b) => !b.failed && !b.input.destroyed);
      // Every branch is failing (its input already destroyed, its put about to reject): wait for the verdicts.
      if (healthy.length === 0) return void Promise.all(branches.map((b) => b.result)).then(() => callback(everyBranchFailed()));
      const waits: Promise<void>[] = [];
      for (const branch of healthy) {
        if (!branch.input.write(chunk) && !branch.input.destroyed) {
          waits.push(
            new Promise<void>((resolve) => {
              // drained, or detached (a failed branch's input is destroyed, and closes)
              const done = () => {
                branch.input.off('drain', done);
                branch.input.off('close', done);
                resolve();
              };
              branch.input.on('drain', done);
              branch.input.on('close', done);
            }),
          );
        }
      }
      if (waits.length === 0) return callback();
      void Promise.all(waits).then(() => callback(allFailed() ? everyBranchFailed() : null));
    },
    final(callback) {
      ended = true;
      for (const branch of branches) if (!branch.failed && !branch.input.destroyed) branch.input.end();
      callback(allFailed() ? everyBranchFailed() : null);
    },
    destroy(error, callback) {
      // Upstream failed (zstd, an abort): no branch may see a clean end.
      if (error || !ended) for (const branch of branches) if (!branch.failed) branch.input.destroy(error ?? new Error('tee destroyed before its end'));
      callback(error);
    },
  });
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
