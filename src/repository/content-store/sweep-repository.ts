import type { KeySettings } from '../../config/settings.js';
import { PgkeepError, toPgkeepError } from '../../errors.js';
import { readIdentities } from '../repository-keys.js';
import { storageOf } from '../repository-storage.js';
import type { DamagedBackup, Repository } from '../repository.js';
import { acquireContentLock } from './content-lock.js';
import { pruneContent, type ContentPruneResult } from './content-prune.js';
import type { StreamRef } from './content-store.js';
import { openContentStore } from './open-content-store.js';

export interface SweepOptions {
  dryRun: boolean;
  graceMs: number;
  now: Date;
  /** "source/id" of backups this prune deletes (a dry run has not deleted them yet): their chunks count as unreferenced. */
  deleting: ReadonlySet<string>;
}

export type SweepOutcome = { swept: ContentPruneResult } | { skipped: string };

/** Repack a pack once a fifth of its bytes is unused. */
const REPACK_UNUSED = 0.2;

/**
 * The content sweep of one deduplicating repository, after the retention
 * rules removed manifests: under the exclusive content lock, every backup of
 * every source is read and what none of them references is swept
 * (content-prune.ts). Skipped, and said why, when a backup is writing (the
 * next prune sweeps) or a manifest cannot be read (its chunks cannot be told
 * from garbage).
 */
export async function sweepRepositoryContent(repository: Repository, keys: KeySettings, options: SweepOptions): Promise<SweepOutcome> {
  const storage = storageOf(repository)!;
  let lock;
  try {
    lock = options.dryRun ? undefined : await acquireContentLock(storage, 'exclusive', 'prune');
  } catch (error) {
    if (toPgkeepError(error).code === 'LOCK_HELD') return { skipped: `${(error as Error).message}; the next prune sweeps` };
    throw error;
  }
  try {
    const damaged: DamagedBackup[] = [];
    const manifests = await repository.listBackups(undefined, damaged);
    if (damaged.length > 0) {
      return { skipped: `backup ${damaged[0]!.source}/${damaged[0]!.id} cannot be read, so the chunks it names cannot be told from unused ones: nothing was swept (see pgkeep verify)` };
    }
    const refs: StreamRef[] = [];
    for (const manifest of manifests) {
      if (options.deleting.has(`${manifest.source}/${manifest.id}`)) continue;
      for (const object of manifest.objects) if (object.content) refs.push(object.content);
    }
    // the identity, when there is one, also lets prune repack sealed packs
    const identities = repository.info.encryption ? await readIdentities(repository, keys).catch(() => []) : [];
    let store;
    try {
      store = await openContentStore(repository, keys, identities.length > 0 ? 'read' : 'write');
    } catch (error) {
      // an encrypted repository's chunk ids are keyed: following the lists needs the content key or the identity
      if (toPgkeepError(error).code === 'CONFIG_INVALID') return { skipped: (error as Error).message };
      throw error;
    }
    if (!store) throw new PgkeepError('INTERNAL', `${repository.location} has no content store`);
    try {
      return { swept: await pruneContent(storage, store, refs, { graceMs: options.graceMs, repackUnused: REPACK_UNUSED, now: options.now, dryRun: options.dryRun }) };
    } catch (error) {
      // a kept backup's chunk (or chunk list) the repository does not hold: its packs cannot be told from garbage
      if (toPgkeepError(error).code === 'CHECKSUM_MISMATCH') return { skipped: `${(error as Error).message}: nothing was swept` };
      throw error;
    }
  } finally {
    await lock?.release().catch(() => undefined);
  }
}
