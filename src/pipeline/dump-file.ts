import { createReadStream, existsSync } from 'node:fs';
import { readdir, stat } from 'node:fs/promises';
import * as path from 'node:path';
import { PassThrough, Writable, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { createGunzip } from 'node:zlib';
import { PgkeepError } from '../errors.js';
import { looksLikeAge } from './age.js';
import type { ZstdCodec } from './zstd.js';

/** A dump made outside pgkeep, as detected from its content. */
export interface DumpFile {
  path: string;
  /** custom: pg_dump -Fc; directory: pg_dump -Fd (a folder with toc.dat); tar: pg_dump -Ft; plain: SQL text. */
  format: 'custom' | 'directory' | 'tar' | 'plain';
  /** How the file itself is compressed (a custom archive may also compress inside: pg_restore handles that). */
  compression: 'none' | 'gzip' | 'zstd';
  /** Size on disk (for a directory, of all its files). */
  bytes: number;
}

const GZIP = Buffer.from([0x1f, 0x8b]);
const ZSTD = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);
const CUSTOM = Buffer.from('PGDMP');
/** How much of the (decompressed) start is read to decide, and to look for statements that leave the target database. */
export const SNIFF_BYTES = 64 * 1024;

/**
 * Detects what a dump file is from its bytes, not its name: "PGDMP" is a
 * custom archive, 1f 8b gzip, 28 b5 2f fd zstd (and then the decompressed
 * start decides again), "ustar" at byte 257 a tar archive, a folder with
 * toc.dat a directory dump, and text a plain SQL dump.
 */
export async function detectDumpFile(file: string, codec: ZstdCodec): Promise<DumpFile> {
  const info = await stat(file).catch((error: NodeJS.ErrnoException) => {
    throw new PgkeepError('FILE_NOT_FOUND', `cannot read ${file}: ${error.code === 'ENOENT' ? 'no such file or folder' : error.message}`, { cause: error });
  });
  if (info.isDirectory()) {
    if (!existsSync(path.join(file, 'toc.dat'))) {
      throw new PgkeepError('DUMP_FORMAT_UNKNOWN', `${file} is a folder without toc.dat: not a pg_dump directory-format dump (pg_dump -Fd)`);
    }
    return { path: file, format: 'directory', compression: 'none', bytes: await folderSize(file) };
  }
  const raw = await readHead(createReadStream(file, { end: SNIFF_BYTES - 1 }));
  const compression = startsWith(raw, GZIP) ? 'gzip' : startsWith(raw, ZSTD) ? 'zstd' : 'none';
  const head = compression === 'none' ? raw : await readHead(openDumpStream({ path: file, compression }, codec));
  const format = classify(head, file, compression !== 'none');
  if (format === 'plain') refuseOtherDatabases(head, file);
  return { path: file, format, compression, bytes: info.size };
}

/** The dump's bytes, decompressed when the file is gzip or zstd. */
export function openDumpStream(dump: Pick<DumpFile, 'path' | 'compression'>, codec: ZstdCodec): Readable {
  const file = createReadStream(dump.path, { highWaterMark: 1 << 20 });
  if (dump.compression === 'none') return file;
  const decompress = dump.compression === 'gzip' ? createGunzip() : codec.decompressor();
  const out = new PassThrough({ highWaterMark: 1 << 20 });
  // pipe() keeps backpressure but not errors: a decompression failure reaches the reader as one clear error.
  file.on('error', (error) => out.destroy(new PgkeepError('FILE_NOT_FOUND', `cannot read ${dump.path}: ${error.message}`, { cause: error })));
  decompress.on('error', (error: Error) =>
    out.destroy(new PgkeepError('DUMP_FORMAT_UNKNOWN', `${dump.path} is damaged or incomplete: ${dump.compression} cannot decompress it (${error.message})`, { cause: error })),
  );
  out.on('close', () => {
    file.destroy();
    decompress.destroy();
  });
  file.pipe(decompress).pipe(out);
  return out;
}

function classify(head: Buffer, file: string, compressed: boolean): DumpFile['format'] {
  if (startsWith(head, CUSTOM)) return 'custom';
  if (head.length >= 262 && head.subarray(257, 262).toString('latin1') === 'ustar') {
    if (compressed) throw new PgkeepError('DUMP_FORMAT_UNKNOWN', `${file} is a compressed tar archive: decompress it first (pg_restore reads tar dumps only from a plain file)`);
    return 'tar';
  }
  if (looksLikeAge(head)) throw new PgkeepError('DUMP_FORMAT_UNKNOWN', `${file} is encrypted with age: decrypt it first (age -d -i KEY ${file} > dump)`);
  // Plain SQL: text. A NUL byte or invalid UTF-8 at the start means it is something else.
  const text = head.subarray(0, Math.min(head.length, SNIFF_BYTES - 4));
  if (text.length > 0 && !text.includes(0) && isUtf8Prefix(text)) return 'plain';
  throw new PgkeepError(
    'DUMP_FORMAT_UNKNOWN',
    `${file} is not a dump pgkeep can restore: expected a pg_dump custom (.dump), directory or tar archive, or SQL text, optionally gzip- or zstd-compressed`,
  );
}

/**
 * A plain dump made with pg_dump --create or pg_dumpall creates databases and
 * switches to them (\connect): run as it is, it would write into the original
 * database, not the new one this restore creates. Refuse it up front.
 */
function refuseOtherDatabases(head: Buffer, file: string): void {
  const text = head.toString('utf8');
  if (/^\\(connect|c) /m.test(text) || /^CREATE DATABASE /m.test(text) || /^CREATE ROLE /m.test(text)) {
    throw new PgkeepError(
      'DUMP_FORMAT_UNKNOWN',
      `${file} creates or switches databases (made with pg_dump --create or pg_dumpall): restoring it would write outside the target database; make the dump without --create, or run it with psql yourself`,
    );
  }
}

function isUtf8Prefix(bytes: Buffer): boolean {
  // The sniffed window may end inside a multi-byte character: ignore up to 3 trailing bytes.
  for (let cut = 0; cut <= 3 && cut < bytes.length; cut++) {
    try {
      new TextDecoder('utf-8', { fatal: true }).decode(bytes.subarray(0, bytes.length - cut));
      return true;
    } catch {
      // try a shorter prefix
    }
  }
  return false;
}

function startsWith(bytes: Buffer, prefix: Buffer): boolean {
  return bytes.length >= prefix.length && bytes.subarray(0, prefix.length).equals(prefix);
}

/** Reads up to SNIFF_BYTES from the start of a stream, then stops reading it. */
async function readHead(input: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let length = 0;
  const stop = new AbortController();
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      length += chunk.length;
      if (length >= SNIFF_BYTES) stop.abort();
      callback();
    },
  });
  try {
    await pipeline(input, sink, { signal: stop.signal });
  } catch (error) {
    if (!stop.signal.aborted) {
      if (error instanceof PgkeepError) throw error;
      throw new PgkeepError('DUMP_FORMAT_UNKNOWN', `cannot read the start of the dump: ${(error as Error).message}`, { cause: error });
    }
  }
  return Buffer.concat(chunks).subarray(0, SNIFF_BYTES);
}

async function folderSize(folder: string): Promise<number> {
  let total = 0;
  for (const entry of await readdir(folder, { withFileTypes: true })) if (entry.isFile()) total += (await stat(path.join(folder, entry.name))).size;
  return total;
}
