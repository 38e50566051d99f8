import { PgkeepError } from '../errors.js';
import { PosixStorage } from './posix-storage.js';
import type { Storage } from './storage.js';

/** Picks the storage driver for a repository URL (a path, file://, or later s3://). */
export function openStorage(url: string): Storage {
  const scheme = /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase();
  if (scheme === undefined || scheme === 'file') return new PosixStorage(url.replace(/^file:\/\//, ''));
  throw new PgkeepError('CONFIG_INVALID', `unsupported repository URL scheme "${scheme}://" in ${url}: use a local path`);
}
