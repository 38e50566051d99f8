/**
 * Storage on S3 and S3-compatible object stores (MinIO, Ceph RGW, R2, B2, ...).
 *
 * The repository `s3://bucket/prefix` has the same layout as a local one: a
 * storage key `sources/app/backups/<id>/dump.zst` is the object
 * `prefix/sources/app/backups/<id>/dump.zst` in `bucket`.
 *
 * Credentials, region and endpoint come from the AWS SDK's default chain
 * (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY / AWS_SESSION_TOKEN, AWS_PROFILE and
 * ~/.aws/*, AWS_REGION, AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL); explicit
 * values in `S3StorageOptions` win. A custom endpoint switches to path-style
 * addressing (`endpoint/bucket/key`), which every S3-compatible server accepts.
 *
 * The AWS SDK is loaded on first use (dynamic import), so local repositories
 * do not pay for it, and no SDK type crosses this file's boundary.
 */
import { randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { PgkeepError, abortError } from '../errors.js';
import { ResumableBody, type BodyPart } from './resumable-body.js';
import { runSignal } from '../run-signal.js';
import { MAX_PART_SIZE, MAX_PARTS, MIN_PART_SIZE, uploadMultipart, type MultipartTarget, type PartBody } from './s3-multipart.js';
import type { ByteRange, PutOptions, PutResult, Storage, StorageCapabilities, StorageEntry, StorageStat } from './storage.js';

const MiB = 1024 * 1024;
/** Parts uploaded in parallel: memory is about (queueSize + 1) parts of at most 32 MiB (see s3-multipart.ts). */
const DEFAULT_QUEUE_SIZE = 2;
const DEFAULT_MAX_ATTEMPTS = 5;
/**
 * Network waits (see docs/architecture.md, "S3 over a bad network"): every
 * wait on the network is bounded by one of these, so a stalled connection
 * fails (and is retried) instead of hanging the command.
 */
export const S3_TIMEOUT_DEFAULTS = {
  /** Establishing a TCP (and TLS) connection. */
  connectionTimeoutMs: 10_000,
  /** Silence on a connection while sending a request or receiving a response (headers or body). */
  idleTimeoutMs: 60_000,
  /** One attempt, from its start until the response begins: covers sending one upload part. */
  requestTimeoutMs: 600_000,
  /** A broken download keeps resuming while it has made progress within this long. */
  retryBudgetMs: 120_000,
} as const;
/** After SIGINT/SIGTERM, clean-up requests (abort an upload, remove a partial backup) get this long in all. */
const CLEANUP_AFTER_ABORT_MS = 3_000;
/** Objects written to find out whether the server honours If-None-Match; never listed. */
export const PROBE_PREFIX = '.pgkeep-probe-';

export type S3ServerSideEncryption = 'AES256' | 'aws:kms';
export type S3ChecksumMode = 'WHEN_REQUIRED' | 'WHEN_SUPPORTED';
/**
 * How putIfAbsent is made exclusive:
 * - 'native': a PutObject with `If-None-Match: *` (AWS S3 since 2024, MinIO, R2, recent Ceph);
 * - 'emulated': HeadObject, then PutObject, serialised per key inside this process
 *   only (for servers that ignore the header): NOT atomic against other hosts;
 * - 'auto': find out once, with a probe object under the prefix (the default for custom endpoints).
 */
export type S3ConditionalWrites = 'auto' | 'native' | 'emulated';

export interface S3StorageOptions {
  /** e.g. http://127.0.0.1:9000; default: AWS_ENDPOINT_URL_S3 / AWS_ENDPOINT_URL / profile, else AWS. */
  endpoint?: string;
  /** Default: AWS_REGION / profile, else us-east-1. */
  region?: string;
  /** Path-style addressing; default: on when a custom endpoint is in use. */
  forcePathStyle?: boolean;
  /** Explicit credentials instead of the default chain. */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Storage class of the objects `put` writes, e.g. STANDARD_IA (not applied to locks). */
  storageClass?: string;
  /** Server-side encryption of every object written. */
  sse?: S3ServerSideEncryption;
  /** KMS key for sse 'aws:kms' (default: the bucket's or the account's AWS managed key). */
  kmsKeyId?: string;
  /**
   * A fixed multipart part size in bytes (5 MiB .. 5 GiB), for servers that want
   * equal parts (Cloudflare R2); the largest object is then 10,000 parts of it.
   * Default: parts that grow from 8 MiB, so any object up to S3's 5 TiB limit fits.
   */
  partSize?: number;
  /** Where parts too large to hold in memory are spooled (default: the OS temp folder). */
  spoolDir?: string;
  /** Parts larger than this many bytes are spooled to `spoolDir` instead of held in memory (default 32 MiB). */
  partMemoryLimit?: number;
  /** Parts uploaded in parallel. */
  queueSize?: number;
  /** Keys per ListObjectsV2 page (1..1000). */
  pageSize?: number;
  /**
   * Attempts per request, with the SDK's standard backoff on throttling, 5xx and
   * network errors; also the failures in a row (without a new byte) a resumed
   * download survives (default 5; PGKEEP_S3_MAX_ATTEMPTS).
   */
  maxAttempts?: number;
  /**
   * Extra request checksums and response checksum validation. pgkeep keeps its
   * own SHA-256 of every object, so the default is 'WHEN_REQUIRED', which also
   * works with S3-compatible servers that reject the SDK's newer checksum headers.
   */
  checksums?: S3ChecksumMode;
  conditionalWrites?: S3ConditionalWrites;
  /** Give up connecting after this long (default 10 s; PGKEEP_S3_CONNECT_TIMEOUT). */
  connectionTimeoutMs?: number;
  /**
   * Abandon an attempt after this long without a byte sent or received on its
   * connection (default 60 s; PGKEEP_S3_IDLE_TIMEOUT). A stalled download
   * resumes from its last byte; a stalled request is retried.
   */
  idleTimeoutMs?: number;
  /**
   * Abandon an attempt that has not started receiving its response after this
   * long, body sent included (default 10 min, enough for one upload part on a
   * slow link; PGKEEP_S3_REQUEST_TIMEOUT).
   */
  requestTimeoutMs?: number;
  /**
   * A broken download is resumed (ranged GET from its last good byte, backoff
   * with jitter) until it has gone this long without a new byte, or failed
   * maxAttempts times in a row (default 2 min; PGKEEP_S3_RETRY_BUDGET).
   */
  retryBudgetMs?: number;
}

type ClientModule = typeof import('@aws-sdk/client-s3');

interface Sdk {
  s3: ClientModule;
  client: S3Client;
  /** The same client without retries, for bodies the SDK cannot replay (spooled parts). */
  once: S3Client;
  /** The endpoint in use, for messages (no credentials), or undefined for AWS's own. */
  endpoint: string | undefined;
}

interface ParsedUrl {
  bucket: string;
  prefix: string;
}

/** Parses `s3://bucket[/prefix]`; credentials and query strings are refused. */
export function parseS3Url(url: string): ParsedUrl {
  const match = /^s3:\/\/([^/?#]*)([^?#]*)([?#].*)?$/i.exec(url);
  if (!match) throw new PgkeepError('CONFIG_INVALID', `not an S3 repository URL: ${url}: use s3://bucket/prefix`);
  const host = match[1] ?? '';
  if (host.includes('@')) {
    // never echo the URL: it holds a secret
    throw new PgkeepError('CONFIG_INVALID', 'the S3 repository URL contains credentials: remove them and use AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY or AWS_PROFILE');
  }
  if (match[3] !== undefined) {
    throw new PgkeepError('CONFIG_INVALID', `the S3 repository URL ${url.replace(/[?#].*$/, '')} has a query or fragment: give the endpoint and region through AWS_ENDPOINT_URL and AWS_REGION (or the configuration)`);
  }
  if (!/^[a-z0-9][a-z0-9._-]{1,253}[a-z0-9]$/i.test(host)) {
    throw new PgkeepError('CONFIG_INVALID', `invalid S3 bucket name "${host}" in ${url}: use s3://bucket/prefix`);
  }
  return { bucket: host, prefix: normalizeKey(match[2] ?? '', url) };
}

/** "a//b/" → "a/b"; refuses "." and ".." segments. */
function normalizeKey(key: string, context: string = key): string {
  const parts: string[] = [];
  for (const part of key.split('/')) {
    if (part === '') continue;
    if (part === '.' || part === '..') throw new PgkeepError('INTERNAL', `storage key escapes the repository: ${context}`);
    parts.push(part);
  }
  return parts.join('/');
}

export class S3Storage implements Storage {
  readonly location: string;
  private readonly bucket: string;
  /** '' or 'prefix/': prepended to every storage key. */
  private readonly base: string;
  private readonly options: S3StorageOptions;
  private sdkPromise: Promise<Sdk> | undefined;
  private conditional: S3ConditionalWrites | undefined;
  private probePromise: Promise<'native' | 'emulated'> | undefined;
  private readonly keyLocks = new Map<string, Promise<void>>();
  /** Set once the running command was interrupted: the end of the clean-up requests' time. */
  private cleanupDeadline: number | undefined;

  constructor(url: string, options: S3StorageOptions = {}) {
    const { bucket, prefix } = parseS3Url(url);
    this.bucket = bucket;
    this.base = prefix === '' ? '' : `${prefix}/`;
    this.location = `s3://${bucket}${prefix === '' ? '' : `/${prefix}`}`;
    this.options = validateOptions(options);
    this.conditional = options.conditionalWrites;
  }

  /** posixModes: never. conditionalCreate: only once If-None-Match is known to be honoured. remote: always. */
  get capabilities(): StorageCapabilities {
    return { posixModes: false, conditionalCreate: this.conditional === 'native', remote: true };
  }

  /** Finds out (once) whether putIfAbsent is atomic across hosts; updates `capabilities`. */
  async detectConditionalCreate(): Promise<boolean> {
    return (await this.conditionalMode()) === 'native';
  }

  // ---- writes ---------------------------------------------------------------

  async put(key: string, body: Readable, options: PutOptions = {}): Promise<PutResult> {
    // The body's own error (e.g. pg_dump failed) is the cause a user must see,
    // whatever the upload's requests did after it, also when it fails before
    // the upload starts reading it.
    let bodyError: unknown;
    let stopped = false;
    const onBodyError = (error: unknown) => {
      if (!stopped) bodyError ??= error;
    };
    body.on('error', onBodyError);
    const target = this.objectKey(key);
    const signal = options.signal;
    if (signal?.aborted) {
      body.off('error', onBodyError);
      body.destroy();
      throw abortError(signal);
    }
    let sdk: Sdk;
    try {
      sdk = await this.sdk();
    } catch (error) {
      body.off('error', onBodyError);
      body.destroy();
      throw bodyError ?? error;
    }

    async function* feed(): AsyncGenerator<Buffer> {
      try {
        for await (const chunk of body) yield Buffer.isBuffer(chunk) ? chunk : Buffer.from(chunk as string);
      } catch (error) {
        // once the upload stopped, the body fails because it was destroyed here: not its own error
        if (!stopped) bodyError ??= error;
        throw error;
      }
    }
    const stopBody = (reason: unknown): void => {
      stopped = true;
      body.destroy(reason instanceof Error ? reason : new Error(String(reason)));
    };
    const o = this.options;
    try {
      const { size } = await uploadMultipart(this.multipartTarget(sdk, target), feed(), {
        ...(o.partSize ? { partSize: () => o.partSize! } : {}),
        queueSize: o.queueSize ?? DEFAULT_QUEUE_SIZE,
        ...(o.spoolDir ? { spoolDir: o.spoolDir } : {}),
        ...(o.partMemoryLimit ? { memoryLimit: o.partMemoryLimit } : {}),
        stopBody,
        ...(signal ? { signal } : {}),
      });
      return { size };
    } catch (error) {
      if (bodyError !== undefined) throw bodyError;
      if (signal?.aborted) throw abortError(signal);
      throw this.toError(error, target, sdk);
    } finally {
      body.off('error', onBodyError);
      body.destroy();
    }
  }

  /** The requests of one object's upload, for uploadMultipart. */
  private multipartTarget(sdk: Sdk, target: string): MultipartTarget {
    const { s3 } = sdk;
    const Bucket = this.bucket;
    const Key = target;
    return {
      putObject: async (body, abortSignal) => {
        await this.sendBody(sdk, body, abortSignal, (Body, ContentLength) => new s3.PutObjectCommand({ Bucket, Key, Body, ContentLength, ...this.writeParams(true) }));
      },
      create: async (abortSignal) => {
        const out = await sdk.client.send(new s3.CreateMultipartUploadCommand({ Bucket, Key, ...this.writeParams(true) }), { abortSignal });
        if (!out.UploadId) throw new PgkeepError('STORAGE_IO', `the S3 server started no multipart upload for ${this.display(target)}`);
        return out.UploadId;
      },
      uploadPart: async (UploadId, PartNumber, body, abortSignal) => {
        const out = (await this.sendBody(sdk, body, abortSignal, (Body, ContentLength) => new s3.UploadPartCommand({ Bucket, Key, UploadId, PartNumber, Body, ContentLength }))) as { ETag?: string };
        if (!out.ETag) throw new PgkeepError('STORAGE_IO', `the S3 server returned no ETag for part ${PartNumber} of ${this.display(target)}`);
        return out.ETag;
      },
      complete: async (UploadId, parts) => {
        await sdk.client.send(
          new s3.CompleteMultipartUploadCommand({ Bucket, Key, UploadId, MultipartUpload: { Parts: parts.map((p) => ({ PartNumber: p.partNumber, ETag: p.etag })) } }),
        );
      },
      abort: async (UploadId) => {
        await sdk.client.send(new s3.AbortMultipartUploadCommand({ Bucket, Key, UploadId }));
      },
    };
  }

  /**
   * Sends a request with a part's body. A body in memory goes through the
   * client's own retries; a spooled file is a stream the SDK cannot replay, so
   * it goes through a client that does not retry, and is reopened here for each
   * attempt, with the same backoff on throttling, 5xx and network errors.
   */
  private async sendBody(sdk: Sdk, body: PartBody, abortSignal: AbortSignal, command: (body: Buffer | Readable, length: number) => unknown): Promise<unknown> {
    type Send = (this: S3Client, c: unknown, o?: object) => Promise<unknown>;
    if (body.kind === 'memory') return (sdk.client.send as Send).call(sdk.client, command(body.data, body.data.length), { abortSignal });
    const attempts = this.options.maxAttempts ?? DEFAULT_MAX_ATTEMPTS;
    for (let attempt = 1; ; attempt++) {
      const stream = body.open();
      try {
        return await (sdk.once.send as Send).call(sdk.once, command(stream, body.size), { abortSignal });
      } catch (error) {
        if (attempt >= attempts || abortSignal.aborted || !isRetryable(error)) throw error;
        await delay(Math.min(20_000, 100 * 2 ** attempt) * (0.5 + Math.random()), undefined, { signal: abortSignal });
      } finally {
        stream.destroy();
      }
    }
  }

  async putIfAbsent(key: string, data: Buffer): Promise<boolean> {
    const target = this.objectKey(key);
    const sdk = await this.sdk();
    const mode = await this.conditionalMode();
    if (mode === 'native') {
      for (let attempt = 0; ; attempt++) {
        const outcome = await this.conditionalPut(sdk, target, data);
        if (outcome === 'created') return true;
        if (outcome === 'exists') return false;
        if (outcome === 'conflict' && attempt < 6) {
          // another conditional write to this key is in flight: S3 asks to retry
          await delay(25 * 2 ** attempt + Math.random() * 25);
          continue;
        }
        throw new PgkeepError('STORAGE_IO', `conditional write of ${this.display(target)} failed: the server ${outcome === 'conflict' ? 'kept reporting a conflicting write' : 'does not support If-None-Match'}`);
      }
    }
    // Emulated: exclusive within this process only (capabilities.conditionalCreate is false).
    return this.withKeyLock(target, async () => {
      if (await this.head(sdk, target)) return false;
      try {
        await sdk.client.send(new sdk.s3.PutObjectCommand({ Bucket: this.bucket, Key: target, Body: data, ContentLength: data.length, ...this.writeParams(false) }));
      } catch (error) {
        throw this.toError(error, target, sdk);
      }
      return true;
    });
  }

  // ---- reads ----------------------------------------------------------------

  /**
   * Streams the object (or a range of it). A response cut off by the network
   * (reset, closed, stalled past the idle timeout) is resumed with a ranged GET
   * from the first byte not yet delivered, pinned to the object's ETag
   * (If-Match), so the stream yields every byte exactly once or fails: the
   * checksums downstream still cover the whole object. It fails with
   * STORAGE_NETWORK once it has made no progress within the retry budget.
   */
  async get(key: string, range?: ByteRange): Promise<Readable> {
    const target = this.objectKey(key);
    const sdk = await this.sdk();
    if (range?.end !== undefined && range.end <= range.start) {
      // nothing to read, but a missing object is still an error
      if (!(await this.head(sdk, target))) throw new PgkeepError('STORAGE_NOT_FOUND', `not found: ${this.display(target)}`);
      return Readable.from([]);
    }
    const start = range?.start ?? 0;
    let first: BodyPart & { size: number | undefined; etag: string | undefined };
    try {
      first = await this.fetchFrom(sdk, target, start, range?.end, undefined);
    } catch (error) {
      // A range starting at or past the end (including any range of an empty
      // object) reads nothing, as from a file.
      if (errorCode(error) === 'InvalidRange' || httpStatus(error) === 416) return Readable.from([]);
      throw this.toError(error, target, sdk);
    }
    const end = first.size === undefined ? range?.end : Math.min(first.size, range?.end ?? Infinity);
    const etag = first.etag;
    const o = this.options;
    return new ResumableBody({
      first,
      start,
      end,
      reopen: (from, signal) => this.fetchFrom(sdk, target, from, end, etag, signal),
      attempts: o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      budgetMs: o.retryBudgetMs ?? S3_TIMEOUT_DEFAULTS.retryBudgetMs,
      signal: runSignal(),
      retryable: (error) => !(error instanceof PgkeepError) && (httpStatus(error) === undefined || isRetryable(error)),
      fail: (cause, at, failures, idleMs) => this.readFailure(cause, target, sdk, at, end, failures, idleMs),
    });
  }

  /**
   * One GET of bytes [from, end) (end: exclusive, or the object's end), as a
   * body and how many bytes of it to skip: HTTP lets a server ignore Range and
   * send the whole object (200), and some S3-compatible servers answer another
   * range than asked (s3rver reads "bytes=0-0" as the whole object), so
   * Content-Range is trusted, not the request.
   */
  private async fetchFrom(
    sdk: Sdk,
    target: string,
    from: number,
    end: number | undefined,
    etag: string | undefined,
    signal?: AbortSignal,
  ): Promise<BodyPart & { size: number | undefined; etag: string | undefined }> {
    const header = from > 0 || end !== undefined ? `bytes=${from}-${end === undefined ? '' : end - 1}` : undefined;
    const out = await sdk.client.send(
      new sdk.s3.GetObjectCommand({ Bucket: this.bucket, Key: target, ...(header ? { Range: header } : {}), ...(etag ? { IfMatch: etag } : {}) }),
      signal ? { abortSignal: signal } : {},
    );
    const stream = out.Body ?? Readable.from([]);
    if (!(stream instanceof Readable)) throw new PgkeepError('INTERNAL', `unexpected S3 response body type for ${this.display(target)}`);
    const sent = parseContentRange(out.ContentRange);
    const sentStart = sent?.start ?? 0;
    if (sentStart > from) {
      stream.destroy();
      throw new PgkeepError('STORAGE_IO', `the S3 server sent bytes from ${sentStart} of ${this.display(target)} when asked for ${from}`);
    }
    const size = sent ? sent.total : out.ContentLength;
    return { stream, skip: from - sentStart, size, etag: out.ETag };
  }

  /** Why a download that was resumed as often as allowed still failed. */
  private readFailure(cause: unknown, target: string, sdk: Sdk, at: number, end: number | undefined, failures: number, idleMs: number): Error {
    if (cause instanceof PgkeepError) return cause;
    const code = errorCode(cause);
    if (code === 'PreconditionFailed' || httpStatus(cause) === 412) {
      return new PgkeepError('STORAGE_IO', `${this.display(target)} changed on the server while it was being read: read it again`, { cause });
    }
    if (isNotFound(cause) || (httpStatus(cause) !== undefined && !isRetryable(cause))) return this.toError(cause, target, sdk);
    const endpoint = endpointOf(cause) ?? sdk.endpoint ?? 'the AWS S3 endpoint';
    const where = `${this.display(target)} at byte ${at}${end === undefined ? '' : ` of ${end}`}`;
    const why = describeNetworkCause(cause);
    return new PgkeepError(
      'STORAGE_NETWORK',
      `could not read ${where} from the S3 endpoint ${endpoint}: ${why}; ${failures} attempt(s) in a row, ${Math.round(idleMs / 1000)} s without a new byte (the stored bytes were not judged): check the network and try again`,
      { cause },
    );
  }

  async stat(key: string): Promise<StorageStat | undefined> {
    const target = this.objectKey(key);
    return this.head(await this.sdk(), target);
  }

  async *list(prefix: string, options: { recursive?: boolean } = {}): AsyncIterable<StorageEntry> {
    const folder = normalizeKey(prefix);
    const sdk = await this.sdk();
    const listPrefix = `${this.base}${folder === '' ? '' : `${folder}/`}`;
    if (options.recursive) {
      // S3 lists by key, which is the order the interface asks for; each page is
      // sorted again for servers that do not sort within a page.
      for await (const page of this.pages(sdk, listPrefix, false)) {
        const entries: StorageEntry[] = [];
        for (const object of page.objects) {
          const entry = this.objectEntry(object);
          if (entry) entries.push(entry);
        }
        yield* entries.sort(byPath);
      }
      return;
    }
    // Non-recursive: one folder's direct children. Gathered whole so that folders
    // ("sub", listed by S3 as "sub/") sort by path like files, and so that
    // common prefixes repeated across pages are listed once.
    const entries = new Map<string, StorageEntry>();
    for await (const page of this.pages(sdk, listPrefix, true)) {
      for (const object of page.objects) {
        const entry = this.objectEntry(object);
        if (entry) entries.set(entry.path, entry);
      }
      for (const common of page.folders) {
        const path = common.slice(this.base.length, -1);
        if (path === '' || path.endsWith('/') || path === folder) continue;
        if (!entries.has(path)) entries.set(path, { kind: 'folder', path });
      }
    }
    yield* [...entries.values()].sort(byPath);
  }

  async isEmpty(): Promise<boolean> {
    const sdk = await this.sdk();
    for await (const page of this.pages(sdk, this.base, false)) {
      for (const object of page.objects) {
        const key = object.Key ?? '';
        // the prefix's own folder marker and our probes do not count
        if (key === this.base || isProbe(key.slice(this.base.length))) continue;
        return false;
      }
    }
    return true;
  }

  // ---- removal --------------------------------------------------------------

  async remove(key: string): Promise<void> {
    const target = this.objectKey(key);
    const sdk = await this.sdk();
    try {
      await sdk.client.send(new sdk.s3.DeleteObjectCommand({ Bucket: this.bucket, Key: target }));
    } catch (error) {
      if (isNotFound(error) && errorCode(error) !== 'NoSuchBucket') return;
      throw this.toError(error, target, sdk);
    }
  }

  async removeFolder(prefix: string): Promise<void> {
    const folder = normalizeKey(prefix);
    if (folder === '') throw new PgkeepError('INTERNAL', 'refusing to remove the repository root');
    const sdk = await this.sdk();
    const listPrefix = `${this.base}${folder}/`;
    // Pages hold at most 1000 keys, the most one DeleteObjects takes.
    for await (const page of this.pages(sdk, listPrefix, false)) {
      const keys = page.objects.map((o) => o.Key).filter((k): k is string => k !== undefined);
      if (keys.length === 0) continue;
      let result;
      try {
        result = await sdk.client.send(
          new sdk.s3.DeleteObjectsCommand({ Bucket: this.bucket, Delete: { Objects: keys.map((Key) => ({ Key })), Quiet: true } }),
        );
      } catch (error) {
        throw this.toError(error, listPrefix, sdk);
      }
      const failed = (result.Errors ?? []).filter((e) => e.Code !== 'NoSuchKey');
      if (failed.length > 0) {
        const first = failed[0]!;
        const error = Object.assign(new Error(first.Message ?? first.Code ?? 'delete failed'), { name: first.Code ?? 'DeleteFailed' });
        throw this.toError(error, first.Key ?? listPrefix, sdk, `${failed.length} of ${keys.length} objects could not be removed`);
      }
    }
  }

  // ---- internals ------------------------------------------------------------

  private objectKey(key: string): string {
    const rel = normalizeKey(key);
    if (rel === '') throw new PgkeepError('INTERNAL', 'empty storage key');
    return `${this.base}${rel}`;
  }

  private display(fullKey: string): string {
    return `s3://${this.bucket}/${fullKey}`;
  }

  private objectEntry(object: { Key?: string; Size?: number; LastModified?: Date }): StorageEntry | undefined {
    const key = object.Key;
    if (key === undefined || !key.startsWith(this.base)) return undefined;
    const path = key.slice(this.base.length);
    // folder markers ("dir/", made by consoles) are not objects; probes are ours
    if (path === '' || path.endsWith('/') || isProbe(path)) return undefined;
    return { kind: 'object', path, size: object.Size ?? 0, modified: object.LastModified ?? new Date(0) };
  }

  private writeParams(withStorageClass: boolean): Record<string, string> {
    const params: Record<string, string> = {};
    if (withStorageClass && this.options.storageClass) params.StorageClass = this.options.storageClass;
    if (this.options.sse) params.ServerSideEncryption = this.options.sse;
    if (this.options.sse === 'aws:kms' && this.options.kmsKeyId) params.SSEKMSKeyId = this.options.kmsKeyId;
    return params;
  }

  private async *pages(
    sdk: Sdk,
    prefix: string,
    delimited: boolean,
  ): AsyncGenerator<{ objects: { Key?: string; Size?: number; LastModified?: Date }[]; folders: string[] }> {
    let token: string | undefined;
    do {
      let out;
      try {
        out = await sdk.client.send(
          new sdk.s3.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: prefix,
            MaxKeys: this.options.pageSize ?? 1000,
            ...(delimited ? { Delimiter: '/' } : {}),
            ...(token ? { ContinuationToken: token } : {}),
          }),
        );
      } catch (error) {
        throw this.toError(error, prefix, sdk);
      }
      yield {
        objects: out.Contents ?? [],
        folders: (out.CommonPrefixes ?? []).map((p) => p.Prefix).filter((p): p is string => p !== undefined),
      };
      if (out.IsTruncated && !out.NextContinuationToken) {
        throw new PgkeepError('STORAGE_IO', `listing ${this.display(prefix)} was cut short by the server without a continuation token`);
      }
      token = out.IsTruncated ? out.NextContinuationToken : undefined;
    } while (token);
  }

  private async head(sdk: Sdk, target: string): Promise<StorageStat | undefined> {
    try {
      const out = await sdk.client.send(new sdk.s3.HeadObjectCommand({ Bucket: this.bucket, Key: target }));
      return { size: out.ContentLength ?? 0, modified: out.LastModified ?? new Date(0) };
    } catch (error) {
      // HEAD has no body: a missing bucket is a plain 404 too; the next listing names it.
      if (isNotFound(error)) return undefined;
      throw this.toError(error, target, sdk);
    }
  }

  private async conditionalPut(sdk: Sdk, target: string, data: Buffer): Promise<'created' | 'exists' | 'conflict' | 'unsupported'> {
    try {
      await sdk.client.send(
        new sdk.s3.PutObjectCommand({ Bucket: this.bucket, Key: target, Body: data, ContentLength: data.length, IfNoneMatch: '*', ...this.writeParams(false) }),
      );
      return 'created';
    } catch (error) {
      const code = errorCode(error);
      const status = httpStatus(error);
      if (code === 'PreconditionFailed' || status === 412) return 'exists';
      if (code === 'ConditionalRequestConflict' || status === 409) return 'conflict';
      if (code === 'NotImplemented' || status === 501) return 'unsupported';
      throw this.toError(error, target, sdk);
    }
  }

  private conditionalMode(): Promise<'native' | 'emulated'> {
    const known = this.conditional;
    if (known === 'native' || known === 'emulated') return Promise.resolve(known);
    this.probePromise ??= this.probeConditionalWrites().then(
      (mode) => {
        this.conditional = mode;
        return mode;
      },
      (error: unknown) => {
        this.probePromise = undefined;
        throw error;
      },
    );
    return this.probePromise;
  }

  /** Writes a fresh probe object twice with If-None-Match: * ; a server that honours it refuses the second. */
  private async probeConditionalWrites(): Promise<'native' | 'emulated'> {
    const sdk = await this.sdk();
    const probe = `${this.base}${PROBE_PREFIX}${randomBytes(8).toString('hex')}`;
    const data = Buffer.from('pgkeep: does this server honour If-None-Match?\n');
    try {
      const first = await this.conditionalPut(sdk, probe, data);
      if (first === 'unsupported') return 'emulated';
      if (first !== 'created') return 'native';
      const second = await this.conditionalPut(sdk, probe, data);
      return second === 'exists' || second === 'conflict' ? 'native' : 'emulated';
    } finally {
      await sdk.client.send(new sdk.s3.DeleteObjectCommand({ Bucket: this.bucket, Key: probe })).catch(() => undefined);
    }
  }

  private async withKeyLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
    const previous = this.keyLocks.get(key) ?? Promise.resolve();
    const run = previous.then(fn);
    const settled = run.then(
      () => undefined,
      () => undefined,
    );
    this.keyLocks.set(key, settled);
    try {
      return await run;
    } finally {
      if (this.keyLocks.get(key) === settled) this.keyLocks.delete(key);
    }
  }

  private sdk(): Promise<Sdk> {
    this.sdkPromise ??= this.createSdk().catch((error: unknown) => {
      this.sdkPromise = undefined;
      throw error;
    });
    return this.sdkPromise;
  }

  private async createSdk(): Promise<Sdk> {
    const s3 = await import('@aws-sdk/client-s3');
    const o = this.options;
    const checksums = o.checksums ?? 'WHEN_REQUIRED';
    const common: S3ClientConfig = {
      maxAttempts: o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS,
      retryMode: 'standard',
      requestChecksumCalculation: checksums,
      responseChecksumValidation: checksums,
      requestHandler: {
        connectionTimeout: o.connectionTimeoutMs ?? S3_TIMEOUT_DEFAULTS.connectionTimeoutMs,
        // socketTimeout: silence on the socket, sending or receiving (the body included);
        // requestTimeout: from the start of an attempt until its response begins
        socketTimeout: o.idleTimeoutMs ?? S3_TIMEOUT_DEFAULTS.idleTimeoutMs,
        requestTimeout: o.requestTimeoutMs ?? S3_TIMEOUT_DEFAULTS.requestTimeoutMs,
        throwOnRequestTimeout: true,
      },
      ...(o.credentials ? { credentials: { ...o.credentials } } : {}),
    };
    let endpoint = o.endpoint;
    let region = o.region;
    if (endpoint === undefined || region === undefined) {
      // What the SDK's own chain says (environment, then the shared config files).
      const probe = new s3.S3Client(common);
      try {
        const config = probe.config as { region: () => Promise<string>; serviceConfiguredEndpoint?: () => Promise<string | undefined> };
        if (endpoint === undefined) endpoint = (await config.serviceConfiguredEndpoint?.().catch(() => undefined)) || undefined;
        if (region === undefined) region = (await config.region().catch(() => undefined)) || undefined;
      } finally {
        probe.destroy();
      }
    }
    if (endpoint !== undefined) {
      try {
        new URL(endpoint);
      } catch {
        throw new PgkeepError('CONFIG_INVALID', `invalid S3 endpoint URL "${displayEndpoint(endpoint)}": use e.g. http://127.0.0.1:9000`);
      }
    }
    const build = (maxAttempts: number): S3Client => {
      const client = new s3.S3Client({
        ...common,
        maxAttempts,
        region: region ?? 'us-east-1',
        ...(endpoint !== undefined ? { endpoint } : { followRegionRedirects: true }),
        forcePathStyle: o.forcePathStyle ?? endpoint !== undefined,
      });
      // Remember which host a failed request went to, so errors can name it.
      client.middlewareStack.add(
        (next) => async (args) => {
          try {
            return await next(args);
          } catch (error) {
            const request = args.request as { protocol?: string; hostname?: string; port?: number } | undefined;
            if (error !== null && typeof error === 'object' && request?.hostname) {
              Object.defineProperty(error, ENDPOINT_TAG, {
                value: `${request.protocol ?? 'https:'}//${request.hostname}${request.port ? `:${request.port}` : ''}`,
                configurable: true,
              });
            }
            throw error;
          }
        },
        { step: 'build', name: 'pgkeepEndpointTag' },
      );
      // Every request honours the running command's signal (SIGINT/SIGTERM, a cancelled job):
      // a request stalled on the network is aborted at once, whoever made it.
      type Send = (command: unknown, options?: { abortSignal?: AbortSignal }) => Promise<unknown>;
      const send = (client.send as Send).bind(client);
      (client as unknown as { send: Send }).send = (command, options) => {
        const abortSignal = this.requestSignal(options?.abortSignal);
        return send(command, { ...options, ...(abortSignal ? { abortSignal } : {}) });
      };
      return client;
    };
    this.conditional ??= endpoint === undefined ? 'native' : 'auto';
    return { s3, client: build(o.maxAttempts ?? DEFAULT_MAX_ATTEMPTS), once: build(1), endpoint: endpoint === undefined ? undefined : displayEndpoint(endpoint) };
  }

  /**
   * The signal one request is sent with: the caller's and the running
   * command's. Once the command was interrupted, requests still made (clean-up:
   * abort an upload, remove what was written) share a short deadline, so an
   * unreachable server cannot hold the exit up.
   */
  private requestSignal(explicit: AbortSignal | undefined): AbortSignal | undefined {
    const run = runSignal();
    if (run?.aborted) {
      this.cleanupDeadline ??= Date.now() + CLEANUP_AFTER_ABORT_MS;
      return AbortSignal.timeout(Math.max(1, this.cleanupDeadline - Date.now()));
    }
    const signals = [explicit, run].filter((s): s is AbortSignal => s !== undefined);
    return signals.length <= 1 ? signals[0] : AbortSignal.any(signals);
  }

  /** Maps an SDK or network error to a PgkeepError a person can act on; never includes credentials. */
  private toError(error: unknown, fullKeyOrPrefix: string, sdk?: Sdk, context?: string): PgkeepError {
    if (error instanceof PgkeepError) return error;
    const code = errorCode(error);
    const status = httpStatus(error);
    const where = this.display(fullKeyOrPrefix);
    const suffix = context ? ` (${context})` : '';
    const endpoint = endpointOf(error) ?? sdk?.endpoint ?? 'the AWS S3 endpoint';
    const run = runSignal();
    if (code === 'AbortError' || (error as { name?: unknown } | null)?.name === 'AbortError') {
      if (run?.aborted) return abortError(run);
      return new PgkeepError('ABORTED', `interrupted while reading or writing ${where}`, { cause: error });
    }
    const networkCode = networkErrorCode(error);
    if (code === 'CredentialsProviderError' || /could not load credentials/i.test(messageOf(error))) {
      return new PgkeepError('STORAGE_ACCESS', `no AWS credentials for ${this.location}: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or AWS_PROFILE`, { cause: error });
    }
    if (ACCESS_CODES.has(code) || status === 403) {
      const hint =
        code === 'InvalidAccessKeyId'
          ? 'the access key id is not known to the server'
          : code === 'SignatureDoesNotMatch'
            ? 'the secret access key does not match the access key id'
            : code === 'RequestTimeTooSkewed'
              ? "this machine's clock is too far off"
              : 'check the credentials (AWS_ACCESS_KEY_ID, AWS_PROFILE) and the bucket policy';
      return new PgkeepError('STORAGE_ACCESS', `access denied to ${where} (${code || `HTTP ${status}`})${suffix}: ${hint}`, { cause: error });
    }
    if (code === 'NoSuchBucket') {
      const at = sdk?.endpoint ? ` at ${sdk.endpoint}` : '';
      return new PgkeepError('REPO_MISSING', `bucket ${this.bucket} does not exist${at}: create it or check --repo`, { cause: error });
    }
    if (isNotFound(error)) return new PgkeepError('STORAGE_NOT_FOUND', `not found: ${where}`, { cause: error });
    const attemptsNote = attemptsOf(error) ? ` after ${attemptsOf(error)} attempts` : '';
    if (networkCode === 'EPIPE' || networkCode === 'ECONNRESET' || networkCode === 'ECONNABORTED') {
      // connected, then cut off mid-request (often a server refusing a request while its body is still being sent)
      return new PgkeepError('STORAGE_NETWORK', `the S3 endpoint ${endpoint} closed the connection (${networkCode}) while writing or reading ${where}${suffix}${attemptsNote}: try again; if it persists, check the network and the server's logs`, { cause: error });
    }
    if (networkCode === 'timeout') {
      return new PgkeepError('STORAGE_NETWORK', `the S3 endpoint ${endpoint} did not answer in time on ${where}${suffix}: ${describeNetworkCause(error)}${attemptsNote}: check the network, or raise the S3 timeouts (s3.idleTimeout, s3.requestTimeout; README: "S3 over a bad network")`, { cause: error });
    }
    if (networkCode !== undefined) {
      return new PgkeepError('STORAGE_NETWORK', `cannot reach the S3 endpoint ${endpoint} (${networkCode}) for ${this.location}: check the endpoint (AWS_ENDPOINT_URL) and the network`, { cause: error });
    }
    const message = messageOf(error);
    if (code === 'EntityTooLarge') {
      return new PgkeepError('STORAGE_IO', `${where} is larger than the S3 server accepts (${MAX_PARTS} parts, or its own limit)${this.options.partSize ? ': raise the S3 part size' : ''}`, { cause: error });
    }
    if (code === 'InvalidStorageClass') {
      return new PgkeepError('CONFIG_INVALID', `the S3 server does not accept storage class ${this.options.storageClass ?? '(default)'}: choose another`, { cause: error });
    }
    const attempts = (error as { $metadata?: { attempts?: number } } | null)?.$metadata?.attempts;
    if ((status !== undefined && status >= 500) || THROTTLE_CODES.has(code)) {
      return new PgkeepError(
        'STORAGE_IO',
        `S3 ${endpoint} failed on ${where}: ${code || 'error'} (HTTP ${status ?? '?'})${attempts ? ` after ${attempts} attempts` : ''}${suffix}: try again later`,
        { cause: error },
      );
    }
    const detail = message && message !== code ? `: ${message}` : '';
    return new PgkeepError('STORAGE_IO', `S3 error on ${where}: ${code || 'error'}${status ? ` (HTTP ${status})` : ''}${detail}${suffix}`, { cause: error });
  }
}

