import { PgkeepError } from '../errors.js';
import type { Storage } from '../storage/storage.js';
import { CONTENT_KEY_FILE } from './content-store/content-keys.js';
import { WRAPPED_IDENTITY } from './repository-keys.js';

/**
 * An init that did not finish. Creating an encrypted repository writes its
 * keys before pgkeep.json names them (a passphrase's wrapped identity, a
 * deduplicating repository's sealed content key): pgkeep.json, written last
 * with putIfAbsent, is what makes a location a repository. A kill between the
 * two leaves a location with keys and no pgkeep.json, which is neither empty
 * nor a repository.
 *
 * Such keys encrypt nothing yet, so they are safe to remove, but not at once:
 * the only way to tell an interrupted init from one still running (on another
 * host, over S3) is time. `init` and `copy` remove them once they are
 * UNFINISHED_INIT_GRACE_MS old, and before that refuse with one line that says
 * when. Every other command refuses and points at init: a backup must not turn
 * a location meant to be encrypted into an unencrypted repository.
 */

/** The files an init writes before pgkeep.json. */
const INIT_FILES: readonly string[] = [WRAPPED_IDENTITY, CONTENT_KEY_FILE];

/** How old an unfinished init's keys must be before init or copy removes them: an init takes seconds, even over S3. */
export const UNFINISHED_INIT_GRACE_MS = 10 * 60_000;

export interface UnfinishedInit {
  files: { path: string; modified: Date }[];
  /** When the newest of them was written. */
  newest: Date;
}

/** The keys of an unfinished init, when they are all that the location holds (and there is no pgkeep.json); undefined otherwise. */
export async function findUnfinishedInit(storage: Storage): Promise<UnfinishedInit | undefined> {
  const files: UnfinishedInit['files'] = [];
  for await (const entry of storage.list('', { recursive: true })) {
    if (entry.kind !== 'object') continue;
    // anything else (pgkeep.json too): not an unfinished init; stop at the first such object, however big the location
    if (!INIT_FILES.includes(entry.path)) return undefined;
    files.push({ path: entry.path, modified: entry.modified });
  }
  if (files.length === 0) return undefined;
  return { files, newest: new Date(Math.max(...files.map((f) => f.modified.getTime()))) };
}

/** The error of a command that found an unfinished init where it expected a repository (or an empty location). */
export function unfinishedInitError(location: string, found: UnfinishedInit, forInit: boolean, now: Date): PgkeepError {
  const what = `${found.files.map((f) => f.path).join(' and ')}, written ${found.newest.toISOString()}`;
  if (!forInit) {
    return new PgkeepError('REPO_INIT_UNFINISHED', `${location} holds the keys of a pgkeep init that did not finish (${what}) and no pgkeep.json: run that init (or copy) again`);
  }
  const after = new Date(found.newest.getTime() + UNFINISHED_INIT_GRACE_MS);
  const wait = Math.max(1, Math.ceil((after.getTime() - now.getTime()) / 60_000));
  return new PgkeepError(
    'REPO_INIT_UNFINISHED',
    `${location} holds the keys of a pgkeep init that has not finished (${what}) and no pgkeep.json yet: another pgkeep may be creating this repository; if none is, run this again in ${wait} min (pgkeep then removes them), or remove them yourself`,
  );
}

/**
 * Removes the keys of an unfinished init once they are old enough; throws
 * REPO_INIT_UNFINISHED while they are younger. Returns false when the location
 * holds no such keys. Each file is checked again just before it is removed,
 * so a concurrent init that has just written a fresh one keeps it.
 */
export async function removeUnfinishedInit(storage: Storage, now: Date = new Date()): Promise<boolean> {
  const found = await findUnfinishedInit(storage);
  if (!found) return false;
  const oldEnough = (modified: Date) => now.getTime() - modified.getTime() >= UNFINISHED_INIT_GRACE_MS;
  if (!oldEnough(found.newest)) throw unfinishedInitError(storage.location, found, true, now);
  for (const file of found.files) {
    const current = await storage.stat(file.path);
    if (current && oldEnough(current.modified)) await storage.remove(file.path);
  }
  return true;
}
