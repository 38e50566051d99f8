import type { Readable } from 'node:stream';
import type { ContentSession, ContentStream, StreamRef } from './content-store.js';

export interface StoreContentOptions {
  signal?: AbortSignal | undefined;
  /** Sees every raw chunk before it is stored (the dump's row counter, which also finds the table boundaries). */
  onRawChunk?: ((chunk: Buffer) => void) | undefined;
  /** Offsets in the stream where a chunk must end, found since the last call (after onRawChunk saw the bytes). */
  boundaries?: (() => number[]) | undefined;
  onRawBytes?: ((total: number) => void) | undefined;
}

export interface StoredContent {
  /** The stream's size; no SHA-256 of it (see RawDigestSchema in manifest.ts): each chunk's id proves its bytes. */
  raw: { size: number };
  ref: StreamRef;
  /** What the stream added to the store: its new chunks, compressed. */
  added: number;
}

/**
 * One stream going into a content session, piece by piece, cut by content and
 * at the offsets the caller names (each table's data in a dump). Not hashed
 * whole: its chunk ids, lists and root form a Merkle tree that proves every
 * byte and its place, checked on every read (a second SHA-256 pass cost ~0.7 s
 * of CPU per GB, docs/benchmarks.md).
 */
export class ContentStreamWriter {
  private opened: { session: ContentSession; stream: ContentStream; startedAt: number } | undefined;
  private size = 0;

  /** `session` may still be opening (its index being read): the first bytes wait for it. */
  constructor(private readonly session: ContentSession | Promise<ContentSession>) {}

  private async open(): Promise<ContentStream> {
    if (!this.opened) {
      const session = await this.session;
      // what the session had added before this stream: the difference at the end is this stream's
      this.opened = { session, stream: session.stream(), startedAt: session.totals.newCompressedBytes };
    }
    return this.opened.stream;
  }

  /** The next bytes; `starts` are offsets in the whole stream where a chunk must end (any not inside this piece are ignored). */
  async write(piece: Buffer, starts: readonly number[] = []): Promise<void> {
    const stream = await this.open();
    let from = 0;
    for (const at of starts) {
      const cut = at - this.size;
      if (cut < from || cut > piece.length) continue;
      if (cut > from) await stream.write(piece.subarray(from, cut));
      await stream.cut();
      from = cut;
    }
    if (from < piece.length) await stream.write(from === 0 ? piece : piece.subarray(from));
    this.size += piece.length;
  }

  async end(): Promise<StoredContent> {
    const stream = await this.open();
    const ref = await stream.end();
    const { session, startedAt } = this.opened!;
    return { raw: { size: this.size }, ref, added: session.totals.newCompressedBytes - startedAt };
  }
}

/** Stores a whole stream through a content session, at the pace of its pack writes. */
export async function storeContentStream(session: ContentSession, input: Readable | AsyncIterable<Buffer>, options: StoreContentOptions = {}): Promise<StoredContent> {
  const writer = new ContentStreamWriter(session);
  let size = 0;
  for await (const piece of input as AsyncIterable<Buffer>) {
    options.signal?.throwIfAborted();
    options.onRawChunk?.(piece);
    await writer.write(piece, options.boundaries?.() ?? []);
    size += piece.length;
    options.onRawBytes?.(size);
  }
  return writer.end();
}
