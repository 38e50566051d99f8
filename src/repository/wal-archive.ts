import { randomBytes } from 'node:crypto';
import type { Readable, Writable } from 'node:stream';
import { PgkeepError } from '../errors.js';
import type { AgeIdentity, AgeRecipient } from '../pipeline/age.js';
import type { Digest } from '../pipeline/hash-counter.js';
import type { StoredDigests } from '../pipeline/store-stream.js';
import type { ZstdCodec } from '../pipeline/zstd.js';
import { walFileKind, type WalFileKind } from '../postgres/wal-file.js';
import { joinKey, readObject, type Storage } from '../storage/storage.js';
import { encryptionRecord, storedSuffix } from './repo-info.js';

/**
 * The WAL archive of one source: sources/<source>/wal/.
 *
 *   archive.json                       the cluster it belongs to (system identifier), claimed by the first push
 *   <timeline>/<name>.json             the record of one archived file: checksums, encryption, object name
 *   <timeline>/<name>.<token>.zst[.age] its bytes (zstd, then age when the repository is encrypted)
 *
 * A file exists in the archive once its record exists. The record is created
 * with putIfAbsent after its object is stored, so a push killed at any moment
 * leaves at most an unreferenced object, and a record is never replaced:
 * pushing the same name again is accepted only when the content is identical.
 * The random token keeps two racing pushes from writing the same object key.
 */

export const WAL_RECORD_FORMAT = 1;

/** What the archive knows about one archived file. */
export interface WalRecord {
  format: number;
  name: string;
  kind: WalFileKind;
  /** Object key relative to the timeline folder. */
  object: string;
  raw: Digest;
  stored: Digest;
  compression: 'zstd';
  encryption: { method: 'age'; recipients: string[] } | null;
  /** From the segment's page header; null for history and backup files. */
  systemIdentifier: string | null;
  pushedAt: string;
}

/** The cluster an archive belongs to. */
export interface ArchiveInfo {
  format: number;
  source: string;
  systemIdentifier: string;
  segmentSize: number;
  created: string;
}

export type PushOutcome = 'stored' | 'identical';

export interface WalPushOptions {
  /** Whom the stored bytes are encrypted to (for the record and the object's suffix); null when unencrypted. */
  encrypt: AgeRecipient[] | null;
  systemIdentifier: string | null;
  signal?: AbortSignal | undefined;
}

/** The bytes of one file to archive, as wal-push has them. */
export interface WalFileBytes {
  /**
   * The file's stored form (zstd, then age to the archive's recipients) encoded
   * whole in memory with its digests, or null when it must be streamed (too
   * large, or no native zstd).
   */
  encoded: Promise<{ data: Buffer; digests: StoredDigests } | null>;
  /** The raw file, for the streaming path. */
  open: () => Readable;
  /** zstd level of the streaming path. */
  level: number;
  /** The raw file's SHA-256 and size, asked only when a record of that name already exists. */
  rawDigest: () => Promise<Digest>;
}

export class WalArchive {
  readonly folder: string;

  constructor(
    readonly storage: Storage,
    readonly source: string,
  ) {
    this.folder = joinKey('sources', source, 'wal');
  }

  private timelineFolder(name: string): string {
    return joinKey(this.folder, name.slice(0, 8));
  }

  recordKey(name: string): string {
    return joinKey(this.timelineFolder(name), `${name}.json`);
  }

  objectKey(record: Pick<WalRecord, 'name' | 'object'>): string {
    return joinKey(this.timelineFolder(record.name), record.object);
  }

  async readInfo(): Promise<ArchiveInfo | undefined> {
    const key = joinKey(this.folder, 'archive.json');
    if (!(await this.storage.stat(key))) return undefined;
    const info = parseJson(await readObject(this.storage, key), key) as ArchiveInfo;
    if (typeof info?.systemIdentifier !== 'string') throw new PgkeepError('MANIFEST_INVALID', `${this.storage.location}/${key} is not a valid archive record`);
    return info;
  }

