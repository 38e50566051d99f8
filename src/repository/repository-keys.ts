import { readFile } from 'node:fs/promises';
import { Readable } from 'node:stream';
import type { KeySettings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import {
  decryptStream,
  encryptStream,
  formatIdentityFile,
  generateIdentity,
  parseIdentityFile,
  publicKeyOf,
  validateRecipient,
  type AgeIdentity,
} from '../pipeline/age.js';
import type { EncryptionInfo, RepoInfo, Repository } from './repository.js';
import { storageOf } from './repository-storage.js';
import { collectStream, readObject, type Storage } from '../storage/storage.js';
import type { Manifest } from './manifest.js';
import { deriveManifestKey, type ManifestKey } from './manifest-integrity.js';

/**
 * Where a passphrase repository keeps its identity, encrypted with the
 * passphrase (age scrypt). Objects are encrypted to that identity's public key,
 * so backups need no secret and each object costs no scrypt; restoring pays one.
 * By hand: `age -d keys/identity.age > key.txt` (asks the passphrase), then `age -d -i key.txt`.
 */
export const WRAPPED_IDENTITY = 'keys/identity.age';

/**
 * Sets up encryption for a new repository: validates the recipients, or for a
 * passphrase creates and stores the wrapped identity. Returns what pgkeep.json records.
 */
export async function createEncryption(storage: Storage, request: { recipients: string[]; passphrase: string | undefined }): Promise<EncryptionInfo> {
  if (request.passphrase !== undefined && request.recipients.length > 0) {
    throw new PgkeepError('USAGE', 'choose either --recipient keys or a passphrase for an encrypted repository, not both (age allows a passphrase only alone)');
  }
  if (request.passphrase !== undefined) {
    if (request.passphrase.length < 8) throw new PgkeepError('USAGE', 'the passphrase is too short: use at least 8 characters');
    const keys = generateIdentity();
    const wrapped = await collectStream(Readable.from([Buffer.from(formatIdentityFile(keys))]).pipe(encryptStream([{ kind: 'passphrase', passphrase: request.passphrase }])));
    if (!(await storage.putIfAbsent(WRAPPED_IDENTITY, wrapped))) {
      throw new PgkeepError('REPO_EXISTS', `${storage.location} already holds ${WRAPPED_IDENTITY}: choose an empty location`);
    }
    return { method: 'age', recipients: [keys.publicKey], passphrase: true };
  }
  if (request.recipients.length === 0) {
    throw new PgkeepError('USAGE', '--encrypt needs --recipient age1… (make a key with pgkeep keygen) or --passphrase-file FILE');
  }
  const recipients = request.recipients.map((text) => {
    const recipient = validateRecipient(text);
    if (recipient.kind !== 'x25519') throw new PgkeepError('USAGE', `--recipient takes age1… public keys; use --passphrase-file for a passphrase`);
    return recipient.publicKey;
  });
  return { method: 'age', recipients: [...new Set(recipients)], passphrase: false };
}

/** True when any object of the backup is encrypted. */
export function isEncrypted(manifest: Manifest): boolean {
  return manifest.objects.some((o) => o.encryption !== null);
}

/** The identities a backup needs (none for an unencrypted one); fails early when they are missing or wrong. */
export async function identitiesFor(repository: Repository, manifest: Manifest, keys: KeySettings): Promise<AgeIdentity[]> {
  return isEncrypted(manifest) ? readIdentities(repository, keys) : [];
}

/**
 * A repository's keys where no Repository is opened (the lean WAL path):
 * its info, its location for messages, and the storage that holds a
 * passphrase repository's wrapped identity.
 */
export interface KeySource {
  info: Pick<RepoInfo, 'encryption'>;
  location: string;
  storage: Storage;
}

/**
 * The identities that decrypt this repository's objects, from an identity file
 * and/or the repository passphrase. Fails with a clear message, before any
 * database is touched, when there is none or it does not fit the repository.
 */
export async function readIdentities(repository: Pick<Repository, 'info' | 'location'> | KeySource, keys: KeySettings): Promise<AgeIdentity[]> {
  const encryption = repository.info.encryption;
  if (!encryption) return [];
  const identities: AgeIdentity[] = [];
  if (keys.identityFile) {
    let text: string;
    try {
      text = await readFile(keys.identityFile, 'utf8');
    } catch (error) {
      throw new PgkeepError('CONFIG_INVALID', `cannot read the identity file ${keys.identityFile} (${(error as NodeJS.ErrnoException).code ?? 'error'}): check --identity or PGKEEP_AGE_IDENTITY_FILE`, { cause: error });
    }
    identities.push(...parseIdentityFile(text, keys.identityFile));
  }
  const passphrase = encryption.passphrase ? keys.passphrase() : undefined;
  if (passphrase !== undefined) identities.push(...(await unwrapIdentity(storageOf(repository) ?? (repository as KeySource).storage, passphrase)));
  if (identities.length === 0) {
    throw new PgkeepError(
      'CONFIG_INVALID',
      encryption.passphrase
        ? `the repository at ${repository.location} is encrypted with a passphrase: set PGKEEP_PASSPHRASE or PGKEEP_PASSPHRASE_FILE (or pass --identity FILE)`
        : `the repository at ${repository.location} is encrypted: pass --identity FILE or set PGKEEP_AGE_IDENTITY_FILE to a key of ${describeRecipients(encryption)}`,
    );
  }
  const fits = identities.some((identity) => identity.kind === 'x25519' && encryption.recipients.includes(publicKeyOfIdentity(identity)));
  if (!fits) {
    throw new PgkeepError('CONFIG_INVALID', `none of the given identities can decrypt the repository at ${repository.location}: it is encrypted to ${describeRecipients(encryption)}`);
  }
  return identities;
}

async function unwrapIdentity(storage: Storage, passphrase: string): Promise<AgeIdentity[]> {
  const wrapped = await readObject(storage, WRAPPED_IDENTITY);
  try {
    const text = await collectStream(Readable.from([wrapped]).pipe(decryptStream([{ kind: 'passphrase', passphrase }], { what: WRAPPED_IDENTITY })));
    return parseIdentityFile(text.toString('utf8'), WRAPPED_IDENTITY);
  } catch (error) {
    if (error instanceof PgkeepError && (error.details as { age?: string } | undefined)?.age === 'no-identity') {
      throw new PgkeepError('CONFIG_INVALID', 'the passphrase does not open this repository: check PGKEEP_PASSPHRASE or PGKEEP_PASSPHRASE_FILE', { cause: error });
    }
    throw error;
  }
}

function describeRecipients(encryption: EncryptionInfo): string {
  return encryption.recipients.map((r) => `${r.slice(0, 12)}…${r.slice(-6)}`).join(', ');
}

function publicKeyOfIdentity(identity: AgeIdentity): string {
  return identity.kind === 'x25519' ? publicKeyOf(identity.secretKey) : '';
}

/**
 * The keys that authenticate manifests of this repository (manifest-integrity.ts):
 * one per given identity that is a recipient of the repository. None for an
 * unencrypted repository.
 */
export function manifestKeysOf(repository: Pick<Repository, 'info'>, identities: readonly AgeIdentity[]): ManifestKey[] {
  const recipients = repository.info.encryption?.recipients ?? [];
  const keys: ManifestKey[] = [];
  for (const identity of identities) {
    if (identity.kind !== 'x25519') continue;
    const publicKey = publicKeyOfIdentity(identity);
    if (recipients.includes(publicKey) && !keys.some((k) => k.id === publicKey)) keys.push(deriveManifestKey(identity.secretKey, publicKey));
  }
  return keys;
}

/**
 * The keys a writer (backup) authenticates its manifests with: from the
 * identity file or the repository passphrase when either is configured; none
 * when the writer holds only the public keys (its manifests then carry a
 * checksum only, and readers say so).
 */
export async function writerManifestKeys(repository: Pick<Repository, 'info' | 'location'>, keys: KeySettings): Promise<ManifestKey[]> {
  const encryption = repository.info.encryption;
  if (!encryption) return [];
  if (!keys.identityFile && !(encryption.passphrase && keys.passphrase() !== undefined)) return [];
  return manifestKeysOf(repository, await readIdentities(repository, keys));
}

/** A writer whose configured identity cannot be read still writes its manifest, with a checksum only, and says why. */
export function noManifestKeys(ctx: { warn(message: string): void }, repository: Pick<Repository, 'location'>, error: unknown): ManifestKey[] {
  ctx.warn(`the manifest in ${repository.location} is written with a checksum only, not authenticated: ${(error as Error).message}`);
  return [];
}
