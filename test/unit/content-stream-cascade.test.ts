import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { ContentDefinedChunker } from '../../src/pipeline/content-defined-chunker.js';
import { ContentStore, ROOT_IDS, type BlobKind, type ContentSession, type ContentSettings, type StreamRef } from '../../src/repository/content-store/content-store.js';
import { CHUNK_ID_SIZE } from '../../src/repository/content-store/pack-file.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream } from '../../src/storage/storage.js';

/**
 * The stream writer before the cascade, kept here only: every id held to the
 * end, then the whole list written to a list stream, and its list, while
 * longer than rootIds. The cascade must store what this stored, byte for
 * byte, or new backups would not deduplicate against old lists.
 */
class WholeListStream {
  private readonly chunker: ContentDefinedChunker;
  private ids = Buffer.allocUnsafe(CHUNK_ID_SIZE * 16);
  private count = 0;
  private size = 0;

  constructor(
    private readonly session: ContentSession,
    private readonly settings: ContentSettings,
    private readonly kind: BlobKind,
    private readonly rootIds: number,
  ) {
    this.chunker = new ContentDefinedChunker(settings.sizes, settings.seed);
  }

  async write(data: Buffer): Promise<void> {
    this.size += data.length;
    for (const pieces of this.chunker.writePieces(data)) this.push(await this.session.put(pieces, this.kind));
  }

  async cut(): Promise<void> {
    const pieces = this.chunker.cutPieces();
    if (pieces) this.push(await this.session.put(pieces, this.kind));
  }

  async end(): Promise<StreamRef> {
    await this.cut();
    let ids = this.list();
    let depth = 0;
    while (ids.length > this.rootIds * CHUNK_ID_SIZE) {
      const list = new WholeListStream(this.session, this.settings, 'list', this.rootIds);
      await list.write(ids);
      await list.cut();
      ids = list.list();
      depth++;
    }
    const root: string[] = [];
    for (let at = 0; at < ids.length; at += CHUNK_ID_SIZE) root.push(ids.toString('hex', at, at + CHUNK_ID_SIZE));
    return { size: this.size, chunks: this.count, depth, root };
  }

  private push(id: Buffer): void {
    if ((this.count + 1) * CHUNK_ID_SIZE > this.ids.length) {
      const more = Buffer.allocUnsafe(this.ids.length * 2);
      this.ids.copy(more, 0, 0, this.count * CHUNK_ID_SIZE);
      this.ids = more;
    }
    id.copy(this.ids, this.count * CHUNK_ID_SIZE);
    this.count++;
  }

  private list(): Buffer {
    return this.ids.subarray(0, this.count * CHUNK_ID_SIZE);
  }
}

const settings: ContentSettings = {
  // small chunks (lists of ~8 ids a chunk): deep lists from little data
  sizes: { min: 64, average: 256, max: 1024 },
  seed: Buffer.from('cascade seed'),
  idKey: undefined,
  recipients: [],
  identities: [],
  packTarget: 64 * 1024,
  level: 1,
};

/** Deterministic incompressible bytes. */
function bytes(length: number, label: string): Buffer {
  const out = Buffer.alloc(length);
  for (let block = 0, at = 0; at < length; block++, at += 32) createHash('sha256').update(`${label} ${block}`).digest().copy(out, at);
  return out;
}

/** How a stream is fed: CDC over writes of `piece` bytes, or exactly `cuts` chunks (a write of `cutEvery` bytes and a cut, each). */
type Feed = { data: Buffer; piece: number } | { data: Buffer; cutEvery: number };

async function feed(stream: { write(b: Buffer): Promise<void>; cut(): Promise<void> }, how: Feed): Promise<void> {
  const step = 'piece' in how ? how.piece : how.cutEvery;
  for (let at = 0; at < how.data.length; at += step) {
    await stream.write(how.data.subarray(at, at + step));
    if ('cutEvery' in how) await stream.cut();
  }
}

const folder = mkdtempSync(join(tmpdir(), 'pgkeep-cascade-'));
after(() => rmSync(folder, { recursive: true, force: true }));
let repos = 0;

/** Stores a stream in a fresh store, one way or the other: its ref, and every chunk stored (id and kind, sorted). */
async function store(how: Feed, rootIds: number, way: 'cascade' | 'whole'): Promise<{ ref: StreamRef; chunks: string[]; store: ContentStore }> {
  const content = await ContentStore.open(openStorage(join(folder, `r${repos++}`)), settings);
  const session = content.session();
  const stream = way === 'cascade' ? session.stream({ rootIds }) : new WholeListStream(session, settings, 'data', rootIds);
  await feed(stream, how);
  const ref = await stream.end();
  await session.commit();
  const chunks: string[] = [];
  for (const [, pack] of content.index.packEntries()) for (const e of pack.entries) chunks.push(`${pack.kind} ${e.id.toString('hex')} ${e.rawLength}`);
  return { ref, chunks: chunks.sort(), store: content };
}

