import { Readable } from 'node:stream';
import { z } from 'zod';
import { PgkeepError } from '../errors.js';
import { joinKey, readObject } from '../storage/storage.js';
import { type Repository } from './repository.js';
import { storageOf } from './repository-storage.js';
import { verificationFileName } from './verification.js';

/**
 * The record of a backup that did not complete in this repository, kept at
 * sources/<source>/failures/<time>.json so that `status` can say "last backup
 * failed" (a failed backup has no manifest). The message is the one-line
 * error pgkeep printed: never a secret.
 */
export const BackupFailureSchema = z.object({
  format: z.literal(1),
  source: z.string(),
  kind: z.string(),
  startedAt: z.string(),
  failedAt: z.string(),
  code: z.string(),
  message: z.string(),
});
export type BackupFailure = z.infer<typeof BackupFailureSchema>;

function failuresFolder(source: string): string {
  return joinKey('sources', source, 'failures');
}

export async function writeBackupFailure(repository: Repository, failure: Omit<BackupFailure, 'format'>): Promise<void> {
  const record = BackupFailureSchema.parse({ format: 1, ...failure });
  const key = joinKey(failuresFolder(failure.source), verificationFileName(new Date(record.failedAt)));
  await storageOf(repository)!.put(key, Readable.from([Buffer.from(`${JSON.stringify(record, null, 2)}\n`)]));
}

/** Removes one failure record (a key listBackupFailures gave). */
export async function removeBackupFailure(repository: Repository, key: string): Promise<void> {
  if (!key.startsWith('sources/') || !key.includes('/failures/')) throw new PgkeepError('INTERNAL', `not a failure record: ${key}`);
  await storageOf(repository)!.remove(key);
}

/** Failure records of a source, oldest first, with their keys; unreadable ones are skipped. */
export async function listBackupFailures(repository: Repository, source: string): Promise<(BackupFailure & { key: string })[]> {
  const records: (BackupFailure & { key: string })[] = [];
  for await (const entry of storageOf(repository)!.list(failuresFolder(source))) {
    if (entry.kind !== 'object' || !entry.path.endsWith('.json')) continue;
    try {
      records.push({ ...BackupFailureSchema.parse(JSON.parse((await readObject(storageOf(repository)!, entry.path)).toString('utf8'))), key: entry.path });
    } catch {
      // removed meanwhile, or damaged: says nothing we can trust
    }
  }
  return records.sort((a, b) => (a.failedAt < b.failedAt ? -1 : a.failedAt > b.failedAt ? 1 : 0));
}
