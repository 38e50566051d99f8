import { once } from 'node:events';
import { PassThrough, type Readable } from 'node:stream';
import { ContentWriting, type TransferTotals } from './content-store/content-writing.js';
import type { ContentStore, SessionTotals, StreamRef } from './content-store/content-store.js';
import type { KeySettings } from '../config/settings.js';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { faultPoint } from '../fault-points.js';
import type { AgeRecipient } from '../pipeline/age.js';
import { storeStreamTee, type StoreOptions } from '../pipeline/store-stream.js';
import { defaultZstd, type ZstdCodec } from '../pipeline/zstd.js';
import { makeBackupId, validateBackupId } from './backup-id.js';
import { buildManifest, type BackupKind, type ManifestBody, type ManifestOf } from './manifest-builder.js';
import type { BackupObject, ContentTotals, Manifest } from './manifest.js';
import { encryptionRecord, storedSuffix, writeRecipients } from './repo-info.js';
import { noManifestKeys, writerManifestKeys } from './repository-keys.js';
import type { Repository } from './repository.js';
import type { SourceLock } from './source-lock.js';

/**
 * The one way a backup is written (logical and physical backups, copy):
 *
 *  1. take the source lock (one writer per source), record the source,
 *     remove leftovers of interrupted backups (folders without a manifest)
 *  2. choose an id no folder of the source has (the start time, a second
 *     later for each one taken), or take the given one (copy)
 *  3. store objects into the backup's folder, recording each (name, role,
 *     checksums and sizes raw and stored, compression, encryption)
 *  4. commit: build the manifest from the body, the records and their totals
 *     and write it last; only now does the backup exist. Then release the lock.
 *
 * Any failure before the manifest (commit failing included) removes the
 * backup's folder: abort(). A process killed before the manifest leaves a
 * folder without one, which step 1 of the next writer (or prune) removes.
 */
export interface BeginBackupOptions {
  /** The command the source lock names ('backup', 'backup --physical', 'copy'). */
  command: string;
  /** The source's database, for its source record (the first backup creates it). */
  database: string;
  /** When the backup started: its id's time and its manifest's startedAt. */
  startedAt?: Date | undefined;
  /** The backup's name (--name): part of its id, recorded in the manifest. */
  name?: string | null | undefined;
  labels?: readonly string[] | undefined;
  /** A given id (copy keeps the backup's own); a complete backup of that id is refused with BACKUP_EXISTS. */
  id?: string | undefined;
  /** The caller already holds the source lock (restore --overwrite's safety backup): not taken, not released. */
  lockHeld?: boolean | undefined;
  /** The zstd codec `store` compresses with (its name goes into the manifest); the default one when absent. */
  codec?: ZstdCodec | undefined;
  /** Keys to authenticate the manifest with (an encrypted repository's identity or passphrase, when configured). */
  keys?: KeySettings | undefined;
  /** Where the note on removed leftovers goes, and how it names the repository (default "in <location>"). */
  info?: ((message: string) => void) | undefined;
  leftoversWhere?: string | undefined;
  /** Warnings (a manifest written with a checksum only). */
  warn?: ((message: string) => void) | undefined;
  signal?: AbortSignal | undefined;
}

/** What storing one input needs besides the writers: level, the producer's completion, progress. */
export type StoreObjectOptions = Omit<StoreOptions, 'codec' | 'encrypt'> & {
  /**
   * Offsets in the stream where a content store should end a chunk, found
   * since the last call, after onRawChunk saw the bytes (each table's data
   * in a dump). Ignored by repositories without a content store.
   */
  boundaries?: (() => number[]) | undefined;
};

/** One object to store: its name before the suffix the writer adds (".zst", ".zst.age"), and what it holds. */
export interface ObjectToStore {
  name: string;
  role: BackupObject['role'];
  /** For a dump-file: the file's name inside the dump directory. */
  file?: string | undefined;
}

export type StoreResult = { ok: true; object: BackupObject } | { ok: false; error: unknown };

