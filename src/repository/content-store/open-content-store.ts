import type { KeySettings } from '../../config/settings.js';
import { readIdentities } from '../repository-keys.js';
import { storageOf } from '../repository-storage.js';
import { writeRecipients } from '../repo-info.js';
import type { Repository } from '../repository.js';
import { contentSettings } from './content-keys.js';
import { ContentStore } from './content-store.js';

/**
 * The content store of a deduplicating repository (undefined for any other),
 * with its index read. A writer of an encrypted one needs the content key
 * (PGKEEP_CONTENT_KEY_FILE) or the identity; a reader of data, the identity.
 */
export async function openContentStore(repository: Repository, keys: KeySettings, purpose: 'write' | 'read'): Promise<ContentStore | undefined> {
  const info = repository.info.content;
  if (!info) return undefined;
  const recipients = writeRecipients(repository);
  const contentKey = recipients && purpose === 'write' ? keys.contentKey?.() : undefined;
  const identities = recipients && (purpose === 'read' || contentKey === undefined) ? await readIdentities(repository, keys) : [];
  const storage = storageOf(repository)!;
  return ContentStore.open(storage, await contentSettings(storage, info, recipients, { identities, contentKey }));
}