  /**
   * The archive's cluster: read, or claimed for `systemIdentifier` when this
   * is the first file archived. Throws WAL_FOREIGN when another cluster holds it.
   */
  async claim(systemIdentifier: string, segmentSize: number): Promise<ArchiveInfo> {
    let info = await this.readInfo();
    if (!info) {
      const fresh: ArchiveInfo = { format: WAL_RECORD_FORMAT, source: this.source, systemIdentifier, segmentSize, created: new Date().toISOString() };
      await this.storage.putIfAbsent(joinKey(this.folder, 'archive.json'), Buffer.from(`${JSON.stringify(fresh, null, 2)}\n`));
      info = (await this.readInfo())!;
    }
    if (info.systemIdentifier !== systemIdentifier) {
      throw new PgkeepError(
        'WAL_FOREIGN',
        `the WAL of source ${this.source} in ${this.storage.location} belongs to the cluster with system identifier ${info.systemIdentifier}, ` +
          `but this file comes from ${systemIdentifier}: check --source (each cluster needs its own source), or archive a re-created cluster under a new source name`,
      );
    }
    return info;
  }

  async readRecord(name: string): Promise<WalRecord | undefined> {
    const key = this.recordKey(name);
    let bytes: Buffer;
    try {
      bytes = await readObject(this.storage, key);
    } catch (error) {
      if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') return undefined;
      throw error;
    }
    const record = parseJson(bytes, key) as WalRecord;
    const digest = (d: Digest | undefined) => typeof d?.size === 'number' && typeof d.sha256 === 'string' && /^[0-9a-f]{64}$/.test(d.sha256);
    if (record?.name !== name || typeof record.object !== 'string' || !digest(record.raw) || !digest(record.stored) || record.object.includes('/')) {
      throw new PgkeepError('MANIFEST_INVALID', `the archive record ${this.storage.location}/${key} is damaged`);
    }
    if (record.format > WAL_RECORD_FORMAT) throw new PgkeepError('REPO_FORMAT', `the archive record of ${name} has format ${record.format}: upgrade pgkeep`);
    return record;
  }

  /**
   * Archives one file: the object (checksummed, encrypted like every object
   * of the repository, never visible half-written), then its record, created
   * only if absent. Resolves 'identical' when the archive already holds
   * exactly these bytes; rejects WAL_CONFLICT when it holds different ones
   * (nothing is written).
   */
  async push(name: string, bytes: WalFileBytes, options: WalPushOptions): Promise<PushOutcome> {
    const kind = walFileKind(name);
    if (!kind) throw new PgkeepError('WAL_INVALID', `"${name}" is not the name of a WAL segment, .partial, .history or .backup file`);
    const existing = await this.readRecord(name);
    if (existing) return this.compare(existing, await bytes.rawDigest());

    const object = `${name}.${randomBytes(4).toString('hex')}${storedSuffix(options.encrypt)}`;
    const objectKey = joinKey(this.timelineFolder(name), object);
    const digests = await this.storeObject(objectKey, bytes, options);
    const record: WalRecord = {
      format: WAL_RECORD_FORMAT,
      name,
      kind,
      object,
      raw: digests.raw,
      stored: digests.stored,
      compression: 'zstd',
      encryption: encryptionRecord(options.encrypt),
      systemIdentifier: options.systemIdentifier,
      pushedAt: new Date().toISOString(),
    };
    if (await this.storage.putIfAbsent(this.recordKey(name), Buffer.from(`${JSON.stringify(record, null, 2)}\n`))) return 'stored';
    // Another push of the same name won the race: ours is surplus either way.
    await this.storage.remove(objectKey).catch(() => undefined);
    return this.compare((await this.readRecord(name))!, record.raw);
  }

