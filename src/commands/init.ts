import { repositoryUrl, selectedSourceName, storageOptions, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { Repository, type EncryptionInfo } from '../repository/repository.js';
import { openStorage } from '../storage/open-storage.js';
import { validateRecipient } from '../pipeline/age.js';
import { createEncryption } from './repository-keys.js';

export interface InitRequest {
  /** Encrypt every object: to `recipients` (age1… public keys), or with `passphrase`. */
  encrypt?: boolean | undefined;
  recipients?: string[] | undefined;
  passphrase?: string | undefined;
}

export interface InitResult {
  location: string;
  created: boolean;
  id: string;
  encryption: EncryptionInfo | null;
}

/**
 * Creates a repository; on an existing pgkeep repository it changes nothing
 * (safe to run twice), but refuses to pretend an unencrypted one is encrypted.
 */
export async function runInit(settings: Settings, request: InitRequest = {}): Promise<InitResult> {
  const source = safeSourceName(settings);
  const storage = openStorage(repositoryUrl(settings, source), storageOptions(settings, repositoryUrl(settings, source)));
  const wantsEncryption = Boolean(request.encrypt || request.recipients?.length || request.passphrase !== undefined);
  for (const recipient of request.recipients ?? []) validateRecipient(recipient); // bad input fails before anything else

  const existing = await Repository.open(storage).catch((error: unknown) => {
    if (error instanceof PgkeepError && error.code === 'REPO_MISSING') return undefined;
    throw error;
  });
  if (existing) {
    if (wantsEncryption && !existing.info.encryption) {
      throw new PgkeepError('REPO_EXISTS', `${existing.location} is already an unencrypted pgkeep repository: encryption is chosen when a repository is created; use a new location`);
    }
    if (existing.info.encryption) assertSameEncryption(existing.location, existing.info.encryption, request);
    return { location: existing.location, created: false, id: existing.info.id, encryption: existing.info.encryption };
  }

  const encryption = wantsEncryption ? await createEncryption(storage, { recipients: request.recipients ?? [], passphrase: request.passphrase }) : null;
  const repository = await Repository.init(storage, encryption);
  return { location: repository.location, created: true, id: repository.info.id, encryption };
}

/**
 * init over an encrypted repository asking for other keys than it has is an
 * error, not "nothing changed": someone holding only the key they asked for
 * would believe they can decrypt it. Recipients cannot be added to an existing
 * repository (its objects are already encrypted to the ones it has).
 */
function assertSameEncryption(location: string, has: EncryptionInfo, request: InitRequest): void {
  const how = has.passphrase ? 'a passphrase' : `the recipient(s) ${has.recipients.join(', ')}`;
  const fix =
    'pgkeep cannot add a recipient or change the key of an existing repository (its objects are already encrypted): ' +
    'use a key it has, or create a new repository with the recipients you want (pgkeep init --encrypt --recipient … at another location) and back up to it';
  const asked = request.recipients ?? [];
  if (request.passphrase !== undefined && asked.length === 0 && !has.passphrase) {
    throw new PgkeepError('REPO_EXISTS', `${location} is already a pgkeep repository encrypted to ${how}, not with a passphrase: ${fix}`);
  }
  const missing = asked.filter((r) => !has.recipients.includes(r));
  if (missing.length > 0) {
    throw new PgkeepError('REPO_EXISTS', `${location} is already a pgkeep repository encrypted to ${how}, not to ${missing.join(', ')}: ${fix}`);
  }
}

function safeSourceName(settings: Settings): string | undefined {
  try {
    return selectedSourceName(settings);
  } catch {
    return undefined;
  }
}
