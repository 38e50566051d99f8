import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { json, pgkeep as cliPgkeep } from '../support/cli.js';
import { openContentStore } from '../../src/repository/content-store/open-content-store.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { collectStream } from '../../src/storage/storage.js';
import { Repository } from '../../src/repository/repository.js';
import { eachStorage } from '../support/each-storage.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase, type DatabaseSnapshot } from '../support/db-compare.js';
import { createShopWithEvents } from '../support/awkward-fixture.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { initPassphraseRepo, lightenPassphrase } from '../support/passphrase-repo.js';
import type { PgCluster } from '../support/pg-cluster.js';

let cluster: PgCluster;
let work: string;
/**
 * The shop's events: a dump of ~4.8 MB in ~280 chunks. Enough that a day's change (changeSomething) is a few
 * of them, and that the chunks two chunkers cut alike (the fixture's small tables, each one chunk whole: 22
 * of 277 measured) stay under a tenth of a stream's, as the copy across formats asserts: 30,000 events (~210
 * chunks) would come near it, 20,000 crossed it (22 of 170).
 */
const EVENTS = 40_000;

useClusterAndWorkFolder('dedup-copy', async (c, w) => {
  cluster = c;
  work = w;
  await createShopWithEvents(cluster, EVENTS);
});

const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('shop'), ...extra });
const dumpOf = (m: any) => m.objects.find((o: any) => o.role === 'dump');
let change = 0;
/**
 * The source database's snapshot, taken once per state of it (changeSomething
 * is the only writer): several restores are compared with the same state.
 */
let shopSnapshot: { change: number; snapshot: Promise<DatabaseSnapshot> } | undefined;
const snapshotShop = (): Promise<DatabaseSnapshot> => {
  if (shopSnapshot?.change !== change) shopSnapshot = { change, snapshot: snapshotDatabase(cluster, 'shop') };
  return shopSnapshot.snapshot;
};
const changeSomething = async () => {
  change++;
  await cluster.query(`INSERT INTO events SELECT g, md5(g::text), now() FROM generate_series(${EVENTS + change * 500 + 1}, ${EVENTS + (change + 1) * 500}) g`, [], 'shop');
  // the churn of the benchmark's model: status updates on the newest rows
  await cluster.query(`UPDATE events SET body = md5(body || '${change}') WHERE id > (SELECT max(id) - 300 FROM events)`, [], 'shop');
};

/** Two age keys in one identity file: the source's and the destination's (each repository encrypted to its own). */
async function twoKeys(kind: string): Promise<{ identityFile: string; source: string; destination: string }> {
  const publicKeys: string[] = [];
  const texts: string[] = [];
  for (const which of ['source', 'destination']) {
    const file = path.join(work, `${kind}-${which}.key`);
    const keygen = await pgkeep(['keygen', '--output', file]);
    assert.equal(keygen.code, 0, keygen.stderr);
    const text = await readFile(file, 'utf8');
    texts.push(text);
    publicKeys.push(/age1[0-9a-z]+/.exec(text)![0]);
  }
  const identityFile = path.join(work, `${kind}-both.key`);
  await writeFile(identityFile, texts.join('\n'), { mode: 0o600 });
  return { identityFile, source: publicKeys[0]!, destination: publicKeys[1]! };
}

async function catSha256(repo: string, keys: Record<string, string>, name: string, database = 'shop'): Promise<string> {
  const out = path.join(work, `${name}.dump`);
  const cat = await pgkeep(['cat', 'latest', '--repo', repo, '--output', out], { env: { ...env(keys), DATABASE_URL: cluster.url(database) } });
  assert.equal(cat.code, 0, cat.stderr);
  return createHash('sha256').update(await readFile(out)).digest('hex');
}

async function everyBackupVerifies(repo: string, keys: Record<string, string>): Promise<number> {
  const listed = json<{ id: string; damaged?: unknown }[]>(await pgkeep(['list', '--repo', repo, '--json'], { env: env(keys) }));
  assert.deepEqual(listed.filter((b) => b.damaged), []);
  for (const b of listed) {
    const verified = await pgkeep(['verify', b.id, '--repo', repo], { env: env(keys) });
    assert.equal(verified.code, 0, `verify ${b.id} at ${repo}: ${verified.stderr}`);
  }
  return listed.length;
}

