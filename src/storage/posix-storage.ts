import { randomBytes } from 'node:crypto';
import { constants, createWriteStream } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PgkeepError, abortError } from '../errors.js';
import { makeFolders } from '../local/make-folders.js';
import { writeAll } from '../local/write-all.js';
import type { ByteRange, PutOptions, PutResult, Storage, StorageEntry, StorageStat } from './storage.js';

const FOLDER_MODE = 0o700;
const FILE_MODE = 0o600;
/** Temp files carry this prefix so listings and leftover clean-up can tell them apart. */
export const TEMP_PREFIX = '.pgkeep-tmp-';

/**
 * Storage on a local (or mounted) filesystem. Writes go to a temp file in the
 * target folder, are fsynced, renamed into place, and the folder is fsynced, so
 * a crash at any moment leaves either the old state or the complete new file.
 */
export class PosixStorage implements Storage {
  readonly capabilities = { posixModes: true, conditionalCreate: true, remote: false } as const;
  readonly location: string;

  constructor(private readonly root: string) {
    this.location = root;
  }

  private resolve(key: string): string {
    const full = path.resolve(this.root, key);
    const rel = path.relative(this.root, full);
    if (rel.startsWith('..') || path.isAbsolute(rel)) {
      throw new PgkeepError('INTERNAL', `storage key escapes the repository: ${key}`);
    }
    return full;
  }