export class BackupWriter<K extends BackupKind = BackupKind> {
  private readonly recipients: AgeRecipient[] | null;
  /** The encryption record of every object this writer stores: built once. */
  readonly encryption: BackupObject['encryption'];
  private readonly stored: BackupObject[] = [];
  private state: 'open' | 'committed' | 'aborted' = 'open';
  private readonly codec: ZstdCodec;
  private contentTotals: Promise<SessionTotals> | undefined;

  /** @internal beginBackups makes writers: the lock is taken and the id chosen. */
  constructor(
    readonly repository: Repository,
    readonly source: string,
    readonly kind: K,
    readonly id: string,
    private readonly lock: SourceLock | undefined,
    private readonly options: BeginBackupOptions,
    /** A deduplicating repository: objects go into its content store (docs/content-store.md). */
    readonly content: ContentWriting | undefined = undefined,
  ) {
    this.recipients = writeRecipients(repository);
    this.encryption = encryptionRecord(this.recipients);
    this.codec = options.codec ?? defaultZstd();
  }

  /** The objects stored so far, in order. */
  get objects(): readonly BackupObject[] {
    return this.stored;
  }

  /**
   * Stores one input as an object of this backup: zstd, age for an encrypted
   * repository, both checksums; visible only once complete. Resolves with its record.
   */
  async store(object: ObjectToStore, input: Readable, options: StoreObjectOptions): Promise<BackupObject> {
    const [result] = await storeObjects([this], object, input, options);
    if (!result!.ok) throw result!.error;
    return result!.object;
  }

  /**
   * Stores an object's bytes as they are (copy: compressed and encrypted by
   * the backup's writer). The caller checks them against `object.stored` as
   * they stream and fails the body on a mismatch, so nothing else is published.
   */
  async storeAsStored(object: BackupObject, body: Readable, options: { signal?: AbortSignal | undefined } = {}): Promise<void> {
    this.assertOpen();
    await this.repository.writeStoredObject(this.source, this.id, object.name, body, options);
    this.stored.push(object);
  }

  /**
   * Stores an object of a deduplicating repository that shares this one's
   * chunk ids (copy): only the chunks missing here are sent, and the record
   * names the same stream ref. Its `stored` is what it added here.
   */
  async transferContent(object: BackupObject & { content: StreamRef }, from: ContentStore, options: { signal?: AbortSignal | undefined } = {}): Promise<{ object: BackupObject; totals: TransferTotals }> {
    this.assertOpen();
    if (!this.content) throw new PgkeepError('INTERNAL', `${this.repository.location} has no content store to copy chunks into`);
    const totals = await this.content.transfer(from, object.content, options.signal);
    const record: BackupObject = { ...object, stored: { size: totals.sentCompressedBytes, sha256: object.stored.sha256 }, encryption: this.encryption };
    this.stored.push(record);
    return { object: record, totals };
  }

  /**
   * Builds the manifest (manifest-builder.ts) from `body` and the objects
   * stored, writes it (authenticated when keys are configured), and releases
   * the lock. A failure removes the backup (abort) and rethrows.
   */
  async commit(body: ManifestBody<K>, finishedAt = new Date()): Promise<ManifestOf<K>> {
    this.assertOpen();
    try {
      throwIfAborted(this.options.signal);
      // the content store's last packs and index file first: the manifest records what they added
      const totals = await this.commitContent();
      const manifest = buildManifest(
        { id: this.id, source: this.source, kind: this.kind, name: this.options.name ?? null, labels: this.options.labels ?? [], startedAt: this.startedAt, finishedAt, codec: this.codec.name },
        body,
        this.stored,
        { encrypted: this.recipients !== null, content: totals && contentTotals(this.stored, totals) },
      );
      await this.publish(manifest, true);
      return manifest;
    } catch (error) {
      await this.abort();
      throw error;
    }
  }

