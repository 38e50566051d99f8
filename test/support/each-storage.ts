import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before, describe } from 'node:test';
import { startS3Server, type S3TestServer } from './s3-server.js';

/**
 * The storage a block of tests runs over: a folder, or a bucket of s3rver.
 * Valid once the block's before() hooks ran (inside tests and hooks).
 */
export interface TestStorage {
  readonly kind: 'posix' | 's3';
  /** A fresh repository URL for `name`: a folder of this file's work dir, or s3://bucket/name. */
  repo(name: string): string;
  /** The environment a CLI spawn needs to reach this storage (S3 credentials and endpoint; nothing for posix). */
  env(): Record<string, string>;
  /** The s3rver (request log, injected failures); undefined for posix. */
  readonly s3: S3TestServer | undefined;
}

export const STORAGE_KINDS = ['posix', 's3'] as const;

let server: Promise<S3TestServer> | undefined;
let bucket: string | undefined;
let folder: Promise<string> | undefined;
let hooked = false;

/** One s3rver per test file, started when a block first needs it, stopped when the file ends. */
function s3Server(): Promise<S3TestServer> {
  server ??= (async () => {
    const s3 = await startS3Server();
    bucket = await s3.bucket('pgkeep-tests');
    // The AWS SDK reads credentials and the endpoint from the process's
    // environment; commands run in this process, and this s3rver is the only
    // one of the file, so the file's environment points at it.
    Object.assign(process.env, s3Env(s3));
    return s3;
  })();
  return server;
}

function s3Env(s3: S3TestServer): Record<string, string> {
  return {
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_REGION: s3.region,
    AWS_ENDPOINT_URL: s3.endpoint,
  };
}

/** One work folder per test file for posix repositories. */
function workFolder(): Promise<string> {
  folder ??= mkdtemp(path.join(tmpdir(), 'pgkeep-storage-'));
  return folder;
}

/**
 * This file's one s3rver, for tests that need S3 next to another storage:
 * call at the top level of the file (it registers the file's after() hook);
 * the function returned starts it on first use. Commands run in process reach
 * it through the AWS_* variables set in this process.
 */
export function useFileS3Server(): () => Promise<S3TestServer> {
  hookFileEnd();
  return s3Server;
}

function hookFileEnd(): void {
  if (hooked) return;
  hooked = true;
  after(async () => {
    if (server) await (await server).stop();
    if (folder) await rm(await folder, { recursive: true, force: true });
  });
}

/**
 * Runs the describe block `fn` once per storage, the way Kysely runs every test
 * over every dialect: "name [posix]" and "name [s3]". Repository names are
 * unique per block (the two blocks never share a repository).
 */
export function eachStorage(name: string, fn: (storage: TestStorage) => void): void {
  hookFileEnd();
  for (const kind of STORAGE_KINDS) {
    let s3: S3TestServer | undefined;
    let base: string | undefined;
    const storage: TestStorage = {
      kind,
      repo(repoName) {
        if (!base) throw new Error('eachStorage: a repository is asked for before the block started');
        return kind === 'posix' ? path.join(base, repoName) : `s3://${bucket}/${base}/${repoName}`;
      },
      env: () => (s3 ? s3Env(s3) : {}),
      get s3() {
        return s3;
      },
    };
    describe(`${name} [${kind}]`, () => {
      before(async () => {
        const block = name.replace(/[^a-z0-9]+/gi, '-').toLowerCase();
        if (kind === 's3') {
          s3 = await s3Server();
          base = block;
        } else {
          base = path.join(await workFolder(), block);
        }
      });
      fn(storage);
    });
  }
}