const ENDPOINT_TAG = '$pgkeepEndpoint';
const ACCESS_CODES = new Set([
  'AccessDenied',
  'InvalidAccessKeyId',
  'SignatureDoesNotMatch',
  'ExpiredToken',
  'InvalidToken',
  'TokenRefreshRequired',
  'AllAccessDisabled',
  'AccountProblem',
  'InvalidSecurity',
  'RequestTimeTooSkewed',
  'Forbidden',
  'KMS.AccessDeniedException',
]);
const THROTTLE_CODES = new Set(['SlowDown', 'Throttling', 'ThrottlingException', 'RequestLimitExceeded', 'TooManyRequests', 'ServiceUnavailable', 'InternalError', 'RequestTimeout']);
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ENOTFOUND', 'EAI_AGAIN', 'ETIMEDOUT', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'EPIPE', 'ECONNABORTED']);

function errorCode(error: unknown): string {
  const e = error as { name?: unknown; Code?: unknown } | null;
  const code = typeof e?.Code === 'string' ? e.Code : typeof e?.name === 'string' ? e.name : '';
  // HEAD errors have no body to name them
  return code === 'Error' || code === 'Unknown' || code === 'UnknownError' ? '' : code;
}

function httpStatus(error: unknown): number | undefined {
  return (error as { $metadata?: { httpStatusCode?: number } } | null)?.$metadata?.httpStatusCode;
}

