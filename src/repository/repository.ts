import { randomUUID } from 'node:crypto';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { PgkeepError } from '../errors.js';
import { faultPoint } from '../fault-points.js';
import type { Readable as ReadableStream } from 'node:stream';
import { joinKey, readObject, type PutOptions, type Storage } from '../storage/storage.js';
import { PGKEEP_VERSION } from '../version.js';
import { isBackupId, validateBackupId } from './backup-id.js';
import { fileDigest, upgradeManifest, type BackupObject, type Manifest } from './manifest.js';
import { authenticate, canonicalManifest, checksumMatches, type ManifestKey } from './manifest-integrity.js';
import { manifestText, type BackupKind } from './manifest-builder.js';
import { beginBackups, type BackupWriter, type BeginBackupOptions } from './backup-writer.js';
import { WalArchive } from './wal-archive.js';
import type { AgeRecipient } from '../pipeline/age.js';
import type { StoreTarget } from '../pipeline/store-stream.js';
import { loadStream, type LoadOptions } from '../pipeline/load-stream.js';
import type { Writable } from 'node:stream';
import { acquireSourceLock, inspectSourceLock, type LockOwner, type SourceLock } from './source-lock.js';
import { VerificationSchema, verificationFileName, type Verification, type VerificationInput } from './verification.js';

export { REPO_FORMAT } from './repo-info.js';
import { DEDUP_REPO_FORMAT, PLAIN_REPO_FORMAT, REPO_FORMAT } from './repo-info.js';
import { ContentInfoSchema, createContentInfo, type ContentInfo } from './content-store/content-keys.js';
import { loadContent } from './content-store/load-content.js';
import { registerStorage } from './repository-storage.js';
import { findUnfinishedInit, unfinishedInitError } from './unfinished-init.js';
const INFO_FILE = 'pgkeep.json';
const MANIFEST_FILE = 'manifest.json';
/** In a backup folder whose removal began (see removeBackup). */
export const DELETING_FILE = 'deleting.json';

/** The label of the safety backup a restore takes of what it replaces; "latest" passes over such backups. */
export const SAFETY_LABEL = 'pre-restore';

/** A backup whose manifest cannot be read: listed as damaged, never as an internal error. */
export interface DamagedBackup {
  source: string;
  id: string;
  error: PgkeepError;
}

/** Errors that mean "this one backup's manifest is unusable", not "the repository cannot be read". */
export function isManifestDamage(error: unknown): error is PgkeepError {
  return error instanceof PgkeepError && (error.code === 'MANIFEST_INVALID' || error.code === 'REPO_FORMAT');
}

/** What readManifest throws for a backup folder without a manifest: a backup still running, or interrupted. */
function isManifestMissing(error: unknown): boolean {
  return error instanceof PgkeepError && error.code === 'BACKUP_NOT_FOUND';
}

function damage(source: string, id: string, what: string, cause?: unknown): PgkeepError {
  return new PgkeepError('MANIFEST_INVALID', `backup ${id} of source ${source} is damaged: ${what}`, { ...(cause === undefined ? {} : { cause }), details: { source, id } });
}

/** The text and canonical form of each manifest read, for its authentication and to copy it unchanged. */
const written = new WeakMap<Manifest, { canonical: string; text: string }>();

function byStart(a: Manifest, b: Manifest): number {
  return a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.id < b.id ? -1 : 1;
}

/**
 * How every object of an encrypted repository is encrypted: age, to these
 * X25519 public keys, or (exclusively, as age requires) to a passphrase.
 * Only public information: the private identity never enters the repository.
 */
export const EncryptionInfoSchema = z.object({
  method: z.literal('age'),
  recipients: z.array(z.string().startsWith('age1')),
  passphrase: z.boolean(),
});
export type EncryptionInfo = z.infer<typeof EncryptionInfoSchema>;

