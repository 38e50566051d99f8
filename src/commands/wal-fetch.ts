import { randomBytes } from 'node:crypto';
import { open, rename, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import { walFileKind } from '../postgres/wal-file.js';
import { readRepoInfo } from '../repository/repo-info.js';
import { WalArchive } from '../repository/wal-archive.js';
import { writeAll } from '../local/write-all.js';
import { readIdentities } from '../repository/repository-keys.js';
import type { WalContext } from '../registry/command-context.js';

export interface WalFetchResult {
  name: string;
  destination: string;
  bytes: number;
}

/**
 * Restores one WAL file (restore_command = 'pgkeep wal-fetch %f %p --source NAME'):
 *
 *  1. check the name; read the repository info and, when it is encrypted, the keys
 *  2. read the archived file into memory (a segment; larger files stream),
 *     through age -d and zstd -d, checking both SHA-256 sums, and write it to
 *     a temp file beside the destination
 *  3. rename into place: PostgreSQL never sees a partial file
 *
 * Not fsynced, as pgBackRest's archive-get does not: PostgreSQL removes the
 * destination before every restore_command, and fsyncs a restored segment
 * itself when it keeps it (durable_rename); after a crash it asks again.
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
    const bytes = await archive.read(record, { identities });
    const handle = await open(temp, 'wx', 0o600);
    try {
      if (bytes) {
        await writeAll(handle, bytes);
      } else {
        const { defaultZstd } = await import('../pipeline/zstd.js');
        await archive.fetch(name, handle.createWriteStream({ autoClose: false, highWaterMark: 1 << 20 }), { codec: defaultZstd(), identities, signal: ctx.signal, record });
      }
    } finally {
      await handle.close();
    }
    // 3. visible, complete
    await rename(temp, destination);
  } catch (error) {
    await rm(temp, { force: true });
    if (error instanceof PgkeepError) throw error;
    const code = (error as NodeJS.ErrnoException).code;
    throw new PgkeepError('STORAGE_IO', `cannot write ${destination} (${code ?? (error as Error).message})`, { cause: error });
  }
  return { name, destination, bytes: record.raw.size };
}
