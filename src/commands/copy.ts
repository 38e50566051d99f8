import { isDeepStrictEqual } from 'node:util';
import { PassThrough, pipeline, Transform, type Readable } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { repositoryUrl, toolPaths, validateName, type KeySettings, type Settings } from '../config/settings.js';
import { DumpRowCounter } from '../pipeline/dump-row-counter.js';
import { DEFAULT_ZSTD_LEVEL, defaultZstd } from '../pipeline/zstd.js';
import { manifestBodyOf } from '../repository/manifest-builder.js';
import { fingerprintOf } from '../repository/content-store/content-keys.js';
import { chunkerParamsOf, openContentStore, recordedFingerprint } from '../repository/content-store/open-content-store.js';
import { isPgkeepError, PgkeepError, throwIfAborted } from '../errors.js';
import { HashCounter } from '../pipeline/hash-counter.js';
import { discardSink } from '../pipeline/load-stream.js';
import type { AgeIdentity } from '../pipeline/age.js';
import { backupDatabaseName, type BackupObject, type Manifest } from '../repository/manifest.js';
import { Repository, type EncryptionInfo } from '../repository/repository.js';
import type { BackupWriter, BeginBackupOptions } from '../repository/backup-writer.js';
import { repositoryAt, type RepositoryLocation } from '../repository/open-repository.js';
import { isUnreadError, verifyBackup, type VerifyReport } from '../verify/verify-backup.js';
import type { CommandContext } from '../registry/command-context.js';
import { identitiesFor, isEncrypted, readIdentities } from '../repository/repository-keys.js';
import { faultPoint } from '../fault-points.js';
import { z } from 'zod';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { formatBytes, formatDuration } from '../cli/format.js';

export interface CopyRequest {
  /** Backup id, or "latest" (per source). */
  backup: string;
  /** Source and destination repositories: local paths, file:// or s3:// URLs. */
  from: string;
  to: string;
  source?: string | undefined;
}

export interface CopyVerification {
  /**
   * full: what pgkeep verify does (checksums, decryption, decompression, table of contents);
   * integrity: stored SHA-256 and size of every object only (encrypted, and no identity was given);
   * chunks: every chunk was checked against its id as it was read from the source; the destination, encrypted, was not read back (no identity for it);
   * none: the backup was already at the destination, nothing was copied.
   */
  mode: 'full' | 'integrity' | 'chunks' | 'none';
  ok: boolean;
  problems: string[];
  report?: VerifyReport | undefined;
}

export interface CopyResult {
  id: string;
  source: string;
  from: string;
  to: string;
  /** False when the destination already held this backup (nothing was done). */
  copied: boolean;
  /** True when the destination was an empty location and copy created the repository. */
  createdDestination: boolean;
  encryption: EncryptionInfo | null;
  objects: number;
  /** Bytes written at the destination: objects as stored, or the new chunks (compressed) a deduplicating destination lacked. */
  bytes: number;
  /**
   * How the backup moved: as-stored (objects copied byte for byte, between
   * repositories without deduplication), chunks (only the chunks the
   * destination lacked: both repositories share chunk ids), restored (each
   * original stream read back and stored again as the destination stores).
   */
  method: 'as-stored' | 'chunks' | 'restored';
  /** The backup's logical size (its streams before compression). */
  logicalBytes: number;
  /** Chunks method: chunk ids walked (data and lists) and chunks sent. */
  chunks?: { walked: number; sent: number } | undefined;
  durationMs: number;
  verification: CopyVerification;
}

/**
 * Copies one backup between repositories (e.g. local → S3 off-site), object by
 * object as stored (no decryption), each checked against the manifest's stored
 * SHA-256 and size while it streams. The objects are verified at the
 * destination before its manifest is written, so the copy becomes visible only
 * once it is complete and proven; any failure removes what was copied.
 */
