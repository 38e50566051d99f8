import { contentStoreForReading } from './content-store/load-content.js';
import { Writable } from 'node:stream';
import { PgkeepError } from '../errors.js';
import { decryptStream, type AgeIdentity } from '../pipeline/age.js';
import { parseToc, readArchiveHead } from '../pipeline/backup-toc.js';
import type { TocEntry } from '../pipeline/custom-toc.js';
import type { ZstdCodec } from '../pipeline/zstd.js';
import type { LogicalManifest } from './manifest.js';
import type { Repository } from './repository.js';

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
    await repository.loadObject(manifest, object, sink, options);
    return parseToc(Buffer.concat(chunks), `backup ${manifest.id}`);
  }
  if (manifest.options.format !== 'custom') throw new PgkeepError('USAGE', `backup ${manifest.id} is a plain SQL dump: it has no table of contents`);

  const object = manifest.objects[0]!;
  if (object.content) {
    // the head of a content stream: its first chunks, each checked
    const store = await contentStoreForReading(repository, options.identities);
    return parseToc(await readArchiveHead(store.open(object.content, options.signal), [], options.signal, `object ${object.name}`), `backup ${manifest.id}`);
  }
  const decrypt = object.encryption ? [decryptStream(options.identities ?? [], { what: `object ${object.name}` })] : [];
  const head = await readArchiveHead(await repository.readStoredObject(manifest.source, manifest.id, object.name), [...decrypt, options.codec.decompressor()], options.signal, `object ${object.name}`);
  return parseToc(head, `backup ${manifest.id}`);
}
