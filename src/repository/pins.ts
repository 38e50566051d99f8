import { Readable } from 'node:stream';
import { z } from 'zod';
import { PgkeepError } from '../errors.js';
import { joinKey, readObject } from '../storage/storage.js';
import { isBackupId, validateBackupId } from './backup-id.js';
import { type Repository } from './repository.js';
import { storageOf } from './repository-storage.js';

/**
 * A pin: the backup must never be deleted by prune, whatever the policy.
 * Kept at sources/<source>/pins/<backup-id>.json, beside (not inside) the
 * backup, so it is written atomically on its own and survives any retention.
 */
export const PinSchema = z.object({
  format: z.literal(1),
  source: z.string(),
  backupId: z.string(),
  pinnedAt: z.string(),
  /** Who pinned it (user@host), for the audit trail. */
  by: z.string(),
  reason: z.string().nullable(),
});
export type Pin = z.infer<typeof PinSchema>;

function pinsFolder(source: string): string {
  return joinKey('sources', source, 'pins');
}

function pinKey(source: string, id: string): string {
  return joinKey(pinsFolder(source), `${validateBackupId(id)}.json`);
}

/** Writes (or replaces) the pin of a backup; atomic, like every put. */
export async function writePin(repository: Repository, pin: Omit<Pin, 'format'>): Promise<Pin> {
  const record: Pin = PinSchema.parse({ format: 1, ...pin });
  await storageOf(repository)!.put(pinKey(pin.source, pin.backupId), Readable.from([Buffer.from(`${JSON.stringify(record, null, 2)}\n`)]));
  return record;
}

/** Removes a pin; true when there was one. */
export async function removePin(repository: Repository, source: string, id: string): Promise<boolean> {
  const key = pinKey(source, id);
  if (!(await storageOf(repository)!.stat(key))) return false;
  await storageOf(repository)!.remove(key);
  return true;
}

/** Whether a backup is pinned right now (read again just before prune deletes it). */
export async function isPinned(repository: Repository, source: string, id: string): Promise<boolean> {
  return (await storageOf(repository)!.stat(pinKey(source, id))) !== undefined;
}

/**
 * The pins of a source, by backup id. A pin that cannot be parsed still
 * counts: when in doubt, a backup is kept.
 */
export async function listPins(repository: Repository, source: string): Promise<Map<string, Pin | undefined>> {
  const pins = new Map<string, Pin | undefined>();
  for await (const entry of storageOf(repository)!.list(pinsFolder(source))) {
    if (entry.kind !== 'object' || !entry.path.endsWith('.json')) continue;
    const id = entry.path.split('/').pop()!.slice(0, -'.json'.length);
    if (!isBackupId(id)) continue;
    try {
      pins.set(id, PinSchema.parse(JSON.parse((await readObject(storageOf(repository)!, entry.path)).toString('utf8'))));
    } catch (error) {
      if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') continue; // unpinned meanwhile
      pins.set(id, undefined);
    }
  }
  return pins;
}
