import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import { encodeFileInMemory } from '../pipeline/encode-file-in-memory.js';
import type { Digest } from '../pipeline/hash-counter.js';
import { readSegmentHeader, walFileKind } from '../postgres/wal-file.js';
import { readRepoInfo, writeRecipients } from '../repository/repo-info.js';
import { WalArchive, type PushOutcome } from '../repository/wal-archive.js';
import type { WalContext } from '../registry/command-context.js';

export type { WalContext } from '../registry/command-context.js';

/**
 * zstd level for WAL: 1, not the backups' 3. Archiving must keep pace with the
 * server one segment at a time, and on WAL level 1 costs about half the time
 * of level 3 for a few percent more bytes.
 */
export const WAL_ZSTD_LEVEL = 1;

export interface WalPushResult {
  name: string;
  outcome: PushOutcome;
  bytes: number;
}

/**
 * Archives one WAL file (archive_command = 'pgkeep wal-push %p --source NAME'):
 *
 *  1. check the name is a WAL file PostgreSQL archives (segment, .partial, .history, .backup)
 *  2. read the repository info: is it encrypted, and to whom
 *  3. start encoding the file (zstd, age, checksums) in memory; the reads of
 *     step 4 proceed meanwhile
 *  4. for a segment, read the cluster's system identifier from its page header
 *     and check it against the archive's (the first push claims the archive)
 *  5. store the bytes, then the record; an identical earlier copy counts as
 *     success, a different one fails and is kept
 */
export async function runWalPush(ctx: WalContext, file: string): Promise<WalPushResult> {
  // 1. the file
  const name = path.basename(file);
  const kind = walFileKind(name);
  if (!kind) throw new PgkeepError('WAL_INVALID', `${file} is not a WAL file (expected a segment like 000000010000000000000001, or a .partial, .history or .backup file): archive_command must pass %p`);
  const size = await stat(file).then(
    (s) => s.size,
    (error: NodeJS.ErrnoException) => {
      throw new PgkeepError('WAL_INVALID', `cannot read ${file} (${error.code ?? error.message})`, { cause: error });
    },
  );

  // 2. the repository
  const info = await readRepoInfo(ctx.storage);
  const archive = new WalArchive(ctx.storage, ctx.source);
  const encrypt = writeRecipients({ info });

  // 3. the bytes, encoded while step 4 waits on its reads (null: too large, or no native zstd)
  const encoding = encodeFileInMemory(file, { level: WAL_ZSTD_LEVEL, encrypt, size, signal: ctx.signal });
  encoding.catch(() => undefined); // observed in step 5; a failure of step 4 comes first

  // 4. the cluster it comes from
  let systemIdentifier: string | null = null;
  if (kind === 'segment' || kind === 'partial') {
    const header = await readSegmentHeader(file);
    if (header.segmentSize !== size && kind === 'segment') {
      throw new PgkeepError('WAL_INVALID', `${file} is ${size} bytes but its header says segments are ${header.segmentSize}: it is incomplete`);
    }
    await archive.claim(header.systemIdentifier, header.segmentSize);
    systemIdentifier = header.systemIdentifier;
  }

  // 5. the object, then the record (wal-archive.ts: the same write rules as a backup's objects)
  const outcome = await archive.push(
    name,
    {
      encoded: encoding,
      open: () => createReadStream(file, { highWaterMark: 1 << 20 }),
      level: WAL_ZSTD_LEVEL,
      rawDigest: async () => (await encoding)?.digests.raw ?? fileDigest(file),
    },
    { encrypt, systemIdentifier, signal: ctx.signal },
  );
  return { name, outcome, bytes: size };
}

/** SHA-256 and size of a local file, read in 1 MiB pieces. */
async function fileDigest(file: string): Promise<Digest> {
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of createReadStream(file, { highWaterMark: 1 << 20 }) as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  return { size, sha256: hash.digest('hex') };
}
