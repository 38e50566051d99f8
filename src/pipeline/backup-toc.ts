import { Writable, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PgkeepError } from '../errors.js';
import { CustomTocScanner, readArchiveToc, type TocEntry } from './custom-toc.js';
import { readError } from './load-stream.js';

/** The table of contents of a custom archive read from the start of `input` (already decoded); stops reading there. */
export async function readArchiveTocFrom(input: Readable, what: string, signal?: AbortSignal): Promise<TocEntry[]> {
  return parseToc(await readArchiveHead(input, [], signal, what), what);
}

/**
 * The header and TOC of a custom archive from the start of a stream, through
 * `decode` (decryption, decompression); stops reading there.
 */
export async function readArchiveHead(input: Readable, decode: Duplex[], signal: AbortSignal | undefined, what: string): Promise<Buffer> {
  const scanner = new CustomTocScanner();
  const chunks: Buffer[] = [];
  // a failed read (the network, the disk) is not a damaged TOC: the input's own error is the verdict
  let inputError: unknown;
  input.once('error', (error: unknown) => {
    inputError ??= error;
  });
  const stop = new AbortController();
  const abortWith = () => stop.abort(signal?.reason);
  signal?.addEventListener('abort', abortWith, { once: true });
  const collect = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      scanner.push(chunk);
      // Found: the rest of the object is not needed.
      if (scanner.scan.state !== 'scanning') stop.abort();
      callback();
    },
  });
  try {
    await pipeline([input, ...decode, collect], { signal: stop.signal });
  } catch (error) {
    if (signal?.aborted) throw error;
    if (!stop.signal.aborted && inputError !== undefined) throw readError(what.replace(/^object /, ''), inputError);
    if (!stop.signal.aborted) {
      if (error instanceof PgkeepError) throw error;
      throw new PgkeepError('CHECKSUM_MISMATCH', `cannot read the table of contents of ${what}: ${(error as Error).message}`, { cause: error });
    }
  } finally {
    signal?.removeEventListener('abort', abortWith);
  }
  const scan = scanner.scan.state === 'scanning' ? scanner.end() : scanner.scan;
  if (scan.state === 'found') return Buffer.concat(chunks).subarray(0, scan.end);
  throw new PgkeepError('CHECKSUM_MISMATCH', `cannot read the table of contents of ${what}: ${scan.state === 'unsupported' ? scan.reason : 'it is incomplete'}`);
}

/** A custom archive's TOC from its first bytes; a TOC that does not parse is CHECKSUM_MISMATCH naming `what`. */
export function parseToc(bytes: Buffer, what: string): TocEntry[] {
  try {
    return readArchiveToc(bytes);
  } catch (error) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `cannot read the table of contents of ${what}: ${(error as Error).message}`, { cause: error });
  }
}
