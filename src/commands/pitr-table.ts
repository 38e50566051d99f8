import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, mkdir, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { ResolvedSource } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { libpqEnv, type ConnectionInfo } from '../postgres/connection-info.js';
import { withClient, quoteIdent } from '../postgres/pg-client.js';
import { freePort } from '../postgres/pg-server.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import type { Repository } from '../repository/repository.js';
import type { CommandContext } from './command-context.js';
import { runPitr, type PitrResult, type RecoveryTarget } from './pitr.js';

export interface TablePitrRequest {
  target: RecoveryTarget;
  backup?: string | undefined;
  /** Tables as `schema.table` or `table` (pg_dump --table patterns for sql). */
  tables: string[];
  format: 'sql' | 'csv';
  /** File to write; written to a temp name beside it, then renamed. */
  output: string;
  restoreCommand: string;
  timeoutMs?: number | undefined;
}

export interface TablePitrResult {
  pitr: PitrResult;
  output: string;
  format: 'sql' | 'csv';
  tables: { name: string; rows: number }[];
}

/**
 * Table-level point-in-time recovery in one command:
 *
 *  1. a private temp folder for a throwaway data directory
 *  2. pitr into it with --start; the throwaway server listens only on a Unix
 *     socket inside its own data directory, trusts only that socket, and does
 *     not archive
 *  3. while it runs: count the tables' rows, dump them (pg_dump --table for
 *     sql, COPY … TO STDOUT for csv) into a temp file beside the output, rename
 *  4. stop the server and remove the folder, whatever happened
 */
export async function runTablePitr(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: TablePitrRequest): Promise<TablePitrResult> {
  if (request.tables.length === 0) throw new PgkeepError('USAGE', '--extract-table needs a table name');
  if (request.format === 'csv' && request.tables.length > 1) throw new PgkeepError('USAGE', '--format csv writes one table: give one --extract-table, or use --format sql');
  const output = path.resolve(request.output);

  // 1. the throwaway folder: traversable (not readable) by the server's user, who owns the data directory inside
  const work = await mkdtemp(path.join(source.tempDir ?? tmpdir(), 'pgkeep-pitr-table-'));
  await chmod(work, 0o711);
  const pgdata = path.join(work, 'data');
  const tables: TablePitrResult['tables'] = [];
  try {
    // 2. recover, 3. extract while it runs
    const port = await freePort();
    const pitr = await runPitr(ctx, repository, source, {
      pgdata,
      target: request.target,
      backup: request.backup,
      start: true,
      port,
      archiveMode: 'off',
      targetAction: 'promote',
      restoreCommand: request.restoreCommand,
      timeoutMs: request.timeoutMs,
      extraSettings: [
        ['listen_addresses', ''],
        ['unix_socket_directories', pgdata],
      ],
      hba: 'local all all trust\n',
      whileRunning: async () => {
        const connection: ConnectionInfo = { host: pgdata, port, user: source.connection.user, database: source.connection.database };
        await withClient(connection, async (client) => {
          for (const table of request.tables) {
            const rows = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${qualified(table)}`).catch((error: { code?: string; message?: string }) => {
              throw error.code === '42P01'
                ? new PgkeepError('USAGE', `table ${table} did not exist in database ${connection.database} at the recovery target`, { cause: error })
                : new PgkeepError('DB_QUERY_FAILED', `counting ${table} in the recovered cluster: ${error.message}`, { cause: error });
            });
            tables.push({ name: table, rows: Number(rows.rows[0]!.n) });
          }
        });
        ctx.info(`writing ${request.tables.join(', ')} as ${request.format} to ${output}`);
        await writeAtomically(output, async (file) => {
          const env = libpqEnv(connection);
          const child =
            request.format === 'sql'
              ? startProcess((await toolInfo('pg_dump', source.pgBin)).path, ['--format=plain', '--no-password', ...request.tables.map((t) => `--table=${t}`)], { env, stdout: 'pipe' })
              : startProcess((await toolInfo('psql', source.pgBin)).path, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-c', `COPY (SELECT * FROM ${qualified(request.tables[0]!)}) TO STDOUT WITH (FORMAT csv, HEADER)`], { env, stdout: 'pipe' });
          await settleAll([pipeline(child.stdout!, createWriteStream(file, { flags: 'wx', mode: 0o600 })), child.done]);
        });
      },
    });
    return { pitr, output, format: request.format, tables };
  } finally {
    // 4. nothing of the throwaway cluster stays
    await rm(work, { recursive: true, force: true });
  }
}

/** "schema.table" or "table", each part quoted as an identifier. */
function qualified(table: string): string {
  const dot = table.indexOf('.');
  return dot < 0 ? quoteIdent(table) : `${quoteIdent(table.slice(0, dot))}.${quoteIdent(table.slice(dot + 1))}`;
}

async function writeAtomically(target: string, write: (file: string) => Promise<void>): Promise<void> {
  await mkdir(path.dirname(target), { recursive: true });
  const temp = path.join(path.dirname(target), `.pgkeep-tmp-${path.basename(target)}.${randomBytes(6).toString('hex')}`);
  try {
    await write(temp);
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