  /**
   * Writes a manifest read from another repository, unchanged (its text, so
   * the HMAC its writer gave it survives), once every object it lists was
   * stored here. A failure removes the copy (abort) and rethrows.
   */
  async commitCopy(manifest: Manifest): Promise<void> {
    this.assertOpen();
    try {
      const names = new Set(this.stored.map((o) => o.name));
      const missing = manifest.objects.find((o) => !names.has(o.name));
      if (manifest.id !== this.id || manifest.source !== this.source || missing) {
        throw new PgkeepError('INTERNAL', `the manifest of ${manifest.source}/${manifest.id} does not match what was copied to ${this.source}/${this.id}${missing ? ` (object ${missing.name} was not stored)` : ''}`);
      }
      throwIfAborted(this.options.signal);
      await this.publish(manifest, false);
    } catch (error) {
      await this.abort();
      throw error;
    }
  }

  /**
   * Removes everything this writer stored (the backup's folder: the lock and
   * a fresh id make it this writer's alone) and releases the lock. A no-op
   * once committed or aborted, so callers can call it in `finally`. Best
   * effort: a folder it cannot remove has no manifest, and the next writer's
   * leftover clean-up removes it.
   */
  async abort(): Promise<void> {
    if (this.state !== 'open') return;
    this.state = 'aborted';
    try {
      // packs already written stay, named by no index: prune removes them after its grace
      await this.content?.release();
      await this.repository.discardBackupFolder(this.source, this.id);
    } finally {
      await this.lock?.release().catch(() => undefined);
    }
  }

  private get startedAt(): Date {
    return this.options.startedAt ?? new Date(0);
  }

  /** The object key's name for `name`: with the suffix of this repository's encoding. */
  storedName(name: string): string {
    return `${name}${storedSuffix(this.recipients)}`;
  }

  /** @internal storeObjects: where one object goes. */
  target(name: string) {
    this.assertOpen();
    return this.repository.storeTarget(this.source, this.id, this.storedName(name), this.recipients);
  }

  /** @internal storeObjects: the record of one object stored. */
  record(object: BackupObject): void {
    this.stored.push(object);
  }

  /** @internal storeObjects: every writer of one tee compresses alike. */
  get zstd(): ZstdCodec {
    return this.codec;
  }

  /** Once per backup: the content session's last packs, then its index file. */
  private async commitContent(): Promise<SessionTotals | undefined> {
    this.contentTotals ??= this.content?.commit();
    return this.contentTotals;
  }

  private async publish(manifest: Manifest, sign: boolean): Promise<void> {
    // the content store's packs become visible (an index file names them) before the manifest names their chunks
    await this.commitContent();
    faultPoint('before-manifest');
    const keys = sign && this.options.keys ? await writerManifestKeys(this.repository, this.options.keys).catch((error: unknown) => noManifestKeys({ warn: this.options.warn ?? (() => undefined) }, this.repository, error)) : [];
    await this.repository.writeManifest(manifest, keys);
    this.state = 'committed';
    faultPoint('after-manifest');
    await this.content?.release();
    await this.lock?.release().catch(() => undefined);
  }

  private assertOpen(): void {
    if (this.state !== 'open') throw new PgkeepError('INTERNAL', `backup ${this.source}/${this.id} was already ${this.state}`);
  }
}

/**
 * Stores one input into every writer at once: hashed and compressed once,
 * then teed (each repository encrypts to its own recipients). A writer whose
 * write fails is detached and the others go on; one result per writer, in
 * order. Rejects only when every writer failed.
 */
export async function storeObjects(writers: readonly BackupWriter[], object: ObjectToStore, input: Readable, options: StoreObjectOptions): Promise<StoreResult[]> {
  if (writers.length === 0) throw new PgkeepError('INTERNAL', 'storeObjects: no writer');
  const deduped = writers.filter((w) => w.content !== undefined);
  const results = deduped.length === 0 ? await storeFiles(writers, object, input, options) : await storeWithContent(writers, deduped, object, input, options);
  faultPoint('after-object-stored');
  return results;
}

