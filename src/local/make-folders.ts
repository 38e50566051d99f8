import { mkdirSync, statSync } from 'node:fs';
import * as fs from 'node:fs/promises';
import * as path from 'node:path';

/**
 * `mkdir -p` with a bounded number of steps. Node's own recursive mkdir
 * loops forever (busy, and deaf to signals) where creating a folder fails
 * with ENOENT although its parent exists, as anywhere under /proc: it takes
 * ENOENT to mean "make the parent first", the parent exists, and it starts
 * over. Here every level is tried at most twice (before and after its
 * parent), so such a path fails with the filesystem's own error.
 */
export async function makeFolders(folder: string, mode = 0o700): Promise<void> {
  try {
    await fs.mkdir(folder, { mode });
    return;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return requireFolder(folder, error, (await fs.stat(folder).catch(() => undefined))?.isDirectory());
    const parent = path.dirname(folder);
    if (code !== 'ENOENT' || parent === folder) throw error;
  }
  await makeFolders(path.dirname(folder), mode);
  try {
    await fs.mkdir(folder, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    requireFolder(folder, error, (await fs.stat(folder).catch(() => undefined))?.isDirectory());
  }
}

/** The synchronous twin of makeFolders (for the daemon's state folder, opened synchronously). */
export function makeFoldersSync(folder: string, mode = 0o700): void {
  try {
    mkdirSync(folder, { mode });
    return;
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return requireFolder(folder, error, isFolderSync(folder));
    const parent = path.dirname(folder);
    if (code !== 'ENOENT' || parent === folder) throw error;
  }
  makeFoldersSync(path.dirname(folder), mode);
  try {
    mkdirSync(folder, { mode });
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code !== 'EEXIST') throw error;
    requireFolder(folder, error, isFolderSync(folder));
  }
}

function isFolderSync(folder: string): boolean {
  try {
    return statSync(folder).isDirectory();
  } catch {
    return false;
  }
}

/** EEXIST is success only when what exists is a folder. */
function requireFolder(folder: string, error: unknown, isFolder: boolean | undefined): void {
  if (isFolder) return;
  throw Object.assign(new Error(`ENOTDIR: not a folder, mkdir '${folder}'`), { code: 'ENOTDIR', syscall: 'mkdir', path: folder, cause: error });
}
