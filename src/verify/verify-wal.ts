import { Writable } from 'node:stream';
import { PgkeepError, throwIfAborted } from '../errors.js';
import type { AgeIdentity } from '../pipeline/age.js';
import { discardSink } from '../pipeline/load-stream.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { formatLsn, parseLsn, segmentName, segmentNumber, walFileKind, walTimeline } from '../postgres/wal-file.js';
import type { PhysicalManifest } from '../repository/manifest.js';
import type { WalArchive } from '../repository/wal-archive.js';

export interface WalWindow {
  backup: string;
  /** The backup's own WAL (start to stop) is archived and intact: it can be recovered at all. */
  consistent: boolean;
  /** Recovery targets from here ... */
  from: { lsn: string; time: string };
  /** ... up to the end of this segment (on the last timeline followed). */
  through: { segment: string; lsn: string; timeline: number } | undefined;
  /** The first segment missing or damaged after the backup, if any. */
  gapAt: string | undefined;
  timelines: number[];
}

export interface WalReport {
  source: string;
  ok: boolean;
  files: number;
  bytes: number;
  damaged: { name: string; problem: string }[];
  windows: WalWindow[];
  problems: string[];
}

/**
 * Verifies a source's WAL archive: every archived file is read back and
 * checked against its record (stored and raw SHA-256, decompression,
 * decryption), then for each physical backup the chain from its start is
 * followed segment by segment, across timeline switches recorded in history
 * files, to the first gap or damaged segment: that is the backup's PITR window.
 */
export async function verifyWal(archive: WalArchive, backups: PhysicalManifest[], options: { identities: AgeIdentity[]; signal?: AbortSignal | undefined; onFile?: (name: string) => void }): Promise<WalReport> {
  const codec = defaultZstd();
  const names = await archive.listNames();
  const good = new Set<string>();
  const damaged: WalReport['damaged'] = [];
  const histories = new Map<number, { parent: number; switchLsn: bigint }[]>();
  let bytes = 0;
  for (const name of names) {
    throwIfAborted(options.signal);
    options.onFile?.(name);
    const chunks: Buffer[] = [];
    const keep = walFileKind(name) === 'history';
    try {
      const sink = keep ? collectingSink(chunks) : discardSink();
      const record = await archive.fetch(name, sink, { codec, identities: options.identities, signal: options.signal });
      bytes += record.stored.size;
      good.add(name);
      if (keep) histories.set(walTimeline(name), parseHistory(Buffer.concat(chunks).toString('utf8')));
    } catch (error) {
      if (error instanceof PgkeepError && error.code === 'ABORTED') throw error;
      damaged.push({ name, problem: error instanceof Error ? error.message : String(error) });
    }
  }

  const windows = backups.map((backup) => walWindow(backup, good, histories));
  // Holes inside each timeline's archived range, whether or not a backup's path crosses them.
  const holes: string[] = [];
  const segments = names.filter((n) => walFileKind(n) === 'segment');
  const segmentSize = backups[0]?.physical.segmentSize ?? (await archive.readInfo())?.segmentSize ?? 16 * 1024 * 1024;
  for (const timeline of new Set(segments.map(walTimeline))) {
    const numbers = segments.filter((n) => walTimeline(n) === timeline && good.has(n)).map((n) => segmentNumber(n, segmentSize));
    const have = new Set(numbers);
    const last = numbers.reduce((a, b) => (b > a ? b : a), -1n);
    for (let n = numbers.reduce((a, b) => (b < a ? b : a), last); n < last; n++) {
      if (!have.has(n)) {
        holes.push(segmentName(timeline, n * BigInt(segmentSize), segmentSize));
        break;
      }
    }
  }
  const problems = [
    ...damaged.map((d) => `${d.name}: ${d.problem}`),
    ...windows.filter((w) => !w.consistent).map((w) => `backup ${w.backup} cannot be recovered: its own WAL is missing or damaged from ${w.through ? `after ${w.through.segment}` : w.backup}`),
    ...windows
      .filter((w) => w.consistent && w.gapAt)
      .map((w) => `gap in the WAL after backup ${w.backup}: ${w.gapAt} is missing or damaged, so targets after ${w.through!.lsn} cannot be reached from it`),
    ...holes.filter((h) => !windows.some((w) => w.gapAt === h)).map((h) => `gap in the WAL archive: ${h} is missing or damaged (later segments of its timeline are archived)`),
  ];
  return { source: archive.source, ok: problems.length === 0, files: names.length, bytes, damaged, windows, problems };
}

function collectingSink(chunks: Buffer[]): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
}

/** Lines of a timeline history file: "<parent tli>\t<switch LSN>\t<reason>". */
function parseHistory(text: string): { parent: number; switchLsn: bigint }[] {
  const entries: { parent: number; switchLsn: bigint }[] = [];
  for (const line of text.split('\n')) {
    const match = /^\s*(\d+)\s+([0-9A-Fa-f]+\/[0-9A-Fa-f]+)/.exec(line);
    if (match) entries.push({ parent: Number(match[1]), switchLsn: parseLsn(match[2]!) });
  }
  return entries;
}

function walWindow(backup: PhysicalManifest, good: Set<string>, histories: Map<number, { parent: number; switchLsn: bigint }[]>): WalWindow {
  const p = backup.physical;
  const size = BigInt(p.segmentSize);
  let timeline = p.timeline;
  let next = segmentNumber(p.walStart, p.segmentSize);
  const stopNumber = segmentNumber(p.walStop, p.segmentSize);
  const timelines = [timeline];
  let last: { segment: string; timeline: number; number: bigint } | undefined;
  let gapAt: string | undefined;
  for (;;) {
    const name = segmentName(timeline, next * size, p.segmentSize);
    // A timeline that branched off this one at or before this segment: follow the newest such child.
    const child = [...histories.entries()]
      .filter(([tli, entries]) => tli > timeline && entries.at(-1)?.parent === timeline && entries.at(-1)!.switchLsn / size <= next && entries.at(-1)!.switchLsn / size >= segmentNumber(p.walStart, p.segmentSize))
      .sort((a, b) => b[0] - a[0])[0];
    if (child && good.has(segmentName(child[0], next * size, p.segmentSize))) {
      timeline = child[0];
      timelines.push(timeline);
      continue;
    }
    if (!good.has(name)) {
      gapAt = name;
      break;
    }
    last = { segment: name, timeline, number: next };
    next++;
  }
  // The first segment not archived is only a gap when something after it on that timeline is archived.
  if (gapAt && ![...good].some((n) => walFileKind(n) === 'segment' && walTimeline(n) === timeline && n > gapAt!)) gapAt = undefined;
  const consistent = last !== undefined && last.number >= stopNumber;
  return {
    backup: backup.id,
    consistent,
    from: { lsn: p.stopLsn, time: p.stopTime },
    through: last ? { segment: last.segment, lsn: formatLsn((last.number + 1n) * size), timeline: last.timeline } : undefined,
    gapAt,
    timelines,
  };
}
