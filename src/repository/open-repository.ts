import { repositoryUrl, repositoryUrls, storageOptions, type Settings } from '../config/settings.js';
import type { Manifest } from './manifest.js';
import { Repository } from './repository.js';
import { storageOf } from './repository-storage.js';
import { openStorage } from '../storage/open-storage.js';
import { readObject, type Storage } from '../storage/storage.js';
import { createEncryption, WRAPPED_IDENTITY } from './repository-keys.js';
import { createContentInfo, type ChunkerParams } from './content-store/content-keys.js';
import type { EncryptionInfo } from './repository.js';
import { PgkeepError } from '../errors.js';
import { removeUnfinishedInit } from './unfinished-init.js';

/**
 * A repository location before it is opened (init, copy's destination): what
 * a command may ask of a place that may not hold a repository yet, without
 * reaching its storage.
 */
export class RepositoryLocation {
  constructor(private readonly storage: Storage) {}

  get location(): string {
    return this.storage.location;
  }

  open(options: { createIfEmpty?: boolean } = {}): Promise<Repository> {
    return Repository.open(this.storage, options);
  }

  /**
   * The repository here, or undefined where a command that creates one may
   * create it: an empty location, or one left with only the keys of an init
   * that did not finish, which this removes once they are old enough
   * (unfinished-init.ts; younger ones are refused as a possible init in progress).
   */
  async openToCreate(now: Date = new Date()): Promise<Repository | undefined> {
    try {
      return await Repository.open(this.storage);
    } catch (error) {
      if (!(error instanceof PgkeepError)) throw error;
      if (error.code === 'REPO_MISSING') return undefined;
      if (error.code === 'REPO_INIT_UNFINISHED' && (await removeUnfinishedInit(this.storage, now))) return undefined;
      throw error;
    }
  }

  /**
   * Creates the repository with the given encryption (already set up, e.g.
   * copied from another repository): without deduplication, or with
   * `chunkerFrom` deduplicating with that repository's chunking parameters
   * (and content key, sealed to these recipients) before pgkeep.json names them.
   */
  async init(encryption: EncryptionInfo | null, chunkerFrom?: ChunkerParams): Promise<Repository> {
    const recipients = encryption ? encryption.recipients.map((publicKey) => ({ kind: 'x25519' as const, publicKey })) : null;
    const content = chunkerFrom ? await createContentInfo(this.storage, recipients, chunkerFrom) : undefined;
    return Repository.init(this.storage, encryption, content);
  }

  /** Creates the repository, setting up encryption to these recipients or this passphrase (which stores the wrapped identity first). */
  async create(encryption: { recipients: string[]; passphrase: string | undefined } | null, options: { dedup?: boolean; chunkerFrom?: ChunkerParams | undefined } = {}): Promise<{ repository: Repository; encryption: EncryptionInfo | null }> {
    const info = encryption ? await createEncryption(this.storage, encryption) : null;
    // a deduplicating repository: its content store's settings (and, encrypted, its content key) before pgkeep.json names them
    const content = options.dedup ? await createContentInfo(this.storage, info ? info.recipients.map((publicKey) => ({ kind: 'x25519' as const, publicKey })) : null, options.chunkerFrom) : undefined;
    return { repository: await Repository.init(this.storage, info, content), encryption: info };
  }

  /** Gives this (passphrase) repository the same wrapped identity as `from`, unless it has one: its objects are encrypted to that key. */
  async adoptWrappedIdentity(from: Repository): Promise<void> {
    if (await this.storage.stat(WRAPPED_IDENTITY)) return;
    await this.storage.putIfAbsent(WRAPPED_IDENTITY, await readObject(storageOf(from)!, WRAPPED_IDENTITY));
  }
}

/** The repository location at `url`, with the settings' driver options for it. */
export function repositoryAt(settings: Settings, url: string): RepositoryLocation {
  return new RepositoryLocation(openStorage(url, storageOptions(settings, url)));
}