/** The input as one file per repository: hashed and compressed once, teed, each encrypted to its repository's recipients. */
async function storeFiles(writers: readonly BackupWriter[], object: ObjectToStore, input: Readable, options: StoreObjectOptions): Promise<StoreResult[]> {
  const { boundaries: _ignored, ...store } = options;
  const targets = writers.map((w) => w.target(object.name));
  const results = await storeStreamTee(targets, input, { ...store, codec: writers[0]!.zstd });
  return results.map((result, i): StoreResult => {
    if (!result.ok) return result;
    const writer = writers[i]!;
    const record: BackupObject = {
      name: writer.storedName(object.name),
      role: object.role,
      ...(object.file === undefined ? {} : { file: object.file }),
      ...result.digests,
      compression: 'zstd',
      encryption: writer.encryption,
    };
    writer.record(record);
    return { ok: true, object: record };
  });
}

/**
 * The input into deduplicating repositories (chunks of their content stores)
 * and, when the backup also goes to others, as files there: one pass over
 * the input feeds every content store piece by piece and the others through
 * a stream of their own. Each repository fails alone; all failing rejects.
 */
async function storeWithContent(writers: readonly BackupWriter[], deduped: readonly BackupWriter[], object: ObjectToStore, input: Readable, options: StoreObjectOptions): Promise<StoreResult[]> {
  const { boundaries, onRawChunk, onRawBytes, complete, signal, ...rest } = options;
  complete?.catch(() => undefined); // judged below, after the input ended
  const files = writers.filter((w) => w.content === undefined);
  const pass = files.length > 0 ? new PassThrough({ highWaterMark: 1 << 20 }) : undefined;
  let filesSettled = false;
  const filesDone = pass
    ? storeFiles(files, object, pass, { ...rest, signal }).finally(() => {
        filesSettled = true;
      })
    : Promise.resolve([]);
  filesDone.catch(() => undefined);
  const feeds = deduped.map((writer) => ({ writer, feed: writer.content!.begin({ name: object.name, role: object.role, file: object.file }), error: undefined as unknown }));
  const allFailed = () => feeds.every((f) => f.error !== undefined) && (!pass || filesSettled);
  let size = 0;
  try {
    for await (const piece of input as AsyncIterable<Buffer>) {
      throwIfAborted(signal);
      onRawChunk?.(piece);
      const starts = boundaries?.() ?? [];
      for (const f of feeds) {
        if (f.error !== undefined) continue;
        try {
          await f.feed.writer.write(piece, starts);
        } catch (error) {
          f.error = error;
        }
      }
      // the files' stream at its own pace; once they are done (failed), it is no longer fed
      if (pass && !filesSettled && !pass.write(piece)) await Promise.race([once(pass, 'drain'), filesDone.catch(() => undefined)]);
      size += piece.length;
      onRawBytes?.(size);
      if (allFailed()) break;
    }
    await complete;
    pass?.end();
  } catch (error) {
    pass?.destroy(error as Error);
    await filesDone.catch(() => undefined);
    throw error;
  }
  const fileResults = await filesDone.catch((error: unknown) => files.map((): StoreResult => ({ ok: false, error })));
  const results: StoreResult[] = [];
  for (const writer of writers) {
    if (writer.content === undefined) {
      results.push(fileResults[files.indexOf(writer)]!);
      continue;
    }
    const f = feeds.find((x) => x.writer === writer)!;
    if (f.error !== undefined) {
      results.push({ ok: false, error: f.error });
      continue;
    }
    try {
      const record: BackupObject = { ...(await f.feed.finish()), encryption: writer.encryption };
      writer.record(record);
      results.push({ ok: true, object: record });
    } catch (error) {
      results.push({ ok: false, error });
    }
  }
  if (results.every((r) => !r.ok)) throw (results[0] as { error: unknown }).error;
  return results;
}

/**
 * A backup's totals.content: its streams' chunks (from their refs, so a copy
 * that sent only the missing chunks counts them all), how many this session
 * stored (new to this repository), and the bytes of the packs it wrote.
 */
function contentTotals(objects: readonly BackupObject[], session: SessionTotals): ContentTotals {
  const chunks = objects.reduce((n, o) => n + (o.content?.chunks ?? 0), 0);
  return { chunks, newChunks: session.newChunks, addedBytes: session.newStoredBytes, packs: session.packs };
}

