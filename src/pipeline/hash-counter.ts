import { createHash, type Hash } from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PgkeepError } from '../errors.js';

export interface Digest {
  size: number;
  sha256: string;
}

/**
 * A pass-through that counts bytes and computes SHA-256 of what flows through.
 * With `expect`, it fails the stream at its end (before passing the end on) if
 * the bytes differ from what a manifest recorded, so nothing downstream can
 * treat a corrupt stream as complete.
 */
export class HashCounter extends Transform {
  private readonly hash: Hash = createHash('sha256');
  private bytes = 0;
  private result: Digest | undefined;

  constructor(private readonly expect?: { digest: Digest; what: string }) {
    super({ highWaterMark: 1 << 20 });
  }

  get size(): number {
    return this.bytes;
  }

  /** Available once the stream has ended. */
  get digest(): Digest {
    if (!this.result) throw new Error('HashCounter.digest read before the stream ended');
    return this.result;
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.bytes += chunk.length;
    this.hash.update(chunk);
    if (this.expect && this.bytes > this.expect.digest.size) {
      callback(mismatch(this.expect.what, `more than the ${this.expect.digest.size} bytes recorded`));
      return;
    }
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    this.result = { size: this.bytes, sha256: this.hash.digest('hex') };
    if (this.expect) {
      const { digest, what } = this.expect;
      if (this.result.size !== digest.size) {
        callback(mismatch(what, `${this.result.size} bytes where the manifest records ${digest.size}`));
        return;
      }
      if (this.result.sha256 !== digest.sha256) {
        callback(mismatch(what, `SHA-256 ${this.result.sha256.slice(0, 16)}… where the manifest records ${digest.sha256.slice(0, 16)}…`));
        return;
      }
    }
    callback();
  }
}

/** Throws CHECKSUM_MISMATCH, worded as HashCounter does, unless `bytes` are exactly `digest`. */
export function checkDigest(bytes: Buffer, digest: Digest, what: string): void {
  if (bytes.length !== digest.size) throw mismatch(what, `${bytes.length} bytes where the manifest records ${digest.size}`);
  const sha256 = createHash('sha256').update(bytes).digest('hex');
  if (sha256 !== digest.sha256) throw mismatch(what, `SHA-256 ${sha256.slice(0, 16)}… where the manifest records ${digest.sha256.slice(0, 16)}…`);
}

/** CHECKSUM_MISMATCH: `what` (an object and which of its bytes) is corrupt, and how. */
export function mismatch(what: string, detail: string): PgkeepError {
  return new PgkeepError('CHECKSUM_MISMATCH', `${what} is corrupt: ${detail}`);
}
