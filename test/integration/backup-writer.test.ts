// The backup writer (src/repository/backup-writer.ts) over each storage
// driver: the manifest is the last thing written, abort leaves nothing, an id
// taken picks the next free one, leftovers of a killed writer are removed,
// encrypted repositories get age objects with one encryption record.
import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { test } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { generateIdentity } from '../../src/pipeline/age.js';
import { beginBackups, storeObjects } from '../../src/repository/backup-writer.js';
import type { ManifestBody } from '../../src/repository/manifest-builder.js';
import { Repository } from '../../src/repository/repository.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream, type Storage } from '../../src/storage/storage.js';
import { eachStorage } from '../support/each-storage.js';

const STARTED = new Date('2026-12-05T10:00:00Z');

const BODY: ManifestBody<'logical'> = {
  server: { version: '15.10', versionNum: 150010, systemIdentifier: null, host: 'localhost', port: 5432 },
  tools: { pgDump: '15.10' },
  database: { name: 'app', encoding: 'UTF8', collate: 'C', ctype: 'C', sizeBytes: 1000 },
  options: { format: 'custom', schemaOnly: false, dataOnly: false, tables: [], excludeTables: [], schemas: [], excludeSchemas: [], noOwner: false, noAcl: false, jobs: 1, compressLevel: 3 },
  snapshot: null,
  tables: [
    { schema: 'public', name: 'a', rows: 3 },
    { schema: 'public', name: 'b', rows: 4 },
  ],
};

/** The storage, with every completed write recorded in order (keys). */
function recorded(storage: Storage): { storage: Storage; writes: string[] } {
  const writes: string[] = [];
  const wrapped = new Proxy(storage, {
    get(target, property, receiver) {
      const value = Reflect.get(target, property, receiver) as unknown;
      if (property === 'put' || property === 'putIfAbsent') {
        return async (key: string, ...rest: unknown[]) => {
          const result = await (value as (...a: unknown[]) => Promise<unknown>).call(target, key, ...rest);
          writes.push(key);
          return result;
        };
      }
      return typeof value === 'function' ? (value as (...a: unknown[]) => unknown).bind(target) : value;
    },
  });
  return { storage: wrapped, writes };
}

async function keysUnder(storage: Storage, prefix: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of storage.list(prefix, { recursive: true })) if (e.kind === 'object') out.push(e.path);
  return out.sort();
}

const text = (s: string) => Readable.from([Buffer.from(s)]);