export async function runCopy(ctx: CommandContext, request: CopyRequest): Promise<CopyResult> {
  const started = Date.now();
  const { settings } = ctx;
  // 1. the source repository and the backup
  const fromUrl = repositoryLocation(settings, request.from);
  const toUrl = repositoryLocation(settings, request.to);
  if (request.source !== undefined) validateName(request.source, 'source');

  const from = await repositoryAt(settings, fromUrl).open().catch((error: unknown) => {
    if (error instanceof PgkeepError && error.code === 'REPO_MISSING') {
      throw new PgkeepError('REPO_MISSING', `no pgkeep repository at ${fromUrl} to copy from: check --from`, { cause: error });
    }
    throw error;
  });
  const manifest = await from.resolveBackup(request.backup, request.source, undefined, ctx.warn);
  const toPlace = repositoryAt(settings, toUrl);
  if (toPlace.location === from.location) {
    throw new PgkeepError('USAGE', `--from and --to are the same repository (${from.location}): choose another destination`);
  }

  // 2. how: a deduplicating repository on either side stores the backup in its own chunks (copyThroughContent)
  const existing = await toPlace.openToCreate();
  if (manifest.objects.some((o) => o.content) || existing?.info.content) {
    const to = existing ?? (await createSharingDestination(toPlace, from, ctx.keys));
    return copyThroughContent(ctx, from, manifest, to, started, existing === undefined);
  }

  // 3. as stored: between repositories without deduplication, objects move byte for byte
  const { repository: to, created } = await openDestination(toPlace, from);
  const encryption = from.info.encryption;

  // Keys for the full verification at the destination, read before anything is copied so a wrong key fails early.
  const encrypted = isEncrypted(manifest);
  const identities = encrypted && hasKeys(ctx, to) ? await readIdentities(to, ctx.keys) : [];
  const base = { id: manifest.id, source: manifest.source, from: from.location, to: to.location, createdDestination: created, encryption };

  const signal = ctx.signal;

  let writer: BackupWriter | undefined;
  try {
    throwIfAborted(signal);
    // The backup writer at the destination: the source lock, leftovers cleared, the backup's own id (refused when taken).
    writer = await beginCopy(ctx, from, to, manifest, {}, { same: isDeepStrictEqual, what: 'its manifest differs from the one' }, signal);
    if (!writer) {
      return { ...base, copied: false, objects: 0, bytes: 0, method: 'as-stored', logicalBytes: manifest.totals.rawBytes, durationMs: Date.now() - started, verification: { mode: 'none', ok: true, problems: [] } };
    }

    // 3a. the objects, as stored
    ctx.info(`copying ${manifest.source}/${manifest.id} from ${from.location} to ${to.location}: ${manifest.objects.length} object(s)`);
    let bytes = 0;
    for (const object of manifest.objects) {
      throwIfAborted(signal);
      const before = bytes;
      await copyObject(from, writer, manifest, object, signal, (n) => {
        ctx.progress({ phase: 'copy', bytes: before + n, totalBytes: manifest.totals.storedBytes, item: object.name });
      });
      bytes += object.stored.size;
      faultPoint('mid-copy');
    }

    // 3b. verification at the destination, before the manifest makes the copy visible
    const verification = await verifyAtDestination(ctx, to, manifest, identities, signal);
    if (!verification.ok) {
      throw new PgkeepError('VERIFY_FAILED', `the copy of backup ${manifest.id} at ${to.location} failed verification: ${verification.problems[0]}; nothing was published there`, {
        details: { report: verification.report },
      });
    }

    // 3c. the manifest, last: as read (its text, so the HMAC of its writer survives)
    await writer.commitCopy(manifest);
    return { ...base, copied: true, objects: manifest.objects.length, bytes, method: 'as-stored', logicalBytes: manifest.totals.rawBytes, durationMs: Date.now() - started, verification };
  } catch (error) {
    throw signal.aborted && signal.reason instanceof PgkeepError ? signal.reason : error;
  } finally {
    // Not committed: the writer removes what was copied and releases the lock.
    await writer?.abort();
  }
}

/**
 * Copies a backup where either repository deduplicates. When both share chunk
 * ids (equal chunker fingerprints: `init --dedup --chunker-from`), only the
 * chunks the destination lacks are sent and the manifest names the same ids;
 * otherwise each object's original stream is read back (as `pgkeep cat`
 * does) and stored through the destination's writer, which chunks or
 * compresses and encrypts it as that repository does. Either way: packs, then
 * the index, then the manifest, under the destination's source lock and
 * shared content lock, so a kill at any point leaves it consistent.
 */