function attemptsOf(error: unknown): number | undefined {
  const attempts = (error as { $metadata?: { attempts?: number } } | null)?.$metadata?.attempts;
  return attempts !== undefined && attempts > 1 ? attempts : undefined;
}

function endpointOf(error: unknown): string | undefined {
  const tagged = (error as Record<string, unknown> | null)?.[ENDPOINT_TAG];
  return typeof tagged === 'string' ? tagged : undefined;
}

/** What went wrong on the network, in words: "connection reset (ECONNRESET)", "no byte for 60 s (idle timeout)". */
function describeNetworkCause(error: unknown): string {
  const message = messageOf(error);
  let match = /timed out after (\d+) ms of inactivity/.exec(message);
  if (match) return `no byte for ${Number(match[1]) / 1000} s (idle timeout)`;
  match = /exceeded the configured (\d+) ms requestTimeout/.exec(message);
  if (match) return `no response within ${Number(match[1]) / 1000} s (request timeout)`;
  match = /within the configured timeout of (\d+) ms/.exec(message);
  if (match) return `no connection within ${Number(match[1]) / 1000} s (connect timeout)`;
  const code = networkErrorCode(error);
  if (code === 'ECONNRESET' && /aborted/.test(message)) return 'the connection was closed mid-response (ECONNRESET)';
  if (code !== undefined && code !== 'timeout') return `${message === code ? '' : `${message} `}(${code})`.trim();
  return message;
}

function messageOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Worth another attempt: throttling, 5xx, a dropped connection. */
function isRetryable(error: unknown): boolean {
  const status = httpStatus(error);
  return (status !== undefined && status >= 500) || THROTTLE_CODES.has(errorCode(error)) || networkErrorCode(error) !== undefined;
}

function isNotFound(error: unknown): boolean {
  const code = errorCode(error);
  return code === 'NoSuchKey' || code === 'NotFound' || code === 'NoSuchBucket' || httpStatus(error) === 404;
}

function networkErrorCode(error: unknown): string | undefined {
  for (let e = error as { code?: unknown; name?: unknown; cause?: unknown } | undefined, depth = 0; e && depth < 4; e = e.cause as typeof e, depth++) {
    if (typeof e.code === 'string' && NETWORK_CODES.has(e.code)) return e.code;
    if (e.name === 'TimeoutError') return 'timeout';
  }
  return undefined;
}

/** "bytes 10-19/4096" → { start: 10, total: 4096 } (total undefined for "*") */
function parseContentRange(value: string | undefined): { start: number; total: number | undefined } | undefined {
  const match = value === undefined ? null : /^bytes (\d+)-(\d+)\/(\d+|\*)$/.exec(value.trim());
  if (!match) return undefined;
  return { start: Number(match[1]), total: match[3] === '*' ? undefined : Number(match[3]) };
}

