import { randomBytes } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { chmod, mkdtemp, rename, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { makeFolders } from '../local/make-folders.js';
import { pipeline } from 'node:stream/promises';
import type { ResolvedSource } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { libpqEnv, type ConnectionInfo } from '../postgres/connection-info.js';
import { withClient, quoteIdent } from '../postgres/pg-client.js';
import { freePort } from '../postgres/pg-server.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import type { Repository } from '../repository/repository.js';
import type { CommandContext } from '../registry/command-context.js';
import { runPitr, type PitrResult, type RecoveryTarget } from './run-pitr.js';

export interface TablePitrRequest {
  target: RecoveryTarget;
  backup?: string | undefined;
  /** Tables as `schema.table` or `table` (pg_dump --table patterns for sql). */
  tables: string[];
  format: 'sql' | 'csv';
  /** File to write; written to a temp name beside it, then renamed. */
  output?: string | undefined;
  /** Instead of a file: load the table into this database (one table), under `as`. */
  intoDb?: ConnectionInfo | undefined;
  as?: string | undefined;
  restoreCommand: string;
  timeoutMs?: number | undefined;
}

export interface TablePitrResult {
  pitr: PitrResult;
  /** The file written, or the database and table loaded ("db.table"). */
  output: string;
  loadedIntoDatabase: boolean;
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
  if (request.intoDb && (request.tables.length !== 1 || !request.as)) throw new PgkeepError('USAGE', '--into-db loads one --extract-table under a new name: give --as NAME');
  const into = request.intoDb;
  const newName = request.as;
  if (into && newName) {
    // Never replace: the point is to put the old rows beside the current ones.
    const exists = await withClient(into, (client) => client.query('SELECT to_regclass($1) IS NOT NULL AS taken', [newName]), ctx.signal);
    if (exists.rows[0].taken) throw new PgkeepError('DB_EXISTS', `table ${newName} already exists in ${into.database}: choose another --as`);
  }
  const output = into ? `${into.database}.${newName}` : path.resolve(request.output ?? '');
  if (!into && !request.output) throw new PgkeepError('USAGE', '--extract-table needs --output FILE or --into-db URL --as NAME');

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
        if (into && newName) {
          // The throwaway cluster is ours to change: rename there, then dump and load in one transaction.
          const dot = newName.indexOf('.');
          const bare = dot < 0 ? newName : newName.slice(dot + 1);
          await withClient(connection, async (client) => {
            // Its indexes (and so their constraints) and owned sequences too, so none clashes with the current table's.
            const table = qualified(request.tables[0]!);
            const owned = await client.query<{ kind: string; name: string; schema: string }>(
              `SELECT 'INDEX' AS kind, c.relname AS name, n.nspname AS schema FROM pg_catalog.pg_index i JOIN pg_catalog.pg_class c ON c.oid = i.indexrelid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE i.indrelid = $1::regclass
               UNION ALL
               SELECT 'SEQUENCE', c.relname, n.nspname FROM pg_catalog.pg_depend d JOIN pg_catalog.pg_class c ON c.oid = d.objid AND c.relkind = 'S' JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
                WHERE d.refobjid = $1::regclass AND d.classid = 'pg_catalog.pg_class'::regclass AND d.deptype IN ('a', 'i')`,
              [table],
            );
            for (const o of owned.rows) {
              await client.query(`ALTER ${o.kind} ${quoteIdent(o.schema)}.${quoteIdent(o.name)} RENAME TO ${quoteIdent(`${bare}_${o.name}`.slice(0, 63))}`);
            }
            await client.query(`ALTER TABLE ${table} RENAME TO ${quoteIdent(bare)}`);
            if (dot >= 0) await client.query(`ALTER TABLE ${qualified(`${schemaOf(request.tables[0]!)}.${bare}`)} SET SCHEMA ${quoteIdent(newName.slice(0, dot))}`);
          });
          ctx.info(`loading ${request.tables[0]} into ${into.database} as ${newName}`);
          const dump = startProcess((await toolInfo('pg_dump', source.pgBin)).path, ['--format=plain', '--no-password', '--no-owner', '--no-privileges', `--table=${qualified(newName)}`], { env: libpqEnv(connection), stdout: 'pipe' });
          const load = startProcess((await toolInfo('psql', source.pgBin)).path, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--single-transaction', '-f', '-'], { env: libpqEnv(into), stdin: 'pipe', stdout: 'ignore' });
          await settleAll([pipeline(dump.stdout!, load.stdin!), dump.done, load.done]);
          return;
        }
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
    return { pitr, output, loadedIntoDatabase: into !== undefined, format: request.format, tables };
  } finally {
    // 4. nothing of the throwaway cluster stays
    await rm(work, { recursive: true, force: true });
  }
}

function schemaOf(table: string): string {
  const dot = table.indexOf('.');
  return dot < 0 ? 'public' : table.slice(0, dot);
}

/** "schema.table" or "table", each part quoted as an identifier. */
function qualified(table: string): string {
  const dot = table.indexOf('.');
  return dot < 0 ? quoteIdent(table) : `${quoteIdent(table.slice(0, dot))}.${quoteIdent(table.slice(dot + 1))}`;
}

async function writeAtomically(target: string, write: (file: string) => Promise<void>): Promise<void> {
  await makeFolders(path.dirname(target), 0o755);
  const temp = path.join(path.dirname(target), `.pgkeep-tmp-${path.basename(target)}.${randomBytes(6).toString('hex')}`);
  try {
    await write(temp);
    await rename(temp, target);
  } catch (error) {
    await rm(temp, { force: true });
    throw error;
  }
}
