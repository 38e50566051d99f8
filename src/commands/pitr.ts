import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import { z } from 'zod';
import { loadSettings, resolveConnection, resolveSource } from '../config/settings.js';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { collect, positiveInt } from '../registry/option-values.js';
import { formatCount, formatDuration } from '../cli/format.js';
import { openRepository } from '../repository/open-repository.js';
import { runTablePitr, type TablePitrResult } from '../restore/run-table-pitr.js';
import { runPitr, type PitrResult, type RecoveryTarget } from '../restore/run-pitr.js';
import { walFetchCommand } from '../restore/wal-fetch-command.js';

const PitrCommandRequest = z.object({
  target: z.discriminatedUnion('kind', [
    z.object({ kind: z.literal('latest') }),
    z.object({ kind: z.enum(['time', 'lsn', 'xid', 'name']), value: z.string() }),
  ]),
  pgdata: z.string().optional(),
  /** Table-level PITR: these tables out of a throwaway recovered cluster. */
  extractTables: z.array(z.string()).optional(),
  format: z.enum(['sql', 'csv']),
  output: z.string().optional(),
  intoDb: z.string().optional(),
  as: z.string().optional(),
  targetAction: z.enum(['promote', 'pause', 'shutdown']),
  backup: z.string().optional(),
  start: z.boolean(),
  port: z.number().int().positive().optional(),
  archiveMode: z.enum(['preserve', 'off']),
  timeoutMs: z.number().int().positive().optional(),
  dryRun: z.boolean(),
  force: z.boolean(),
});
export type PitrCommandRequest = z.output<typeof PitrCommandRequest>;

export type PitrCommandResult = { pitr: PitrResult; table?: undefined } | { table: TablePitrResult; pitr?: undefined };

const TARGET_KINDS = { targetTime: 'time', targetLsn: 'lsn', targetXid: 'xid', targetName: 'name' } as const;

/** `pgkeep pitr`: point-in-time recovery into a data directory, or of tables (--extract-table). */
export const pitrCommand: CommandSpec<PitrCommandRequest, PitrCommandResult> = {
  name: 'pitr',
  description: 'point-in-time recovery: restore the newest physical backup before the target into a new data directory, set up recovery through pgkeep wal-fetch, and (--start) run it',
  options: [
    { flags: '--pgdata <dir>', description: 'data directory to recover into (created 0700; must be empty unless --force)' },
    { flags: '--extract-table <table>', description: 'table-level PITR: recover a throwaway cluster, dump this table (repeatable) to --output, remove the cluster', parse: collect },
    { flags: '--format <format>', description: 'with --extract-table: sql (pg_dump) or csv', choices: ['sql', 'csv'], default: 'sql' },
    { flags: '--output <file>', description: 'with --extract-table: the file to write' },
    { flags: '--into-db <url>', description: 'with --extract-table: load the table into this database (postgresql://…) instead of a file' },
    { flags: '--as <name>', description: "with --into-db: the new table's name (never an existing one)" },
    { flags: '--target-time <time>', description: 'recover up to this time (e.g. "2026-11-21 14:05:00+00")' },
    { flags: '--target-lsn <lsn>', description: 'recover up to this WAL location (e.g. 0/3000060)' },
    { flags: '--target-xid <xid>', description: 'recover up to this transaction id' },
    { flags: '--target-name <name>', description: 'recover up to this restore point (pg_create_restore_point)' },
    { flags: '--latest', description: 'recover to the end of the archived WAL' },
    { flags: '--target-action <action>', description: 'what the server does at the target', choices: ['promote', 'pause', 'shutdown'], default: 'promote' },
    { flags: '--backup <id>', description: 'start from this physical backup instead of the newest one before the target' },
    { flags: '--start', description: 'start the server and wait until recovery reaches the target' },
    { flags: '--port <n>', description: 'port of the recovered server (written to postgresql.auto.conf)', parse: positiveInt('--port') },
    { flags: '--archive-mode <mode>', description: 'preserve: the recovered server archives its new timeline like the original; off: it does not', choices: ['preserve', 'off'], default: 'preserve' },
    { flags: '--timeout <seconds>', description: 'with --start: how long to wait for recovery (default 600)', parse: positiveInt('--timeout') },
    { flags: '--dry-run', description: 'print the plan (backup, WAL needed and available) and change nothing' },
    { flags: '--force', description: "replace the contents of a non-empty --pgdata (never a running server's)" },
    { flags: '--delta', description: 'same as --force for now: the data directory is restored in full' },
  ],
  help: {
    globals: ['config', 'repo', 'source', 'identity'],
    examples: ["pgkeep pitr --source main --pgdata /var/lib/postgresql/restored --target-time '2026-11-21 14:05:00+00' --start", 'pgkeep pitr --source main --latest --extract-table public.orders --output orders.sql'],
  },
  parse: requestParser(PitrCommandRequest, ({ options }) => {
    const targets = (['targetTime', 'targetLsn', 'targetXid', 'targetName', 'latest'] as const).filter((k) => options[k] !== undefined);
    if (targets.length !== 1) throw new PgkeepError('USAGE', 'pitr needs exactly one of --target-time, --target-lsn, --target-xid, --target-name or --latest');
    const key = targets[0]!;
    const target: RecoveryTarget = key === 'latest' ? { kind: 'latest' } : { kind: TARGET_KINDS[key], value: String(options[key]) };
    if (target.kind === 'time' && Number.isNaN(new Date(target.value).getTime())) throw new PgkeepError('USAGE', `--target-time "${target.value}" is not a time: use e.g. "2026-11-21 14:05:00+00" or 2026-11-21T14:05:00Z`);
    if (target.kind === 'lsn' && !/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(target.value)) throw new PgkeepError('USAGE', `--target-lsn "${target.value}" is not an LSN: expected the form 0/3000060`);
    if (target.kind === 'xid' && !/^\d+$/.test(target.value)) throw new PgkeepError('USAGE', `--target-xid "${target.value}" is not a transaction id (a whole number)`);
    return {
      target,
      pgdata: options.pgdata === undefined ? undefined : path.resolve(String(options.pgdata)),
      extractTables: options.extractTable,
      format: options.format,
      output: options.output === undefined ? undefined : path.resolve(String(options.output)),
      intoDb: options.intoDb,
      as: options.as,
      targetAction: options.targetAction,
      backup: options.backup,
      start: Boolean(options.start),
      port: options.port,
      archiveMode: options.archiveMode,
      timeoutMs: options.timeout === undefined ? undefined : (options.timeout as number) * 1000,
      dryRun: Boolean(options.dryRun),
      force: Boolean(options.force || options.delta),
    };
  }),
  async run(ctx, request) {
    const { settings } = ctx;
    const source = resolveSource(settings);
    const repository = await openRepository(settings, { source: source.name });
    // restore_command runs this same pgkeep, as the server's user, with the same repository and keys.
    const restoreCommand = walFetchCommand(settings, ctx.keys, { source: source.name, repo: source.repo, encrypted: Boolean(repository.info.encryption), entry: ctx.walFetchEntry });
    if (request.extractTables) {
      if (request.pgdata || request.start || request.dryRun) throw new PgkeepError('USAGE', '--extract-table recovers into a throwaway cluster of its own: leave out --pgdata, --start and --dry-run');
      if (!request.output && !request.intoDb) throw new PgkeepError('USAGE', '--extract-table needs --output FILE, or --into-db URL --as NAME');
      const intoDb = request.intoDb === undefined ? undefined : resolveConnection(loadSettings({ ...settings.options, db: request.intoDb }, { env: settings.env, cwd: settings.cwd }), undefined);
      const table = await runTablePitr(ctx, repository, source, {
        target: request.target,
        backup: request.backup,
        tables: request.extractTables,
        format: request.format,
        output: request.output,
        intoDb,
        as: request.as,
        restoreCommand,
        timeoutMs: request.timeoutMs,
      });
      return { table };
    }
    if (!request.pgdata) throw new PgkeepError('USAGE', 'pitr needs --pgdata DIR (or --extract-table T --output FILE)');
    const pitr = await runPitr(ctx, repository, source, {
      pgdata: request.pgdata,
      target: request.target,
      targetAction: request.targetAction,
      backup: request.backup,
      start: request.start,
      port: request.port,
      dryRun: request.dryRun,
      force: request.force,
      archiveMode: request.archiveMode,
      restoreCommand,
      timeoutMs: request.timeoutMs,
    });
    return { pitr };
  },
  print(result, out) {
    if (result.table) printTablePitr(result.table, out);
    else printPitr(result.pitr, out);
  },
};