async function copyThroughContent(ctx: CommandContext, from: Repository, manifest: Manifest, to: Repository, started: number, created: boolean): Promise<CopyResult> {
  // 1. the source's content store (an encrypted one needs its identity), and whether the destination shares its chunk ids
  const sourceStore = manifest.objects.some((o) => o.content) ? await openContentStore(from, ctx.keys, 'read') : undefined;
  const shared = sourceStore !== undefined && to.info.content !== undefined && fingerprintOf(sourceStore.settings) === recordedFingerprint(to);
  // sharing chunk ids means sharing the content key: the destination's writer takes it from the source (no identity of its own needed)
  const sharedKey = shared && sourceStore.settings.idKey ? (await chunkerParamsOf(from, ctx.keys)).contentKey?.toString('hex') : undefined;
  const keys: KeySettings = sharedKey === undefined ? ctx.keys : { ...ctx.keys, contentKey: () => sharedKey };
  const identities = await identitiesFor(from, manifest, ctx.keys);
  const destinationIdentities = to.info.encryption && hasKeys(ctx, to) ? await readIdentities(to, ctx.keys).catch(() => []) : [];
  const method = shared ? 'chunks' : 'restored';
  const base = { id: manifest.id, source: manifest.source, from: from.location, to: to.location, createdDestination: created, encryption: to.info.encryption, method, logicalBytes: manifest.totals.rawBytes } as const;

  const signal = ctx.signal;
  let writer: BackupWriter | undefined;
  try {
    // 2. the destination's writer: source lock, content lock and session, the backup's own id and times
    writer = await beginCopy(
      ctx,
      from,
      to,
      manifest,
      { startedAt: new Date(manifest.startedAt), name: manifest.name, labels: manifest.labels, keys, warn: (message: string) => ctx.warn(message) },
      { same: sameStreams, what: 'its streams differ from those' },
      signal,
    );
    if (!writer) return { ...base, copied: false, objects: 0, bytes: 0, durationMs: Date.now() - started, verification: { mode: 'none', ok: true, problems: [] } };

    // 3. the objects: chunks the destination lacks, or each stream read back and stored again
    ctx.info(
      shared
        ? `copying ${manifest.source}/${manifest.id} from ${from.location} to ${to.location}: the chunks it lacks (both share chunk ids)`
        : `copying ${manifest.source}/${manifest.id} from ${from.location} to ${to.location}: ${manifest.objects.length} stream(s) read back and stored as the destination stores them`,
    );
    let bytes = 0;
    const chunks = { walked: 0, sent: 0 };
    for (const object of manifest.objects) {
      throwIfAborted(signal);
      if (shared && object.content) {
        const { totals } = await writer.transferContent({ ...object, content: object.content }, sourceStore, { signal });
        bytes += totals.sentCompressedBytes;
        chunks.walked += totals.chunks;
        chunks.sent += totals.sentChunks;
      } else {
        bytes += (await restoreInto(writer, from, manifest, object, identities, signal)).stored.size;
      }
      ctx.progress({ phase: 'copy', bytes, item: object.name });
      faultPoint('mid-copy');
    }

    // 4. packs, index, then the manifest: the same backup (id, times, tables) with the destination's objects
    const copied = await writer.commit(manifestBodyOf(manifest), new Date(manifest.finishedAt));

    // 5. read back at the destination: the copy is there now, and a failure says so
    const verification = to.info.content && to.info.encryption && destinationIdentities.length === 0
      ? { mode: 'chunks' as const, ok: true, problems: [] }
      : await verifyAtDestination(ctx, to, copied, destinationIdentities, signal);
    if (!verification.ok) {
      throw new PgkeepError('VERIFY_FAILED', `the copy of backup ${manifest.id} at ${to.location} failed verification: ${verification.problems[0]}; remove it there (pgkeep prune) and copy again`, {
        details: { report: verification.report },
      });
    }
    return { ...base, copied: true, objects: manifest.objects.length, bytes, chunks: shared ? chunks : undefined, durationMs: Date.now() - started, verification };
  } catch (error) {
    throw signal.aborted && signal.reason instanceof PgkeepError ? signal.reason : error;
  } finally {
    await writer?.abort();
  }
}

/**
 * One object's original stream (decrypted, decompressed, or put together
 * from chunks) stored again through the destination's writer, checked
 * against the source's raw SHA-256 and size. A custom-format dump is cut
 * where each table's data starts, as a backup cuts it.
 */
