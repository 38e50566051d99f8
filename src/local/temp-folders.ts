import { mkdtemp, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

/** The kinds of private temp folders pgkeep makes; a folder's name says its kind and the pid that made it. */
export type TempFolderKind = 'restore' | 'verify' | 'dump' | 'globals' | 'upload' | 'schema';
const KINDS = 'restore|verify|dump|globals|upload|schema';
const WITH_PID = new RegExp(`^pgkeep-(${KINDS})-(\\d+)-[A-Za-z0-9]{6}$`);
/** Made by a pgkeep before folder names carried the pid. */
const WITHOUT_PID = new RegExp(`^pgkeep-(${KINDS})-[A-Za-z0-9]{6}$`);
/** Folders of the older kind are removed only when nothing touched them for this long. */
const UNOWNED_AGE_MS = 24 * 3600_000;

/** A private (0700) temp folder, `pgkeep-<kind>-<pid>-XXXXXX` in `parent` (default the system temp dir). */
export function makeTempFolder(parent: string | undefined, kind: TempFolderKind): Promise<string> {
  return mkdtemp(path.join(parent ?? tmpdir(), `pgkeep-${kind}-${process.pid}-`));
}

/**
 * Temp folders left by pgkeep processes that died without cleaning up (SIGKILL,
 * a crash): those whose pid no longer runs on this host, and unowned ones of
 * older pgkeep idle for a day. A folder of a running process is never touched.
 */
export async function staleTempFolders(parent: string | undefined, now = Date.now()): Promise<string[]> {
  const folder = parent ?? tmpdir();
  let names: string[];
  try {
    names = await readdir(folder);
  } catch {
    return [];
  }
  const stale: string[] = [];
  for (const name of names) {
    const owned = WITH_PID.exec(name);
    if (owned) {
      const pid = Number(owned[2]);
      if (pid !== process.pid && !isAlive(pid)) stale.push(path.join(folder, name));
    } else if (WITHOUT_PID.test(name)) {
      const info = await stat(path.join(folder, name)).catch(() => undefined);
      if (info?.isDirectory() && now - info.mtimeMs > UNOWNED_AGE_MS) stale.push(path.join(folder, name));
    }
  }
  return stale;
}

/** Removes what staleTempFolders finds; returns what was removed and what could not be. */
export async function removeStaleTempFolders(parent: string | undefined): Promise<{ removed: string[]; failed: { path: string; error: string }[] }> {
  const removed: string[] = [];
  const failed: { path: string; error: string }[] = [];
  for (const stale of await staleTempFolders(parent)) {
    try {
      await rm(stale, { recursive: true, force: true });
      removed.push(stale);
    } catch (error) {
      failed.push({ path: stale, error: (error as NodeJS.ErrnoException).code ?? (error as Error).message });
    }
  }
  return { removed, failed };
}

/** Whether a process of this pid runs on this host (EPERM: it runs, as another user). */
export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (error) {
    return (error as NodeJS.ErrnoException).code === 'EPERM';
  }
}
