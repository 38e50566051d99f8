import { randomUUID } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { hostname } from 'node:os';
import { PgkeepError } from '../../errors.js';
import type { Storage } from '../../storage/storage.js';
import { holdHere, isStale, letGo, newOwner, readOwner, type LockOwner } from '../source-lock.js';

export const LOCKS_PREFIX = 'content/locks';

export interface ContentLock {
  release(): Promise<void>;
}

/**
 * The content store's repository-wide locks. Every writer of chunks (a
 * backup, a copy into this repository) holds a shared lock while its session
 * runs; prune's sweep holds the exclusive one. Each party writes its own lock
 * object first and then lists the others, so of a writer and a prune that
 * start together at least one sees the other and steps back: a chunk that a
 * running backup has just found in the index (and will name in its manifest)
 * is never swept from under it. Locks of dead processes on this host are
 * cleared; those of other hosts are reported with the key to remove.
 */
export async function acquireContentLock(storage: Storage, kind: 'shared' | 'exclusive', command: string, options: { waitMs?: number; signal?: AbortSignal | undefined } = {}): Promise<ContentLock> {
  // a writer waits for a sweep to end (they are short) rather than fail a scheduled backup; prune does not wait
  const deadline = Date.now() + (options.waitMs ?? (kind === 'shared' ? SHARED_WAIT_MS : 0));
  for (;;) {
    try {
      return await tryContentLock(storage, kind, command);
    } catch (error) {
      if (!(error instanceof PgkeepError && error.code === 'LOCK_HELD') || Date.now() >= deadline) throw error;
      options.signal?.throwIfAborted();
      await sleep(Math.min(1000, Math.max(0, deadline - Date.now())), undefined, options.signal ? { signal: options.signal } : undefined);
    }
  }
}

/** How long a writer waits for prune's sweep before it gives up with LOCK_HELD. */
export const SHARED_WAIT_MS = 10 * 60_000;

async function tryContentLock(storage: Storage, kind: 'shared' | 'exclusive', command: string): Promise<ContentLock> {
  const me: LockOwner & { kind: string } = { kind, ...newOwner(command) };
  const key = `${LOCKS_PREFIX}/${kind}-${me.holder}.json`;
  holdHere(me.holder!);
  await storage.putIfAbsent(key, Buffer.from(`${JSON.stringify(me)}\n`));
  const release = async () => {
    letGo(me.holder!);
    await storage.remove(key);
  };
  try {
    for await (const entry of storage.list(LOCKS_PREFIX)) {
      if (entry.kind !== 'object' || entry.path === key) continue;
      const name = entry.path.slice(entry.path.lastIndexOf('/') + 1);
      // a shared lock stops only an exclusive one; an exclusive one stops everybody
      if (kind === 'shared' && !name.startsWith('exclusive-')) continue;
      const owner = await readOwner(storage, entry.path);
      if (!owner) continue;
      if (isStale(owner)) {
        await storage.remove(entry.path);
        continue;
      }
      throw new PgkeepError(
        'LOCK_HELD',
        `the repository's chunks are in use by "pgkeep ${owner.command}" (pid ${owner.pid} on ${owner.host}, since ${owner.started}): ` +
          (kind === 'exclusive' ? 'prune sweeps chunks only while no backup writes them' : 'a backup waits until prune has swept') +
          (owner.host === me.host ? '' : `; if it is no longer running there, remove ${storage.location}/${entry.path}`),
        { details: { ...owner } },
      );
    }
  } catch (error) {
    await release().catch(() => undefined);
    throw error;
  }
  return { release };
}