async function restoreInto(writer: BackupWriter, from: Repository, manifest: Manifest, object: BackupObject, identities: AgeIdentity[], signal: AbortSignal): Promise<BackupObject> {
  const pass = new PassThrough({ highWaterMark: 1 << 20 });
  const loading = from.loadObject(manifest, object, pass, { codec: defaultZstd(), identities, signal });
  loading.catch(() => undefined); // judged by the store (complete), which fails the write
  const counter = object.role === 'dump' && manifest.kind === 'logical' && manifest.options.format === 'custom' ? new DumpRowCounter() : undefined;
  const level = manifest.kind === 'logical' ? manifest.options.compressLevel : DEFAULT_ZSTD_LEVEL;
  const record = await writer.store({ name: originalName(object), role: object.role, file: object.file }, pass, {
    level,
    signal,
    complete: loading,
    onRawChunk: counter ? (chunk) => counter.push(chunk) : undefined,
    boundaries: counter ? () => counter.takeBlockStarts() : undefined,
  });
  // the bytes were checked as they were read (a file against its SHA-256, a content stream chunk by chunk against
  // its ids), and a failed read fails the store; this compares what the two records both name
  if (record.raw.size !== object.raw.size || (record.raw.sha256 !== undefined && object.raw.sha256 !== undefined && record.raw.sha256 !== object.raw.sha256)) {
    throw new PgkeepError('CHECKSUM_MISMATCH', `object ${object.name} of backup ${manifest.id} read back as ${record.raw.size} bytes that do not match its manifest (${object.raw.size} bytes): the source backup is damaged`);
  }
  return record;
}

/** An object's name before the suffix a repository without deduplication gives it (".zst", ".zst.age"). */
function originalName(object: BackupObject): string {
  return object.content ? object.name : object.name.replace(/\.zst(\.age)?$/, '');
}

/**
 * Two manifests of one backup hold the same streams (whatever each repository stored them as): the same roles,
 * files and sizes, and the same SHA-256 where both record one (a content stream of a format 2 manifest has none).
 */
function sameStreams(a: Manifest, b: Manifest): boolean {
  const streams = (m: Manifest) => m.objects.map((o) => ({ key: `${o.role}\0${o.file ?? ''}\0${o.raw.size}`, sha256: o.raw.sha256 })).sort((x, y) => x.key.localeCompare(y.key));
  const [x, y] = [streams(a), streams(b)];
  return a.kind === b.kind && x.length === y.length && x.every((o, i) => o.key === y[i]!.key && (o.sha256 === undefined || y[i]!.sha256 === undefined || o.sha256 === y[i]!.sha256));
}

/** A --from/--to value as a repository URL: relative paths are relative to the working folder. */
function repositoryLocation(settings: Settings, value: string): string {
  return repositoryUrl({ ...settings, options: { ...settings.options, repo: value } });
}

/**
 * An empty destination for a backup of a deduplicating repository: created
 * with the source's encryption and chunking parameters (its content key,
 * read with its identity, as the copy needs anyway), as `pgkeep init
 * --chunker-from` does, so this copy and every later one send only the
 * chunks it lacks. A passphrase repository's wrapped identity comes along.
 */
async function createSharingDestination(place: RepositoryLocation, from: Repository, keys: KeySettings): Promise<Repository> {
  const chunker = await chunkerParamsOf(from, keys);
  try {
    if (from.info.encryption?.passphrase) await place.adoptWrappedIdentity(from);
    return await place.init(from.info.encryption, chunker);
  } catch (error) {
    if (!(error instanceof PgkeepError && error.code === 'REPO_EXISTS')) throw error;
    return place.open(); // created concurrently: copy checks that one as any existing destination
  }
}

/**
 * Opens the destination, creating it in an empty location as a mirror of the
 * (plain) source: without deduplication whatever the default for new
 * repositories, with the source's encryption (and, for a passphrase
 * repository, its wrapped identity); or refuses a destination whose
 * encryption differs: objects are copied as they are.
 */
async function openDestination(place: RepositoryLocation, from: Repository): Promise<{ repository: Repository; created: boolean }> {
  const encryption = from.info.encryption;
  let repository = await place.openToCreate();
  let created = false;
  if (!repository) {
    try {
      repository = await place.init(encryption);
      created = true;
    } catch (error) {
      if (!(error instanceof PgkeepError && error.code === 'REPO_EXISTS')) throw error;
      repository = await place.open(); // created concurrently: check that one
    }
  }
  assertSameEncryption(from, repository);
  // The destination's objects are encrypted to the source's key: it needs the same (passphrase-wrapped) identity.
  if (encryption?.passphrase) await place.adoptWrappedIdentity(from);
  return { repository, created };
}

