import { PgkeepError } from '../errors.js';
import { PosixStorage } from './posix-storage.js';
import { S3Storage, type S3StorageOptions } from './s3-storage.js';
import type { Storage } from './storage.js';

export type { S3StorageOptions } from './s3-storage.js';

/** Driver options, by driver; each driver reads only its own. */
export interface OpenStorageOptions {
  s3?: S3StorageOptions;
}

/** Picks the storage driver for a repository URL: a path, file://, or s3://bucket/prefix. */
export function openStorage(url: string, options: OpenStorageOptions = {}): Storage {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined || scheme === 'file') return new PosixStorage(url.replace(/^file:\/\//, ''));
  if (scheme === 's3') return new S3Storage(url, options.s3);
  // The URL may hold credentials (scheme://user:secret@host): name the scheme only.
  throw new PgkeepError('CONFIG_INVALID', `unsupported repository URL scheme "${scheme}://": use a local path or s3://bucket/prefix`);
}
