import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { backupDatabaseName, consistentAt, isPhysical, MANIFEST_FORMAT, upgradeManifest } from '../../src/repository/manifest.js';
import { canonicalManifest, checksumMatches } from '../../src/repository/manifest-integrity.js';
import { Repository } from '../../src/repository/repository.js';
import { openStorage } from '../../src/storage/open-storage.js';

// Real manifests written by this pgkeep (test/support/make-manifest-fixtures.ts made them): every later
// pgkeep must keep reading them, through upgradeManifest.
const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/manifests');
const stored = (name: string): Record<string, unknown> => JSON.parse(readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));

function isCode(code: string, pattern: RegExp) {
  return (error: unknown) => error instanceof PgkeepError && error.code === code && pattern.test(error.message);
}

describe('stored manifests', () => {
  it('the fixtures hold a logical, a physical, an encrypted and a copied manifest', () => {
    assert.deepEqual(readdirSync(FIXTURES).sort(), ['copied.json', 'encrypted.json', 'logical.json', 'physical.json']);
  });

  for (const name of ['logical', 'physical', 'encrypted', 'copied']) {
    it(`${name}: reads and upgrades to format ${MANIFEST_FORMAT}, its checksum still matching the stored text`, () => {
      const raw = stored(name);
      const manifest = upgradeManifest(raw);
      assert.equal(manifest.format, MANIFEST_FORMAT);
      assert.equal(manifest.kind, name === 'physical' ? 'physical' : 'logical');
      assert.ok(manifest.objects.length > 0);
      assert.equal(manifest.totals.storedBytes, manifest.objects.reduce((n, o) => n + o.stored.size, 0));
      assert.ok(checksumMatches(canonicalManifest(raw), manifest.integrity), 'the checksum is over the stored text');
    });
  }

  it('accessors: the physical one is consistent at its stop time, the logical ones when they finished', () => {
    const physical = upgradeManifest(stored('physical'));
    assert.ok(isPhysical(physical));
    assert.equal(consistentAt(physical), new Date(physical.physical.stopTime).toISOString());
    assert.equal(backupDatabaseName(physical), '(cluster)');
    const logical = upgradeManifest(stored('logical'));
    assert.equal(isPhysical(logical), false);
    assert.equal(consistentAt(logical), logical.finishedAt);
    assert.equal(backupDatabaseName(logical), logical.kind === 'logical' ? logical.database.name : '');
  });

  it('the encrypted one records its recipients; the copy is the same backup as the logical one', () => {
    const encrypted = upgradeManifest(stored('encrypted'));
    assert.ok(encrypted.objects.every((o) => o.encryption !== null && o.encryption !== undefined));
    const copied = upgradeManifest(stored('copied'));
    assert.deepEqual(copied, upgradeManifest(stored('logical')));
  });

  it('a newer format is REPO_FORMAT; a missing or impossible format, or a damaged one, is MANIFEST_INVALID', () => {
    assert.throws(() => upgradeManifest({ ...stored('logical'), format: MANIFEST_FORMAT + 1 }), isCode('REPO_FORMAT', /upgrade pgkeep/));
    const { format: _, ...noFormat } = stored('logical');
    assert.throws(() => upgradeManifest(noFormat), isCode('MANIFEST_INVALID', /format/));
    assert.throws(() => upgradeManifest({ ...stored('logical'), format: 0 }), isCode('MANIFEST_INVALID', /format/));
    assert.throws(() => upgradeManifest([]), isCode('MANIFEST_INVALID', /not a JSON object/));
    assert.throws(() => upgradeManifest({ ...stored('physical'), objects: 'none' }), isCode('MANIFEST_INVALID', /invalid at objects/));
  });

  it('format 2: a content stream may omit its raw SHA-256 (its chunk ids prove it); an object stored as a file may not', () => {
    const logical = stored('logical') as { objects: Record<string, any>[] };
    const [first, ...rest] = logical.objects;
    const { sha256: _, ...size } = first!.raw;
    const content = { size: size.size, chunks: 1, depth: 0, root: ['ab'.repeat(32)] };
    const withContent = upgradeManifest({ ...logical, format: 2, objects: [{ ...first, raw: size, content }, ...rest] });
    assert.equal(withContent.objects[0]!.raw.sha256, undefined);
    assert.deepEqual(withContent.objects[0]!.content, content);
    assert.throws(() => upgradeManifest({ ...logical, format: 2, objects: [{ ...first, raw: size }, ...rest] }), isCode('MANIFEST_INVALID', /objects\.0\.raw\.sha256.*needs its SHA-256/));
  });

  it('a repository reads each stored manifest as written (the text kept byte for byte for copy)', async () => {
    const folder = await mkdtemp(path.join(tmpdir(), 'pgkeep-manifest-fixtures-'));
    after(() => rm(folder, { recursive: true, force: true }));
    const repository = await Repository.open(openStorage(folder), { createIfEmpty: true });
    for (const name of ['logical', 'physical', 'encrypted']) {
      const raw = stored(name);
      const backup = path.join(folder, 'sources', String(raw.source), 'backups', String(raw.id));
      await mkdir(backup, { recursive: true });
      await writeFile(path.join(backup, 'manifest.json'), readFileSync(path.join(FIXTURES, `${name}.json`)));
      const read = await repository.readManifest(String(raw.source), String(raw.id));
      assert.deepEqual(read, upgradeManifest(raw));
    }
    // an edited manifest is refused by its checksum, naming the backup
    const raw = stored('logical');
    await writeFile(path.join(folder, 'sources', String(raw.source), 'backups', String(raw.id), 'manifest.json'), JSON.stringify({ ...raw, labels: ['edited'] }));
    await assert.rejects(repository.readManifest(String(raw.source), String(raw.id)), isCode('MANIFEST_INVALID', /checksum does not match/));
  });
});