  private async ensureFolder(folder: string): Promise<void> {
    try {
      await makeFolders(folder, FOLDER_MODE);
    } catch (error) {
      // ENOENT here is not "missing": the filesystem (e.g. /proc) refuses new folders.
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') {
        const where = (error as NodeJS.ErrnoException).path ?? folder;
        throw new PgkeepError('STORAGE_ACCESS', `cannot create the folder ${where}: the filesystem refuses it (ENOENT); choose another --repo`, { cause: error });
      }
      throw storageError(error, folder);
    }
  }

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    // The body may fail while the folder and temp file are still being made
    // (before the pipeline listens): keep its own error, it is the cause to report.
    let bodyError: unknown;
    const onBodyError = (error: unknown) => void (bodyError ??= error);
    body.on('error', onBodyError);
    const target = this.resolve(key);
    const folder = path.dirname(target);
    let handle: fs.FileHandle;
    let temp: string;
    try {
      await this.ensureFolder(folder);
      temp = path.join(folder, `${TEMP_PREFIX}${path.basename(target)}.${randomBytes(6).toString('hex')}`);
      handle = await fs.open(temp, 'wx', FILE_MODE).catch((error) => {
        throw storageError(error, temp);
      });
    } catch (error) {
      body.off('error', onBodyError);
      body.destroy();
      throw bodyError ?? error;
    }
    try {
      const out = createWriteStream('', { fd: handle.fd, autoClose: false, highWaterMark: 1 << 20 });
      // from here the pipeline reports the body's errors, and destroys it with the file's (ENOSPC)
      body.off('error', onBodyError);
      await pipeline(body, out, { signal: options.signal });
      const size = out.bytesWritten;
      await handle.sync();
      await handle.close();
      await fs.rename(temp, target);
      await syncFolder(folder);
      return { size };
    } catch (error) {
      await handle.close().catch(() => undefined);
      await fs.rm(temp, { force: true }).catch(() => undefined);
      if (options.signal?.aborted) throw abortError(options.signal);
      if (bodyError !== undefined) throw bodyError;
      throw isFsError(error) ? storageError(error, target) : error;
    } finally {
      body.off('error', onBodyError);
    }
  }

  async putIfAbsent(key: string, data: Buffer): Promise<boolean> {
    const target = this.resolve(key);
    await this.ensureFolder(path.dirname(target));
    // Write the content under a temp name first, then link() it into place:
    // link fails with EEXIST if anything is there, and readers never see a half-written file.
    const temp = `${path.join(path.dirname(target), TEMP_PREFIX)}${path.basename(target)}.${randomBytes(6).toString('hex')}`;
    try {
      // Written and synced through one handle (fs.writeFile would open the file again to sync it).
      const handle = await fs.open(temp, 'wx', FILE_MODE);
      try {
        await writeAll(handle, data);
        await handle.sync();
      } finally {
        await handle.close();
      }
      try {
        await fs.link(temp, target);
      } catch (error) {
        if ((error as NodeJS.ErrnoException).code === 'EEXIST') return false;
        throw error;
      }
      await syncFolder(path.dirname(target));
      return true;
    } catch (error) {
      throw storageError(error, target);
    } finally {
      await fs.rm(temp, { force: true }).catch(() => undefined);
    }
  }

  async get(key: string, range?: ByteRange): Promise<Readable> {
    const target = this.resolve(key);
    const handle = await fs.open(target, constants.O_RDONLY).catch((error) => {
      throw storageError(error, target);
    });
    try {
      const stats = await handle.stat();
      // A folder is not an object (as on S3, where it would be "no such key").
      if (!stats.isFile()) throw new PgkeepError('STORAGE_NOT_FOUND', `not found: ${target}`);
      // Read no further than the object's size when opened: fs.ReadStream allocates its whole highWaterMark
      // (1 MiB) for each read unless `end` bounds it, so a manifest of 300 bytes cost 1 MiB twice (its bytes,
      // then the read that finds the end), and a command reading many small objects (manifests, index files,
      // keys, locks) made the GC run for memory it never used. An object is written whole (put renames a
      // finished temporary file over it), so its size at open is its size.
      const start = range?.start ?? 0;
      const end = Math.min(range?.end ?? Infinity, stats.size);
      if (end <= start) {
        await handle.close();
        return Readable.from([]);
      }
      // The stream owns the handle from here and closes it once (a second close by GC would crash).
      return handle.createReadStream({ highWaterMark: 1 << 20, start, end: end - 1 });
    } catch (error) {
      await handle.close().catch(() => undefined);
      throw storageError(error, target);
    }
  }

  async readInto(key: string, start: number, into: Buffer): Promise<number> {
    const target = this.resolve(key);
    const handle = await fs.open(target, constants.O_RDONLY).catch((error) => {
      throw storageError(error, target);
    });
    try {
      if (!(await handle.stat()).isFile()) throw new PgkeepError('STORAGE_NOT_FOUND', `not found: ${target}`);
      let got = 0;
      while (got < into.length) {
        const { bytesRead } = await handle.read(into, got, into.length - got, start + got);
        if (bytesRead === 0) break;
        got += bytesRead;
      }
      return got;
    } catch (error) {
      throw storageError(error, target);
    } finally {
      await handle.close().catch(() => undefined);
    }
  }

  async stat(key: string): Promise<StorageStat | undefined> {
    try {
      const st = await fs.stat(this.resolve(key));
      if (!st.isFile()) return undefined;
      return { size: st.size, modified: st.mtime };
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw storageError(error, key);
    }
  }

  async *list(prefix: string, options: { recursive?: boolean } = {}): AsyncIterable<StorageEntry> {
    const folder = this.resolve(prefix);
    let entries;
    try {
      entries = await fs.readdir(folder, { withFileTypes: true });
    } catch (error) {
      const code = (error as NodeJS.ErrnoException).code;
      if (code === 'ENOENT' || code === 'ENOTDIR') return;
      throw storageError(error, folder);
    }
    // Order by full key, as object stores list: a folder "b" sorts as "b/", after "b-x" and "b.txt".
    const sortKey = (e: { name: string; isDirectory(): boolean }) => (options.recursive && e.isDirectory() ? `${e.name}/` : e.name);
    entries.sort((a, b) => (sortKey(a) < sortKey(b) ? -1 : sortKey(a) > sortKey(b) ? 1 : 0));
    for (const entry of entries) {
      const key = prefix === '' ? entry.name : `${prefix.replace(/\/$/, '')}/${entry.name}`;
      if (entry.isDirectory()) {
        if (options.recursive) yield* this.list(key, options);
        else yield { kind: 'folder', path: key };
      } else if (entry.isFile()) {
        if (entry.name.startsWith(TEMP_PREFIX)) continue;
        const st = await fs.stat(path.join(folder, entry.name)).catch(() => undefined);
        if (st) yield { kind: 'object', path: key, size: st.size, modified: st.mtime };
      }
    }
  }

  async remove(key: string): Promise<void> {
    await fs.rm(this.resolve(key), { force: true }).catch((error) => {
      throw storageError(error, key);
    });
  }

  async removeFolder(prefix: string): Promise<void> {
    const folder = this.resolve(prefix);
    if (folder === path.resolve(this.root)) throw new PgkeepError('INTERNAL', 'refusing to remove the repository root');
    await fs.rm(folder, { recursive: true, force: true }).catch((error) => {
      throw storageError(error, folder);
    });
  }

  async isEmpty(): Promise<boolean> {
    try {
      // a temp file is a write in flight (or one a crash cut short), not an object, as in list(): while another
      // process writes the pgkeep.json of a new repository here, the location is still empty, not someone else's
      return (await fs.readdir(this.root)).every((name) => name.startsWith(TEMP_PREFIX));
    } catch (error) {
      if ((error as NodeJS.ErrnoException).code === 'ENOENT') return true;
      throw storageError(error, this.root);
    }
  }
}

async function syncFolder(folder: string): Promise<void> {
  const handle = await fs.open(folder, constants.O_RDONLY);
  try {
    await handle.sync();
  } finally {
    await handle.close();
  }
}

function isFsError(error: unknown): boolean {
  return typeof (error as NodeJS.ErrnoException)?.code === 'string' && (error as NodeJS.ErrnoException).syscall !== undefined;
}

/** Maps filesystem errors to the storage error codes a user can act on. */
export function storageError(error: unknown, where: string): PgkeepError {
  if (error instanceof PgkeepError) return error;
  const code = (error as NodeJS.ErrnoException)?.code;
  switch (code) {
    case 'ENOSPC':
    case 'EDQUOT':
      return new PgkeepError('STORAGE_FULL', `no space left on the repository disk (${where}): free space or use another --repo`, { cause: error });
    case 'EACCES':
    case 'EPERM':
    case 'EROFS':
      return new PgkeepError('STORAGE_ACCESS', `permission denied on ${where}: check the owner and mode of the repository`, { cause: error });
    case 'ENOENT':
      return new PgkeepError('STORAGE_NOT_FOUND', `not found: ${where}`, { cause: error });
    default:
      return new PgkeepError('STORAGE_IO', `storage error on ${where}: ${(error as Error)?.message ?? String(error)}`, { cause: error });
  }
}