const RepoInfoSchema = z.object({
  format: z.number().int(),
  id: z.string(),
  created: z.string(),
  pgkeepVersion: z.string(),
  encryption: EncryptionInfoSchema.nullable(),
  /** A deduplicating repository (init --dedup): its content store (docs/content-store.md). Such a repository has format 2. */
  content: ContentInfoSchema.optional(),
});
export type RepoInfo = z.infer<typeof RepoInfoSchema>;

/**
 * Whether a new repository deduplicates unless its creator asks otherwise
 * (`pgkeep init --plain` or `--dedup`): `init`, and the first backup into an
 * empty location. Existing repositories keep the format they were made with.
 */
export const DEDUP_BY_DEFAULT: boolean = true;

/** An age file of a known text, written at init of a passphrase repository to check passphrases later. */
export const KEY_CHECK_FILE = 'keycheck.age';

/**
 * The repository format on top of any Storage: repository info, per-source
 * backups with their manifests, and leftovers of interrupted backups.
 * A backup exists only once its manifest is written; everything else in its
 * folder is invisible until then.
 */
export class Repository {
  private constructor(
    /** Private: everything above src/repository/ goes through the repository's methods (repository-storage.ts gives it to src/repository/ itself). */
    private readonly storage: Storage,
    readonly info: RepoInfo,
  ) {
    registerStorage(this, storage);
  }

  get location(): string {
    return this.storage.location;
  }

  /**
   * Creates the repository info in an empty location. A deduplicating one
   * has format 2, which older pgkeep refuses to read (it would not find the
   * bytes of its backups); the others keep format 1.
   */
  static async init(storage: Storage, encryption: EncryptionInfo | null = null, content?: ContentInfo): Promise<Repository> {
    const info: RepoInfo = {
      format: content ? DEDUP_REPO_FORMAT : PLAIN_REPO_FORMAT,
      id: randomUUID(),
      created: new Date().toISOString(),
      pgkeepVersion: PGKEEP_VERSION,
      encryption,
      ...(content ? { content } : {}),
    };
    // an encrypted repository's keys are written by now (unfinished-init.ts: what a kill here leaves, and who removes it)
    faultPoint('before-repo-info');
    const created = await storage.putIfAbsent(INFO_FILE, Buffer.from(`${JSON.stringify(info, null, 2)}\n`));
    if (!created) throw new PgkeepError('REPO_EXISTS', `a pgkeep repository already exists at ${storage.location}`);
    return new Repository(storage, info);
  }

  /**
   * Opens an existing repository. With `createIfEmpty`, an empty or missing
   * location is initialised (the first backup implies init): unencrypted,
   * deduplicating when DEDUP_BY_DEFAULT says so.
   */
  static async open(storage: Storage, options: { createIfEmpty?: boolean } = {}): Promise<Repository> {
    if (!(await storage.stat(INFO_FILE))) {
      if (await storage.isEmpty()) {
        if (options.createIfEmpty) {
          try {
            // an unencrypted content store writes nothing before pgkeep.json: a concurrent creator still loses cleanly on it
            return await Repository.init(storage, null, DEDUP_BY_DEFAULT ? await createContentInfo(storage, null) : undefined);
          } catch (error) {
            if (!(error instanceof PgkeepError && error.code === 'REPO_EXISTS')) throw error;
            // initialised concurrently by another process: open that one
          }
        } else {
          throw new PgkeepError('REPO_MISSING', `no pgkeep repository at ${storage.location}: run "pgkeep init --repo ${storage.location}" or take a first backup, or check --repo`);
        }
      } else if (!(await storage.stat(INFO_FILE))) {
        // Looked at again: another process (serve runs several first backups at once) may have created the
        // repository between the two looks, its pgkeep.json first and then its backup's objects. Only a location
        // that holds objects and still no pgkeep.json is someone else's (seen in CI: a first backup failed with
        // REPO_NOT_PGKEEP beside another source's first backup into the same new repository).
        const unfinished = await findUnfinishedInit(storage);
        if (unfinished) throw unfinishedInitError(storage.location, unfinished, false, new Date());
        // the listing may have met the pgkeep.json of an init that finished meanwhile: a repository, not a foreign location
        if (!(await storage.stat(INFO_FILE))) {
          throw new PgkeepError('REPO_NOT_PGKEEP', `${storage.location} is not a pgkeep repository (no ${INFO_FILE}, and it is not empty): choose an empty or new location with --repo`);
        }
      }
    }
    let info: RepoInfo;
    try {
      info = RepoInfoSchema.parse(JSON.parse((await readObject(storage, INFO_FILE)).toString('utf8')));
    } catch (error) {
      throw new PgkeepError('REPO_NOT_PGKEEP', `${storage.location}/${INFO_FILE} is not a valid pgkeep repository info file`, { cause: error });
    }
    if (info.format > REPO_FORMAT) {
      throw new PgkeepError('REPO_FORMAT', `the repository at ${storage.location} has format ${info.format}, written by pgkeep ${info.pgkeepVersion}; this pgkeep (${PGKEEP_VERSION}) reads format ${REPO_FORMAT}: upgrade pgkeep`);
    }
    return new Repository(storage, info);
  }

