import { rm } from 'node:fs/promises';
import { createWriteStream } from 'node:fs';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { childStdinSink, discardSink, loadStream } from '../pipeline/load-stream.js';
import { defaultZstd } from '../pipeline/zstd.js';
import type { AgeIdentity } from '../pipeline/age.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { runProcess, settleAll, startProcess } from '../postgres/run-process.js';
import type { Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { PlainDumpScanner, tocHasTableData, type TableRef } from './dump-contents.js';
import { makeTempFolder } from '../local/temp-folders.js';

export interface ObjectCheck {
  name: string;
  ok: boolean;
  storedBytes: number;
  rawBytes: number;
  problem?: string | undefined;
}

export interface VerifyReport {
  id: string;
  source: string;
  ok: boolean;
  objects: ObjectCheck[];
  /** Tables the manifest lists, and how many of them the dump's own table of contents holds. */
  tables: { expected: number; found: number; missing: string[] };
  problems: string[];
  durationMs: number;
}

/** Errors that mean an object could not be read, rather than that its bytes are wrong. */
const UNREAD = new Set<string>(['STORAGE_NETWORK', 'STORAGE_IO', 'STORAGE_ACCESS', 'REPO_MISSING']);

/** True when `error` says an object could not be read (no verdict on its bytes). */
export function isUnreadError(error: unknown): error is PgkeepError {
  return error instanceof PgkeepError && UNREAD.has(error.code);
}

/** Files every base backup tar holds (pg_basebackup writes backup_label in place of a running server's state). */
const BASE_TAR_FILES = ['backup_label', 'global/pg_control', 'PG_VERSION'];

export interface VerifyOptions {
  signal?: AbortSignal | undefined;
  pgBin?: string | undefined;
  tempDir?: string | undefined;
  onProgress?: ((object: string, bytes: number) => void) | undefined;
  /** For encrypted objects. */
  identities?: AgeIdentity[] | undefined;
  /** Receives the `pg_restore --list` output of a custom or directory dump (a restore test checks the restored schema against it). */
  onToc?: ((listing: string) => void) | undefined;
}

/**
 * Proves a backup is intact without a database: every object is read back in
 * full, its stored and raw SHA-256 and sizes are checked against the manifest,
 * it is fully decompressed, and the dump's own table of contents (pg_restore
 * --list, or the COPY statements of a plain dump) must hold every table the
 * manifest counted rows for. For a physical backup, the base tar must list
 * backup_label, global/pg_control and PG_VERSION (its WAL is checked by the archive's own records).
 */
export async function verifyBackup(repository: Repository, manifest: Manifest, options: VerifyOptions = {}): Promise<VerifyReport> {
  const started = Date.now();
  const codec = defaultZstd();
  const objects: ObjectCheck[] = [];
  const problems: string[] = [];
  let contents: { has(table: TableRef): boolean } | undefined;
  const format = manifest.kind === 'logical' ? manifest.options.format : undefined;
  const staging = format === 'directory' ? await makeTempFolder(options.tempDir, 'verify') : undefined;

  try {
    for (const object of manifest.objects) {
      throwIfAborted(options.signal);
      const check: ObjectCheck = { name: object.name, ok: false, storedBytes: object.stored.size, rawBytes: object.raw.size };
      objects.push(check);
      // a content object has no file of its own: its chunks are read (and checked) below
      if (!object.content && !(await repository.hasObject(manifest, object.name))) {
        check.problem = `object ${object.name} is missing from the repository`;
        problems.push(check.problem);
        continue;
      }
      const load = (sink: Writable) =>
        repository.loadObject(manifest, object, sink, {
          codec,
          signal: options.signal,
          identities: options.identities,
          onRawBytes: (n) => options.onProgress?.(object.name, n),
        });
      try {
        if (object.role === 'dump' && format === 'custom') {
          // pg_restore --list reads the TOC from the head of the stream; the rest is still hashed.
          const pgRestore = await toolInfo('pg_restore', options.pgBin);
          const listing = startProcess(pgRestore.path, ['--list'], { stdin: 'pipe', stdout: 'pipe', signal: options.signal });
          const out: Buffer[] = [];
          listing.stdout!.on('data', (c: Buffer) => out.push(c));
          await settleAll([load(childStdinSink(listing.stdin!)), listing.done]);
          const toc = Buffer.concat(out).toString('utf8');
          options.onToc?.(toc);
          contents = { has: (t) => tocHasTableData(toc, t) };
        } else if (object.role === 'dump' && format === 'plain') {
          const scanner = new PlainDumpScanner();
          await load(scanner);
          const found = new Set(scanner.tables.map((t) => `${t.schema}\u0000${t.name}`));
          contents = { has: (t) => found.has(`${t.schema}\u0000${t.name}`) };
        } else if (object.role === 'base') {
          // A physical backup: the tar must list the files recovery starts from.
          const listing = startProcess('tar', ['-t'], { stdin: 'pipe', stdout: 'pipe', signal: options.signal });
          const out: Buffer[] = [];
          listing.stdout!.on('data', (c: Buffer) => out.push(c));
          await settleAll([load(childStdinSink(listing.stdin!)), listing.done]);
          const files = new Set(Buffer.concat(out).toString('utf8').split('\n').map((f) => f.replace(/^\.\//, '')));
          const missing = BASE_TAR_FILES.filter((f) => !files.has(f));
          contents = { has: () => true };
          if (missing.length > 0) throw new Error(`the base tar lacks ${missing.join(', ')}: it is not a complete pg_basebackup`);
        } else if (object.role === 'dump-file' && object.file === 'toc.dat' && staging) {
          await load(createWriteStream(path.join(staging, 'toc.dat'), { mode: 0o600 }));
        } else {
          await load(discardSink());
        }
        check.ok = true;
      } catch (error) {
        if (error instanceof PgkeepError && error.code === 'ABORTED') throw error;
        // Could not read the object (the network, the disk, access): nothing was judged, so
        // there is no verdict to record; the command fails with the storage's error.
        if (error instanceof PgkeepError && UNREAD.has(error.code)) {
          throw new PgkeepError(error.code, `could not read ${object.name} of backup ${manifest.id} to verify it (not a verdict on the backup: nothing was recorded): ${error.message}`, {
            cause: error,
          });
        }
        check.problem = error instanceof PgkeepError && error.code === 'CHECKSUM_MISMATCH' ? error.message : `object ${object.name}: ${(error as Error).message}`;
        problems.push(check.problem);
      }
    }

    const tocObject = manifest.objects.find((o) => o.role === 'dump-file' && o.file === 'toc.dat');
    if (staging && tocObject && objects.find((o) => o.name === tocObject.name)?.ok) {
      const pgRestore = await toolInfo('pg_restore', options.pgBin);
      const toc = await runProcess(pgRestore.path, ['--list', '--format=directory', staging], { signal: options.signal });
      options.onToc?.(toc);
      contents = { has: (t) => tocHasTableData(toc, t) };
    }
  } finally {
    if (staging) await rm(staging, { recursive: true, force: true });
  }

  const expected = manifest.kind === 'logical' ? manifest.tables.filter((t) => t.rows !== null) : [];
  const missing = contents ? expected.filter((t) => !contents!.has(t)).map((t) => `${t.schema}.${t.name}`) : [];
  if (!contents && problems.length === 0) problems.push('the dump has no readable table of contents');
  if (missing.length > 0) problems.push(`the dump holds no data for ${missing.length} table(s) the manifest lists: ${missing.slice(0, 5).join(', ')}${missing.length > 5 ? ', …' : ''}`);
  return {
    id: manifest.id,
    source: manifest.source,
    ok: problems.length === 0,
    objects,
    tables: { expected: expected.length, found: contents ? expected.length - missing.length : 0, missing },
    problems,
    durationMs: Date.now() - started,
  };
}
