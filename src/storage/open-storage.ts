import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import { PosixStorage } from './posix-storage.js';
import { S3Storage, type S3StorageOptions } from './s3-storage.js';
import type { Storage } from './storage.js';

export type { S3StorageOptions } from './s3-storage.js';

/** Options of local (posix) repositories. */
export interface PosixStorageOptions {
  /** A relative path is relative to this folder (default: as given, i.e. the process's working folder). */
  baseDir?: string;
}

/** Driver options, by driver; each driver reads only its own section. */
export interface OpenStorageOptions {
  posix?: PosixStorageOptions;
  s3?: S3StorageOptions;
}

/** One storage driver: the URL schemes it serves and how it opens a repository location. */
interface StorageDriver {
  /** Its name, also the key of its section in OpenStorageOptions and in the config's `storage:`. */
  name: keyof OpenStorageOptions;
  /** Lower-case schemes; '' is a plain path (no scheme). */
  schemes: readonly string[];
  open(url: string, options: OpenStorageOptions): Storage;
}

/**
 * The one registry of storage drivers, used by every command and by the lean
 * WAL path (src/cli/wal-cli.ts). Cheap to load: the S3 driver loads the AWS
 * SDK only on its first request.
 */
const DRIVERS: readonly StorageDriver[] = [
  {
    name: 'posix',
    schemes: ['', 'file'],
    open: (url, options) => {
      const folder = url.replace(/^file:\/\//i, '');
      return new PosixStorage(options.posix?.baseDir === undefined ? folder : path.resolve(options.posix.baseDir, folder));
    },
  },
  { name: 's3', schemes: ['s3'], open: (url, options) => new S3Storage(url, options.s3) },
];

/** The scheme of a repository URL, lower-case; '' for a plain path. */
export function urlScheme(url: string): string {
  return /^([a-z][a-z0-9+.-]*):\/\//i.exec(url)?.[1]?.toLowerCase() ?? '';
}

/** Which driver serves a repository URL: a path, file://, or s3://bucket/prefix. */
export function storageDriverName(url: string): StorageDriver['name'] {
  return driverFor(url).name;
}

function driverFor(url: string): StorageDriver {
  const scheme = urlScheme(url);
  const driver = DRIVERS.find((d) => d.schemes.includes(scheme));
  // The URL may hold credentials (scheme://user:secret@host): name the scheme only.
  if (!driver) throw new PgkeepError('CONFIG_INVALID', `unsupported repository URL scheme "${scheme}://": use a local path or s3://bucket/prefix`);
  return driver;
}

/** Opens the storage of a repository URL with the driver that serves its scheme. */
export function openStorage(url: string, options: OpenStorageOptions = {}): Storage {
  return driverFor(url).open(url, options);
}
