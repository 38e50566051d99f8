import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { test } from 'node:test';
import { generateIdentity } from '../../src/pipeline/age.js';
import { authenticate, canonicalManifest, checksumMatches, deriveManifestKey, sealManifest } from '../../src/repository/manifest-integrity.js';
import { makeFolders, makeFoldersSync } from '../../src/local/make-folders.js';
import { armFaultPoint } from '../../src/fault-points.js';

const manifest = { format: 1, id: '20261204T000000Z', tables: [{ schema: 'public', name: 'big', rows: 120000 }] };

test('the checksum covers every field but integrity, in the key order written', () => {
  const canonical = canonicalManifest(manifest);
  const sealed = { ...manifest, integrity: sealManifest(canonical, []) };
  const read = JSON.parse(JSON.stringify(sealed, null, 2)) as Record<string, unknown>;
  assert.equal(canonicalManifest(read), canonical, 'pretty-printing and parsing keep the canonical text');
  assert.ok(checksumMatches(canonicalManifest(read), sealed.integrity));
  (read.tables as { rows: number }[])[0]!.rows = 120001;
  assert.ok(!checksumMatches(canonicalManifest(read), sealed.integrity), 'an edited row count is seen');
  assert.ok(checksumMatches(canonical, undefined), 'a manifest of an older pgkeep has nothing to check');
});

test('the HMAC needs the identity: a recomputed checksum does not pass, another key cannot tell', () => {
  const mine = generateIdentity();
  const other = generateIdentity();
  const key = deriveManifestKey(mine.secretKey, mine.publicKey);
  assert.deepEqual(deriveManifestKey(mine.secretKey.toLowerCase(), mine.publicKey).key, key.key, 'the same key from either case of the bech32 string');
  const canonical = canonicalManifest(manifest);
  const integrity = sealManifest(canonical, [key]);
  assert.deepEqual(authenticate(canonical, integrity, [key]), { state: 'authenticated', key: mine.publicKey });
  const edited = canonicalManifest({ ...manifest, id: 'x' });
  const forged = { ...integrity, sha256: sealManifest(edited, []).sha256 };
  assert.ok(checksumMatches(edited, forged));
  assert.deepEqual(authenticate(edited, forged, [key]), { state: 'forged', key: mine.publicKey });
  assert.deepEqual(authenticate(canonical, integrity, [deriveManifestKey(other.secretKey, other.publicKey)]), { state: 'other-key', keys: [mine.publicKey] });
  assert.deepEqual(authenticate(canonical, { sha256: integrity.sha256 }, [key]), { state: 'unauthenticated' });
});

test('makeFolders: a bounded mkdir -p that fails under /proc instead of spinning', async () => {
  await assert.rejects(makeFolders('/proc/pgkeep-unit/a/b'), { code: 'ENOENT', path: '/proc/pgkeep-unit' });
  assert.throws(() => makeFoldersSync('/proc/pgkeep-unit/a'), { code: 'ENOENT' });
  const dir = await mkdtemp(path.join(tmpdir(), 'pgkeep-unit-'));
  try {
    await makeFolders(path.join(dir, 'a', 'b', 'c'));
    await makeFolders(path.join(dir, 'a', 'b', 'c')); // exists: fine
    assert.ok((await stat(path.join(dir, 'a', 'b', 'c'))).isDirectory());
    assert.equal((await stat(path.join(dir, 'a'))).mode & 0o777, 0o700);
    await writeFile(path.join(dir, 'file'), '');
    await assert.rejects(makeFolders(path.join(dir, 'file')), { code: 'ENOTDIR' });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('fault points: only known names arm', () => {
  assert.throws(() => armFaultPoint('no-such-point'), /unknown fault point "no-such-point"/);
  armFaultPoint('after-object-stored#2');
  armFaultPoint(undefined);
});