eachStorage('backup writer', (where) => {
  test('commit writes the manifest last, with the objects, their totals and the body; the lock is released', async () => {
    const { storage, writes } = recorded(openStorage(where.repo('commit')));
    const repo = await Repository.init(storage); // plain: its objects are named and counted below
    const writer = await repo.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED, name: 'nightly', labels: ['x'] });
    assert.match(writer.id, /^20261205T100000Z-nightly$/);
    assert.ok(await repo.inspectSourceLock('app'), 'the writer holds the source lock');
    const dump = await writer.store({ name: 'dump', role: 'dump' }, text('dump bytes '.repeat(1000)), { level: 3 });
    await writer.store({ name: 'state.json', role: 'database-state' }, text('{}'), { level: 3 });
    assert.equal(dump.name, 'dump.zst');
    assert.deepEqual((await repo.listBackupFolders('app')).map((f) => f.complete), [false], 'no manifest before commit: not a backup yet');
    assert.deepEqual(await repo.listBackups('app'), []);

    const manifest = await writer.commit(BODY, new Date(STARTED.getTime() + 5000));
    const folder = repo.backupFolder('app', writer.id);
    const inFolder = writes.filter((k) => k.startsWith(`${folder}/`));
    assert.deepEqual(inFolder.map((k) => k.slice(folder.length + 1)), ['dump.zst', 'state.json.zst', 'manifest.json'], 'objects first, the manifest last');
    assert.equal(await repo.inspectSourceLock('app'), undefined, 'the lock is released after commit');

    const read = await repo.readManifest('app', writer.id);
    const { integrity, ...readBody } = read;
    assert.deepEqual(readBody, manifest, 'what commit returned is what was written');
    assert.match(integrity?.sha256 ?? '', /^[0-9a-f]{64}$/, 'with its checksum');
    assert.equal(read.kind, 'logical');
    assert.equal(read.name, 'nightly');
    assert.deepEqual(read.labels, ['x']);
    assert.equal(read.durationMs, 5000);
    assert.deepEqual(read.objects.map((o) => [o.name, o.role, o.encryption]), [['dump.zst', 'dump', null], ['state.json.zst', 'database-state', null]]);
    assert.equal(read.totals.rawBytes, 'dump bytes '.repeat(1000).length + 2);
    assert.equal(read.totals.storedBytes, read.objects.reduce((n, o) => n + o.stored.size, 0));
    assert.equal(read.kind === 'logical' && read.totals.rows, 7);
    assert.deepEqual(await repo.missingObjects(read), []);
    await writer.abort(); // a no-op once committed
    assert.ok(await repo.hasManifest('app', writer.id), 'abort after commit removes nothing');
    await assert.rejects(writer.store({ name: 'late', role: 'dump' }, text('x'), { level: 3 }), (e: unknown) => e instanceof PgkeepError && e.code === 'INTERNAL');
  });

  test('abort removes everything the writer stored and releases the lock; a failing commit aborts too', async () => {
    const storage = openStorage(where.repo('abort'));
    const repo = await Repository.init(storage); // plain: its objects are counted below
    const writer = await repo.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED });
    await writer.store({ name: 'dump', role: 'dump' }, text('a'.repeat(10_000)), { level: 3 });
    await writer.store({ name: 'dump.d/1.dat', role: 'dump-file', file: '1.dat' }, text('b'), { level: 3 });
    assert.equal((await keysUnder(storage, 'sources/app/backups')).length, 2);
    await writer.abort();
    assert.deepEqual(await keysUnder(storage, 'sources/app/backups'), []);
    assert.equal(await repo.inspectSourceLock('app'), undefined);

    // a body the schema refuses: nothing is published, the folder is removed
    const bad = await repo.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED });
    await bad.store({ name: 'dump', role: 'dump' }, text('c'), { level: 3 });
    await assert.rejects(bad.commit({ ...BODY, tables: [{ schema: 'public', name: 'a', rows: -1 }] }), (e: unknown) => e instanceof PgkeepError && e.code === 'INTERNAL' && /tables\.0\.rows/.test(e.message));
    assert.deepEqual(await keysUnder(storage, 'sources/app/backups'), []);
    assert.equal(await repo.inspectSourceLock('app'), undefined);
  });

  test('an id taken picks the next free one; a given id already complete is BACKUP_EXISTS; a killed writer\'s folder is removed as a leftover', async () => {
    const storage = openStorage(where.repo('ids'));
    const repo = await Repository.open(storage, { createIfEmpty: true });
    const first = await repo.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED });
    await first.store({ name: 'dump', role: 'dump' }, text('1'), { level: 3 });
    await first.commit(BODY);
    const second = await repo.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED });
    assert.equal(first.id, '20261205T100000Z');
    assert.equal(second.id, '20261205T100001Z', 'the same start second: the next free id');
    await second.abort();

    await assert.rejects(
      repo.beginBackup('app', 'logical', { command: 'copy', database: 'app', id: first.id }),
      (e: unknown) => e instanceof PgkeepError && e.code === 'BACKUP_EXISTS',
    );
    assert.equal(await repo.inspectSourceLock('app'), undefined, 'the refused writer released its lock');

    // What a writer killed before its manifest leaves: objects in a folder without a manifest (and a dead lock).
    await repo.writeStoredObject('app', '20261205T090000Z', 'dump.zst', text('half'));
    const notes: string[] = [];
    const third = await repo.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED, info: (m) => notes.push(m) });
    assert.deepEqual(notes, [`removed 1 interrupted backup(s) in ${repo.location}: 20261205T090000Z`]);
    assert.equal(third.id, '20261205T100001Z');
    await third.abort();
    assert.deepEqual((await repo.listBackupFolders('app')).map((f) => f.id), [first.id]);
  });

  test('several repositories: one id free in all, one input teed to each; a repository whose lock is held is left out', async () => {
    const [a, b, c] = await Promise.all(['multi-a', 'multi-b', 'multi-c'].map((name) => Repository.open(openStorage(where.repo(name)), { createIfEmpty: true })));
    const earlier = await a!.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED });
    await earlier.commit(BODY);
    const held = await c!.lockSource('app', 'prune');
    try {
      const begun = await beginBackups([a!, b!, c!], 'app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED });
      assert.ok('error' in begun[2]! && begun[2].error instanceof PgkeepError && begun[2].error.code === 'LOCK_HELD', 'the repository whose lock is held is left out');
      const writers = begun.flatMap((r) => ('writer' in r ? [r.writer] : []));
      assert.deepEqual(writers.map((w) => w.id), ['20261205T100001Z', '20261205T100001Z'], 'taken in a: the next id, in both');
      const results = await storeObjects(writers, { name: 'dump', role: 'dump' }, text('teed '.repeat(500)), { level: 3 });
      assert.ok(results.every((r) => r.ok));
      for (const writer of writers) await writer.commit(BODY);
      const [inA, inB] = await Promise.all([a!.readManifest('app', writers[0]!.id), b!.readManifest('app', writers[1]!.id)]);
      assert.deepEqual(inA.objects, inB.objects, 'the same object, the same checksums');
      assert.deepEqual((await c!.listBackupFolders('app')), [], 'nothing was written where the lock was held');
    } finally {
      await held.release();
    }
  });

  test('an encrypted repository: age objects, one encryption record, readable with the identity', async () => {
    const keys = generateIdentity();
    const storage = openStorage(where.repo('encrypted'));
    const repo = await Repository.init(storage, { method: 'age', recipients: [keys.publicKey], passphrase: false });
    const writer = await repo.beginBackup('app', 'logical', { command: 'backup', database: 'app', startedAt: STARTED });
    const object = await writer.store({ name: 'dump', role: 'dump' }, text('secret rows '.repeat(100)), { level: 3 });
    assert.equal(object.name, 'dump.zst.age');
    assert.deepEqual(object.encryption, { method: 'age', recipients: [keys.publicKey] });
    const stored = await collectStream(await storage.get(repo.objectKey('app', writer.id, object.name)));
    assert.equal(stored.subarray(0, 22).toString(), 'age-encryption.org/v1\n');
    const manifest = await writer.commit({ ...BODY, database: { ...BODY.database, state: { owner: 'o', acl: null, comment: null, settings: ['app.jwt_secret=x'], roleSettings: [], connectionLimit: -1, localeProvider: 'libc', locale: null, icuRules: null } } });
    assert.equal(manifest.kind === 'logical' && manifest.database.state, undefined, 'the database state (settings may be secrets) stays out of an encrypted repository\'s manifest');
    const read = await repo.readManifest('app', writer.id);
    assert.ok(!JSON.stringify(read).includes('jwt_secret'));
  });
});
