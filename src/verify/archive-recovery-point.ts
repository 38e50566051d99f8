import { createWriteStream, existsSync } from 'node:fs';
import { mkdir, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { isPgkeepError } from '../errors.js';
import type { AgeIdentity } from '../pipeline/age.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { inheritedEnv } from '../postgres/child-env.js';
import { startProcess } from '../postgres/run-process.js';
import { walFileKind } from '../postgres/wal-file.js';
import type { WalArchive } from '../repository/wal-archive.js';

/** The newest point a recovery from the archive can reach, and how that was found. */
export interface ArchiveRecoveryPoint {
  /** ISO time. */
  at: string;
  /**
   * commit: the newest transaction end (commit or abort) found in the newest
   * archived segments by pg_waldump, the newest time recovery_target_time can
   * name; archived: no pg_waldump or no transaction end in them, so the time
   * the newest segment was archived (an upper bound: its records are older).
   */
  basis: 'commit' | 'archived';
  /** The segment it was found in. */
  segment: string;
}

/** How many of the newest segments are read looking for a transaction end (an idle server archives segments without any). */
const SEGMENTS_SCANNED = 4;

/**
 * Finds the newest recoverable point of a WAL archive: the newest segments
 * are fetched (checked against their records) into `scratch`, and pg_waldump
 * of the server's major version lists their transaction records. Undefined
 * when the archive holds no segment.
 */
export async function archiveRecoveryPoint(
  archive: WalArchive,
  options: { scratch: string; waldump: string | undefined; identities: AgeIdentity[]; signal: AbortSignal },
): Promise<ArchiveRecoveryPoint | undefined> {
  // names sort by timeline, then position: the last ones are the newest WAL of the newest timeline
  const segments = (await archive.listNames()).filter((n) => walFileKind(n) === 'segment');
  const newest = segments.at(-1);
  if (!newest) return undefined;
  if (options.waldump) {
    await mkdir(options.scratch, { recursive: true });
    const codec = defaultZstd();
    for (const name of segments.slice(-SEGMENTS_SCANNED).reverse()) {
      const file = path.join(options.scratch, name);
      const sink = createWriteStream(file);
      try {
        await archive.fetch(name, sink, { codec, identities: options.identities, signal: options.signal });
      } finally {
        sink.destroy();
      }
      const at = await newestTransactionEnd(options.waldump, file, options.signal);
      await rm(file, { force: true });
      if (at) return { at, basis: 'commit', segment: name };
    }
  }
  const record = await archive.readRecord(newest);
  return { at: new Date(record?.pushedAt ?? Date.now()).toISOString(), basis: 'archived', segment: newest };
}

/** pg_waldump of the segment's major version, when installed next to the server or in Debian's folder. */
export function findWaldump(binDir: string, major: number): string | undefined {
  return [path.join(binDir, 'pg_waldump'), `/usr/lib/postgresql/${major}/bin/pg_waldump`].find((p) => existsSync(p));
}

// "desc: COMMIT 2026-12-05 13:50:01.123456 UTC" (also COMMIT_PREPARED, ABORT, ABORT_PREPARED)
const TRANSACTION_END = /desc: (?:COMMIT|ABORT)(?:_PREPARED)?(?: \d+:)? (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d(?:\.\d+)?) UTC/;

/** The newest commit or abort time in one segment file; undefined when it holds none. */
async function newestTransactionEnd(waldump: string, file: string, signal: AbortSignal): Promise<string | undefined> {
  // TZ=UTC: pg_waldump prints times in its own time zone
  const running = startProcess(waldump, ['--rmgr=Transaction', file], { env: { ...inheritedEnv(), TZ: 'UTC' }, signal });
  let text = '';
  running.stdout!.setEncoding('utf8').on('data', (chunk: string) => (text += chunk));
  // The end of the newest segment is not a valid record (zeros after a switch): pg_waldump says so and exits 1, after listing what it read.
  await running.done.catch((error: unknown) => {
    if (isPgkeepError(error, 'ABORTED') || signal.aborted) throw error;
  });
  let newest: string | undefined;
  for (const line of text.split('\n')) {
    const match = TRANSACTION_END.exec(line);
    if (!match) continue;
    const at = new Date(`${match[1]!.replace(' ', 'T')}Z`).toISOString();
    if (!newest || at > newest) newest = at;
  }
  return newest;
}