  backupFolder(source: string, id: string): string {
    return joinKey('sources', source, 'backups', validateBackupId(id));
  }

  objectKey(source: string, id: string, object: string): string {
    return joinKey(this.backupFolder(source, id), object);
  }

  /**
   * Records a source in the repository (once). Every folder pgkeep lists then
   * directly holds an object, which some S3-compatible servers need to report
   * it as a folder at all (s3rver lists only prefixes that hold objects directly).
   */
  async ensureSource(source: string, database: string): Promise<void> {
    const key = joinKey('sources', source, 'source.json');
    if (await this.storage.stat(key)) return;
    const record = { name: source, database, created: new Date().toISOString() };
    await this.storage.putIfAbsent(key, Buffer.from(`${JSON.stringify(record, null, 2)}\n`));
  }

  async listSources(): Promise<string[]> {
    const names: string[] = [];
    for await (const entry of this.storage.list('sources')) {
      if (entry.kind === 'folder') names.push(entry.path.split('/').pop()!);
    }
    return names;
  }

  /** Backup folders of a source, complete or not, oldest first. */
  async listBackupFolders(source: string): Promise<{ id: string; complete: boolean }[]> {
    const result: { id: string; complete: boolean }[] = [];
    for (const id of await this.listBackupIds(source)) result.push({ id, complete: await this.hasManifest(source, id) });
    return result;
  }

  /**
   * The ids of a source's backup folders (one listing), oldest first: complete or not, not looked into. For
   * what needs no more than the ids: listBackupFolders asks each folder for its manifest, a HEAD per backup on S3.
   */
  async listBackupIds(source: string): Promise<string[]> {
    const ids: string[] = [];
    for await (const entry of this.storage.list(joinKey('sources', source, 'backups'))) {
      if (entry.kind !== 'folder') continue;
      const id = entry.path.split('/').pop()!;
      if (isBackupId(id)) ids.push(id);
    }
    return ids;
  }

  /**
   * Complete backups (those with a manifest), oldest first; all sources when
   * none is given. A backup whose manifest cannot be read (damaged, edited,
   * from a newer pgkeep) is left out and, when `damaged` is given, added to
   * it: one bad backup never hides the others.
   */
  async listBackups(source?: string, damaged?: DamagedBackup[]): Promise<Manifest[]> {
    const sources = source === undefined ? await this.listSources() : [source];
    const manifests: Manifest[] = [];
    for (const name of sources) {
      for (const id of await this.listBackupIds(name)) {
        try {
          const manifest = await this.readManifestIfPresent(name, id);
          if (manifest) manifests.push(manifest);
        } catch (error) {
          if (!isManifestDamage(error)) throw error;
          damaged?.push({ source: name, id, error });
        }
      }
    }
    return manifests.sort(byStart);
  }

