import { open } from 'node:fs/promises';
import { PgkeepError } from '../errors.js';

/**
 * Names and headers of PostgreSQL WAL files, read without a database
 * connection (wal-push runs from archive_command, where none is at hand).
 */

/** What kind of file PostgreSQL hands to archive_command / asks of restore_command. */
export type WalFileKind = 'segment' | 'partial' | 'history' | 'backup';

const PATTERNS: [WalFileKind, RegExp][] = [
  ['segment', /^[0-9A-F]{24}$/],
  ['partial', /^[0-9A-F]{24}\.partial$/],
  ['history', /^[0-9A-F]{8}\.history$/],
  ['backup', /^[0-9A-F]{24}\.[0-9A-F]{8}\.backup$/],
];

/** The kind of a WAL file name, or undefined when it is not one PostgreSQL archives. */
export function walFileKind(name: string): WalFileKind | undefined {
  return PATTERNS.find(([, pattern]) => pattern.test(name))?.[0];
}

/** Timeline of a WAL file name (its first 8 hex digits). */
export function walTimeline(name: string): number {
  return Number.parseInt(name.slice(0, 8), 16);
}

/** A log sequence number as PostgreSQL prints it ("0/3000028") to a bigint, and back. */
export function parseLsn(text: string): bigint {
  const match = /^([0-9A-Fa-f]{1,8})\/([0-9A-Fa-f]{1,8})$/.exec(text.trim());
  if (!match) throw new PgkeepError('USAGE', `"${text}" is not an LSN: expected the form 0/3000028`);
  return (BigInt(`0x${match[1]}`) << 32n) | BigInt(`0x${match[2]}`);
}

export function formatLsn(lsn: bigint): string {
  return `${(lsn >> 32n).toString(16).toUpperCase()}/${(lsn & 0xffffffffn).toString(16).toUpperCase()}`;
}

export const DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024;

/** Name of the segment holding `lsn` on `timeline` (as pg_walfile_name does, without its end-of-segment quirk). */
export function segmentName(timeline: number, lsn: bigint, segmentSize = DEFAULT_SEGMENT_SIZE): string {
  const segmentNo = lsn / BigInt(segmentSize);
  const perId = 0x100000000n / BigInt(segmentSize);
  const hex = (n: bigint | number) => n.toString(16).toUpperCase().padStart(8, '0');
  return `${hex(timeline)}${hex(segmentNo / perId)}${hex(segmentNo % perId)}`;
}

/** Segment number of a segment name (timeline left out). */
export function segmentNumber(name: string, segmentSize = DEFAULT_SEGMENT_SIZE): bigint {
  const perId = 0x100000000n / BigInt(segmentSize);
  return BigInt(`0x${name.slice(8, 16)}`) * perId + BigInt(`0x${name.slice(16, 24)}`);
}

/** Every segment name from `first` to `last` (inclusive) on first's timeline. */
export function segmentRange(first: string, last: string, segmentSize = DEFAULT_SEGMENT_SIZE): string[] {
  const timeline = walTimeline(first);
  const names: string[] = [];
  for (let n = segmentNumber(first, segmentSize); n <= segmentNumber(last, segmentSize); n++) names.push(segmentName(timeline, n * BigInt(segmentSize), segmentSize));
  return names;
}

/** What the long page header at the start of every WAL segment says. */
export interface SegmentHeader {
  systemIdentifier: string;
  timeline: number;
  segmentSize: number;
  blockSize: number;
}

// XLogPageHeaderData (24 bytes with padding), then XLogLongPageHeaderData's
// xlp_sysid (uint64), xlp_seg_size (uint32), xlp_xlog_blcksz (uint32); little-endian on every platform PostgreSQL ships for here.
const XLP_LONG_HEADER = 0x0002;
const LONG_HEADER_SIZE = 40;

/** Parses the long page header of a segment's first page. */
export function parseSegmentHeader(bytes: Buffer, what: string): SegmentHeader {
  if (bytes.length < LONG_HEADER_SIZE) throw new PgkeepError('WAL_INVALID', `${what} is not a WAL segment: it is shorter than a page header`);
  const info = bytes.readUInt16LE(2);
  if ((info & XLP_LONG_HEADER) === 0) throw new PgkeepError('WAL_INVALID', `${what} is not a WAL segment: its first page has no long header`);
  const segmentSize = bytes.readUInt32LE(32);
  const blockSize = bytes.readUInt32LE(36);
  const powerOfTwo = (n: number) => n > 0 && (n & (n - 1)) === 0;
  if (!powerOfTwo(segmentSize) || !powerOfTwo(blockSize)) throw new PgkeepError('WAL_INVALID', `${what} is not a WAL segment: its header gives segment size ${segmentSize}, block size ${blockSize}`);
  return { systemIdentifier: bytes.readBigUInt64LE(24).toString(), timeline: bytes.readUInt32LE(4), segmentSize, blockSize };
}

/** Reads the header of a segment file on disk. */
export async function readSegmentHeader(file: string): Promise<SegmentHeader> {
  const handle = await open(file, 'r');
  try {
    const buffer = Buffer.alloc(LONG_HEADER_SIZE);
    const { bytesRead } = await handle.read(buffer, 0, LONG_HEADER_SIZE, 0);
    return parseSegmentHeader(buffer.subarray(0, bytesRead), file);
  } finally {
    await handle.close();
  }
}
