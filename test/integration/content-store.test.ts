import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { generateIdentity } from '../../src/pipeline/age.js';
import { decodeIndexFile, encodeJsonIndexFile } from '../../src/repository/content-store/content-index.js';
import { pruneContent, type ContentPruneOptions } from '../../src/repository/content-store/content-prune.js';
import { ContentStore, type ContentSettings, type StreamRef } from '../../src/repository/content-store/content-store.js';
import { checkContent, type BackupRefs } from '../../src/repository/content-store/content-verify.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream, type Storage } from '../../src/storage/storage.js';
import { eachStorage } from '../support/each-storage.js';

/**
 * Deterministic bytes that compress about 2× (hex text), like dump data.
 * Each (count, label) is made once per file (the same data recurs in each of
 * the four storage and encryption runs: an MD5 per row adds up); every call
 * gets its own copy.
 */
const made = new Map<string, Buffer>();
function rows(count: number, label: string): Buffer {
  const key = `${count}\t${label}`;
  let data = made.get(key);
  if (!data) {
    const lines: string[] = [];
    for (let i = 0; i < count; i++) lines.push(`${i}\t${createHash('md5').update(`${label}${i}`).digest('hex')}\tcustomer ${i % 977}\n`);
    data = Buffer.from(lines.join(''));
    made.set(key, data);
  }
  return Buffer.from(data);
}

const keys = generateIdentity();

/**
 * Three days of a prune test: day 1's "old" rows are referenced by no later day, its "a" rows are; each day
 * shares half its rows with the next.
 */
const threeDays = () => [Buffer.concat([rows(3_000, 'old'), rows(1_000, 'a')]), Buffer.concat([rows(1_000, 'a'), rows(1_000, 'b')]), Buffer.concat([rows(1_000, 'b'), rows(1_000, 'c')])];

function settings(encrypted: boolean, sizes = { min: 1024, average: 4096, max: 16384 }): ContentSettings {
  return {
    sizes,
    seed: Buffer.from('test seed'),
    idKey: encrypted ? Buffer.alloc(32, 7) : undefined,
    recipients: encrypted ? [{ kind: 'x25519', publicKey: keys.publicKey }] : [],
    identities: encrypted ? [{ kind: 'x25519', secretKey: keys.secretKey }] : [],
    packTarget: 256 * 1024,
    level: 3,
  };
}

async function storeStream(store: ContentStore, data: Buffer, piece = 10_000): Promise<{ ref: StreamRef; totals: Awaited<ReturnType<ReturnType<ContentStore['session']>['commit']>> }> {
  const session = store.session();
  const stream = session.stream();
  for (let at = 0; at < data.length; at += piece) await stream.write(data.subarray(at, at + piece));
  const ref = await stream.end();
  return { ref, totals: await session.commit() };
}

async function listKeys(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of storage.list(prefix, { recursive: true })) if (e.kind === 'object') out.push(e.path);
  return out;
}