  /**
   * What is wrong with the objects of a backup that one listing of its folder
   * can tell (a missing object, a stored size that differs from the
   * manifest); empty when every object is there. Cheap, unlike verify, which
   * reads every byte.
   */
  async missingObjects(manifest: Manifest): Promise<string[]> {
    const folder = this.backupFolder(manifest.source, manifest.id);
    const sizes = new Map<string, number>();
    for await (const entry of this.storage.list(folder, { recursive: true })) {
      if (entry.kind === 'object') sizes.set(entry.path.slice(folder.length + 1), entry.size);
    }
    const problems: string[] = [];
    for (const object of manifest.objects) {
      if (object.content) continue; // in the content store: its chunks are checked by verify
      const size = sizes.get(object.name);
      if (size === undefined) problems.push(`object ${object.name} is missing`);
      else if (size !== object.stored.size) problems.push(`object ${object.name} has ${size} bytes, the manifest says ${object.stored.size}`);
    }
    return problems;
  }

  /**
   * The backup's manifest, or undefined when its folder has none (a backup still running, or interrupted; or
   * no such folder). Read without asking first whether it is there: a missing manifest answers "not found" to
   * the read as it would to a stat, and on S3 that stat was a HEAD per backup on every listing, "latest" and
   * prune (a repository of a year of daily backups: 365 requests more each time). Damage is thrown as by
   * readManifest.
   */
  async readManifestIfPresent(source: string, id: string): Promise<Manifest | undefined> {
    try {
      return await this.readManifest(source, id);
    } catch (error) {
      if (isManifestMissing(error)) return undefined;
      throw error;
    }
  }

