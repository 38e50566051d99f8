import { PgkeepError } from '../errors.js';
import { joinKey } from '../storage/storage.js';
import { backupIdTime, isBackupId } from './backup-id.js';
import { listBackupFailures, type BackupFailure } from './backup-failures.js';
import type { Manifest } from './manifest.js';
import { listPins, type Pin } from './pins.js';
import { DELETING_FILE, isManifestDamage, type Repository } from './repository.js';
import { storageOf } from './repository-storage.js';

/** Everything a repository holds about one source, read once for prune and status. */
export interface SourceCatalog {
  /** Complete backups, oldest first. */
  backups: Manifest[];
  /** Complete backups whose manifest cannot be read (damaged, or from a newer pgkeep): never deleted, reported. */
  unreadable: { id: string; error: PgkeepError }[];
  /** Backup folders without a manifest, with their last activity (the later of the id's time and the newest object). */
  leftovers: { id: string; lastActivity: Date }[];
  pins: Map<string, Pin | undefined>;
  /** Failure records, oldest first. */
  failures: (BackupFailure & { key: string })[];
}

export async function readSourceCatalog(repository: Repository, source: string): Promise<SourceCatalog> {
  const catalog: SourceCatalog = { backups: [], unreadable: [], leftovers: [], pins: await listPins(repository, source), failures: await listBackupFailures(repository, source) };
  // a folder without a manifest is a leftover
  for (const id of await repository.listBackupIds(source)) {
    let manifest: Manifest | undefined;
    try {
      manifest = await repository.readManifestIfPresent(source, id);
    } catch (error) {
      if (!isManifestDamage(error)) throw error;
      catalog.unreadable.push({ id, error });
      continue;
    }
    if (manifest) {
      catalog.backups.push(manifest);
      continue;
    }
    let last = backupIdTime(id).getTime();
    let deleting = false;
    for await (const entry of storageOf(repository)!.list(repository.backupFolder(source, id), { recursive: true })) {
      if (entry.kind === 'object') last = Math.max(last, entry.modified.getTime());
      if (entry.kind === 'object' && entry.path.endsWith(`/${DELETING_FILE}`)) deleting = true;
    }
    // A removal a kill interrupted: no backup writes there any more, finish it now.
    if (deleting) last = 0;
    catalog.leftovers.push({ id, lastActivity: new Date(last) });
  }
  catalog.backups.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.id < b.id ? -1 : 1));
  return catalog;
}

/** Removes a backup (manifest first, then its objects), then its verification records. */
export async function removeBackupWithRecords(repository: Repository, source: string, id: string): Promise<void> {
  await repository.removeBackup(source, id);
  await storageOf(repository)!.removeFolder(repository.verificationFolder(source, id));
}

/** Removes verification records of backups that no longer exist; returns their ids. */
export async function removeOrphanVerifications(repository: Repository, source: string): Promise<string[]> {
  const present = new Set(await repository.listBackupIds(source));
  const removed: string[] = [];
  for await (const entry of storageOf(repository)!.list(joinKey('sources', source, 'verifications'))) {
    const id = entry.path.split('/').pop()!;
    if (entry.kind !== 'folder' || !isBackupId(id) || present.has(id)) continue;
    await storageOf(repository)!.removeFolder(entry.path);
    removed.push(id);
  }
  return removed;
}