for (const encrypted of [false, true]) {
  eachStorage(`content store${encrypted ? ', encrypted' : ''}`, (where) => {
    test('a stream comes back byte for byte from a store opened afresh; the second, mostly equal stream stores only what changed', async () => {
      const storage = openStorage(where.repo('dedup'));
      const day1 = Buffer.concat([rows(20_000, 'orders'), rows(5_000, 'customers')]);
      // day 2: 1% more orders, a few customers changed
      const day2 = Buffer.concat([rows(20_200, 'orders'), rows(5_000, 'customers').toString().replace('customer 5\n', 'customer 5 moved\n')].map((b) => Buffer.from(b)));
      const first = await storeStream(await ContentStore.open(storage, settings(encrypted)), day1);
      assert.equal(first.totals.newChunks, first.totals.chunks, 'an empty store: every chunk is new');
      assert.ok(first.ref.depth >= 1, `a list of ${first.ref.chunks} chunks is stored one level down (depth ${first.ref.depth})`);
      const second = await storeStream(await ContentStore.open(storage, settings(encrypted)), day2);
      assert.ok(second.totals.newRawBytes < day2.length * 0.1, `day 2 adds ${second.totals.newRawBytes} of ${day2.length} bytes`);

      const reopened = await ContentStore.open(storage, settings(encrypted));
      assert.ok((await collectStream(reopened.open(first.ref))).equals(day1));
      assert.ok((await collectStream(reopened.open(second.ref))).equals(day2));
      assert.equal(reopened.index.fileNames.length, 2, 'one index file per session');
      if (encrypted) {
        let sealed = 0;
        for (const key of await listKeys(storage, 'content/packs')) {
          const stored = await collectStream(await storage.get(key));
          // data packs are age files; the packs of chunk lists (keyed ids only) stay clear, for prune and verify without the identity
          if (reopened.index.isSealed(key.split('/').at(-1)!)) {
            sealed++;
            assert.ok(stored.subarray(0, 22).toString() === 'age-encryption.org/v1\n', `${key} is an age file`);
          }
          assert.ok(!stored.includes(Buffer.from('customer 1')), 'no plaintext in any pack');
        }
        assert.ok(sealed >= 2, `${sealed} sealed data packs`);
      }
    });

    test('a flipped byte in a pack, or a pack gone, fails the read naming the pack (CHECKSUM_MISMATCH)', async () => {
      const storage = openStorage(where.repo('damage'));
      const data = rows(5_000, 'damage');
      const { ref } = await storeStream(await ContentStore.open(storage, settings(encrypted)), data);
      const [pack] = await listKeys(storage, 'content/packs');
      const bytes = await collectStream(await storage.get(pack!));
      bytes[Math.floor(bytes.length / 3)]! ^= 0x01;
      await storage.put(pack!, Readable.from([bytes]));
      const store = await ContentStore.open(storage, settings(encrypted));
      await assert.rejects(collectStream(store.open(ref)), (e: any) => e.code === 'CHECKSUM_MISMATCH' && e.message.includes(pack!.split('/').at(-1)!.slice(0, 16)));
      await storage.remove(pack!);
      await assert.rejects(collectStream(store.open(ref)), (e: any) => e.code === 'CHECKSUM_MISMATCH' && /missing/.test(e.message));
    });

    test('a read runs ahead of its consumer: several requests at once, never more than the bound, every byte in order', async () => {
      const storage = openStorage(where.repo('ahead'));
      const data = rows(60_000, 'ahead');
      const { ref } = await storeStream(await ContentStore.open(storage, { ...settings(encrypted), packTarget: 64 * 1024 }), data);
      // the same storage, each pack read answered 20 ms late, counting the reads open at once
      let open = 0;
      let most = 0;
      let reads = 0;
      const slow: Storage = Object.create(storage, {
        // as a remote store: the reader fetches several runs ahead (local storage: one)
        capabilities: { value: { ...storage.capabilities, remote: true } },
        get: {
          value: async (key: string, range?: { start: number; end: number }) => {
            if (!key.startsWith('content/packs/')) return storage.get(key, range);
            reads++;
            most = Math.max(most, ++open);
            try {
              await new Promise((resolve) => setTimeout(resolve, 20));
              return await storage.get(key, range);
            } finally {
              open--;
            }
          },
        },
      });
      const store = await ContentStore.open(slow, { ...settings(encrypted), packTarget: 64 * 1024 });
      assert.ok((await collectStream(store.open(ref))).equals(data), 'the stream reads back exactly');
      assert.ok(reads >= 16, `${reads} pack reads: enough to run ahead`);
      assert.ok(most >= 2, `${most} reads at once: the reader runs ahead`);
      // READ_AHEAD_RUNS (content-store.ts): 16 requests ahead from remote storage since runs are 1 MiB
      assert.ok(most <= 16, `${most} reads at once: at most 16`);
    });

    test('a session that never commits leaves packs no index names, and nothing else', async () => {
      const storage = openStorage(where.repo('uncommitted'));
      const store = await ContentStore.open(storage, settings(encrypted));
      const session = store.session();
      const stream = session.stream();
      await stream.write(rows(20_000, 'lost'));
      await stream.end();
      await session.flush();
      assert.ok(session.packNames.length >= 1);
      assert.deepEqual(await listKeys(storage, 'content/index'), []);
      const fresh = await ContentStore.open(storage, settings(encrypted));
      assert.equal(fresh.index.chunkCount, 0, 'another writer does not see the uncommitted chunks');
    });
  });
}

