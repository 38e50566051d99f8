import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { PgkeepError } from '../errors.js';
import { joinKey, readObject, type Storage } from '../storage/storage.js';

export interface LockOwner {
  pid: number;
  host: string;
  command: string;
  started: string;
  /** Which acquire of its process wrote it (absent in locks of older versions). */
  holder?: string;
  /** When its process started, in clock ticks after boot (Linux; absent elsewhere and in locks of older versions): tells it from a later process given the same pid. */
  startTicks?: number;
}

export interface SourceLock {
  release(): Promise<void>;
}

/**
 * One writer per source at a time. The lock is an object created only if absent
 * (O_EXCL-like on posix, conditional write on object stores). A lock left by a
 * process that died on this host is taken over; one held elsewhere is reported.
 */
export async function acquireSourceLock(storage: Storage, source: string, command: string): Promise<SourceLock> {
  const key = joinKey('sources', source, 'locks', 'source.lock');
  const me = newOwner(command);
  const body = Buffer.from(`${JSON.stringify(me)}\n`);
  // Held here before the lock object exists: another acquire in this process (serve runs jobs side by side)
  // that finds the object while our putIfAbsent is still returning must not judge it stale and remove it.
  holdHere(me.holder!);
  try {
    for (let attempt = 0; attempt < 3; attempt++) {
      if (await storage.putIfAbsent(key, body)) {
        return {
          release: async () => {
            // given up here even if the removal fails (storage unreachable): the lock left behind is then stale for this process too
            letGo(me.holder!);
            await storage.remove(key);
          },
        };
      }
      const owner = await readOwner(storage, key);
      if (owner && isStale(owner)) {
        await storage.remove(key); // stale: its process is gone, or it is this process and no acquire here holds it
        continue;
      }
      if (!owner) continue; // released between our attempts
      throw new PgkeepError(
        'LOCK_HELD',
        `source ${source} is locked by "pgkeep ${owner.command}" (pid ${owner.pid} on ${owner.host}, since ${owner.started}): wait for it to finish` +
          // a lock of a process on another host cannot be checked from here: say how to clear it if that process is gone
          (owner.host === me.host ? '' : `, or if it is no longer running there, remove ${storage.location}/${key}`),
        { details: { ...owner } },
      );
    }
    throw new PgkeepError('LOCK_HELD', `could not take the lock of source ${source}: it keeps changing hands, try again`);
  } catch (error) {
    letGo(me.holder!); // not taken (or not known to be): a lock object naming this holder is stale from now on
    throw error;
  }
}

/**
 * Who holds a source's lock, without taking it (for `pgkeep check`): undefined
 * when it is free. `stale`: its process is gone on this host (the next writer
 * takes it over); a lock from another host cannot be judged from here.
 */
export async function inspectSourceLock(storage: Storage, source: string): Promise<{ owner: LockOwner; stale: boolean } | undefined> {
  const owner = await readOwner(storage, joinKey('sources', source, 'locks', 'source.lock'));
  if (!owner) return undefined;
  return { owner, stale: isStale(owner) };
}

/**
 * The locks this process holds now, by holder. A long-running process (serve)
 * whose release failed (the storage was unreachable at that moment) leaves a
 * lock naming its own pid, which is alive: without this, no later job of that
 * source could run until serve restarted.
 */
const heldHere = new Set<string>();
export const holdHere = (holder: string): void => void heldHere.add(holder);
export const letGo = (holder: string): void => void heldHere.delete(holder);

/** Its process is gone on this host, or it is this very process and no acquire of it holds the lock any more (the content store's locks judge theirs the same way). */
export function isStale(owner: LockOwner): boolean {
  if (owner.host !== hostname()) return false; // cannot be judged from here
  if (owner.pid === process.pid) return !(owner.holder && heldHere.has(owner.holder));
  return !isAlive(owner.pid, owner.startTicks);
}

/** The owner record of a new lock taken by this process (a source lock or a content-store lock), with its own holder id. */
export function newOwner(command: string): LockOwner {
  return { pid: process.pid, host: hostname(), command, started: new Date().toISOString(), holder: randomUUID(), ...ownStart() };
}

/** This process's start, for the locks it writes (see isAlive). */
export function ownStart(): { startTicks?: number } {
  const ticks = processStartTicks('self');
  return ticks === undefined ? {} : { startTicks: ticks };
}

/** A lock object's owner; undefined when it is gone; an unreadable one belongs to nobody alive. Also the content store's locks. */
export async function readOwner(storage: Storage, key: string): Promise<LockOwner | undefined> {
  try {
    return JSON.parse((await readObject(storage, key)).toString('utf8')) as LockOwner;
  } catch (error) {
    if (error instanceof PgkeepError && error.code === 'STORAGE_NOT_FOUND') return undefined;
    // An unreadable lock (e.g. a crash while it was written) belongs to nobody alive.
    return { pid: -1, host: hostname(), command: 'unknown', started: 'unknown' };
  }
}

/**
 * Whether the process that wrote a lock still runs: its pid is alive and, where the lock records when its
 * writer started (Linux: clock ticks after boot, immune to clock changes) and /proc says when the process
 * with that pid started, the two are the same. Pids are reused (pid_max is 32,768 on many systems, and a
 * busy host goes round it in minutes), so a dead owner's pid may belong to another process by now: seen as
 * a prune whose sweep stepped back from the lock of a killed backup.
 */
function isAlive(pid: number, startTicks: number | undefined): boolean {
  if (pid <= 0) return false;
  try {
    process.kill(pid, 0);
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EPERM') return false;
  }
  const now = startTicks === undefined ? undefined : processStartTicks(pid);
  return now === undefined || now === startTicks;
}

/** When a process started, in clock ticks after boot (/proc/PID/stat, field 22), on Linux; undefined elsewhere or when /proc does not say. */
export function processStartTicks(pid: number | 'self'): number | undefined {
  if (process.platform !== 'linux') return undefined;
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    // the fields after the command name (in parentheses, which may hold spaces): state is field 3, starttime 22
    const ticks = Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]);
    return Number.isSafeInteger(ticks) ? ticks : undefined;
  } catch {
    return undefined;
  }
}
