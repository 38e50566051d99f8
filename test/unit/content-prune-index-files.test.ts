import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Readable } from 'node:stream';
import { after, test } from 'node:test';
import { binaryIndexFile } from '../../src/repository/content-store/content-index.js';
import { pruneContent } from '../../src/repository/content-store/content-prune.js';
import { ContentStore, type ContentSettings, type StreamRef } from '../../src/repository/content-store/content-store.js';
import { checkContent } from '../../src/repository/content-store/content-verify.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream, type Storage } from '../../src/storage/storage.js';

const settings: ContentSettings = {
  sizes: { min: 64, average: 256, max: 1024 },
  seed: Buffer.from('prune seed'),
  idKey: undefined,
  recipients: [],
  identities: [],
  // ~16 chunks a pack: many packs, whole ones kept, whole ones unused, some half used
  packTarget: 4 * 1024,
  level: 1,
};
const PER_FILE = 50;

function bytes(length: number, label: string): Buffer {
  const out = Buffer.alloc(length);
  for (let block = 0, at = 0; at < length; block++, at += 32) createHash('sha256').update(`${label} ${block}`).digest().copy(out, at);
  return out;
}

const folder = mkdtempSync(join(tmpdir(), 'pgkeep-prune-files-'));
after(() => rmSync(folder, { recursive: true, force: true }));

async function listKeys(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of storage.list(prefix, { recursive: true })) if (e.kind === 'object') out.push(e.path);
  return out.sort();
}

/** Two days in a fresh store: day 1 kept blocks between unused ones, day 2 the kept blocks and new data. */
async function twoDays(name: string): Promise<{ storage: Storage; days: Buffer[]; refs: StreamRef[] }> {
  const storage = openStorage(join(folder, name));
  const kept = [0, 1, 2, 3].map((i) => bytes(12_000, `kept ${i}`));
  const days = [Buffer.concat(kept.flatMap((k, i) => [k, bytes(6_000, `old ${i}`)])), Buffer.concat([...kept, bytes(8_000, 'new')])];
  const refs: StreamRef[] = [];
  for (const day of days) {
    const store = await ContentStore.open(storage, settings);
    const session = store.session();
    const stream = session.stream();
    for (let at = 0; at < day.length; at += 5_000) await stream.write(day.subarray(at, at + 5_000));
    refs.push(await stream.end());
    await session.commit();
  }
  return { storage, days, refs };
}

const prune = (storage: Storage, store: ContentStore, refs: StreamRef[]) => pruneContent(storage, store, refs, { graceMs: 0, repackUnused: 0.2, now: new Date(), dryRun: false, indexFileEntries: PER_FILE });

/** After a prune: the kept stream reads back, verify finds nothing wrong, every pack is named by an index file. */
async function whole(storage: Storage, day: Buffer, ref: StreamRef, why: string): Promise<ContentStore> {
  const store = await ContentStore.open(storage, settings);
  assert.ok((await collectStream(store.open(ref))).equals(day), `${why}: the kept stream reads back`);
  const check = await checkContent(storage, store, [{ source: 's', id: 'day2', refs: [ref] }]);
  assert.deepEqual([check.damaged, check.missing], [[], []], `${why}: verify`);
  const named = new Set(store.index.fileNames.flatMap((f) => store.index.packsOf(f)));
  return Object.assign(store, { unnamed: (await listKeys(storage, 'content/packs')).filter((k) => !named.has(k.split('/').at(-1)!)) });
}

test('prune writes its new index files as they fill, each of at most its cap of entries; what is kept reads back and verifies', async () => {
  const { storage, days, refs } = await twoDays('several');
  const before = new Set(await listKeys(storage, 'content/index'));
  const result = await prune(storage, await ContentStore.open(storage, settings), refs.slice(1));
  assert.ok(result.deletedPacks > 0 && result.repackedPacks > 0, JSON.stringify(result));
  const written = (await listKeys(storage, 'content/index')).filter((k) => !before.has(k));
  assert.ok(written.length >= 3, `${written.length} new index files`);
  for (const key of written) {
    const file = binaryIndexFile(await collectStream(await storage.get(key)), key)!;
    assert.ok(file.entryCount <= PER_FILE && file.entryCount > 0, `${key}: ${file.entryCount} entries`);
  }
  const store = (await whole(storage, days[1]!, refs[1]!, 'pruned')) as ContentStore & { unnamed: string[] };
  assert.deepEqual(store.unnamed, []);
  // nothing more to do, and nothing lost: a second prune deletes and repacks nothing
  const again = await prune(storage, store, refs.slice(1));
  assert.deepEqual([again.deletedPacks, again.repackedPacks], [0, 0]);
});

test('a prune that dies between its index files leaves a repository that verifies; the next prune completes it', async () => {
  const { storage, days, refs } = await twoDays('killed');
  let puts = 0;
  const dying: Storage = Object.create(storage, {
    put: {
      value: async (key: string, body: Readable, options?: object) => {
        if (key.startsWith('content/index/') && ++puts === 2) throw new Error('killed');
        return storage.put(key, body, options);
      },
    },
  });
  await assert.rejects(prune(dying, await ContentStore.open(dying, settings), refs.slice(1)), /killed/);
  await whole(storage, days[1]!, refs[1]!, 'killed between its index files');
  await prune(storage, await ContentStore.open(storage, settings), refs.slice(1));
  const store = (await whole(storage, days[1]!, refs[1]!, 'the next prune')) as ContentStore & { unnamed: string[] };
  assert.deepEqual(store.unnamed, [], 'no pack that no index names');
});

test('verify finds the backups a damaged pack affects a group of damaged packs at a time: the same answer with one pack per group', async () => {
  const { storage, refs } = await twoDays('damaged');
  const store = await ContentStore.open(storage, settings);
  // a flipped byte in every third data pack
  const packs = [...store.index.packs()].filter((p) => p.kind === 'data');
  for (const { pack } of packs.filter((_, i) => i % 3 === 0)) {
    const key = ContentStore.packKey(pack);
    const bytes = await collectStream(await storage.get(key));
    bytes[10] = bytes[10]! ^ 0xff;
    await storage.put(key, Readable.from([bytes]));
  }
  const backups = refs.map((ref, i) => ({ source: 's', id: `day${i + 1}`, refs: [ref] }));
  const whole = await checkContent(storage, store, backups);
  assert.ok(whole.damaged.length >= 3, `${whole.damaged.length} damaged packs`);
  assert.ok(whole.damaged.every((d) => d.backups.length > 0), 'each damaged pack names a backup');
  assert.deepEqual(await checkContent(storage, store, backups, { damagedEntries: 1 }), whole);
});
