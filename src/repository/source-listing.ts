import { isBackupId } from './backup-id.js';
import { BackupFailureSchema, type BackupFailure } from './backup-failures.js';
import { PinSchema, type Pin } from './pins.js';
import type { Repository } from './repository.js';
import { storageOf } from './repository-storage.js';
import { VerificationSchema, type Verification } from './verification.js';
import { joinKey, readObject } from '../storage/storage.js';

/**
 * What one listing of a source's folder says is there, each record by its key
 * with a stamp (size and modification time) that changes when the record is
 * written again. A reader that keeps what it read (serve's catalog) compares
 * two listings and reads only the records that are new or changed: one
 * listing per source instead of one read per backup.
 */
export interface SourceListing {
  /** Complete backups (those with a manifest): backup id → stamp of its manifest. */
  manifests: Map<string, string>;
  /** Verification records: key → backup id. Records are written once, never changed. */
  verifications: Map<string, string>;
  /** Pins: backup id → stamp. */
  pins: Map<string, string>;
  /** Failure records: key → stamp. */
  failures: Map<string, string>;
  /** Newest modification in the WAL archive; undefined when it holds nothing. */
  lastWalAt: Date | undefined;
}

const MANIFEST = 'manifest.json';

/** One recursive listing of sources/<source>/, sorted into the records a catalog keeps. */
export async function listSource(repository: Repository, source: string): Promise<SourceListing> {
  const listing: SourceListing = { manifests: new Map(), verifications: new Map(), pins: new Map(), failures: new Map(), lastWalAt: undefined };
  const prefix = joinKey('sources', source);
  let lastWal: number | undefined;
  for await (const entry of storageOf(repository)!.list(prefix, { recursive: true })) {
    if (entry.kind !== 'object') continue;
    const parts = entry.path.slice(prefix.length + 1).split('/');
    const stamp = `${entry.size}:${entry.modified.getTime()}`;
    const [area, first, second] = parts;
    if (area === 'backups' && parts.length === 3 && second === MANIFEST && isBackupId(first!)) listing.manifests.set(first!, stamp);
    else if (area === 'verifications' && parts.length === 3 && isBackupId(first!) && second!.endsWith('.json')) listing.verifications.set(entry.path, first!);
    else if (area === 'pins' && parts.length === 2 && first!.endsWith('.json') && isBackupId(first!.slice(0, -'.json'.length))) listing.pins.set(first!.slice(0, -'.json'.length), stamp);
    else if (area === 'failures' && parts.length === 2 && first!.endsWith('.json')) listing.failures.set(entry.path, stamp);
    else if (area === 'wal') lastWal = Math.max(lastWal ?? 0, entry.modified.getTime());
  }
  listing.lastWalAt = lastWal === undefined ? undefined : new Date(lastWal);
  return listing;
}

/** A record a listing named, parsed; undefined when it is gone or cannot be trusted (as listVerifications skips it). */
async function readRecord<T>(repository: Repository, key: string, parse: (raw: unknown) => T): Promise<T | undefined> {
  try {
    return parse(JSON.parse((await readObject(storageOf(repository)!, key)).toString('utf8')));
  } catch {
    return undefined;
  }
}

export function readVerificationRecord(repository: Repository, key: string): Promise<Verification | undefined> {
  return readRecord(repository, key, (raw) => VerificationSchema.parse(raw));
}

/** A pin that cannot be parsed still counts (null): when in doubt, a backup is kept. Undefined: unpinned meanwhile. */
export async function readPinRecord(repository: Repository, source: string, id: string): Promise<Pin | null | undefined> {
  const key = joinKey('sources', source, 'pins', `${id}.json`);
  try {
    return PinSchema.parse(JSON.parse((await readObject(storageOf(repository)!, key)).toString('utf8')));
  } catch (error) {
    return (error as { code?: string }).code === 'STORAGE_NOT_FOUND' ? undefined : null;
  }
}

export async function readFailureRecord(repository: Repository, key: string): Promise<(BackupFailure & { key: string }) | undefined> {
  const record = await readRecord(repository, key, (raw) => BackupFailureSchema.parse(raw));
  return record && { ...record, key };
}