/** No keys configured: an unencrypted repository needs none. */
const NO_KEYS: KeySettings = { identityFile: undefined, passphrase: () => undefined };

export type BeginResult<K extends BackupKind> = { repository: Repository; writer: BackupWriter<K> } | { repository: Repository; error: unknown };

/**
 * Begins one backup in several repositories (a backup to all of a source's
 * repositories): lock, source record and leftovers in each, then one id free
 * in all. A repository failing there is reported in its result and left out;
 * the others go on. An abort (the signal) releases every lock taken and rethrows.
 */
export async function beginBackups<K extends BackupKind>(repositories: readonly Repository[], source: string, kind: K, options: BeginBackupOptions): Promise<BeginResult<K>[]> {
  const startedAt = options.startedAt ?? new Date();
  const entries: { repository: Repository; lock?: SourceLock | undefined; error?: unknown }[] = repositories.map((repository) => ({ repository }));
  const release = async (entry: (typeof entries)[number]) => {
    await entry.lock?.release().catch(() => undefined);
    entry.lock = undefined;
  };
  const contents = new Map<(typeof entries)[number], ContentWriting>();
  try {
    // 1. lock, source record, leftovers
    for (const entry of entries) {
      try {
        throwIfAborted(options.signal);
        if (!options.lockHeld) entry.lock = await entry.repository.lockSource(source, options.command);
        await entry.repository.ensureSource(source, options.database);
        const leftovers = await entry.repository.removeLeftovers(source);
        if (leftovers.length > 0) options.info?.(`removed ${leftovers.length} interrupted backup(s) ${options.leftoversWhere ?? `in ${entry.repository.location}`}: ${leftovers.join(', ')}`);
      } catch (error) {
        if (options.signal?.aborted) throw error;
        entry.error = error;
        await release(entry);
      }
    }

    // 2. the id: free in every repository still in
    const taken = new Set<string>();
    for (const entry of entries) {
      if (entry.error !== undefined) continue;
      try {
        // a new id must be free of every folder, complete or not: their ids, without asking each for its manifest
        if (options.id === undefined) for (const id of await entry.repository.listBackupIds(source)) taken.add(id);
        else for (const folder of await entry.repository.listBackupFolders(source)) if (folder.complete) taken.add(folder.id);
      } catch (error) {
        if (options.signal?.aborted) throw error;
        entry.error = error;
        await release(entry);
      }
    }
    let id: string;
    if (options.id !== undefined) {
      id = validateBackupId(options.id);
      if (taken.has(id)) {
        for (const entry of entries) {
          if (entry.error !== undefined) continue;
          entry.error = new PgkeepError('BACKUP_EXISTS', `${entry.repository.location} already holds backup ${id} of source ${source}`, { details: { source, id } });
          await release(entry);
        }
      }
    } else {
      const at = startedAt.getTime();
      let offset = 0;
      do id = makeBackupId(new Date(at + offset++ * 1000), options.name ?? undefined);
      while (taken.has(id));
    }
    // 3. deduplicating repositories: the shared content lock and a session (prune does not sweep meanwhile)
    for (const entry of entries) {
      if (entry.error !== undefined || !entry.repository.info.content) continue;
      try {
        throwIfAborted(options.signal);
        contents.set(entry, (await ContentWriting.begin(entry.repository, options.keys ?? NO_KEYS, options.command, options.signal))!);
      } catch (error) {
        if (options.signal?.aborted) throw error;
        entry.error = error;
        await release(entry);
      }
    }
    return entries.map((entry) =>
      entry.error !== undefined
        ? { repository: entry.repository, error: entry.error }
        : { repository: entry.repository, writer: new BackupWriter(entry.repository, source, kind, id, entry.lock, { ...options, startedAt }, contents.get(entry)) },
    );
  } catch (error) {
    for (const content of contents.values()) await content.release();
    for (const entry of entries) await release(entry);
    throw error;
  }
}