  async readManifest(source: string, id: string): Promise<Manifest> {
    const key = joinKey(this.backupFolder(source, id), MANIFEST_FILE);
    let raw: unknown;
    let text: string;
    try {
      text = (await readObject(this.storage, key)).toString('utf8');
      raw = JSON.parse(text);
    } catch (error) {
      if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') {
        throw new PgkeepError('BACKUP_NOT_FOUND', `no backup ${id} of source ${source} in ${this.location}: see pgkeep list`, { cause: error });
      }
      if (error instanceof PgkeepError) throw error;
      throw damage(source, id, `its manifest (${key}) is not valid JSON`, error);
    }
    let manifest: Manifest;
    try {
      manifest = upgradeManifest(raw);
    } catch (error) {
      if (!(error instanceof PgkeepError)) throw error;
      if (error.code === 'REPO_FORMAT') throw new PgkeepError('REPO_FORMAT', `backup ${id} ${error.message.replace(/^it /, '')}`, { details: { source, id } });
      throw damage(source, id, error.message.replace(/^it /, ''));
    }
    // The checksum over the text as written (the file's key order), not over what zod made of it.
    const canonical = canonicalManifest(raw as Record<string, unknown>);
    if (!checksumMatches(canonical, manifest.integrity)) {
      throw damage(source, id, 'its manifest was changed after pgkeep wrote it (its checksum does not match)');
    }
    written.set(manifest, { canonical, text });
    if (manifest.id !== id || manifest.source !== source) {
      throw damage(source, id, `its manifest names backup ${manifest.source}/${manifest.id} (moved or copied by hand)`);
    }
    return manifest;
  }

  /**
   * Written last: this is the moment the backup becomes visible. It carries
   * a checksum and, with `keys` (the writer's identities in an encrypted
   * repository), an HMAC per key. A manifest read from a repository and
   * written unchanged without keys (copy) keeps its text byte for byte, with
   * the authentication its writer gave it.
   */
  async writeManifest(manifest: Manifest, keys: readonly ManifestKey[] = []): Promise<void> {
    const key = joinKey(this.backupFolder(manifest.source, manifest.id), MANIFEST_FILE);
    await this.storage.put(key, Readable.from([Buffer.from(manifestText(manifest, keys, written.get(manifest)?.text))]));
  }

  /**
   * Begins writing a backup of `source` (backup-writer.ts): takes the source
   * lock, removes leftovers, chooses a free id; the writer stores objects and
   * writes the manifest last (commit), or removes what it stored (abort).
   */
  async beginBackup<K extends BackupKind>(source: string, kind: K, options: BeginBackupOptions): Promise<BackupWriter<K>> {
    const [begun] = await beginBackups([this], source, kind, options);
    if ('error' in begun!) throw begun.error;
    return begun!.writer;
  }

  /**
   * Checks a manifest read from this repository against the reader's keys
   * (encrypted repositories): refuses one whose HMAC does not match (it was
   * changed by someone without the key), and says in words how far it is
   * proven: authenticated, checksum only, or neither (older pgkeep).
   */
  authenticateManifest(manifest: Manifest, keys: readonly ManifestKey[]): string {
    const read = written.get(manifest);
    if (!manifest.integrity || !read) return 'no checksum (written by an older pgkeep): not checked';
    if (!this.info.encryption) return 'checksum ok';
    const result = authenticate(read.canonical, manifest.integrity, keys);
    switch (result.state) {
      case 'authenticated':
        return `checksum ok, authenticated (HMAC with the key of ${result.key.slice(0, 12)}…)`;
      case 'forged':
        throw damage(manifest.source, manifest.id, `its manifest was changed by someone without the repository's key (its HMAC does not match)`);
      case 'other-key':
        return `checksum ok; not authenticated here: its HMAC was made with another identity (${result.keys.map((k) => `${k.slice(0, 12)}…`).join(', ')})`;
      case 'unauthenticated':
        return 'checksum ok; not authenticated: written by a pgkeep that held no identity of the repository (only its public keys)';
    }
  }

  /**
   * Finds a backup by id or "latest". Without a source, an id is looked up in
   * every source (and must be unique); "latest" needs one source, or a
   * repository holding a single source. With `kind`, "latest" is the newest backup of that kind.
   */
  async resolveBackup(ref: string, source: string | undefined, kind?: Manifest['kind'], onSkipped?: (message: string) => void): Promise<Manifest> {
    if (ref === 'latest') {
      let name = source;
      if (name === undefined) {
        const sources = await this.sourcesWithBackups();
        if (sources.length > 1) {
          throw new PgkeepError('SOURCE_UNKNOWN', `the repository holds backups of several sources (${sources.join(', ')}): choose one with --source`);
        }
        name = sources[0];
      }
      // "latest" is the newest intact backup: a damaged manifest or a missing
      // object skips a backup (with a message), it does not block the rest.
      const damaged: DamagedBackup[] = [];
      // nor a safety backup (label pre-restore): it holds the state a restore replaced, often the damage itself, so
      // "restore latest" after a restore must not bring it back; its id (printed by that restore) still names it
      const all = name === undefined ? [] : (await this.listBackups(name, damaged)).filter((m) => kind === undefined || m.kind === kind);
      const regular = all.filter((m) => !m.labels.includes(SAFETY_LABEL));
      const backups = regular.length > 0 ? regular : all;
      const skipped: { id: string; why: string }[] = [];
      let latest: Manifest | undefined;
      for (const candidate of backups.toReversed()) {
        const problems = await this.missingObjects(candidate);
        if (problems.length === 0) {
          latest = candidate;
          break;
        }
        skipped.push({ id: candidate.id, why: `backup ${candidate.id} of source ${name} is damaged: ${problems[0]}` });
      }
      for (const bad of damaged) {
        if (latest === undefined || bad.id > latest.id) skipped.push({ id: bad.id, why: bad.error.message });
      }
      for (const { id, why } of skipped.sort((a, b) => (a.id < b.id ? 1 : -1))) onSkipped?.(`"latest" skipped a damaged backup: ${why} (see pgkeep verify ${id})`);
      if (!latest) {
        const note = skipped.length > 0 ? ` (${skipped.length} damaged backup(s) skipped: ${skipped.map((s) => s.id).join(', ')})` : '';
        throw new PgkeepError('BACKUP_NOT_FOUND', `no ${skipped.length > 0 ? 'intact ' : ''}${kind ? `${kind} ` : ''}backups${name ? ` of source ${name}` : ''} in ${this.location}${skipped.length > 0 ? '' : ' yet'}${note}: run pgkeep backup${kind === 'physical' ? ' --physical' : ''}`);
      }
      return latest;
    }
    validateBackupId(ref);
    const sources = source === undefined ? await this.listSources() : [source];
    const found: Manifest[] = [];
    for (const name of sources) {
      const manifest = await this.readManifestIfPresent(name, ref);
      if (manifest) found.push(manifest);
    }
    if (found.length === 0) throw new PgkeepError('BACKUP_NOT_FOUND', `no backup ${ref}${source ? ` of source ${source}` : ''} in ${this.location}: see pgkeep list`);
    if (found.length > 1) {
      throw new PgkeepError('BACKUP_AMBIGUOUS', `backup ${ref} exists for several sources (${found.map((m) => m.source).join(', ')}): choose one with --source`);
    }
    return found[0]!;
  }

  private async sourcesWithBackups(): Promise<string[]> {
    const names: string[] = [];
    for (const name of await this.listSources()) {
      if (await this.hasCompleteBackup(name)) names.push(name);
    }
    return names;
  }

  /** Whether a source has a backup with a manifest: its folders asked newest first, until one has (most often the first). */
  async hasCompleteBackup(source: string): Promise<boolean> {
    for (const id of (await this.listBackupIds(source)).reverse()) {
      if (await this.hasManifest(source, id)) return true;
    }
    return false;
  }

  /**
   * Removes folders of backups that never got a manifest (interrupted runs).
   * Call only while holding the source lock, so a running backup is never touched.
   */
  async removeLeftovers(source: string): Promise<string[]> {
    const removed: string[] = [];
    for (const folder of await this.listBackupFolders(source)) {
      if (folder.complete) continue;
      await this.storage.removeFolder(this.backupFolder(source, folder.id));
      removed.push(folder.id);
    }
    return removed;
  }

  /** Stores the evidence of one verification of a backup (never replaces an earlier one). */
  async writeVerification(input: VerificationInput): Promise<Verification> {
    const verification = VerificationSchema.parse(input);
    const key = joinKey(this.verificationFolder(verification.source, verification.backupId), verificationFileName(new Date(verification.startedAt)));
    await this.storage.put(key, Readable.from([Buffer.from(`${JSON.stringify(verification, null, 2)}\n`)]));
    return verification;
  }

  /** Every verification of a backup, oldest first; unreadable records are skipped. */
  async listVerifications(source: string, id: string): Promise<Verification[]> {
    const records: Verification[] = [];
    for await (const entry of this.storage.list(this.verificationFolder(source, id))) {
      if (entry.kind !== 'object' || !entry.path.endsWith('.json')) continue;
      try {
        records.push(VerificationSchema.parse(JSON.parse((await readObject(this.storage, entry.path)).toString('utf8'))));
      } catch {
        // a record from a newer pgkeep or a damaged one says nothing we can trust
      }
    }
    return records.sort((a, b) => (a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : 0));
  }

  /** The newest verification of a backup (of `kind`, when given). */
  async lastVerification(source: string, id: string, kind?: Verification['kind']): Promise<Verification | undefined> {
    return (await this.listVerifications(source, id)).filter((v) => kind === undefined || v.kind === kind).at(-1);
  }

  /**
   * The newest verification of every backup of a source that has one, by
   * backup id: one listing of the source's verifications, then one read per
   * backup (record names sort by time, so the last name is the newest).
   */
  async lastVerifications(source: string): Promise<Map<string, Verification>> {
    const newest = new Map<string, string>();
    for await (const entry of this.storage.list(joinKey('sources', source, 'verifications'), { recursive: true })) {
      if (entry.kind !== 'object' || !entry.path.endsWith('.json')) continue;
      const id = entry.path.split('/').at(-2)!;
      const current = newest.get(id);
      if (current === undefined || entry.path > current) newest.set(id, entry.path);
    }
    const records = new Map<string, Verification>();
    for (const [id, key] of newest) {
      try {
        records.set(id, VerificationSchema.parse(JSON.parse((await readObject(this.storage, key)).toString('utf8'))));
      } catch {
        // unreadable: as if not verified
      }
    }
    return records;
  }

  verificationFolder(source: string, id: string): string {
    return joinKey('sources', source, 'verifications', validateBackupId(id));
  }

  /** The WAL archive of a source (sources/<source>/wal). */
  walArchive(source: string): WalArchive {
    return new WalArchive(this.storage, source);
  }

  /** Takes the source's lock (one writer per source: backup, copy, prune, restore over it, sources remove). */
  lockSource(source: string, command: string): Promise<SourceLock> {
    return acquireSourceLock(this.storage, source, command);
  }

  /** Who holds the source's lock, if anyone (and whether that process is gone). */
  inspectSourceLock(source: string): Promise<{ owner: LockOwner; stale: boolean } | undefined> {
    return inspectSourceLock(this.storage, source);
  }

  /**
   * Whether the source lock excludes writers on other hosts: only where the
   * storage honours conditional creates (If-None-Match on S3).
   */
  get locksExcludeOtherHosts(): boolean {
    return this.storage.capabilities.conditionalCreate;
  }

  /** Removes the folder of an incomplete backup (a leftover prune chose): call holding the source lock. */
  async removeIncompleteBackup(source: string, id: string): Promise<void> {
    await this.storage.removeFolder(this.backupFolder(source, id));
  }

  /**
   * Where one object of a backup being written goes, for the pipeline
   * (store-stream.ts writes the bytes; the repository chooses the key).
   */
  storeTarget(source: string, id: string, object: string, encrypt: AgeRecipient[] | null): StoreTarget {
    return { storage: this.storage, key: this.objectKey(source, id, object), encrypt };
  }

  /**
   * Streams one object of a backup into `sink`, checked against the manifest
   * (stored and raw SHA-256, decrypted and decompressed): load-stream.ts over
   * this repository's storage. For restore, pitr, verify.
   */
  loadObject(manifest: Pick<Manifest, 'source' | 'id'>, object: BackupObject, sink: Writable, options: LoadOptions): Promise<void> {
    // a stream of the content store: chunks from packs, each checked (content-store/load-content.ts)
    if (object.content) return loadContent(this, { ...object, content: object.content }, sink, options);
    return loadStream(this.storage, this.objectKey(manifest.source, manifest.id, object.name), { ...object, raw: fileDigest(object) }, sink, options);
  }

  /** When the newest file of a source's WAL archive was written (undefined when it holds none): status's archive lag. */
  async lastWalWrittenAt(source: string): Promise<Date | undefined> {
    let last: number | undefined;
    for await (const entry of this.storage.list(joinKey('sources', source, 'wal'), { recursive: true })) {
      if (entry.kind === 'object') last = Math.max(last ?? 0, entry.modified.getTime());
    }
    return last === undefined ? undefined : new Date(last);
  }

  /** Whether one object of a backup is in the storage (verify: a missing object is named, not read). */
  async hasObject(manifest: Pick<Manifest, 'source' | 'id'>, object: string): Promise<boolean> {
    return (await this.storage.stat(this.objectKey(manifest.source, manifest.id, object))) !== undefined;
  }

  /** Whether the backup's manifest exists (complete backup), without reading it. */
  async hasManifest(source: string, id: string): Promise<boolean> {
    return (await this.storage.stat(joinKey(this.backupFolder(source, id), MANIFEST_FILE))) !== undefined;
  }

  /** The stored bytes of one object of a backup (as stored: compressed, maybe encrypted). */
  readStoredObject(source: string, id: string, object: string): Promise<ReadableStream> {
    return this.storage.get(this.objectKey(source, id, object));
  }

  /** Writes one object of a backup as stored bytes (copy: moved as they are). */
  async writeStoredObject(source: string, id: string, object: string, body: ReadableStream, options: PutOptions = {}): Promise<void> {
    await this.storage.put(this.objectKey(source, id, object), body, options);
  }

  /** Removes a backup's folder as it is (a backup being written that failed: no manifest yet). Best effort. */
  async discardBackupFolder(source: string, id: string): Promise<void> {
    await this.storage.removeFolder(this.backupFolder(source, id)).catch(() => undefined);
  }

  /** Whether the repository holds anything of a source. */
  async holdsSource(source: string): Promise<boolean> {
    for await (const _ of this.storage.list(joinKey('sources', source))) return true;
    return false;
  }

  /** Whether the repository holds WAL of a source. */
  async holdsWal(source: string): Promise<boolean> {
    for await (const _ of this.storage.list(joinKey('sources', source, 'wal'))) return true;
    return false;
  }

  /**
   * Removes what is left of a source after its backups were removed (WAL,
   * pins, verifications, failure records, unreadable backups, the source
   * record). Call holding the source lock; `removeSourceFolder` after releasing it.
   */
  async removeSourceContents(source: string): Promise<void> {
    for (const part of ['backups', 'wal', 'pins', 'verifications', 'failures']) await this.storage.removeFolder(joinKey('sources', source, part));
    await this.storage.remove(joinKey('sources', source, 'source.json')).catch(() => undefined);
  }

  /** Removes the source's folder (its lock folder included): after removeSourceContents and the lock's release. */
  async removeSourceFolder(source: string): Promise<void> {
    await this.storage.removeFolder(joinKey('sources', source));
  }

  /**
   * Removes a source that only a failed first backup wrote (its source.json,
   * failure records): only when that is all its folder holds; returns whether it did.
   */
  async forgetSourceIfOnlyRecords(source: string): Promise<boolean> {
    const folder = joinKey('sources', source);
    for await (const entry of this.storage.list(folder, { recursive: true })) {
      if (entry.kind !== 'object') continue;
      const inside = entry.path.slice(folder.length + 1);
      if (inside !== 'source.json' && !inside.startsWith('failures/')) return false;
    }
    await this.storage.removeFolder(folder);
    return true;
  }

  /**
   * Writes and removes a probe object at the top level (not under sources/:
   * that would make a source of a name never backed up): proves the
   * repository is writable (pgkeep check).
   */
  async probeWrite(): Promise<void> {
    const probe = `.pgkeep-check-${randomUUID().replaceAll('-', '').slice(0, 12)}`;
    try {
      await this.storage.put(probe, Readable.from([Buffer.from('pgkeep check\n')]));
      await this.storage.remove(probe);
    } catch (error) {
      await this.storage.remove(probe).catch(() => undefined);
      throw error;
    }
  }

  /**
   * Removes a backup: manifest first, so a half-deleted backup is never
   * listed as complete. A note that it is being deleted goes first, so the
   * next prune finishes a removal a kill interrupted at once, rather than
   * waiting an hour as for a folder a backup may still be writing.
   */
  async removeBackup(source: string, id: string): Promise<void> {
    await this.storage.put(joinKey(this.backupFolder(source, id), DELETING_FILE), Readable.from([Buffer.from(`${JSON.stringify({ deleting: id, at: new Date().toISOString() })}\n`)]));
    await this.storage.remove(joinKey(this.backupFolder(source, id), MANIFEST_FILE));
    faultPoint('mid-prune');
    await this.storage.removeFolder(this.backupFolder(source, id));
  }
}
