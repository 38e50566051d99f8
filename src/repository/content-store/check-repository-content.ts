import type { KeySettings } from '../../config/settings.js';
import { PgkeepError, toPgkeepError } from '../../errors.js';
import { readIdentities } from '../repository-keys.js';
import { storageOf } from '../repository-storage.js';
import type { DamagedBackup, Repository } from '../repository.js';
import { checkContent, type BackupRefs, type ContentCheckResult } from './content-verify.js';
import { openContentStore } from './open-content-store.js';

export interface RepositoryContentCheck extends ContentCheckResult {
  repository: string;
  /** The share of packs read (1: all) and the slot read this time. */
  fraction: number;
  slot: number;
  slots: number;
  /** Whether each blob was also checked against its id (the identity or a clear repository), or only packs against their names. */
  blobsChecked: boolean;
  /** Backups whose manifest cannot be read (their chunks cannot be named). */
  unreadable: string[];
}

/**
 * `verify --read-data-subset`: the content store of a deduplicating
 * repository, every backup of every source: each chunk they name is indexed,
 * and the packs of this run's slot (by default the day number, so daily runs
 * cover every pack in 1/fraction days) are read whole.
 */
export async function checkRepositoryContent(repository: Repository, keys: KeySettings, options: { fraction: number; slot?: number; now?: Date }): Promise<RepositoryContentCheck> {
  if (!repository.info.content) throw new PgkeepError('USAGE', `${repository.location} is not a deduplicating repository: verify checks its backups one by one (verify all)`);
  const damaged: DamagedBackup[] = [];
  const manifests = await repository.listBackups(undefined, damaged);
  const backups: BackupRefs[] = manifests.map((m) => ({ source: m.source, id: m.id, refs: m.objects.flatMap((o) => (o.content ? [o.content] : [])) }));
  // with the identity the blobs are opened too; without it, packs are checked against their names
  const identities = repository.info.encryption ? await readIdentities(repository, keys).catch(() => []) : [];
  let store;
  try {
    store = (await openContentStore(repository, keys, identities.length > 0 || !repository.info.encryption ? 'read' : 'write'))!;
  } catch (error) {
    throw toPgkeepError(error);
  }
  const slots = Math.max(1, Math.round(1 / options.fraction));
  const slot = options.slot ?? Math.floor((options.now ?? new Date()).getTime() / 86_400_000) % slots;
  const result = await checkContent(storageOf(repository)!, store, backups, options.fraction >= 1 ? {} : { subset: { fraction: options.fraction, slot } });
  return {
    ...result,
    repository: repository.location,
    fraction: Math.min(1, options.fraction),
    slot,
    slots,
    blobsChecked: identities.length > 0 || !repository.info.encryption,
    unreadable: damaged.map((d) => `${d.source}/${d.id}`),
  };
}