  /** Writes one object whole: a single put of the encoded bytes, or the streaming pipeline (visible only once complete). */
  private async storeObject(key: string, bytes: WalFileBytes, options: WalPushOptions): Promise<StoredDigests> {
    const encoded = await bytes.encoded;
    if (encoded) {
      // The key holds a random token: nothing can be there yet, and one write needs no stream.
      if (!(await this.storage.putIfAbsent(key, encoded.data))) throw new PgkeepError('INTERNAL', `${this.storage.location}/${key} already exists`);
      return encoded.digests;
    }
    // Loaded here, not at the top: most pushes encode in memory, and wal-push is start-up bound.
    const [{ storeStreamTee }, { defaultZstd }] = await Promise.all([import('../pipeline/store-stream.js'), import('../pipeline/zstd.js')]);
    const [result] = await storeStreamTee([{ storage: this.storage, key, encrypt: options.encrypt }], bytes.open(), { codec: defaultZstd(), level: bytes.level, signal: options.signal, encrypt: options.encrypt });
    if (!result!.ok) throw result!.error;
    return result!.digests;
  }

  private compare(existing: WalRecord, raw: Digest): PushOutcome {
    if (existing.raw.sha256 === raw.sha256 && existing.raw.size === raw.size) return 'identical';
    throw new PgkeepError(
      'WAL_CONFLICT',
      `${existing.name} is already archived for source ${this.source} with different content (${existing.raw.size} bytes, SHA-256 ${existing.raw.sha256.slice(0, 16)}…; ` +
        `this file: ${raw.size} bytes, ${raw.sha256.slice(0, 16)}…); the archived copy was kept: check that only one cluster archives to this source`,
    );
  }

  /**
   * Streams an archived file into `sink`, checking both checksums as it goes.
   * Rejects WAL_MISSING when the archive does not hold it.
   */
  async fetch(
    name: string,
    sink: Writable,
    options: { codec: ZstdCodec; identities?: AgeIdentity[] | undefined; signal?: AbortSignal | undefined; record?: WalRecord | undefined },
  ): Promise<WalRecord> {
    const record = options.record ?? (await this.readRecord(name));
    if (!record) throw new PgkeepError('WAL_MISSING', `${name} is not in the WAL archive of source ${this.source} at ${this.storage.location}`);
    const object = { name: record.name, role: 'wal' as const, raw: record.raw, stored: record.stored, compression: record.compression, encryption: record.encryption };
    // Loaded here, not at the top: wal-push (once per segment, start-up bound) never reads the archive back.
    const { loadStream } = await import('../pipeline/load-stream.js');
    await loadStream(this.storage, this.objectKey(record), object, sink, options);
    return record;
  }

  /**
   * An archived file's bytes, checked, in memory: null when it is too large
   * for that (or zstd-napi is missing), and `fetch` should stream it instead.
   */
  async read(record: WalRecord, options: { identities?: AgeIdentity[] | undefined }): Promise<Buffer | null> {
    const { loadInMemory } = await import('../pipeline/load-in-memory.js');
    return loadInMemory(this.storage, this.objectKey(record), record, options);
  }

  /**
   * Removes one archived file: its record first (from then on it is no
   * longer archived), then its bytes. Prune, for WAL no retained backup needs.
   */
  async remove(name: string): Promise<void> {
    const record = await this.readRecord(name).catch(() => undefined);
    await this.storage.remove(this.recordKey(name));
    if (record) await this.storage.remove(this.objectKey(record));
  }

  /** Names of every archived file (records), by timeline folder then name. */
  async listNames(): Promise<string[]> {
    const names: string[] = [];
    for await (const folder of this.storage.list(this.folder)) {
      if (folder.kind !== 'folder') continue;
      for await (const entry of this.storage.list(folder.path)) {
        if (entry.kind !== 'object' || !entry.path.endsWith('.json')) continue;
        const name = entry.path.split('/').pop()!.slice(0, -'.json'.length);
        if (walFileKind(name)) names.push(name);
      }
    }
    return names.sort();
  }
}

function parseJson(bytes: Buffer, key: string): unknown {
  try {
    return JSON.parse(bytes.toString('utf8'));
  } catch (error) {
    throw new PgkeepError('MANIFEST_INVALID', `${key} in the WAL archive is not valid JSON`, { cause: error });
  }
}