// over a folder unencrypted, over S3 encrypted (keyed chunk ids, sealed packs, each repository to its own key)
eachStorage('copy between deduplicating repositories (encrypted on S3)', (storage) => {
  const encrypted = storage.kind === 's3';
  /**
   * The SHA-256 of `cat latest` of the source, read once: the second test reads the backup the first one made
   * last (it backs up nothing), and a cat of the same backup gives the same bytes (each chunk checked against
   * its id as it is read; the copies' cats are compared with this one).
   */
  let sourceSha: Promise<string> | undefined;
  const catSource = (keys: Record<string, string>) => (sourceSha ??= catSha256(storage.repo('source'), keys, `${storage.kind}-source`));

  test('init --chunker-from shares chunk ids; copy sends only the chunks the destination lacks, and the copy restores identically', async () => {
    const source = storage.repo('source');
    const destination = storage.repo('shared');
    const keys: Record<string, string> = {};
    const initSource = ['init', '--repo', source, '--dedup'];
    const initDestination = ['init', '--repo', destination, '--dedup', '--chunker-from', source];
    if (encrypted) {
      const k = await twoKeys(storage.kind);
      initSource.push('--encrypt', '--recipient', k.source);
      initDestination.push('--encrypt', '--recipient', k.destination);
      keys.PGKEEP_AGE_IDENTITY_FILE = k.identityFile;
    }
    assert.equal((await pgkeep(initSource, { env: env(keys) })).code, 0);
    const first = json(await pgkeep(['backup', '--repo', source, '--json'], { env: env(keys) }));

    const created = await pgkeep([...initDestination, '--json'], { env: env(keys) });
    assert.equal(created.code, 0, created.stderr);
    const a = (await Repository.open(openStorage(source))).info.content!;
    const b = (await Repository.open(openStorage(destination))).info.content!;
    assert.match(b.fingerprint ?? '', /^[0-9a-f]{64}$/);
    assert.equal(b.fingerprint, a.fingerprint, 'the same chunker fingerprint');
    assert.deepEqual(b.chunkSizes, a.chunkSizes);
    assert.equal(json(created).fingerprint, a.fingerprint);
    if (encrypted) {
      // the content key is the source's, sealed to the destination's own recipient: never in pgkeep.json, never in the clear
      const sourceStore = await openContentStore(await Repository.open(openStorage(source)), { identityFile: keys.PGKEEP_AGE_IDENTITY_FILE, passphrase: () => undefined }, 'read');
      const text = (await collectStream(await openStorage(destination).get('pgkeep.json'))).toString('utf8');
      assert.equal(b.seed, undefined);
      assert.ok(!text.includes(sourceStore!.settings.idKey!.toString('hex')));
      const sealed = await collectStream(await openStorage(destination).get('keys/content.age'));
      assert.match(sealed.toString('latin1'), /^age-encryption\.org\/v1\n-> X25519 /);
    }

    const copy1 = await pgkeep(['copy', first.id, '--from', source, '--to', destination, '--json'], { env: env(keys) });
    assert.equal(copy1.code, 0, copy1.stderr);
    const c1 = json(copy1);
    assert.equal(c1.method, 'chunks');
    assert.ok(c1.chunks.sent > 0 && c1.chunks.sent <= c1.chunks.walked, JSON.stringify(c1.chunks));
    assert.ok(c1.bytes > 0 && c1.bytes < c1.logicalBytes, `${c1.bytes} bytes sent for ${c1.logicalBytes} of data (compressed)`);

    await changeSomething();
    const second = json(await pgkeep(['backup', '--repo', source, '--json'], { env: env(keys) }));
    const copy2 = await pgkeep(['copy', 'latest', '--from', source, '--to', destination, '--json'], { env: env(keys) });
    assert.equal(copy2.code, 0, copy2.stderr);
    const c2 = json(copy2);
    assert.equal(c2.method, 'chunks');
    assert.equal(c2.verification.ok, true);
    // measured: the second copy sends 1.6-1.9% of the first one's bytes, 0.6-0.7% of the data (500 new rows and
    // 300 updated ones in a 40,000-row table: 6-7 of ~280 chunks)
    assert.ok(c2.bytes < c1.bytes * 0.05, `the second copy sent ${c2.bytes} bytes, the first ${c1.bytes}`);
    assert.ok(c2.bytes < c2.logicalBytes * 0.02, `the second copy sent ${c2.bytes} bytes for ${c2.logicalBytes} of data`);
    assert.ok(c2.chunks.sent < c2.chunks.walked * 0.05, JSON.stringify(c2.chunks));
    console.log(`copy: first ${c1.bytes} bytes (${c1.chunks.sent}/${c1.chunks.walked} chunks), second ${c2.bytes} bytes (${c2.chunks.sent}/${c2.chunks.walked}) for ${c2.logicalBytes} logical`);

    // the manifest names the same chunk ids; cat is byte-identical; a restore from the destination is identical
    const copied = json(await pgkeep(['show', second.id, '--repo', destination, '--json'], { env: env(keys) }));
    assert.deepEqual(dumpOf(copied).content, dumpOf(second).content);
    // a content stream's manifest records no SHA-256 of the whole (its chunk ids prove it): the source's cat is the reference
    assert.equal(await catSha256(destination, keys, `${storage.kind}-shared`), await catSource(keys));
    const target = `copy_shared_${storage.kind}`;
    const restore = await pgkeep(['restore', 'latest', '--repo', destination, '--to', target], { env: env(keys) });
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(diffSnapshots(await snapshotShop(), await snapshotDatabase(cluster, target)), []);
    assert.equal(await everyBackupVerifies(destination, keys), 2);

    // again: already there, nothing sent
    const again = await pgkeep(['copy', 'latest', '--from', source, '--to', destination, '--json'], { env: env(keys) });
    assert.equal(again.code, 0, again.stderr);
    assert.equal(json(again).copied, false);
  });

  test('copy across formats (deduplicating -> plain -> deduplicating with other parameters) restores identically; other chunk ids never reach the destination', async () => {
    const source = storage.repo('source');
    const plain = storage.repo('plain');
    const other = storage.repo('other');
    const keys: Record<string, string> = {};
    const initPlain = ['init', '--repo', plain, '--plain'];
    const initOther = ['init', '--repo', other, '--dedup'];
    if (encrypted) {
      keys.PGKEEP_AGE_IDENTITY_FILE = path.join(work, `${storage.kind}-both.key`);
      const destinationKey = /age1[0-9a-z]+/.exec(await readFile(path.join(work, `${storage.kind}-destination.key`), 'utf8'))![0];
      initPlain.push('--encrypt', '--recipient', destinationKey);
      initOther.push('--encrypt', '--recipient', destinationKey);
    }
    assert.equal((await pgkeep(initPlain, { env: env(keys) })).code, 0);
    assert.equal((await pgkeep(initOther, { env: env(keys) })).code, 0);
    const manifest = json(await pgkeep(['show', 'latest', '--repo', source, '--json'], { env: env(keys) }));

    const toPlain = await pgkeep(['copy', 'latest', '--from', source, '--to', plain, '--json'], { env: env(keys) });
    assert.equal(toPlain.code, 0, toPlain.stderr);
    assert.equal(json(toPlain).method, 'restored');
    const toOther = await pgkeep(['copy', 'latest', '--from', plain, '--to', other, '--json'], { env: env(keys) });
    assert.equal(toOther.code, 0, toOther.stderr);
    assert.equal(json(toOther).method, 'restored');

    // the plain copy recorded the SHA-256 of what it read (each chunk checked against its id), and cat of each gives the source's bytes
    const original = await catSource(keys);
    const plainDump = dumpOf(json(await pgkeep(['show', 'latest', '--repo', plain, '--json'], { env: env(keys) })));
    assert.equal(plainDump.raw.sha256, original);
    // cat of each hop gives the source's bytes; the last hop (the plain one's dump re-chunked into other) is
    // restored and compared. A restore of the plain hop would read those same bytes again through the plain
    // repository's restore, which roundtrip.test.ts and encrypted-s3.test.ts prove on both storages.
    assert.equal(await catSha256(plain, keys, `${storage.kind}-plain`), original, 'cat from plain');
    assert.equal(await catSha256(other, keys, `${storage.kind}-other`), original, 'cat from other');
    const target = `copy_other_${storage.kind}`;
    const restore = await pgkeep(['restore', 'latest', '--repo', other, '--to', target], { env: env(keys) });
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(diffSnapshots(await snapshotShop(), await snapshotDatabase(cluster, target)), [], 'other');
    assert.equal(plainDump.content, undefined, 'stored as a file in the plain repository');
    assert.match(plainDump.name, encrypted ? /^dump\.zst\.age$/ : /^dump\.zst$/);

    // straight from the source to a repository with other chunking parameters: re-chunked, not sent as is
    const oldest = json<{ id: string }[]>(await pgkeep(['list', '--repo', source, '--json'], { env: env(keys) })).map((b) => b.id).sort()[0]!;
    assert.notEqual(oldest, manifest.id);
    const direct = await pgkeep(['copy', oldest, '--from', source, '--to', other, '--json'], { env: env(keys) });
    assert.equal(direct.code, 0, direct.stderr);
    assert.equal(json(direct).method, 'restored');
    assert.equal(await everyBackupVerifies(other, keys), 2);

    // the other repository has its own chunker: the source's chunk ids (data or lists) are not sent there. Encrypted,
    // ids are keyed per repository, so none is there; unencrypted, an id is the SHA-256 of the bytes, and only the
    // few chunks both chunkers happen to cut alike (a small stream whole, a table's last bytes) share one
    const identity = { identityFile: keys.PGKEEP_AGE_IDENTITY_FILE, passphrase: () => undefined };
    const sourceStore = (await openContentStore(await Repository.open(openStorage(source)), identity, 'read'))!;
    const otherStore = (await openContentStore(await Repository.open(openStorage(other)), identity, 'read'))!;
    let walked = 0;
    let shared = 0;
    for await (const id of sourceStore.listChunkIds(dumpOf(manifest).content)) {
      walked++;
      if (otherStore.index.has(id)) shared++;
    }
    assert.ok(walked > 100 && otherStore.index.chunkCount > 100);
    if (encrypted) assert.equal(shared, 0, 'a chunk id of the source in the other repository');
    else assert.ok(shared < walked * 0.1, `${shared} of ${walked} chunk ids of the source are in the other repository`);
    // and every chunk there has the id that repository gives its bytes
    const whole = await pgkeep(['verify', '--read-data-subset', '100%', '--repo', other], { env: env(keys) });
    assert.equal(whole.code, 0, whole.stderr);
  });
});