/** Opens the repository the settings point at (for `source`, when given). */
export async function openRepository(settings: Settings, options: { source?: string | undefined; createIfEmpty?: boolean } = {}): Promise<Repository> {
  const url = repositoryUrl(settings, options.source);
  return Repository.open(openStorage(url, storageOptions(settings, url)), { createIfEmpty: options.createIfEmpty ?? false });
}

/** Opens every repository of a source, in config order (one unless the config lists `repos`). */
export async function openRepositories(settings: Settings, options: { source?: string | undefined; createIfEmpty?: boolean } = {}): Promise<Repository[]> {
  const repositories: Repository[] = [];
  for (const url of repositoryUrls(settings, options.source)) {
    repositories.push(await Repository.open(openStorage(url, storageOptions(settings, url)), { createIfEmpty: options.createIfEmpty ?? false }));
  }
  return repositories;
}

/** Opens each repository of a source, keeping what failed instead of throwing (for reading commands). */
export async function openRepositoriesSettled(
  settings: Settings,
  options: { source?: string | undefined } = {},
): Promise<{ url: string; repository?: Repository; error?: unknown }[]> {
  const opened: { url: string; repository?: Repository; error?: unknown }[] = [];
  for (const url of repositoryUrls(settings, options.source)) {
    try {
      opened.push({ url, repository: await Repository.open(openStorage(url, storageOptions(settings, url))) });
    } catch (error) {
      opened.push({ url, error });
    }
  }
  return opened;
}

/**
 * Short names of repositories for tables: "local" or "s3", numbered when a
 * kind repeats (local1, local2).
 */
export function repositoryLabels(urls: readonly string[]): string[] {
  const kinds = urls.map((url) => /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase().replace(/^file$/, 'local') ?? 'local');
  const seen = new Map<string, number>();
  return kinds.map((kind) => {
    if (kinds.filter((k) => k === kind).length === 1) return kind;
    const n = (seen.get(kind) ?? 0) + 1;
    seen.set(kind, n);
    return `${kind}${n}`;
  });
}

/**
 * The repositories of a source that hold backup `ref`, in config order, with
 * its manifest there. "latest" is the newest backup in any of them. Throws
 * the first repository's error when none holds it.
 */
export async function repositoriesWithBackup(
  settings: Settings,
  ref: string,
  source: string | undefined,
  kind?: Manifest['kind'],
  onSkipped?: (message: string) => void,
): Promise<{ repository: Repository; manifest: Manifest }[]> {
  return (await repositoriesWithBackupSettled(settings, ref, source, kind, onSkipped)).found;
}

/** repositoriesWithBackup, also saying why each other repository was left out (not there, or could not be read). */
export async function repositoriesWithBackupSettled(
  settings: Settings,
  ref: string,
  source: string | undefined,
  kind?: Manifest['kind'],
  onSkipped?: (message: string) => void,
): Promise<{ found: { repository: Repository; manifest: Manifest }[]; failed: { url: string; error: unknown }[] }> {
  const found: { repository: Repository; manifest: Manifest }[] = [];
  const failed: { url: string; error: unknown }[] = [];
  for (const opened of await openRepositoriesSettled(settings, { source })) {
    if (!opened.repository) {
      failed.push({ url: opened.url, error: opened.error });
      continue;
    }
    try {
      found.push({ repository: opened.repository, manifest: await opened.repository.resolveBackup(ref, source, kind, onSkipped && ((message) => onSkipped(`${message} (in ${opened.repository!.location})`))) });
    } catch (error) {
      failed.push({ url: opened.url, error });
    }
  }
  if (found.length === 0) throw failed[0]?.error;
  const newest = found.map((f) => f.manifest).reduce((a, b) => (b.startedAt > a.startedAt || (b.startedAt === a.startedAt && b.id > a.id) ? b : a));
  return { found: found.filter((f) => f.manifest.id === newest.id && f.manifest.source === newest.source), failed };
}
