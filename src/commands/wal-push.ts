import { createReadStream } from 'node:fs';
import { stat } from 'node:fs/promises';
import * as path from 'node:path';
import type { KeySettings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { HashCounter } from '../pipeline/hash-counter.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { readSegmentHeader, walFileKind } from '../postgres/wal-file.js';
import { readRepoInfo } from '../repository/repo-info.js';
import { WalArchive, type PushOutcome } from '../repository/wal-archive.js';
import type { Storage } from '../storage/storage.js';
import { writeRecipients } from './repository-keys.js';

/**
 * What the WAL commands need. Deliberately smaller than CommandContext: they
 * run once per segment from archive_command / restore_command and must start
 * fast, so they load neither the config schema nor the Repository class.
 */
export interface WalContext {
  storage: Storage;
  source: string;
  keys: KeySettings;
  signal: AbortSignal;
}

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
 *  3. for a segment, read the cluster's system identifier from its page header
 *     and check it against the archive's (the first push claims the archive)
 *  4. store it: zstd, age, checksums, then the record; an identical earlier
 *     copy counts as success, a different one fails and is kept
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

  // 3. the cluster it comes from
  let systemIdentifier: string | null = null;
  if (kind === 'segment' || kind === 'partial') {
    const header = await readSegmentHeader(file);
    if (header.segmentSize !== size && kind === 'segment') {
      throw new PgkeepError('WAL_INVALID', `${file} is ${size} bytes but its header says segments are ${header.segmentSize}: it is incomplete`);
    }
    await archive.claim(header.systemIdentifier, header.segmentSize);
    systemIdentifier = header.systemIdentifier;
  }

  // 4. the bytes, then the record
  const open = () => createReadStream(file, { highWaterMark: 1 << 20 });
  const rawDigest = async () => {
    const hash = new HashCounter();
    hash.resume();
    await new Promise<void>((resolve, reject) => open().on('error', reject).pipe(hash).on('error', reject).on('finish', resolve));
    return hash.digest;
  };
  const outcome = await archive.push(name, open, rawDigest, {
    codec: defaultZstd(),
    level: WAL_ZSTD_LEVEL,
    encrypt: writeRecipients({ info }),
    systemIdentifier,
    signal: ctx.signal,
  });
  return { name, outcome, bytes: size };
}
