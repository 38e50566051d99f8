import { createHash } from 'node:crypto';
import type { Readable } from 'node:stream';
import type { ContentSession, StreamRef } from './content-store.js';

export interface StoreContentOptions {
  signal?: AbortSignal | undefined;
  /** Sees every raw chunk before it is stored (the dump's row counter, which also finds the table boundaries). */
  onRawChunk?: ((chunk: Buffer) => void) | undefined;
  /** Offsets in the stream where a chunk must end, found since the last call (after onRawChunk saw the bytes). */
  boundaries?: (() => number[]) | undefined;
  onRawBytes?: ((total: number) => void) | undefined;
}

export interface StoredContent {
  raw: { size: number; sha256: string };
  ref: StreamRef;
}

/**
 * Stores a stream through a content session: hashed whole (the manifest's raw
 * digest, checked on every read), cut by content and at the given boundaries
 * (each table's data in a dump), each new chunk once. The stream is consumed
 * at the pace of the session's pack writes.
 */
export async function storeContentStream(session: ContentSession, input: Readable | AsyncIterable<Buffer>, options: StoreContentOptions = {}): Promise<StoredContent> {
  const hash = createHash('sha256');
  const stream = session.stream();
  let size = 0;
  for await (const piece of input as AsyncIterable<Buffer>) {
    options.signal?.throwIfAborted();
    hash.update(piece);
    options.onRawChunk?.(piece);
    let from = 0;
    for (const at of options.boundaries?.() ?? []) {
      const cut = at - size;
      if (cut < from || cut > piece.length) continue;
      if (cut > from) await stream.write(piece.subarray(from, cut));
      await stream.cut();
      from = cut;
    }
    if (from < piece.length) await stream.write(from === 0 ? piece : piece.subarray(from));
    size += piece.length;
    options.onRawBytes?.(size);
  }
  return { raw: { size, sha256: hash.digest('hex') }, ref: await stream.end() };
}