describe('ContentStream: the chunk list as a cascade', () => {
  // [rootIds, chunks]: around each boundary of depth 0, 1 and 2 (exact counts, one cut per chunk)
  const exact: [number, number][] = [
    [ROOT_IDS, 0],
    [ROOT_IDS, 1],
    [ROOT_IDS, ROOT_IDS - 1],
    [ROOT_IDS, ROOT_IDS],
    [ROOT_IDS, ROOT_IDS + 1],
    [ROOT_IDS, 2 * ROOT_IDS],
    [ROOT_IDS, 2 * ROOT_IDS + 1],
    [ROOT_IDS, 1500],
    [4, 4],
    [4, 5],
    [4, 8],
    [4, 9],
    [4, 33],
    [4, 200],
    [3, 1000],
  ];
  for (const [rootIds, chunks] of exact) {
    test(`${chunks} chunks, rootIds ${rootIds}: the same ref and the same stored chunks as the whole list written at the end`, async () => {
      const how: Feed = { data: bytes(chunks * 40, `exact ${chunks}`), cutEvery: 40 };
      const whole = await store(how, rootIds, 'whole');
      const cascade = await store(how, rootIds, 'cascade');
      assert.equal(cascade.ref.chunks, chunks);
      assert.deepEqual(cascade.ref, whole.ref);
      assert.deepEqual(cascade.chunks, whole.chunks);
      assert.ok((await collectStream(cascade.store.open(cascade.ref))).equals(how.data));
    });
  }

  test('random streams cut by content (depth 0, 1, 2 and 3 with ROOT_IDS; deeper with a small rootIds): the same refs and chunks both ways, and each reads back', async () => {
    const depths = new Set<number>();
    for (const [length, rootIds, piece] of [
      [3_000, ROOT_IDS, 1000],
      [17_000, ROOT_IDS, 4096],
      [40_000, ROOT_IDS, 333],
      [200_000, ROOT_IDS, 65_536],
      [1_200_000, ROOT_IDS, 65_536],
      [60_000, 4, 10_000],
      [150_000, 2, 7_777],
    ] as const) {
      const how: Feed = { data: bytes(length, `random ${length}`), piece };
      const whole = await store(how, rootIds, 'whole');
      const cascade = await store(how, rootIds, 'cascade');
      assert.deepEqual(cascade.ref, whole.ref, `${length} bytes, rootIds ${rootIds}`);
      assert.deepEqual(cascade.chunks, whole.chunks, `${length} bytes, rootIds ${rootIds}`);
      assert.ok((await collectStream(cascade.store.open(cascade.ref))).equals(how.data));
      let ids = 0;
      for await (const _ of cascade.store.chunkIds(cascade.ref)) ids++;
      assert.equal(ids, cascade.ref.chunks);
      depths.add(cascade.ref.depth);
    }
    for (const depth of [0, 1, 2, 3]) assert.ok(depths.has(depth), `a stream of depth ${depth} among ${[...depths].join(', ')}`);
  });
});

test('a deep list is read level by level with a small read-ahead per level, from remote storage too: never a whole level at once', async () => {
  const small = { ...settings, packTarget: 4 * 1024 };
  const storage = openStorage(join(folder, 'remote'));
  const content = await ContentStore.open(storage, small);
  const session = content.session();
  const stream = session.stream();
  const data = bytes(1_200_000, 'remote');
  for (let at = 0; at < data.length; at += 65_536) await stream.write(data.subarray(at, at + 65_536));
  const ref = await stream.end();
  await session.commit();
  assert.ok(ref.depth >= 2, `depth ${ref.depth}`);
  // as a remote store (the data level runs up to 16 requests ahead), each read 5 ms late; list pack reads counted
  let open = 0;
  let most = 0;
  let lists = 0;
  const kinds = await ContentStore.open(storage, small);
  const slow = Object.create(storage, {
    capabilities: { value: { ...storage.capabilities, remote: true } },
    get: {
      value: async (key: string, range?: { start: number; end: number }) => {
        const list = key.startsWith('content/packs/') && kinds.index.kindOf(key.split('/').at(-1)!) === 'list';
        if (!list) return storage.get(key, range);
        lists++;
        most = Math.max(most, ++open);
        try {
          await new Promise((resolve) => setTimeout(resolve, 5));
          return await storage.get(key, range);
        } finally {
          open--;
        }
      },
    },
  });
  const reader = await ContentStore.open(slow, small);
  assert.ok((await collectStream(reader.open(ref))).equals(data));
  assert.ok(lists > 4 * ref.depth, `${lists} list pack reads`);
  // two runs ahead per level of the list (the data level below them has its own)
  assert.ok(most <= 2 * ref.depth, `${most} list pack reads at once, ${ref.depth} levels`);
});
