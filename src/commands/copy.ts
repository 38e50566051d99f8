import { isDeepStrictEqual } from 'node:util';
import { pipeline, Transform, type Readable } from 'node:stream';
import { pipeline as pipelineAsync } from 'node:stream/promises';
import { repositoryUrl, toolPaths, validateName, type Settings } from '../config/settings.js';
import { isPgkeepError, PgkeepError, throwIfAborted } from '../errors.js';
import { HashCounter } from '../pipeline/hash-counter.js';
import { discardSink } from '../pipeline/load-stream.js';
import type { AgeIdentity } from '../pipeline/age.js';
import { backupDatabaseName, type BackupObject, type Manifest } from '../repository/manifest.js';
import { Repository, type EncryptionInfo } from '../repository/repository.js';
import type { BackupWriter } from '../repository/backup-writer.js';
import { repositoryAt, type RepositoryLocation } from '../repository/open-repository.js';
import { isUnreadError, verifyBackup, type VerifyReport } from '../verify/verify-backup.js';
import type { CommandContext } from '../registry/command-context.js';
import { isEncrypted, readIdentities } from '../repository/repository-keys.js';
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
   * none: the backup was already at the destination, nothing was copied.
   */
  mode: 'full' | 'integrity' | 'none';
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
  bytes: number;
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
  if (manifest.objects.some((o) => o.content)) {
    // its objects are chunks of that repository's content store, named by ids keyed to it: not files to copy as stored
    throw new PgkeepError(
      'USAGE',
      `backup ${manifest.source}/${manifest.id} is in a deduplicating repository: copy cannot move it yet; list both repositories under repos: so each backup is written to both, or restore it and back it up to ${request.to}`,
    );
  }
  const toPlace = repositoryAt(settings, toUrl);
  if (toPlace.location === from.location) {
    throw new PgkeepError('USAGE', `--from and --to are the same repository (${from.location}): choose another destination`);
  }
  const { repository: to, created } = await openDestination(toPlace, from);
  const encryption = from.info.encryption;

  // Keys for the full verification at the destination, read before anything is copied so a wrong key fails early.
  const encrypted = isEncrypted(manifest);
  const identities = encrypted && hasKeys(ctx, to) ? await readIdentities(to, ctx.keys) : [];
  const base = { id: manifest.id, source: manifest.source, from: from.location, to: to.location, createdDestination: created, encryption };

  // Cancelling, or a failing stage, stops the others.
  const controller = new AbortController();
  const stop = () => controller.abort(ctx.signal.reason);
  ctx.signal.addEventListener('abort', stop, { once: true });
  const signal = controller.signal;

  let writer: BackupWriter | undefined;
  try {
    throwIfAborted(signal);
    // The backup writer at the destination: the source lock, leftovers cleared, the backup's own id (refused when taken).
    try {
      writer = await to.beginBackup(manifest.source, manifest.kind, {
        command: 'copy',
        database: backupDatabaseName(manifest),
        id: manifest.id,
        info: (message) => ctx.info(message),
        leftoversWhere: 'at the destination',
        signal,
      });
    } catch (error) {
      if (!isPgkeepError(error, 'BACKUP_EXISTS')) throw error;
      const existing = await to.readManifest(manifest.source, manifest.id);
      if (!isDeepStrictEqual(existing, manifest)) {
        throw new PgkeepError(
          'REPO_EXISTS',
          `${to.location} already holds a different backup ${manifest.id} of source ${manifest.source} (its manifest differs from the one in ${from.location}): nothing was copied; check both with pgkeep show`,
        );
      }
      ctx.info(`backup ${manifest.source}/${manifest.id} is already in ${to.location}: nothing to copy`);
      return { ...base, copied: false, objects: 0, bytes: 0, durationMs: Date.now() - started, verification: { mode: 'none', ok: true, problems: [] } };
    }

    // 1. the objects, as stored
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

    // 2. verification at the destination, before the manifest makes the copy visible
    const verification = await verifyAtDestination(ctx, to, manifest, identities, signal);
    if (!verification.ok) {
      throw new PgkeepError('VERIFY_FAILED', `the copy of backup ${manifest.id} at ${to.location} failed verification: ${verification.problems[0]}; nothing was published there`, {
        details: { report: verification.report },
      });
    }

    // 3. the manifest, last: as read (its text, so the HMAC of its writer survives)
    await writer.commitCopy(manifest);
    return { ...base, copied: true, objects: manifest.objects.length, bytes, durationMs: Date.now() - started, verification };
  } catch (error) {
    throw signal.aborted && signal.reason instanceof PgkeepError ? signal.reason : error;
  } finally {
    ctx.signal.removeEventListener('abort', stop);
    // Not committed: the writer removes what was copied and releases the lock.
    await writer?.abort();
  }
}

/** A --from/--to value as a repository URL: relative paths are relative to the working folder. */
function repositoryLocation(settings: Settings, value: string): string {
  return repositoryUrl({ ...settings, options: { ...settings.options, repo: value } });
}

/**
 * Opens the destination, creating it in an empty location with the source's
 * encryption (and, for a passphrase repository, its wrapped identity), or
 * refuses a destination whose encryption differs: objects are copied as they are.
 */
async function openDestination(place: RepositoryLocation, from: Repository): Promise<{ repository: Repository; created: boolean }> {
  const encryption = from.info.encryption;
  let repository: Repository | undefined;
  let created = false;
  if (!encryption) {
    created = await place.isFresh();
    repository = await place.open({ createIfEmpty: true });
  } else {
    try {
      repository = await place.open();
    } catch (error) {
      if (!(error instanceof PgkeepError && error.code === 'REPO_MISSING')) throw error;
    }
    if (!repository) {
      try {
        repository = await place.init(encryption);
        created = true;
      } catch (error) {
        if (!(error instanceof PgkeepError && error.code === 'REPO_EXISTS')) throw error;
        repository = await place.open(); // created concurrently: check that one
      }
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
  description: 'copy one backup to another repository (e.g. off-site to S3), then verify it there',
  arguments: [{ name: '<backup>', description: 'backup id, or latest' }],
  options: [
    { flags: '--from <url>', description: 'repository to copy from: a local path or s3://bucket/prefix', required: true },
    { flags: '--to <url>', description: 'repository to copy to (an empty location is created with the same encryption)', required: true },
  ],
  help: { globals: ['config', 'source', 'identity'], examples: ['pgkeep copy latest --from ./backups --to s3://offsite/app'] },
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
      : 'integrity checked there (stored SHA-256 and size of every object; not decrypted: give --identity or a passphrase for a full verify)';
  out.line(
    `copied ${result.source}/${result.id} to ${result.to} in ${formatDuration(result.durationMs)}: ` +
      `${result.objects} object(s), ${formatBytes(result.bytes)}; ${verified}`,
  );
  if (result.createdDestination) out.line(`created the repository at ${result.to}${result.encryption ? ' with the same encryption as the source' : ''}`);
}
