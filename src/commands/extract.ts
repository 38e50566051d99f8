import { createWriteStream, existsSync } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import * as path from 'node:path';
import type { Writable } from 'node:stream';
import type { ResolvedSource } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { libpqEnv, withDatabase, type ConnectionInfo } from '../postgres/connection-info.js';
import { dropDatabase, fitIdentifier } from '../postgres/database-admin.js';
import { quoteIdent, withClient } from '../postgres/pg-client.js';
import { assertToolNotOlder, toolInfo } from '../postgres/pg-tools.js';
import { readServerInfo } from '../postgres/server-info.js';
import { settleAll, startProcess } from '../postgres/run-process.js';
import { partitionsOf } from '../postgres/restore-plan.js';
import { parseNamePattern } from '../postgres/table-selection.js';
import { readBackupToc } from '../repository/read-backup-toc.js';
import { defaultZstd } from '../pipeline/zstd.js';
import type { Repository } from '../repository/repository.js';
import { identitiesFor } from '../repository/repository-keys.js';
import { timestampPart } from '../repository/backup-id.js';
import { requireLogical, type LogicalManifest } from '../repository/manifest.js';
import type { CommandContext } from '../registry/command-context.js';
import { openRepository, repositoriesWithBackup } from '../repository/open-repository.js';
import { RESTORE_ERROR_LINE } from '../restore/feed-child.js';
import { runRestore, runRestoreFromRepositories } from '../restore/run-restore.js';
import { z } from 'zod';
import { resolveSource } from '../config/settings.js';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { formatCount, formatDuration } from '../cli/format.js';

export interface ExtractRequest {
  /** Backup id or "latest". */
  backup: string;
  /** One table (a pg_dump pattern that matches exactly one table of the backup). */
  table: string;
  /** SQL condition on the table's columns, run against the scratch copy only. */
  where?: string | undefined;
  /** csv (with a header row, the default) or sql (INSERT statements, pg_dump --column-inserts). */
  format?: 'csv' | 'sql' | undefined;
  /** Where to write; never overwritten. Without it, `stdout`. */
  output?: string | undefined;
}

export interface ExtractResult {
  backup: { id: string; source: string };
  table: { schema: string; name: string };
  where: string | null;
  format: 'csv' | 'sql';
  rows: number;
  output: string | null;
  /** The scratch database the table was restored into; dropped before this returns. */
  scratch: string;
  durationMs: number;
}

/**
 * Takes rows of one table out of a backup without touching the live database:
 *
 *  1. find the backup and the one table the pattern names
 *  2. restore that table (with what it needs) into a scratch database
 *     pgkeep_extract_<time> on the source's server, checking its row count
 *  3. count the rows the WHERE selects, in a read-only transaction (a bad
 *     condition fails here, before anything is written)
 *  4. export them: COPY … TO STDOUT as CSV with a header, in a read-only
 *     session; or for sql, delete the other rows from the scratch copy and
 *     pg_dump --data-only --column-inserts the table
 *  5. drop the scratch database, always (also on failure or interruption)
 *
 * The output file is written under a temporary name and renamed at the end.
 */
