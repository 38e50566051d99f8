import { PgkeepError } from '../errors.js';
import { readObject, type Storage } from '../storage/storage.js';

/**
 * A repository's storage as the lean WAL commands hold it (they skip
 * Repository.open and its zod schemas for start-up time): opaque to them,
 * handed to readRepoInfo and WalArchive only.
 */
export type RepositoryStorage = Storage;
import type { AgeRecipient } from '../pipeline/age.js';
import type { RepoInfo } from './repository.js';

/** The newest repository format this pgkeep reads (pgkeep.json's `format`). */
export const REPO_FORMAT = 2;
/** What a repository without a content store is written as: older pgkeep reads it too. */
export const PLAIN_REPO_FORMAT = 1;
/** A deduplicating repository (docs/content-store.md): older pgkeep must refuse it. */
export const DEDUP_REPO_FORMAT = 2;

/**
 * Reads pgkeep.json without the schema library: the WAL commands run once per
 * WAL segment from archive_command, where loading zod would cost more than
 * the work itself. Checks the same things Repository.open does, by hand.
 * Unlike Repository.open it never initialises: archiving into a repository
 * nobody created is a configuration mistake worth reporting.
 */
export async function readRepoInfo(storage: Storage): Promise<RepoInfo> {
  const supportedFormat = REPO_FORMAT;
  let text: Buffer;
  try {
    text = await readObject(storage, 'pgkeep.json');
  } catch (error) {
    if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') {
      throw new PgkeepError('REPO_MISSING', `no pgkeep repository at ${storage.location}: run "pgkeep init --repo ${storage.location}" first, or check --repo`, { cause: error });
    }
    throw error;
  }
  let info: RepoInfo;
  try {
    info = JSON.parse(text.toString('utf8')) as RepoInfo;
  } catch (error) {
    throw new PgkeepError('REPO_NOT_PGKEEP', `${storage.location}/pgkeep.json is not a valid pgkeep repository info file`, { cause: error });
  }
  const encryption = info?.encryption;
  const validEncryption =
    encryption === null ||
    (typeof encryption === 'object' && encryption.method === 'age' && Array.isArray(encryption.recipients) && encryption.recipients.every((r) => typeof r === 'string' && r.startsWith('age1')));
  if (typeof info?.format !== 'number' || typeof info.id !== 'string' || !validEncryption) {
    throw new PgkeepError('REPO_NOT_PGKEEP', `${storage.location}/pgkeep.json is not a valid pgkeep repository info file`);
  }
  if (info.format > supportedFormat) {
    throw new PgkeepError('REPO_FORMAT', `the repository at ${storage.location} has format ${info.format}, written by pgkeep ${info.pgkeepVersion}; this pgkeep reads format ${supportedFormat}: upgrade pgkeep`);
  }
  return info;
}

/** What new objects of this repository are encrypted to; null for an unencrypted repository. */
export function writeRecipients(repository: { info: RepoInfo }): AgeRecipient[] | null {
  const encryption = repository.info.encryption;
  if (!encryption) return null;
  return encryption.recipients.map((publicKey) => ({ kind: 'x25519', publicKey }));
}

/**
 * The encryption record of an object stored for these recipients (manifests'
 * objects, WAL records): age and the public keys, or null when stored in clear.
 */
export function encryptionRecord(recipients: readonly AgeRecipient[] | null): { method: 'age'; recipients: string[] } | null {
  return recipients ? { method: 'age', recipients: recipients.map((r) => (r.kind === 'x25519' ? r.publicKey : 'passphrase')) } : null;
}

/** The suffix of an object stored with zstd and, for an encrypted repository, age. */
export function storedSuffix(recipients: readonly AgeRecipient[] | null): string {
  return recipients ? '.zst.age' : '.zst';
}