function isProbe(path: string): boolean {
  return path.startsWith(PROBE_PREFIX) && !path.includes('/');
}

function byPath(a: StorageEntry, b: StorageEntry): number {
  return a.path < b.path ? -1 : a.path > b.path ? 1 : 0;
}

/** The endpoint without user info or query, for messages. */
function displayEndpoint(endpoint: string): string {
  try {
    const url = new URL(endpoint);
    url.username = '';
    url.password = '';
    url.search = '';
    return url.toString().replace(/\/$/, '');
  } catch {
    return endpoint.replace(/\/\/[^/@]*@/, '//');
  }
}

function validateOptions(options: S3StorageOptions): S3StorageOptions {
  const fail = (what: string): never => {
    throw new PgkeepError('CONFIG_INVALID', `S3 option ${what}`);
  };
  const { partSize, queueSize, pageSize, maxAttempts, sse, kmsKeyId } = options;
  if (partSize !== undefined && (!Number.isInteger(partSize) || partSize < MIN_PART_SIZE || partSize > MAX_PART_SIZE)) {
    fail(`partSize ${partSize} is out of range: use 5 MiB to 5 GiB`);
  }
  if (queueSize !== undefined && (!Number.isInteger(queueSize) || queueSize < 1 || queueSize > 64)) fail(`queueSize ${queueSize} is out of range: use 1 to 64`);
  if (pageSize !== undefined && (!Number.isInteger(pageSize) || pageSize < 1 || pageSize > 1000)) fail(`pageSize ${pageSize} is out of range: use 1 to 1000`);
  if (maxAttempts !== undefined && (!Number.isInteger(maxAttempts) || maxAttempts < 1)) fail(`maxAttempts ${maxAttempts} must be at least 1`);
  if (sse !== undefined && sse !== 'AES256' && sse !== 'aws:kms') fail(`sse "${String(sse)}" is not AES256 or aws:kms`);
  if (kmsKeyId !== undefined && sse !== 'aws:kms') fail('kmsKeyId needs sse: aws:kms');
  // PGKEEP_S3_* reach here as options: the settings read them (src/config/s3-env.ts).
  for (const option of ['connectionTimeoutMs', 'idleTimeoutMs', 'requestTimeoutMs', 'retryBudgetMs'] as const) {
    const value = options[option];
    if (value !== undefined && (!Number.isFinite(value) || value < 1)) fail(`${option} ${value} must be a positive number of milliseconds`);
  }
  return { ...options };
}