/**
 * fault_shop: the shop with 3,000 of its events, made once, for the tests whose subject is not the size
 * (the passphrase test only reads it; the faults test, which runs after it, changes it).
 */
let small: Promise<void> | undefined;
const smallShop = (): Promise<void> =>
  (small ??= (async () => {
    await cluster.query('CREATE DATABASE fault_shop TEMPLATE shop');
    await cluster.query('DELETE FROM events WHERE id > 3000', [], 'fault_shop');
    await cluster.query('VACUUM events', [], 'fault_shop');
  })());

describe('copy between deduplicating repositories encrypted with a passphrase', () => {
  test('each repository its own wrapped identity, one passphrase: the content key moves sealed, chunks are sent, the copy verifies and reads back identically', async () => {
    const source = path.join(work, 'pass-source');
    const destination = path.join(work, 'pass-destination');
    const keys = { PGKEEP_PASSPHRASE: 'correct horse battery staple' };
    // the sealed key and the chunks are the subject, not the size: the small shop (each copy reads and
    // re-encrypts every chunk in full, as its verification mode says)
    await smallShop();
    const env = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('fault_shop'), ...extra });
    // The source is what `init --dedup --encrypt` with the passphrase makes, its identity wrapped at a low work
    // factor: the work factor is not this test's subject (each command unwraps in ~1 ms instead of ~0.8 CPU-s, and
    // the real init's wrap and a re-wrap cost ~1.5 CPU-s). The destination's init below is the real command.
    await initPassphraseRepo(source, keys.PGKEEP_PASSPHRASE);
    const backup = json(await pgkeep(['backup', '--repo', source, '--json'], { env: env(keys) }));
    const created = await pgkeep(['init', '--repo', destination, '--dedup', '--encrypt', '--chunker-from', source, '--json'], { env: env(keys) });
    assert.equal(created.code, 0, created.stderr);
    await lightenPassphrase(destination, keys.PGKEEP_PASSPHRASE);
    const a = (await Repository.open(openStorage(source))).info;
    const b = (await Repository.open(openStorage(destination))).info;
    assert.notDeepEqual(b.encryption!.recipients, a.encryption!.recipients, 'its own wrapped identity');
    assert.equal(b.content!.fingerprint, a.content!.fingerprint);
    const copy = await pgkeep(['copy', 'latest', '--from', source, '--to', destination, '--json'], { env: env(keys) });
    assert.equal(copy.code, 0, copy.stderr);
    assert.equal(json(copy).method, 'chunks');
    assert.equal(json(copy).verification.mode, 'full');
    // the source's bytes, read once: the mirror below is compared with them too (the source backs up nothing more)
    const sourceSha = await catSha256(source, keys, 'passphrase-source', 'fault_shop');
    assert.equal(await catSha256(destination, keys, 'passphrase', 'fault_shop'), sourceSha);
    // without the passphrase, nothing is read or written: one line
    const without = await pgkeep(['copy', 'latest', '--from', source, '--to', destination]);
    assert.equal(without.code, 2, without.stderr);
    assert.match(without.stderr, /encrypted with a passphrase: set PGKEEP_PASSPHRASE/);
    // into an empty location: created with the source's wrapped identity and content key, chunks sent, the same bytes
    const mirror = path.join(work, 'pass-mirror');
    const mirrored = await pgkeep(['copy', 'latest', '--from', source, '--to', mirror, '--json'], { env: env(keys) });
    assert.equal(mirrored.code, 0, mirrored.stderr);
    assert.deepEqual([json(mirrored).createdDestination, json(mirrored).method, json(mirrored).verification.ok], [true, 'chunks', true]);
    assert.deepEqual(await readFile(path.join(mirror, 'keys', 'identity.age')), await readFile(path.join(source, 'keys', 'identity.age')));
    assert.equal((await Repository.open(openStorage(mirror))).info.content!.fingerprint, a.content!.fingerprint);
    assert.equal(await catSha256(mirror, keys, 'passphrase-mirror', 'fault_shop'), sourceSha);
  });
});

