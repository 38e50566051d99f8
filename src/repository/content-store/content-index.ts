import { nativeDecompressSync, nativeSyncCompressor } from '../../pipeline/zstd.js';
import { PgkeepError } from '../../errors.js';
import { CHUNK_ID_SIZE, type PackEntry } from './pack-file.js';

/** A pack as an index file lists it. */
export interface IndexedPack {
  /** The pack's name: SHA-256 of its stored bytes. */
  pack: string;
  /** Its stored size. */
  size: number;
  /** What its blobs hold: stream data, or chunk lists. */
  kind: 'data' | 'list';
  /** One age file (data packs of an encrypted repository), or the plaintext layout as is. */
  sealed: boolean;
  entries: PackEntry[];
}

const INDEX_VERSION = 1;
/** An index file decompresses to at most this (a session's packs: ~100 bytes per chunk). */
const MAX_INDEX_BYTES = 1 << 30;

/**
 * Which pack holds each chunk, for every index file read. Held in memory,
 * keyed by the id's bytes as a latin1 string (32 characters, the cheapest
 * string key V8 has for binary data). A chunk stored twice (two writers at
 * once) has two entries; the first read wins, either is as good.
 */
export class ContentIndex {
  private readonly chunks = new Map<string, { pack: string; entry: PackEntry }>();
  private readonly packInfo = new Map<string, Omit<IndexedPack, 'pack'>>();
  /** Index file name to the packs it names. */
  private readonly files = new Map<string, string[]>();

  has(id: Buffer): boolean {
    return this.chunks.has(id.toString('latin1'));
  }

  find(id: Buffer): { pack: string; entry: PackEntry } | undefined {
    return this.chunks.get(id.toString('latin1'));
  }

  get chunkCount(): number {
    return this.chunks.size;
  }

  /** Every pack named by an index file: its stored size, kind, whether it is sealed, and its blobs. */
  packEntries(): ReadonlyMap<string, Omit<IndexedPack, 'pack'>> {
    return this.packInfo;
  }

  isSealed(pack: string): boolean {
    return this.packInfo.get(pack)?.sealed ?? false;
  }

  get fileNames(): string[] {
    return [...this.files.keys()];
  }

  /** The packs one index file names. */
  packsOf(file: string): readonly string[] {
    return this.files.get(file) ?? [];
  }

  addPack(pack: IndexedPack): void {
    this.packInfo.set(pack.pack, { size: pack.size, kind: pack.kind, sealed: pack.sealed, entries: pack.entries });
    for (const entry of pack.entries) {
      const key = entry.id.toString('latin1');
      if (!this.chunks.has(key)) this.chunks.set(key, { pack: pack.pack, entry });
    }
  }

  addFile(name: string, packs: IndexedPack[]): void {
    for (const p of packs) this.addPack(p);
    this.markFile(name, packs);
  }

  /** Records that an index file names these packs (already added). */
  markFile(name: string, packs: IndexedPack[]): void {
    this.files.set(name, packs.map((p) => p.pack));
  }
}

/**
 * An index file: zstd-compressed JSON, never encrypted (see ContentSettings.recipients):
 * `{"version":1,"packs":[{"pack":"<sha256>","size":N,"kind":"data"|"list","sealed":bool,"chunks":[["<id hex>",offset,length,rawLength],...]}]}`.
 */
export function encodeIndexFile(packs: IndexedPack[]): Buffer {
  const json = JSON.stringify({
    version: INDEX_VERSION,
    packs: packs.map((p) => ({ pack: p.pack, size: p.size, kind: p.kind, sealed: p.sealed, chunks: p.entries.map((e) => [e.id.toString('hex'), e.offset, e.length, e.rawLength]) })),
  });
  const compressor = nativeSyncCompressor({ threads: 1 });
  if (!compressor) throw new PgkeepError('TOOL_MISSING', 'a deduplicating repository needs zstd-napi (run npm ci)');
  const parts: Buffer[] = [];
  compressor.update(Buffer.from(json), (c) => parts.push(Buffer.from(c)));
  compressor.end((c) => parts.push(Buffer.from(c)));
  return Buffer.concat(parts);
}

export function decodeIndexFile(stored: Buffer, key: string): IndexedPack[] {
  let parsed: { version?: unknown; packs?: unknown };
  try {
    const plain = nativeDecompressSync(stored, MAX_INDEX_BYTES);
    if (!plain) throw new Error('zstd-napi is not installed (run npm ci)');
    parsed = JSON.parse(plain.toString('utf8')) as typeof parsed;
  } catch (error) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `index file ${key} cannot be read: ${(error as Error).message}`, { cause: error });
  }
  if (parsed.version !== INDEX_VERSION || !Array.isArray(parsed.packs)) throw new PgkeepError('REPO_FORMAT', `index file ${key} has version ${String(parsed.version)}; this pgkeep reads version ${INDEX_VERSION}`);
  return (parsed.packs as { pack: string; size: number; kind: string; sealed: boolean; chunks: [string, number, number, number][] }[]).map((p) => ({
    pack: p.pack,
    size: p.size,
    kind: p.kind === 'list' ? ('list' as const) : ('data' as const),
    sealed: p.sealed === true,
    entries: p.chunks.map(([id, offset, length, rawLength]) => {
      const bytes = Buffer.from(id, 'hex');
      if (bytes.length !== CHUNK_ID_SIZE) throw new PgkeepError('CHECKSUM_MISMATCH', `index file ${key} holds a malformed chunk id`);
      return { id: bytes, offset, length, rawLength };
    }),
  }));
}
