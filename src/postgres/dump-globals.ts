import type { ConnectionInfo } from './connection-info.js';
import { libpqEnv } from './connection-info.js';
import { toolInfo } from './pg-tools.js';
import { startProcess } from './run-process.js';

/**
 * Writes `pg_dumpall --globals-only` (roles, memberships, role settings,
 * tablespaces) of the server `connection` points at into `file`. Without
 * `passwords`, role passwords are left out (--no-role-passwords: also what
 * works for a role that may not read pg_authid).
 */
export async function dumpGlobals(connection: ConnectionInfo, file: string, options: { passwords: boolean; pgBin?: string | undefined; signal?: AbortSignal | undefined }): Promise<void> {
  const pgDumpall = await toolInfo('pg_dumpall', options.pgBin);
  const args = ['--globals-only', `--database=${connection.database}`, '--no-password', `--file=${file}`, ...(options.passwords ? [] : ['--no-role-passwords'])];
  await startProcess(pgDumpall.path, args, {
    env: libpqEnv(connection),
    signal: options.signal,
    isErrorLine: (line) => /(error|detail|hint|warning):|FATAL|ERROR/.test(line),
    stdout: 'ignore',
  }).done;
}
