import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { open, rename, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { walFileKind } from '../postgres/wal-file.js';
import { readRepoInfo } from '../repository/repo-info.js';
import { WalArchive } from '../repository/wal-archive.js';
import { readIdentities } from './repository-keys.js';
import type { WalContext } from './wal-push.js';

export interface WalFetchResult {
  name: string;
  destination: string;
  bytes: number;
}

/**
 * Restores one WAL file (restore_command = 'pgkeep wal-fetch %f %p --source NAME'):
 *
 *  1. check the name; read the repository info and, when it is encrypted, the keys
 *  2. stream the archived file through age -d and zstd -d into a temp file
 *     beside the destination, checking both SHA-256 sums on the way
 *  3. fsync, then rename into place: PostgreSQL never sees a partial file
 *
 * A file the archive does not hold fails with WAL_MISSING (exit 1), which
 * PostgreSQL reads as "not archived" (the normal end of recovery).
 */
export async function runWalFetch(ctx: WalContext, name: string, destination: string): Promise<WalFetchResult> {
  // 1. what, where from, with which keys
  if (!walFileKind(name)) throw new PgkeepError('WAL_INVALID', `"${name}" is not a WAL file name: restore_command must pass %f`);
  const info = await readRepoInfo(ctx.storage);
  const archive = new WalArchive(ctx.storage, ctx.source);
  const record = await archive.readRecord(name);
  if (!record) throw new PgkeepError('WAL_MISSING', `${name} is not in the WAL archive of source ${ctx.source} at ${ctx.storage.location}`);
  const identities = record.encryption ? await readIdentities({ info, storage: ctx.storage, location: ctx.storage.location }, ctx.keys) : [];

  // 2. into a temp file beside the destination
  const temp = path.join(path.dirname(destination), `.pgkeep-tmp-${path.basename(destination)}.${randomBytes(6).toString('hex')}`);
  try {
    await archive.fetch(name, createWriteStream(temp, { flags: 'wx', mode: 0o600, highWaterMark: 1 << 20 }), { codec: defaultZstd(), identities, signal: ctx.signal, record });
    // 3. durable, then visible
    const handle = await open(temp, 'r');
    try {
      await handle.sync();
    } finally {
      await handle.close();
    }
    await rename(temp, destination);
  } catch (error) {
    await rm(temp, { force: true });
    if (error instanceof PgkeepError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new PgkeepError('STORAGE_IO', `cannot write ${destination} (${code ?? (error as Error).message})`, { cause: error });
  }
  return { name, destination, bytes: record.raw.size };
}