export async function runExtract(ctx: CommandContext, source: ResolvedSource, request: ExtractRequest, stdout: Writable): Promise<ExtractResult> {
  const started = Date.now();
  const format = request.format ?? 'csv';
  if (request.output !== undefined && existsSync(request.output)) {
    throw new PgkeepError('OUTPUT_EXISTS', `${request.output} already exists: choose another --output (pgkeep never overwrites it)`);
  }

  // 1. the backup and the table
  // "latest" is the newest logical backup: rows are extracted from dumps (from a physical backup: pgkeep pitr --extract-table).
  const { repository, manifest: found } =
    source.repos.length > 1
      ? (await repositoriesWithBackup(ctx.settings, request.backup, source.name, 'logical', ctx.warn))[0]!
      : await (async () => {
          const repository = await openRepository(ctx.settings, { source: source.name });
          return { repository, manifest: await repository.resolveBackup(request.backup, source.name, 'logical', ctx.warn) };
        })();
  const manifest = requireLogical(found, 'extract');
  // Undefined: a plain backup that lists no such table; it may be a partitioned table, found once restored.
  const named = await oneTable(ctx, repository, manifest, request.table);
  let table = named?.table;
  let partitions = named?.partitions;
  const where = request.where?.trim() ? request.where.trim() : undefined;

  // pg_dump --column-inserts reads the scratch copy on the source's server: it must be as new as that server.
  if (format === 'sql') {
    const pgDump = await toolInfo('pg_dump', source.pgBin);
    const server = await withClient(withDatabase(source.connection, 'postgres'), readServerInfo, ctx.signal);
    assertToolNotOlder(pgDump, 'pg_dump', server.versionNum, server.version);
  }

  // 2. the table, restored into a scratch database
  const scratch = fitIdentifier('pgkeep_extract_', `${timestampPart(new Date()).toLowerCase()}_${process.pid}`);
  const restoreRequest = {
    backup: manifest.id,
    to: scratch,
    noOwner: true,
    scratch: true,
    // A plain dump has no table of contents to select from: it is restored whole.
    tables: manifest.options.format === 'plain' || table === undefined ? undefined : [`${quoteIdent(table.schema)}.${quoteIdent(table.name)}`],
  };
  ctx.info(`restoring ${table ? `${table.schema}.${table.name}` : `the whole backup, to find ${request.table} in it,`} of ${manifest.id} into the scratch database "${scratch}"`);
  // A restore that fails drops the database it created: nothing to clean up here then.
  if (source.repos.length > 1) await runRestoreFromRepositories(ctx, source, restoreRequest);
  else await runRestore(ctx, await openRepository(ctx.settings, { source: source.name }), source, restoreRequest);

  const into = withDatabase(source.connection, scratch);
  const admin = withDatabase(source.connection, 'postgres');
  const condition = where === undefined ? '' : ` WHERE (${where})`;
  let temp: string | undefined;
  try {
    if (table === undefined) ({ table, partitions } = await partitionedTableIn(ctx, into, manifest, request.table));
    const { schema, name } = table;
    const qualified = `${quoteIdent(table.schema)}.${quoteIdent(table.name)}`;
    // A partitioned table's rows are its partitions' rows: read through it, not ONLY it.
    const only = partitions === undefined ? 'ONLY ' : '';
    // 3. the WHERE, checked and counted read-only
    const rows = await withClient(
      into,
      async (client) => {
        await client.query('BEGIN READ ONLY');
        try {
          const result = await client.query<{ n: string }>(`SELECT count(*) AS n FROM ${only}${qualified}${condition}`);
          return Number(result.rows[0]!.n);
        } catch (error) {
          throw new PgkeepError('USAGE', `--where "${where}" does not work on ${schema}.${name}: ${(error as Error).message}`, { cause: error });
        } finally {
          await client.query('ROLLBACK').catch(() => undefined);
        }
      },
      ctx.signal,
    );

    // 4. export
    temp = request.output === undefined ? undefined : path.join(path.dirname(path.resolve(request.output)), `.${path.basename(request.output)}.pgkeep-${process.pid}.tmp`);
    const sink = temp === undefined ? stdout : createWriteStream(temp, { flags: 'wx', mode: 0o600 });
    const base = libpqEnv(into);
    // Read-only for the whole session, added to any options the connection already carries.
    const env = { ...base, PGOPTIONS: `${base.PGOPTIONS ?? ''} -c default_transaction_read_only=on`.trim() };
    const common = { signal: ctx.signal, isErrorLine: (line: string) => RESTORE_ERROR_LINE.test(line) };
    let run;
    if (format === 'csv') {
      const psql = await toolInfo('psql', source.pgBin);
      // Timestamps the same wherever the file is made or read: ISO, in UTC (whatever the server's, role's or PGTZ's zone)
      const csvEnv = { ...env, PGTZ: 'UTC', PGDATESTYLE: 'ISO, YMD' };
      run = startProcess(psql.path, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-password', '-d', scratch, '-c', `COPY (SELECT * FROM ${only}${qualified}${condition}) TO STDOUT WITH (FORMAT csv, HEADER)`], { ...common, env: csvEnv, stdout: 'pipe' });
    } else {
      if (where !== undefined) {
        // Only the scratch copy is changed: it is dropped below.
        await withClient(into, (client) => client.query(`DELETE FROM ${only}${qualified} WHERE (${where}) IS NOT TRUE`), ctx.signal);
      }
      const pgDump = await toolInfo('pg_dump', source.pgBin);
      // A partitioned table: its partitions' rows, as INSERTs into it (--load-via-partition-root), so they load into any layout of partitions.
      const selected = partitions === undefined ? [`--table=${qualified}`] : ['--load-via-partition-root', ...partitions.map((p) => `--table=${quoteIdent(p.schema)}.${quoteIdent(p.name)}`)];
      run = startProcess(pgDump.path, ['--data-only', '--column-inserts', '--no-owner', '--no-privileges', '--no-password', ...selected, scratch], { ...common, env, stdout: 'pipe' });
    }
    await settleAll([run.done, pipeTo(run.stdout!, sink, temp !== undefined)]);
    if (temp !== undefined) {
      await rename(temp, request.output!);
      temp = undefined;
    }
    return {
      backup: { id: manifest.id, source: manifest.source },
      table: { schema, name },
      where: where ?? null,
      format,
      rows,
      output: request.output ?? null,
      scratch,
      durationMs: Date.now() - started,
    };
  } finally {
    // 5. the scratch database goes, whatever happened (the signal may be aborted: not passed on)
    if (temp !== undefined) await rm(temp, { force: true });
    await withClient(admin, (client) => dropDatabase(client, scratch)).catch((error) =>
      ctx.warn(`could not drop the scratch database "${scratch}": drop it by hand (${(error as Error).message})`),
    );
  }
}

/**
 * The one table of the backup that `pattern` names (unqualified: in any
 * schema). A partitioned table holds no rows itself, so the manifest does not
 * list it: it is found in the backup's table of contents (custom and
 * directory backups), with the partitions whose rows it shows.
 */
async function oneTable(
  ctx: CommandContext,
  repository: Repository,
  manifest: LogicalManifest,
  pattern: string,
): Promise<{ table: { schema: string; name: string }; partitions?: { schema: string; name: string }[] } | undefined> {
  const { schema, name } = parseNamePattern(pattern);
  const named = (t: { schema: string; name: string }) => name.test(t.name) && (!schema || schema.test(t.schema));
  const matches = manifest.tables.filter(named);
  if (matches.length > 1) {
    throw new PgkeepError('USAGE', `--table "${pattern}" matches ${matches.length} tables of backup ${manifest.id} (${matches.slice(0, 5).map((t) => `${t.schema}.${t.name}`).join(', ')}): name one, schema-qualified`);
  }
  if (matches.length === 1) {
    if (matches[0]!.rows === null) throw new PgkeepError('USAGE', `backup ${manifest.id} holds no rows of ${matches[0]!.schema}.${matches[0]!.name} (a schema-only backup)`);
    return { table: { schema: matches[0]!.schema, name: matches[0]!.name } };
  }
  if (manifest.options.format !== 'plain') {
    const toc = await readBackupToc(repository, manifest, { codec: defaultZstd(), identities: await identitiesFor(repository, manifest, ctx.keys), signal: ctx.signal });
    const byId = new Map(toc.map((e) => [e.dumpId, e]));
    const links = partitionsOf(toc);
    const parents = [...new Set(links.map((l) => l.parent))].map((id) => byId.get(id)!).filter((e) => e.namespace !== null && named({ schema: e.namespace, name: e.tag }));
    if (parents.length > 1) {
      throw new PgkeepError('USAGE', `--table "${pattern}" matches ${parents.length} partitioned tables of backup ${manifest.id} (${parents.slice(0, 5).map((e) => `${e.namespace}.${e.tag}`).join(', ')}): name one, schema-qualified`);
    }
    const parent = parents[0];
    if (parent) {
      // Its partitions, and theirs: the leaves hold the rows.
      const below = new Set([parent.dumpId]);
      for (let grew = true; grew; ) {
        grew = false;
        for (const l of links) {
          if (below.has(l.parent) && !below.has(l.partition)) {
            below.add(l.partition);
            grew = true;
          }
        }
      }
      const partitions = manifest.tables.filter((t) => [...below].some((id) => byId.get(id)!.namespace === t.schema && byId.get(id)!.tag === t.name));
      if (partitions.some((t) => t.rows === null)) throw new PgkeepError('USAGE', `backup ${manifest.id} holds no rows of ${parent.namespace}.${parent.tag} (a schema-only backup)`);
      return { table: { schema: parent.namespace!, name: parent.tag }, partitions: partitions.map((t) => ({ schema: t.schema, name: t.name })) };
    }
  }
  // A plain backup has no table of contents: a partitioned table is looked for in the restored scratch copy.
  if (manifest.options.format === 'plain') return undefined;
  throw noTable(manifest, pattern);
}

function noTable(manifest: LogicalManifest, pattern: string): PgkeepError {
  return new PgkeepError('USAGE', `--table "${pattern}" matches no table of backup ${manifest.id}; quote mixed-case names: --table 'public."My Table"'`);
}

/** The partitioned table `pattern` names in the restored scratch copy of a plain backup, with its leaf partitions. */
async function partitionedTableIn(
  ctx: CommandContext,
  scratch: ConnectionInfo,
  manifest: LogicalManifest,
  pattern: string,
): Promise<{ table: { schema: string; name: string }; partitions: { schema: string; name: string }[] }> {
  const { schema, name } = parseNamePattern(pattern);
  return withClient(
    scratch,
    async (client) => {
      const parents = (
        await client.query<{ schema: string; name: string }>(
          "SELECT n.nspname AS schema, c.relname AS name FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace WHERE c.relkind = 'p' ORDER BY 1, 2",
        )
      ).rows.filter((t) => name.test(t.name) && (!schema || schema.test(t.schema)));
      if (parents.length === 0) throw noTable(manifest, pattern);
      if (parents.length > 1) {
        throw new PgkeepError('USAGE', `--table "${pattern}" matches ${parents.length} partitioned tables of backup ${manifest.id} (${parents.slice(0, 5).map((t) => `${t.schema}.${t.name}`).join(', ')}): name one, schema-qualified`);
      }
      const parent = parents[0]!;
      const leaves = await client.query<{ schema: string; name: string }>(
        `SELECT n.nspname AS schema, c.relname AS name
           FROM pg_catalog.pg_partition_tree(format('%I.%I', $1::text, $2::text)::regclass) t
           JOIN pg_catalog.pg_class c ON c.oid = t.relid JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE t.isleaf AND c.relkind = 'r' ORDER BY 1, 2`,
        [parent.schema, parent.name],
      );
      return { table: parent, partitions: leaves.rows };
    },
    ctx.signal,
  );
}

/** Copies a child's stdout into `sink`; a file is ended and flushed, the caller's stdout is left open. */
function pipeTo(from: NodeJS.ReadableStream, sink: Writable, end: boolean): Promise<void> {
  return new Promise((resolve, reject) => {
    from.on('error', reject);
    sink.on('error', reject);
    if (end) sink.on('finish', resolve);
    else from.on('end', resolve);
    from.pipe(sink, { end });
  });
}

const ExtractCommandRequest = z.object({ backup: z.string(), table: z.string(), where: z.string().optional(), format: z.enum(['csv', 'sql']), output: z.string().optional() });

/** `pgkeep extract ID --table T`: rows go to --output, or to the caller's stdout (ctx.stdout). */
export const extractCommand: CommandSpec<z.output<typeof ExtractCommandRequest>, ExtractResult> = {
  name: 'extract',
  description: 'take rows of one table out of a backup, for review, without touching the live database (via a scratch database)',
  arguments: [{ name: '<backup>', description: 'backup id, or latest' }],
  options: [
    { flags: '--table <pattern>', description: 'the table (one; schema-qualified, quoted names as in pg_dump)', required: true },
    { flags: '--where <sql>', description: 'only rows matching this SQL condition (your own SQL, run read-only against the scratch copy)' },
    { flags: '--format <format>', description: 'csv with a header row, or sql INSERT statements', choices: ['csv', 'sql'], default: 'csv' },
    { flags: '--output <file>', description: 'write here (never overwritten; default: stdout)' },
  ],
  help: { globals: ['config', 'repo', 'source', 'db', 'identity'], examples: ['pgkeep extract latest --table customers --output customers.csv', 'pgkeep extract latest --table orders --where "id < 100" --format sql'] },
  parse: requestParser(ExtractCommandRequest, ({ args: [backup], options }) => {
    if (options.json && options.output === undefined) throw new PgkeepError('USAGE', '--json prints the result on stdout, where the rows go without --output: add --output FILE');
    return { backup, table: options.table, where: options.where, format: options.format, output: options.output };
  }),
  async run(ctx, request) {
    if (request.output === undefined && !ctx.stdout) throw new PgkeepError('USAGE', 'extract needs --output FILE here: there is no standard output to write the rows to');
    return runExtract(ctx, resolveSource(ctx.settings), request, ctx.stdout!);
  },
  print: (result, out) => printExtractDone(result, out),
};

// Printing for a terminal (moved from src/cli/print.ts)

/** Without --output the rows went to stdout: the summary goes to stderr then. */
function printExtractDone(result: ExtractResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  const line =
    `extracted ${formatCount(result.rows)} row(s) of ${result.table.schema}.${result.table.name}${result.where ? ` where ${result.where}` : ''} ` +
    `from ${result.backup.source}/${result.backup.id} as ${result.format}${result.output ? ` to ${result.output}` : ''} in ${formatDuration(result.durationMs)}; scratch database "${result.scratch}" dropped`;
  if (result.output) out.line(line);
  else out.note(line);
}