// Printing for a terminal (moved from src/cli/print.ts)

function printPitr(result: PitrResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  const { plan } = result;
  const target = plan.target.kind === 'latest' ? 'the end of the archived WAL' : plan.target.kind === 'immediate' ? 'the end of the backup' : `${plan.target.kind} ${plan.target.value}`;
  out.line(`backup   ${plan.backup.id} (timeline ${plan.backup.timeline}, consistent from ${plan.backup.stopTime}, LSN ${plan.backup.stopLsn})`);
  out.line(`target   ${target}`);
  out.line(`WAL      ${plan.walNeeded.first}..${plan.walNeeded.last} needed for consistency: ${plan.walNeeded.present ? 'all archived' : `MISSING ${plan.walNeeded.missing.join(', ')}`}`);
  for (const t of plan.walAvailable) {
    out.line(`         timeline ${t.timeline}: archived through ${t.last ?? '-'}${t.gapAt ? `, first gap at ${t.gapAt}` : ', no gap'}`);
  }
  if (plan.histories.length > 0) out.line(`         timeline histories: ${plan.histories.join(', ')}`);
  if (!result.restored) return out.line(`dry run: nothing was changed (data directory would be ${plan.pgdata})`);
  out.line(`restored into ${plan.pgdata} with recovery.signal and restore_command = pgkeep wal-fetch`);
  if (!result.started || !result.outcome) {
    out.line(`start it with: pg_ctl start -D ${plan.pgdata}${result.port ? ` -o "-p ${result.port}"` : ''} (as the server's OS user)`);
    return;
  }
  const o = result.outcome;
  out.line(`recovery ${o.state}${o.newTimeline ? ` on new timeline ${o.newTimeline}` : ''} in ${formatDuration(result.durationMs)}`);
  if (o.stoppedAt) out.line(`stopped: ${o.stoppedAt}`);
  if (o.redoDoneAt) out.line(`redo done at ${o.redoDoneAt}${o.lastTransactionAt ? `; last transaction committed at ${o.lastTransactionAt}` : ''}`);
  if (result.port) out.line(`the server is running on port ${result.port}`);
}

function printTablePitr(result: TablePitrResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  const { plan, outcome } = result.pitr;
  out.line(`recovered a throwaway cluster from backup ${plan.backup.id}${outcome?.stoppedAt ? ` (${outcome.stoppedAt})` : ''}, then removed it`);
  for (const t of result.tables) out.line(`${t.name}: ${formatCount(t.rows)} rows`);
  out.line(result.loadedIntoDatabase ? `loaded into ${result.output}` : `wrote ${result.output} (${result.format})`);
}
