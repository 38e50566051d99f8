import { spawnSync } from 'node:child_process';
import { chmodSync, statSync } from 'node:fs';
import { chmod, chown, mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { CLI_ENTRY } from './cli.js';

/**
 * Folders the PostgreSQL server's OS user can use. As root, test servers run
 * as `postgres` (see pg-cluster.ts), and their archive_command and
 * restore_command run pgkeep as that user: the repository and the key files
 * they use must be reachable and writable by it.
 */
export function serverUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const fields = spawnSync('getent', ['passwd', 'postgres'], { encoding: 'utf8' }).stdout.trim().split(':');
  return { uid: Number(fields[2]), gid: Number(fields[3]) };
}

/** A new temp folder every user can traverse (0755), owned by the server's user. */
export async function serverFolder(name: string): Promise<string> {
  const folder = await mkdtemp(path.join(tmpdir(), `pgkeep-${name}-`));
  await chmod(folder, 0o755);
  const user = serverUser();
  if (user) await chown(folder, user.uid, user.gid);
  return folder;
}

/** Hands a file or folder tree (made by the test as root) to the server's user. */
export function giveToServer(target: string): void {
  const user = serverUser();
  if (user) spawnSync('chown', ['-R', `${user.uid}:${user.gid}`, target]);
}

/** archive_command running the `pgkeep` executable; values are plain paths (no quoting needed). */
export function archiveCommand(repo: string, source: string): string {
  letServerRun(process.execPath);
  letServerRun(CLI_ENTRY);
  return `${process.execPath} ${CLI_ENTRY} wal-push %p --source ${source} --repo ${repo}`;
}

/**
 * As root, the server's user runs `node` and the built pgkeep (archive_command,
 * and pitr's restore_command). A checkout in a 0700 folder (mktemp -d, /root)
 * hides them from it: give every folder above `file` the search bit (o+x, not
 * read), which is all it needs. Nothing happens when not root.
 */
export function letServerRun(file: string): void {
  if (!serverUser()) return;
  for (let dir = path.dirname(path.resolve(file)); ; dir = path.dirname(dir)) {
    const mode = statSync(dir).mode;
    if ((mode & 0o001) === 0) chmodSync(dir, (mode & 0o7777) | 0o001);
    if (dir === path.dirname(dir)) break;
  }
}