function assertSameEncryption(from: Repository, to: Repository): void {
  const a = from.info.encryption;
  const b = to.info.encryption;
  const same = a === null ? b === null : b !== null && a.method === b.method && a.passphrase === b.passphrase && sameSet(a.recipients, b.recipients);
  if (same) return;
  const describe = (e: EncryptionInfo | null) =>
    e === null ? 'unencrypted' : e.passphrase ? 'encrypted with its own passphrase key' : `encrypted to ${e.recipients.length} recipient(s) ${e.recipients.map(short).join(', ')}`;
  const detail =
    a?.passphrase && b?.passphrase
      ? 'the two repositories are encrypted with different passphrase keys'
      : `the source is ${describe(a)}, the destination ${describe(b)}`;
  throw new PgkeepError(
    'REPO_EXISTS',
    `cannot copy from ${from.location} to ${to.location}: ${detail}; copy moves stored objects as they are and does not re-encrypt: choose a destination with the same encryption, or an empty location`,
  );
}

function sameSet(a: string[], b: string[]): boolean {
  const x = new Set(a);
  const y = new Set(b);
  return x.size === y.size && [...x].every((v) => y.has(v));
}

function short(recipient: string): string {
  return `${recipient.slice(0, 12)}…${recipient.slice(-6)}`;
}

/** Whether an identity file or a (passphrase repository's) passphrase is configured. */
function hasKeys(ctx: CommandContext, repository: Repository): boolean {
  if (ctx.keys.identityFile) return true;
  return Boolean(repository.info.encryption?.passphrase && ctx.keys.passphrase() !== undefined);
}

/** storage.get → SHA-256 and size, checked against the manifest → storage.put; bounded memory, bytes as stored. */
async function copyObject(
  from: Repository,
  to: BackupWriter,
  manifest: Manifest,
  object: BackupObject,
  signal: AbortSignal,
  onBytes: (n: number) => void,
): Promise<void> {
  const input: Readable = await from.readStoredObject(manifest.source, manifest.id, object.name).catch((error: unknown) => {
    if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') {
      throw new PgkeepError('CHECKSUM_MISMATCH', `object ${object.name} of backup ${manifest.id} is missing from ${from.location}: the source backup is damaged`, { cause: error });
    }
    throw error;
  });
  const counter = new HashCounter({ digest: object.stored, what: `object ${object.name} (stored bytes) in ${from.location}` });
  const tap = new Transform({
    highWaterMark: 1 << 20,
    transform(chunk: Buffer, _encoding, callback) {
      onBytes(counter.size);
      callback(null, chunk);
    },
  });
  // Any stage's error (a checksum mismatch at the end) destroys the body, so put never publishes it.
  const body = pipeline(input, counter, tap, () => undefined);
  try {
    await to.storeAsStored(object, body, { signal });
  } finally {
    input.destroy();
  }
}

async function verifyAtDestination(ctx: CommandContext, to: Repository, manifest: Manifest, identities: AgeIdentity[], signal: AbortSignal): Promise<CopyVerification> {
  const encrypted = isEncrypted(manifest);
  if (!encrypted || identities.length > 0) {
    ctx.info(`verifying the copy at ${to.location}`);
    const report = await verifyBackup(to, manifest, {
      identities,
      signal,
      ...toolPaths(ctx.settings),
      onProgress: (object, bytes) => ctx.progress({ phase: 'verify', bytes, totalBytes: manifest.totals.rawBytes, item: object }),
    });
    return { mode: 'full', ok: report.ok, problems: report.problems, report };
  }
  ctx.info(`verifying the copy at ${to.location}: integrity only (no identity or passphrase given, so encrypted objects are not decrypted)`);
  const problems: string[] = [];
  for (const object of manifest.objects) {
    throwIfAborted(signal);
    try {
      const input = await to.readStoredObject(manifest.source, manifest.id, object.name);
      let done = 0;
      const counter = new HashCounter({ digest: object.stored, what: `object ${object.name} (stored bytes)` });
      counter.on('data', () => {
        if (counter.size - done >= 1 << 20) ctx.progress({ phase: 'verify', bytes: (done = counter.size), totalBytes: object.stored.size, item: object.name });
      });
      await pipelineAsync([input, counter, discardSink()], { signal });
    } catch (error) {
      if (error instanceof PgkeepError && error.code === 'ABORTED') throw error;
      if (signal.aborted) throw error;
      // could not read it (the network): no verdict on the copy
      if (isUnreadError(error)) throw error;
      problems.push(error instanceof PgkeepError && error.code === 'CHECKSUM_MISMATCH' ? error.message : `object ${object.name}: ${(error as Error).message}`);
    }
  }
  return { mode: 'integrity', ok: problems.length === 0, problems };
}