describe('init --chunker-from: bad requests get one line and change nothing', () => {
  test('with --plain, from a plain repository, across encryption, from a missing one, or over a repository with its own chunker', async () => {
    const plain = path.join(work, 'cf-plain');
    const deduped = path.join(work, 'cf-dedup');
    assert.equal((await pgkeep(['init', '--repo', plain, '--plain'])).code, 0);
    assert.equal((await pgkeep(['init', '--repo', deduped, '--dedup'])).code, 0);
    const keygen = await pgkeep(['keygen', '--output', path.join(work, 'cf.key')]);
    assert.equal(keygen.code, 0, keygen.stderr);
    const publicKey = /age1[0-9a-z]+/.exec(await readFile(path.join(work, 'cf.key'), 'utf8'))![0];
    const cases: [string[], number, RegExp][] = [
      [['init', '--repo', path.join(work, 'cf-1'), '--plain', '--chunker-from', deduped], 2, /--chunker-from makes a deduplicating repository .* does not go with --plain/],
      [['init', '--repo', path.join(work, 'cf-2'), '--dedup', '--chunker-from', plain], 2, /does not deduplicate/],
      [['init', '--repo', path.join(work, 'cf-3'), '--dedup', '--encrypt', '--recipient', publicKey, '--chunker-from', deduped], 2, /not encrypted .*must be unencrypted too/],
      [['init', '--repo', path.join(work, 'cf-4'), '--dedup', '--chunker-from', path.join(work, 'nowhere')], 5, /no pgkeep repository at .* to take chunking parameters from/],
      [['init', '--repo', deduped, '--dedup', '--chunker-from', deduped], 2, /names the repository being created/],
    ];
    for (const [argv, code, message] of cases) {
      const run = await pgkeep(argv);
      assert.equal(run.stderr.trim().split('\n').length, 1, run.stderr);
      assert.match(run.stderr, message);
      assert.equal(run.code, code, `${argv.join(' ')}: ${run.stderr}`);
    }
    for (const n of [1, 2, 3, 4]) assert.equal(existsSync(path.join(work, `cf-${n}`)), false, `cf-${n} was not made`);
    // an existing deduplicating repository keeps its own chunker: asking for another is refused
    const other = path.join(work, 'cf-other');
    assert.equal((await pgkeep(['init', '--repo', other, '--dedup'])).code, 0);
    const over = await pgkeep(['init', '--repo', other, '--dedup', '--chunker-from', deduped]);
    assert.equal(over.code, 5, over.stderr);
    assert.match(over.stderr, /chunking parameters of its own/);
  });

  test('--plain and --dedup choose the format of a new repository; over an existing one only a flag that fits changes nothing', async () => {
    const plain = path.join(work, 'fmt-plain');
    const deduped = path.join(work, 'fmt-dedup');
    const madePlain = await pgkeep(['init', '--repo', plain, '--plain', '--json']);
    assert.equal(madePlain.code, 0, madePlain.stderr);
    assert.equal(JSON.parse(madePlain.stdout).dedup, false);
    assert.equal(JSON.parse(await readFile(path.join(plain, 'pgkeep.json'), 'utf8')).content, undefined);
    assert.equal((await pgkeep(['init', '--repo', deduped, '--dedup'])).code, 0);
    assert.equal(JSON.parse(await readFile(path.join(deduped, 'pgkeep.json'), 'utf8')).format, 2);
    const both = await pgkeep(['init', '--repo', path.join(work, 'fmt-both'), '--plain', '--dedup']);
    assert.equal(both.code, 2, both.stderr);
    assert.match(both.stderr, /--plain and --dedup exclude each other/);
    assert.equal(existsSync(path.join(work, 'fmt-both')), false);
    const plainOverDedup = await pgkeep(['init', '--repo', deduped, '--plain']);
    assert.equal(plainOverDedup.code, 5, plainOverDedup.stderr);
    assert.match(plainOverDedup.stderr, /already a deduplicating pgkeep repository/);
    const dedupOverPlain = await pgkeep(['init', '--repo', plain, '--dedup']);
    assert.equal(dedupOverPlain.code, 5, dedupOverPlain.stderr);
    assert.match(dedupOverPlain.stderr, /already a pgkeep repository without deduplication/);
    // encrypted to a recipient: init says what writing needs; a backup without any key is refused before pg_dump starts
    const keyFile = path.join(work, 'fmt.key');
    assert.equal((await pgkeep(['keygen', '--output', keyFile])).code, 0);
    const recipient = /age1[0-9a-z]+/.exec(await readFile(keyFile, 'utf8'))![0];
    const sealed = path.join(work, 'fmt-sealed');
    const madeSealed = await pgkeep(['init', '--repo', sealed, '--dedup', '--encrypt', '--recipient', recipient]);
    assert.equal(madeSealed.code, 0, madeSealed.stderr);
    assert.match(madeSealed.stdout, /backups into it need the identity, or only the content key \(PGKEEP_CONTENT_KEY_FILE/);
    const keyless = await pgkeep(['backup', '--repo', sealed], { env: env() });
    assert.equal(keyless.code, 2, keyless.stderr);
    assert.match(keyless.stderr, /^pgkeep: the repository at .* is encrypted and deduplicating: writing needs its content key \(PGKEEP_CONTENT_KEY_FILE\) or its identity .* pgkeep init --plain$/m);
    assert.doesNotMatch(keyless.stderr, /pg_dump/);
    assert.deepEqual(json(await pgkeep(['list', '--repo', sealed, '--json'])), []);
    // existing repositories keep working whatever the default: init without a flag changes nothing in either
    for (const [repo, how] of [[plain, /plain \(no deduplication\) \(nothing changed\)/], [deduped, /deduplicating \(nothing changed\)/]] as const) {
      const again = await pgkeep(['init', '--repo', repo]);
      assert.equal(again.code, 0, again.stderr);
      assert.match(again.stdout, how);
    }
  });
});

describe('copy between deduplicating repositories under faults (real processes)', () => {
  test('SIGKILL of copy at each step: every backup at the destination verifies, and the next copy completes and restores identically', async () => {
    const source = path.join(work, 'fault-source');
    const destination = path.join(work, 'fault-destination');
    // Size is not this test's subject (each fault point fires per object or per step of the commit, never per
    // byte), and it verifies every backup at the destination twice per point (42 verifications): the shop's copy
    // with 3,000 of its events makes each backup, copy and verification a fraction of the work.
    await smallShop();
    let faultChange = 0;
    const faultEnv = (extra: Record<string, string> = {}) => ({ DATABASE_URL: cluster.url('fault_shop'), ...extra });
    // changeSomething's churn at this scale: new rows, and status updates on the newest ones
    const changeFaultShop = async () => {
      faultChange++;
      await cluster.query(`INSERT INTO events SELECT g, md5(g::text), now() FROM generate_series(${3000 + faultChange * 100 + 1}, ${3000 + (faultChange + 1) * 100}) g`, [], 'fault_shop');
      await cluster.query(`UPDATE events SET body = md5(body || '${faultChange}') WHERE id > (SELECT max(id) - 60 FROM events)`, [], 'fault_shop');
    };
    assert.equal((await pgkeep(['init', '--repo', source, '--dedup'], { env: faultEnv() })).code, 0);
    assert.equal((await pgkeep(['backup', '--repo', source], { env: faultEnv() })).code, 0);
    assert.equal((await pgkeep(['init', '--repo', destination, '--dedup', '--chunker-from', source], { env: faultEnv() })).code, 0);
    assert.equal((await pgkeep(['copy', 'latest', '--from', source, '--to', destination], { env: faultEnv() })).code, 0);
    let expected = 1;
    for (const point of ['mid-copy', 'before-content-index', 'after-content-index', 'before-manifest', 'after-manifest']) {
      await changeFaultShop();
      assert.equal((await pgkeep(['backup', '--repo', source], { env: faultEnv() })).code, 0);
      const killed = await cliPgkeep(['copy', 'latest', '--from', source, '--to', destination], { env: faultEnv({ PGKEEP_FAULT: point }) });
      assert.equal(killed.signal, 'SIGKILL', `${point}: ${killed.stderr}`);
      if (point === 'after-manifest') expected++;
      assert.equal(await everyBackupVerifies(destination, {}), expected, `${point}: every backup listed at the destination verifies`);
      const copy = await pgkeep(['copy', 'latest', '--from', source, '--to', destination, '--json'], { env: faultEnv() });
      assert.equal(copy.code, 0, `${point}: ${copy.stderr}`);
      expected = point === 'after-manifest' ? expected : expected + 1;
      assert.equal(await everyBackupVerifies(destination, {}), expected);
    }
    const target = 'copy_after_faults';
    const restore = await pgkeep(['restore', 'latest', '--repo', destination, '--to', target], { env: faultEnv() });
    assert.equal(restore.code, 0, restore.stderr);
    assert.deepEqual(diffSnapshots(await snapshotDatabase(cluster, 'fault_shop'), await snapshotDatabase(cluster, target)), []);
    // what the killed copies left (packs no index names, indexed chunks no backup names) is swept; every backup still verifies
    const stray = async () => {
      const store = (await openContentStore(await Repository.open(openStorage(destination)), { identityFile: undefined, passphrase: () => undefined }, 'read'))!;
      const indexed = store.index.packEntries();
      const found: string[] = [];
      for await (const e of openStorage(destination).list('content/packs', { recursive: true })) if (e.kind === 'object' && !indexed.has(e.path.split('/').at(-1)!)) found.push(e.path);
      return found;
    };
    // (a pack a killed copy left is usually written again, byte for byte, by the next copy of the same chunks:
    // packs are named by their content, so it is then indexed)
    const prune = await pgkeep(['prune', '--repo', destination, '--keep-last', '100', '--sweep-grace', '0'], { env: faultEnv() });
    assert.equal(prune.code, 0, prune.stderr);
    assert.deepEqual(await stray(), [], 'no pack left that no index names');
    assert.equal(await everyBackupVerifies(destination, {}), expected);
  });
});