for (const encrypted of [false, true]) {
  eachStorage(`content prune${encrypted ? ', encrypted' : ''}`, (where) => {
    const small = () => ({ ...settings(encrypted), packTarget: 32 * 1024 });
    const prune = (storage: Storage, store: ContentStore, refs: StreamRef[], extra: Partial<ContentPruneOptions> = {}) =>
      pruneContent(storage, store, refs, { graceMs: 0, repackUnused: 0.2, now: new Date(), dryRun: false, ...extra });
    const sizeOf = async (storage: Storage) => {
      let n = 0;
      for await (const e of storage.list('content/packs', { recursive: true })) if (e.kind === 'object') n += e.size;
      return n;
    };

    test('what no kept stream references is swept (deleted or repacked); every kept stream still reads back exactly; dry-run changes nothing', async () => {
      const storage = openStorage(where.repo('sweep'));
      // 3,000 old rows (~150 KB) fill several packs of 32 KiB used by no kept day: the packs' use is the subject, not the size
      const days = threeDays();
      const refs: StreamRef[] = [];
      for (const day of days) refs.push((await storeStream(await ContentStore.open(storage, small()), day, 3_000)).ref);
      const before = await sizeOf(storage);

      const dry = await prune(storage, await ContentStore.open(storage, small()), refs.slice(1), { dryRun: true });
      assert.ok(dry.deletedPacks + dry.repackedPacks > 0, JSON.stringify(dry));
      assert.equal(await sizeOf(storage), before, 'dry-run deletes nothing');

      const done = await prune(storage, await ContentStore.open(storage, small()), refs.slice(1));
      assert.equal(done.deletedPacks, dry.deletedPacks);
      const after = await sizeOf(storage);
      assert.ok(after < before, `${before} -> ${after} bytes`);
      const reopened = await ContentStore.open(storage, small());
      for (const [i, ref] of refs.entries()) {
        if (i === 0) continue;
        assert.ok((await collectStream(reopened.open(ref))).equals(days[i]!), `day ${i + 1} reads back after the sweep`);
      }
      // a second prune with the same refs finds nothing more to do
      const again = await prune(storage, reopened, refs.slice(1));
      assert.equal(again.deletedPacks + again.repackedPacks + again.orphanPacks, 0, JSON.stringify(again));
    });

    test('index files of version 1 (JSON, older pgkeep) are read as they are; prune rewrites those it touches as version 2', async () => {
      const storage = openStorage(where.repo('json-index'));
      const days = threeDays();
      const refs: StreamRef[] = [];
      for (const day of days) refs.push((await storeStream(await ContentStore.open(storage, small()), day, 3_000)).ref);
      // what an older pgkeep wrote: the same packs, each index file as zstd-compressed JSON under its own hash
      for (const key of await listKeys(storage, 'content/index')) {
        const stored = await collectStream(await storage.get(key));
        assert.equal(stored.subarray(0, 8).toString(), 'PGKINDEX', `${key} is written as version 2`);
        const json = encodeJsonIndexFile(decodeIndexFile(stored, key));
        await storage.put(`content/index/${createHash('sha256').update(json).digest('hex')}`, Readable.from([json]));
        await storage.remove(key);
      }
      const version = async () => Promise.all((await listKeys(storage, 'content/index')).map(async (key) => ((await collectStream(await storage.get(key))).subarray(0, 8).toString() === 'PGKINDEX' ? 2 : 1)));
      assert.deepEqual(await version(), [1, 1, 1]);
      const old = await ContentStore.open(storage, small());
      for (const [i, ref] of refs.entries()) assert.ok((await collectStream(old.open(ref))).equals(days[i]!), `day ${i + 1} reads from version 1 index files`);

      const done = await prune(storage, old, refs.slice(1));
      assert.ok(done.deletedPacks + done.repackedPacks > 0, JSON.stringify(done));
      const versions = await version();
      assert.ok(versions.includes(2), `prune wrote its index file as version 2: ${versions.join(', ')}`);
      const reopened = await ContentStore.open(storage, small());
      for (const [i, ref] of refs.entries()) if (i > 0) assert.ok((await collectStream(reopened.open(ref))).equals(days[i]!), `day ${i + 1} reads back after the sweep`);
    });

    test('a prune that died after its new index file, or after its new packs, then another (reading the index files in either order): every kept stream reads back, no pack is left that no index names', async () => {
      for (const dieAt of ['index', 'packs'] as const) {
        for (const order of ['new-last', 'new-first'] as const) {
          const storage = openStorage(where.repo(`died-${dieAt}-${order}`));
          // kept and unused rows side by side in day 1, so packs are partly used: repacked (blocks of ~15 and
          // ~22 KB of rows, ~8 and ~11 KB stored: each pack of 32 KiB holds some of both)
          const kept = [0, 1, 2, 3, 4, 5].map((i) => rows(300, `a${i}`));
          const days = [Buffer.concat(kept.flatMap((a, i) => [a, rows(450, `old${i}`)])), Buffer.concat([...kept, rows(1_000, 'b')])];
          const refs: StreamRef[] = [];
          for (const day of days) refs.push((await storeStream(await ContentStore.open(storage, small()), day, 3_000)).ref);
          const before = new Set(await listKeys(storage, 'content/index'));
          const packsBefore = new Set(await listKeys(storage, 'content/packs'));
          // the first prune dies at its first removal (its new index file written) or when it writes its index file (its packs written)
          const dying: Storage = Object.create(storage, {
            remove: {
              value: async (key: string) => {
                if (dieAt === 'index') throw new Error('killed');
                return storage.remove(key);
              },
            },
            put: {
              value: async (key: string, body: Readable, options?: object) => {
                if (dieAt === 'packs' && key.startsWith('content/index/')) throw new Error('killed');
                return storage.put(key, body, options);
              },
            },
          });
          await assert.rejects(prune(dying, await ContentStore.open(dying, small()), refs.slice(1)), /killed/);
          // it died with the packs of its repack written: what the next prune has to sort out
          assert.ok((await listKeys(storage, 'content/packs')).some((k) => !packsBefore.has(k)), `${dieAt}: the dead prune wrote new packs`);
          const fresh = new Set((await listKeys(storage, 'content/index')).filter((k) => !before.has(k)));
          assert.equal(fresh.size, dieAt === 'index' ? 1 : 0, `${dieAt}: the index file the dead prune wrote`);
          // the next one reads the dead one's index file last, or first (a listing goes by name, and names are hashes)
          const ordered: Storage = Object.create(storage, {
            list: {
              value: async function* (prefix: string, options?: { recursive?: boolean }) {
                const all = [];
                for await (const e of storage.list(prefix, options)) all.push(e);
                const isNew = (e: { path: string }) => fresh.has(e.path);
                yield* order === 'new-last' ? [...all.filter((e) => !isNew(e)), ...all.filter(isNew)] : [...all.filter(isNew), ...all.filter((e) => !isNew(e))];
              },
            },
          });
          await prune(ordered, await ContentStore.open(ordered, small()), refs.slice(1));
          const reopened = await ContentStore.open(storage, small());
          assert.ok((await collectStream(reopened.open(refs[1]!))).equals(days[1]!), `${dieAt}, ${order}: the kept stream reads back`);
          const named = new Set(reopened.index.fileNames.flatMap((f) => reopened.index.packsOf(f)));
          const unnamed = (await listKeys(storage, 'content/packs')).filter((k) => !named.has(k.split('/').at(-1)!));
          assert.deepEqual(unnamed, [], `${dieAt}, ${order}: no pack that no index names`);
        }
      }
    });

    test('the grace: a first prune only marks, one after the grace sweeps; a pack used again is unmarked', async () => {
      const storage = openStorage(where.repo('grace'));
      const old = (await storeStream(await ContentStore.open(storage, small()), rows(3_000, 'old'), 3_000)).ref;
      const kept = (await storeStream(await ContentStore.open(storage, small()), rows(1_500, 'kept'), 3_000)).ref;
      const hour = 3_600_000;
      const t0 = new Date();
      const first = await prune(storage, await ContentStore.open(storage, small()), [kept], { graceMs: hour, now: t0 });
      assert.equal(first.deletedPacks + first.repackedPacks, 0);
      assert.ok(first.markedPacks > 0 && first.markedBytes > 0, JSON.stringify(first));
      assert.ok((await collectStream((await ContentStore.open(storage, small())).open(old))).length > 0, 'within the grace the old stream still reads');
      // past the grace, but the old stream is referenced again (say, pinned back): nothing goes, the marks are cleared
      const reused = await prune(storage, await ContentStore.open(storage, small()), [kept, old], { graceMs: hour, now: new Date(t0.getTime() + 2 * hour) });
      assert.equal(reused.deletedPacks + reused.repackedPacks + reused.markedPacks, 0, JSON.stringify(reused));
      // unused again: marked afresh, so not yet swept
      const remarked = await prune(storage, await ContentStore.open(storage, small()), [kept], { graceMs: hour, now: new Date(t0.getTime() + 2 * hour) });
      assert.equal(remarked.deletedPacks, 0);
      assert.ok(remarked.markedPacks > 0);
      const second = await prune(storage, await ContentStore.open(storage, small()), [kept], { graceMs: hour, now: new Date(t0.getTime() + 4 * hour) });
      assert.ok(second.deletedPacks > 0, JSON.stringify(second));
      assert.ok((await collectStream((await ContentStore.open(storage, small())).open(kept))).equals(rows(1_500, 'kept')));
    });

    test('a kept stream whose chunks no index file names (a lost index file) stops the sweep before anything is deleted', async () => {
      const storage = openStorage(where.repo('lost-index'));
      const first = (await storeStream(await ContentStore.open(storage, small()), rows(2_000, 'first'), 3_000)).ref;
      const firstIndex = await listKeys(storage, 'content/index');
      const second = (await storeStream(await ContentStore.open(storage, small()), rows(2_000, 'second'), 3_000)).ref;
      const packs = await listKeys(storage, 'content/packs');
      await storage.remove(firstIndex[0]!);
      // without the check the first stream's packs were orphans (no index names them) past the grace, and deleted
      await assert.rejects(
        prune(storage, await ContentStore.open(storage, small()), [first, second], { now: new Date(Date.now() + 7_200_000), graceMs: 3_600_000 }),
        (e: any) => e.code === 'CHECKSUM_MISMATCH' && /in no pack the index knows/.test(e.message),
      );
      assert.deepEqual(await listKeys(storage, 'content/packs'), packs, 'no pack deleted');
    });

    test('packs of a writer that died before its commit are removed once older than the grace', async () => {
      const storage = openStorage(where.repo('orphans'));
      const kept = (await storeStream(await ContentStore.open(storage, small()), rows(2_000, 'kept'), 3_000)).ref;
      const session = (await ContentStore.open(storage, small())).session();
      const stream = session.stream();
      await stream.write(rows(4_000, 'dead'));
      await stream.end();
      await session.flush();
      const young = await prune(storage, await ContentStore.open(storage, small()), [kept], { graceMs: 3_600_000 });
      assert.equal(young.orphanPacks, 0, 'a young unindexed pack may be a running writer\'s');
      const old = await prune(storage, await ContentStore.open(storage, small()), [kept], { now: new Date(Date.now() + 7_200_000), graceMs: 3_600_000 });
      assert.equal(old.orphanPacks, session.packNames.length);
      assert.ok((await collectStream((await ContentStore.open(storage, small())).open(kept))).equals(rows(2_000, 'kept')));
    });

    if (encrypted) {
      test('without the identity, an encrypted pack worth repacking waits (fully unused ones are still deleted)', async () => {
        const storage = openStorage(where.repo('nokey'));
        const day1 = rows(6_000, 'x');
        const r1 = (await storeStream(await ContentStore.open(storage, small()), day1, 3_000)).ref;
        const r2 = (await storeStream(await ContentStore.open(storage, small()), Buffer.concat([day1.subarray(0, 100_000), rows(1_000, 'y')]), 3_000)).ref;
        const noKey = { ...small(), identities: [] };
        const result = await prune(storage, await ContentStore.open(storage, noKey), [r2]);
        assert.ok(result.repackSkippedForKey + result.deletedPacks > 0, JSON.stringify(result));
        assert.ok((await collectStream((await ContentStore.open(storage, small())).open(r2))).length > 0);
        void r1;
      });
    }
  });
}

