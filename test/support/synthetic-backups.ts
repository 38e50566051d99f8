import { Readable } from 'node:stream';
import { timestampPart } from '../../src/repository/backup-id.js';
import type { Manifest } from '../../src/repository/manifest.js';
import type { Repository } from '../../src/repository/repository.js';
import { storageOf } from '../../src/repository/repository-storage.js';
import { readObject } from '../../src/storage/storage.js';

/**
 * Copies a real backup (taken by the CLI against a real cluster) to a new id
 * and time, objects and all, so retention and status can be tested over
 * months of history without waiting for it. The copy is a complete,
 * verifiable backup: same bytes, same checksums, only the times differ.
 */
export async function cloneBackupAt(repository: Repository, original: Manifest, at: Date, changes: Partial<Manifest> = {}): Promise<Manifest> {
  const id = timestampPart(at) + (changes.name ? `-${changes.name}` : '');
  for (const object of original.objects) {
    // in a deduplicating repository the manifest names the stream's chunks, already in the store: no file to copy
    if (object.content) continue;
    const bytes = await readObject(storageOf(repository)!, repository.objectKey(original.source, original.id, object.name));
    await storageOf(repository)!.put(repository.objectKey(original.source, id, object.name), Readable.from([bytes]));
  }
  const manifest = {
    ...original,
    id,
    startedAt: at.toISOString(),
    finishedAt: new Date(at.getTime() + original.durationMs).toISOString(),
    ...changes,
  } as Manifest;
  await repository.writeManifest(manifest);
  return manifest;
}

/** Noon UTC `days` days before today (UTC): a time whose calendar day does not depend on when the test runs. */
export function daysAgoAtNoon(days: number, now = new Date()): Date {
  const midnight = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  return new Date(midnight - days * 86_400_000 + 12 * 3_600_000);
}
