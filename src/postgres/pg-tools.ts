import { existsSync, readdirSync } from 'node:fs';
import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import type { ConnectionInfo } from './connection-info.js';
import { withClient } from './pg-client.js';
import { runProcess } from './run-process.js';
import { readServerInfo } from './server-info.js';
import { searchPath } from './child-env.js';

export type PgTool = 'pg_dump' | 'pg_restore' | 'psql' | 'pg_dumpall' | 'pg_amcheck' | 'pg_basebackup' | 'pg_ctl';

export interface ToolInfo {
  path: string;
  /** e.g. "15.18" */
  version: string;
  major: number;
}

/**
 * Finds PostgreSQL client programs. With `binDir` (PG_BIN or the config's
 * pgBin) only that folder is used. Otherwise the newest Debian-style install
 * under /usr/lib/postgresql/<major>/bin wins (a newer pg_dump reads older
 * servers; an older one cannot), then PATH.
 */
export function findTool(tool: PgTool, binDir?: string): string {
  if (binDir) {
    const candidate = path.join(binDir, tool);
    if (!existsSync(candidate)) {
      throw new PgkeepError('TOOL_MISSING', `${tool} is not in ${binDir} (from PG_BIN/pgBin): point it at a PostgreSQL bin folder`);
    }
    return candidate;
  }
  const root = '/usr/lib/postgresql';
  if (existsSync(root)) {
    const majors = readdirSync(root)
      .filter((d) => /^\d+$/.test(d))
      .map(Number)
      .sort((a, b) => b - a);
    for (const major of majors) {
      const candidate = path.join(root, String(major), 'bin', tool);
      if (existsSync(candidate)) return candidate;
    }
  }
  for (const dir of searchPath().split(path.delimiter)) {
    if (dir && existsSync(path.join(dir, tool))) return path.join(dir, tool);
  }
  throw new PgkeepError('TOOL_MISSING', `${tool} is not installed: install the PostgreSQL client (apt-get install postgresql-client) or set PG_BIN to its bin folder`);
}

const cache = new Map<string, ToolInfo>();

export async function toolInfo(tool: PgTool, binDir?: string): Promise<ToolInfo> {
  const toolPath = findTool(tool, binDir);
  const cached = cache.get(toolPath);
  if (cached) return cached;
  const output = await runProcess(toolPath, ['--version']);
  const match = /(\d+)(?:\.(\d+))?/.exec(output.replace(/^[^)]*\)/, ''));
  if (!match) throw new PgkeepError('TOOL_FAILED', `cannot read the version of ${toolPath}: "${output.trim()}"`);
  const info = { path: toolPath, version: match[2] === undefined ? match[1]! : `${match[1]}.${match[2]}`, major: Number(match[1]) };
  cache.set(toolPath, info);
  return info;
}

/** Major version from server_version_num (150018 → 15, 90624 → 9). */
export function serverMajor(versionNum: number): number {
  return versionNum >= 100000 ? Math.floor(versionNum / 10000) : Math.floor(versionNum / 100) / 100;
}

/**
 * pg_restore reads archives of its own pg_dump major and older ones: one
 * older than the pg_dump that wrote the archive cannot ("unsupported version
 * in file header"). Say so before starting. psql runs any plain dump.
 */
export function assertArchiveReadable(tool: ToolInfo, name: PgTool, pgDumpVersion: string): void {
  const dumpMajor = Number(pgDumpVersion.split('.')[0]);
  if (name === 'pg_restore' && tool.major < dumpMajor) {
    throw new PgkeepError('TOOL_TOO_OLD', `pg_restore ${tool.version} (${tool.path}) cannot read a dump made by pg_dump ${pgDumpVersion}: install postgresql-client-${dumpMajor} or set PG_BIN to a PostgreSQL ${dumpMajor}+ bin folder`);
  }
}

/**
 * A client program older than the server cannot dump it (pg_dump refuses "server
 * version mismatch"). Say so before starting, with the package to install.
 */
export function assertToolNotOlder(tool: ToolInfo, name: PgTool, serverVersionNum: number, serverVersion: string): void {
  const major = serverMajor(serverVersionNum);
  if (tool.major < major) {
    throw new PgkeepError(
      'TOOL_TOO_OLD',
      `${name} ${tool.version} (${tool.path}) is older than the server (PostgreSQL ${serverVersion}): install postgresql-client-${Math.floor(major)} or set PG_BIN to a PostgreSQL ${Math.floor(major)}+ bin folder`,
    );
  }
}

/**
 * Refuses a client program older than the server before a backup touches its
 * repository (which it would otherwise create, with a source and a failure
 * record): a refusal leaves nothing behind. Anything else that goes wrong
 * here (server unreachable, tool missing) is left to the backup itself, which
 * reports and records it.
 */
export async function refuseOlderClient(name: 'pg_dump' | 'pg_basebackup', connection: ConnectionInfo, pgBin: string | undefined, signal?: AbortSignal): Promise<void> {
  let tool: ToolInfo;
  try {
    tool = await toolInfo(name, pgBin);
  } catch {
    return;
  }
  const server = await withClient(connection, readServerInfo, signal).catch(() => undefined);
  if (server) assertToolNotOlder(tool, name, server.versionNum, server.version);
}