/** `pgkeep copy ID --from URL --to URL`. */
export const copyCommand: CommandSpec<CopyRequest, CopyResult> = {
  name: 'copy',
  description: 'copy one backup to another repository (e.g. off-site to S3; between repositories sharing chunk ids, only the missing chunks), then verify it there',
  arguments: [{ name: '<backup>', description: 'backup id, or latest' }],
  options: [
    { flags: '--from <url>', description: 'repository to copy from: a local path or s3://bucket/prefix', required: true },
    { flags: '--to <url>', description: 'repository to copy to (an empty location is created with the same encryption, unless the source deduplicates)', required: true },
  ],
  help: {
    globals: ['config', 'source', 'identity'],
    examples: ['pgkeep copy latest --from ./backups --to s3://offsite/app', 'pgkeep copy 20261121T020000Z --from /srv/backups --to s3://offsite/app   # to a repo made with init --dedup --chunker-from: only missing chunks'],
  },
  parse: requestParser(z.object({ backup: z.string(), from: z.string(), to: z.string() }), ({ args: [backup], options }) => ({ backup, from: options.from, to: options.to })),
  run: (ctx, request) => runCopy(ctx, { ...request, source: ctx.settings.options.source }),
  print: (result, out) => printCopyDone(result, out),
};

// Printing for a terminal (moved from src/cli/print.ts)

function printCopyDone(result: CopyResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (!result.copied) {
    out.line(`backup ${result.source}/${result.id} is already in ${result.to} (same manifest): nothing copied`);
    return;
  }
  const verified =
    result.verification.mode === 'full'
      ? 'verified there (checksums, decompression, table of contents)'
      : result.verification.mode === 'chunks'
        ? 'every chunk checked against its id as it was read (the destination is encrypted: give --identity or a passphrase to read it back)'
        : 'integrity checked there (stored SHA-256 and size of every object; not decrypted: give --identity or a passphrase for a full verify)';
  const moved =
    result.method === 'chunks'
      ? `${result.chunks?.sent ?? 0} of ${result.chunks?.walked ?? 0} chunk(s) sent, ${formatBytes(result.bytes)} for ${formatBytes(result.logicalBytes)} of data (the rest was there already)`
      : result.method === 'restored'
        ? `${result.objects} stream(s) stored again as the destination stores them (${formatBytes(result.logicalBytes)} of data, ${formatBytes(result.bytes)} added)`
        : `${result.objects} object(s), ${formatBytes(result.bytes)}`;
  out.line(`copied ${result.source}/${result.id} to ${result.to} in ${formatDuration(result.durationMs)}: ${moved}; ${verified}`);
  if (result.createdDestination) {
    out.line(`created the repository at ${result.to}${result.encryption ? ' with the same encryption as the source' : ''}${result.method === 'chunks' ? ', sharing its chunk ids: later copies send only the chunks it lacks' : ''}`);
  }
}

/**
 * The destination's backup writer for a copy (source lock, leftovers cleared,
 * the backup's own id), or undefined when the destination already holds this
 * backup (said once); a different backup under the same id is REPO_EXISTS.
 */
async function beginCopy(
  ctx: CommandContext,
  from: Repository,
  to: Repository,
  manifest: Manifest,
  extra: Partial<BeginBackupOptions>,
  held: { same: (there: Manifest, here: Manifest) => boolean; what: string },
  signal: AbortSignal,
): Promise<BackupWriter | undefined> {
  try {
    return await to.beginBackup(manifest.source, manifest.kind, {
      command: 'copy',
      database: backupDatabaseName(manifest),
      id: manifest.id,
      info: (message) => ctx.info(message),
      leftoversWhere: 'at the destination',
      signal,
      ...extra,
    });
  } catch (error) {
    if (!isPgkeepError(error, 'BACKUP_EXISTS')) throw error;
    if (!held.same(await to.readManifest(manifest.source, manifest.id), manifest)) {
      throw new PgkeepError(
        'REPO_EXISTS',
        `${to.location} already holds a different backup ${manifest.id} of source ${manifest.source} (${held.what} in ${from.location}): nothing was copied; check both with pgkeep show`,
      );
    }
    ctx.info(`backup ${manifest.source}/${manifest.id} is already in ${to.location}: nothing to copy`);
    return undefined;
  }
}
