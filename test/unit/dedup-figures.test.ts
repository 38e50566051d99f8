import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { dedupFigures, upgradeManifest } from '../../src/repository/manifest.js';

// What list, show, status and the metrics read of a deduplicated backup, from manifests as older and newer pgkeep wrote them.
const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/manifests');
const stored = (name: string): Record<string, any> => JSON.parse(readFileSync(path.join(FIXTURES, `${name}.json`), 'utf8'));

/** The logical fixture as a deduplicating repository holds it: the dump as a stream ref, `stored` what it added. */
function deduplicated(totalsContent?: object): Record<string, any> {
  const raw = stored('logical');
  const { integrity: _integrity, ...rest } = raw;
  const objects = rest.objects.map((o: any) => (o.role === 'dump' ? { ...o, stored: { ...o.stored, size: 1234 }, content: { size: o.raw.size, chunks: 40, depth: 0, root: [] } } : o));
  const storedBytes = objects.reduce((n: number, o: any) => n + o.stored.size, 0);
  return { ...rest, objects, totals: { ...rest.totals, storedBytes, ...(totalsContent ? { content: totalsContent } : {}) } };
}

describe('dedupFigures', () => {
  it('a backup stored as files has none', () => {
    assert.equal(dedupFigures(upgradeManifest(stored('logical'))), undefined);
    assert.equal(dedupFigures(upgradeManifest(stored('physical'))), undefined);
  });

  it('a manifest with totals.content: logical size, the bytes of the packs it wrote, chunks new and reused', () => {
    const manifest = upgradeManifest(deduplicated({ chunks: 40, newChunks: 3, addedBytes: 2000, packs: 1 }));
    assert.deepEqual(manifest.totals.content, { chunks: 40, newChunks: 3, addedBytes: 2000, packs: 1 }, 'kept as read');
    assert.deepEqual(dedupFigures(manifest), { logicalBytes: manifest.totals.rawBytes, addedBytes: 2000, chunks: 40, newChunks: 3 });
  });

  it('a deduplicated manifest of an older pgkeep (no totals.content): what it added is its new chunks compressed, chunk counts unknown', () => {
    const manifest = upgradeManifest(deduplicated());
    assert.deepEqual(dedupFigures(manifest), { logicalBytes: manifest.totals.rawBytes, addedBytes: manifest.totals.storedBytes, chunks: undefined, newChunks: undefined });
  });

  it('a totals.content that is not counts is refused (MANIFEST_INVALID)', () => {
    assert.throws(() => upgradeManifest(deduplicated({ chunks: -1, newChunks: 0, addedBytes: 0, packs: 0 })), /invalid at totals\.content\.chunks/);
  });
});
