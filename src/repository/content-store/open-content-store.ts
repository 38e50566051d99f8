import type { KeySettings } from '../../config/settings.js';
import { readIdentities } from '../repository-keys.js';
import { storageOf } from '../repository-storage.js';
import { writeRecipients } from '../repo-info.js';
import type { Repository } from '../repository.js';
import { chunkerFingerprint, contentSettings, readChunkerParams, type ChunkerParams } from './content-keys.js';
import { PgkeepError } from '../../errors.js';
import { ContentStore, type ContentSettings } from './content-store.js';

/**
 * The content store of a deduplicating repository (undefined for any other),
 * with its index read. A writer of an encrypted one needs the content key
 * (PGKEEP_CONTENT_KEY_FILE) or the identity; a reader of data, the identity.
 */
export async function openContentStore(repository: Repository, keys: KeySettings, purpose: 'write' | 'read'): Promise<ContentStore | undefined> {
  const settings = await contentStoreSettings(repository, keys, purpose);
  return settings && ContentStore.open(storageOf(repository)!, settings);
}

/**
 * The settings openContentStore opens the store with: the keys it needs,
 * without reading the index. A writer resolves them before it starts (a
 * missing key is one clear line, not a failure half-way through a dump).
 */
export async function contentStoreSettings(repository: Repository, keys: KeySettings, purpose: 'write' | 'read'): Promise<ContentSettings | undefined> {
  const info = repository.info.content;
  if (!info) return undefined;
  const recipients = writeRecipients(repository);
  const contentKey = recipients && purpose === 'write' ? keys.contentKey?.() : undefined;
  if (recipients && purpose === 'write' && contentKey === undefined && keys.identityFile === undefined && !(repository.info.encryption?.passphrase && keys.passphrase() !== undefined)) {
    // the plain-repository habit (a backup host with public keys only) meets keyed chunk ids: say both ways out
    throw new PgkeepError(
      'CONFIG_INVALID',
      `the repository at ${repository.location} is encrypted and deduplicating: writing needs its content key (PGKEEP_CONTENT_KEY_FILE) or its identity (--identity FILE, PGKEEP_AGE_IDENTITY_FILE${repository.info.encryption?.passphrase ? ', the passphrase' : ''}); a host that may hold only public keys writes to a repository made with pgkeep init --plain`,
    );
  }
  const identities = recipients && (purpose === 'read' || contentKey === undefined) ? await readIdentities(repository, keys) : [];
  const storage = storageOf(repository)!;
  return contentSettings(storage, info, recipients, { identities, contentKey });
}

/**
 * The chunking parameters of a deduplicating repository, for a new one that
 * shares its chunk ids (`pgkeep init --dedup --chunker-from`): an encrypted
 * one's content key is read with its identity (the keys settings).
 */
export async function chunkerParamsOf(repository: Repository, keys: KeySettings): Promise<ChunkerParams> {
  const info = repository.info.content;
  if (!info) {
    throw new PgkeepError('USAGE', `--chunker-from ${repository.location}: that repository does not deduplicate (it was made without --dedup), so it has no chunking parameters to share`);
  }
  const encrypted = writeRecipients(repository) !== null;
  return readChunkerParams(storageOf(repository)!, info, encrypted, encrypted ? await readIdentities(repository, keys) : []);
}

/**
 * The chunker fingerprint a repository records, or for an unencrypted one made
 * before fingerprints were recorded, the one its seed gives. Undefined: not
 * deduplicating, or encrypted with none recorded (copy then re-chunks).
 */
export function recordedFingerprint(repository: Repository): string | undefined {
  const info = repository.info.content;
  if (!info) return undefined;
  if (info.fingerprint) return info.fingerprint;
  return writeRecipients(repository) === null && info.seed ? chunkerFingerprint(info.chunkSizes, Buffer.from(info.seed, 'hex'), undefined) : undefined;
}
