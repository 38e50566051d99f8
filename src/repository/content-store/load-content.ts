import { PassThrough, Transform, type Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { AgeIdentity } from '../../pipeline/age.js';
import { requireIdentities } from '../../pipeline/load-stream.js';
import { PgkeepError } from '../../errors.js';
import { storageOf } from '../repository-storage.js';
import { writeRecipients } from '../repo-info.js';
import type { Repository } from '../repository.js';
import type { BackupObject } from '../manifest.js';
import { contentSettings } from './content-keys.js';
import { ContentStore, type StreamRef } from './content-store.js';

/** One content store per repository and identities, opened (its index read) once however many objects are loaded. */
const opened = new WeakMap<Repository, { identities: AgeIdentity[] | undefined; store: Promise<ContentStore> }>();

/** The content store of a deduplicating repository, for reading (the identities open sealed packs and the content key). */
export function contentStoreForReading(repository: Repository, identities: AgeIdentity[] | undefined): Promise<ContentStore> {
  const held = opened.get(repository);
  if (held && held.identities === identities) return held.store;
  const info = repository.info.content;
  if (!info) return Promise.reject(new PgkeepError('REPO_FORMAT', `${repository.location} is not a deduplicating repository, yet a backup names a content stream`));
  const recipients = writeRecipients(repository);
  const storage = storageOf(repository)!;
  const store = (async () => ContentStore.open(storage, await contentSettings(storage, info, recipients, { identities: recipients ? requireIdentities({ name: 'the content store' }, identities) : [], contentKey: undefined })))();
  opened.set(repository, { identities, store });
  store.catch(() => opened.delete(repository));
  return store;
}

/**
 * Streams a content object into `sink`: chunk after chunk, each checked
 * against its id, and the whole against the manifest's size.
 * On any failure the sink is destroyed, never ended.
 */
export async function loadContent(
  repository: Repository,
  object: BackupObject & { content: StreamRef },
  sink: Writable,
  options: { signal?: AbortSignal | undefined; onRawBytes?: ((total: number) => void) | undefined; identities?: AgeIdentity[] | undefined },
): Promise<void> {
  let store: ContentStore;
  try {
    store = await contentStoreForReading(repository, options.identities);
  } catch (error) {
    sink.on('error', () => undefined);
    sink.destroy(error as Error);
    throw error;
  }
  // Every chunk is checked against its id as it is read, and the ids come from the manifest's root through the
  // lists (each a checked chunk too): a Merkle tree that proves every byte and its place. Hashing the whole
  // stream once more (the manifest's raw digest) would prove nothing new and cost a second pass of SHA-256.
  let size = 0;
  const report = options.onRawBytes;
  const counted = report
    ? new Transform({
        transform(chunk: Buffer, _encoding, callback) {
          size += chunk.length;
          report(size);
          callback(null, chunk);
        },
      })
    : new PassThrough();
  await pipeline([store.open(object.content, options.signal), counted, sink], ...(options.signal ? [{ signal: options.signal }] : []));
}