for (const encrypted of [false, true]) {
  eachStorage(`content check${encrypted ? ', encrypted' : ''}`, (where) => {
    const small = () => ({ ...settings(encrypted), packTarget: 32 * 1024 });
    test('a flipped byte and a truncated pack are found, each naming every backup with a chunk in it; subsets cover every pack', async () => {
      const storage = openStorage(where.repo('check'));
      const shared = rows(3_000, 'shared');
      const backups: BackupRefs[] = [];
      for (const [i, own] of ['one', 'two', 'three'].entries()) {
        const { ref } = await storeStream(await ContentStore.open(storage, small()), Buffer.concat([shared, rows(2_000, own)]), 3_000);
        backups.push({ source: 'app', id: `b${i + 1}`, refs: [ref] });
      }
      const store = await ContentStore.open(storage, small());
      const clean = await checkContent(storage, store, backups);
      assert.deepEqual([clean.damaged, clean.missing], [[], []]);
      assert.equal(clean.packsChecked, clean.packsTotal);

      // the subset slots together read every pack exactly once
      let covered = 0;
      for (let slot = 0; slot < 4; slot++) covered += (await checkContent(storage, store, backups, { subset: { fraction: 0.25, slot } })).packsChecked;
      assert.equal(covered, clean.packsTotal);

      // damage the data pack holding the shared rows' first chunk (all three backups need it), and cut another short
      const firstShared = (await store.chunkIds(backups[0]!.refs[0]!).next()).value as Buffer;
      const sharedPack = store.index.find(firstShared)!.pack;
      const ownPack = store.index.find((await lastId(store, backups[2]!.refs[0]!)))!.pack;
      assert.notEqual(sharedPack, ownPack);
      const flip = await collectStream(await storage.get(ContentStore.packKey(sharedPack)));
      flip[flip.length >> 1]! ^= 0x10;
      await storage.put(ContentStore.packKey(sharedPack), Readable.from([flip]));
      const cut = await collectStream(await storage.get(ContentStore.packKey(ownPack)));
      await storage.put(ContentStore.packKey(ownPack), Readable.from([cut.subarray(0, cut.length - 100)]));

      const found = await checkContent(storage, await ContentStore.open(storage, small()), backups);
      const byPack = new Map(found.damaged.map((d) => [d.pack, d]));
      assert.deepEqual(byPack.get(sharedPack)?.backups, ['app/b1', 'app/b2', 'app/b3'], JSON.stringify(found.damaged));
      assert.ok(byPack.get(ownPack)?.backups.includes('app/b3'), JSON.stringify(found.damaged));
      assert.ok(!byPack.get(ownPack)?.backups.includes('app/b1'));
    });
  });
}

async function lastId(store: ContentStore, ref: StreamRef): Promise<Buffer> {
  let last: Buffer | undefined;
  for await (const id of store.chunkIds(ref)) last = Buffer.from(id);
  return last!;
}

test('docs/read-content-stream.py reads a stream of an unencrypted store without pgkeep, byte for byte', async () => {
  const { mkdtemp, rm } = await import('node:fs/promises');
  const { tmpdir } = await import('node:os');
  const { spawnSync } = await import('node:child_process');
  const folder = await mkdtemp(`${tmpdir()}/pgkeep-read-doc-`);
  try {
    const storage = openStorage(folder);
    const data = rows(12_000, 'doc');
    const { ref } = await storeStream(await ContentStore.open(storage, settings(false)), data);
    assert.ok(ref.depth >= 1, 'the list is nested at least once');
    const script = new URL('../../docs/read-content-stream.py', import.meta.url).pathname;
    const run = spawnSync('python3', [script, folder, JSON.stringify(ref)], { maxBuffer: 64 << 20 });
    assert.equal(run.status, 0, run.stderr.toString());
    assert.ok(run.stdout.equals(data));
  } finally {
    await rm(folder, { recursive: true, force: true });
  }
});
