import { Writable, type Duplex, type Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { PgkeepError } from '../errors.js';
import type { LogicalManifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { decryptStream, type AgeIdentity } from './age.js';
import { CustomTocScanner, readArchiveToc, type TocEntry } from './custom-toc.js';
import { loadStream, readError } from './load-stream.js';
import type { ZstdCodec } from './zstd.js';

export interface BackupTocOptions {
  codec: ZstdCodec;
  identities?: AgeIdentity[] | undefined;
  signal?: AbortSignal | undefined;
}

/**
 * The table of contents of a custom or directory backup, for planning a
 * selective restore without restoring anything.
 *
 * A directory backup's toc.dat is its own object: read whole, checksums
 * checked. A custom backup's TOC is its first bytes: they are decrypted and
 * decompressed until the TOC ends, then the read stops, so planning costs a
 * fraction of the backup whatever its size (the restore that follows checks
 * every checksum; a damaged TOC fails to parse here).
 */
export async function readBackupToc(repository: Repository, manifest: LogicalManifest, options: BackupTocOptions): Promise<TocEntry[]> {
  const key = (name: string) => repository.objectKey(manifest.source, manifest.id, name);
  if (manifest.options.format === 'directory') {
    const object = manifest.objects.find((o) => o.file === 'toc.dat');
    if (!object) throw new PgkeepError('MANIFEST_INVALID', `backup ${manifest.id} is a directory dump without toc.dat in its manifest`);
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        callback();
      },
    });
    await loadStream(repository.storage, key(object.name), object, sink, options);
    return parseToc(Buffer.concat(chunks), `backup ${manifest.id}`);
  }
  if (manifest.options.format !== 'custom') throw new PgkeepError('USAGE', `backup ${manifest.id} is a plain SQL dump: it has no table of contents`);

  const object = manifest.objects[0]!;
  const decrypt = object.encryption ? [decryptStream(options.identities ?? [], { what: `object ${object.name}` })] : [];
  const head = await readArchiveHead(await repository.storage.get(key(object.name)), [...decrypt, options.codec.decompressor()], options.signal, `object ${object.name}`);
  return parseToc(head, `backup ${manifest.id}`);
}

/** The table of contents of a custom archive read from the start of `input` (already decoded); stops reading there. */
export async function readArchiveTocFrom(input: Readable, what: string, signal?: AbortSignal): Promise<TocEntry[]> {
  return parseToc(await readArchiveHead(input, [], signal, what), what);
}

/**
 * The header and TOC of a custom archive from the start of a stream, through
 * `decode` (decryption, decompression); stops reading there.
 */
async function readArchiveHead(input: Readable, decode: Duplex[], signal: AbortSignal | undefined, what: string): Promise<Buffer> {
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

function parseToc(bytes: Buffer, what: string): TocEntry[] {
  try {
    return readArchiveToc(bytes);
  } catch (error) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `cannot read the table of contents of ${what}: ${(error as Error).message}`, { cause: error });
  }
}
