import type { ConnectionInfo } from './connection-info.js';
import { libpqEnv } from './connection-info.js';
import { findTool } from './pg-tools.js';
import { startProcess } from './run-process.js';

/**
 * Writes `pg_dumpall --globals-only` (roles, memberships, role settings,
 * tablespaces) of the server `connection` points at into `file`. Without
 * `passwords`, role passwords are left out (--no-role-passwords: also what
 * works for a role that may not read pg_authid).
 */
export async function dumpGlobals(connection: ConnectionInfo, file: string, options: { passwords: boolean; pgBin?: string | undefined; signal?: AbortSignal | undefined }): Promise<void> {
  // Its path only: its version is never used, and a `pg_dumpall --version` probe is a process of its own.
  const pgDumpall = findTool('pg_dumpall', options.pgBin);
  const args = ['--globals-only', `--database=${connection.database}`, '--no-password', `--file=${file}`, ...(options.passwords ? [] : ['--no-role-passwords'])];
  await startProcess(pgDumpall, args, {
    env: libpqEnv(connection),
    signal: options.signal,
    isErrorLine: (line) => /(error|detail|hint|warning):|FATAL|ERROR/.test(line),
    stdout: 'ignore',
  }).done;
}
