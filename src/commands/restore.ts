import { PgkeepError } from '../errors.js';
import { z } from 'zod';
import { resolveSource } from '../config/settings.js';
import { listOf, requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { collect, positiveInt } from '../registry/option-values.js';
import { formatBytes, formatCount, formatDuration, formatTable } from '../cli/format.js';
import { openRepository, repositoriesWithBackup } from '../repository/open-repository.js';
import { planRestoreFile, runRestoreFile, type FileRestorePlan, type FileRestoreResult } from '../restore/run-restore-file.js';
import { planRestore, runRestore, runRestoreFromRepositories, type RestorePlan, type RestoreRequest, type RestoreResult } from '../restore/run-restore.js';

const RestoreCommandRequest = z.object({
  /** A backup of the repository (id or latest), or --file: a dump made outside pgkeep. */
  backup: z.string().optional(),
  file: z.string().optional(),
  to: z.string().optional(),
  overwrite: z.boolean(),
  force: z.boolean(),
  jobs: z.number().int().positive().optional(),
  noOwner: z.boolean(),
  noAcl: z.boolean(),
  tables: z.array(z.string()).optional(),
  schemas: z.array(z.string()).optional(),
  schemaOnly: z.boolean(),
  dataOnly: z.boolean(),
  clean: z.boolean(),
  role: z.string().optional(),
  reindex: z.boolean(),
  globals: z.boolean(),
  dryRun: z.boolean(),
});
export type RestoreCommandRequest = z.output<typeof RestoreCommandRequest>;

export type RestoreCommandResult =
  | { kind: 'restored'; result: RestoreResult }
  | { kind: 'plan'; plan: RestorePlan }
  | { kind: 'file'; result: FileRestoreResult }
  | { kind: 'file-plan'; plan: FileRestorePlan };

/**
 * `pgkeep restore ID|latest` and `pgkeep restore --file DUMP`: the source, then the restore engine (src/restore/):
 * runRestoreFile for a dump file, planRestore for --dry-run, runRestore (runRestoreFromRepositories over several repositories).
 */
export const restoreCommand: CommandSpec<RestoreCommandRequest, RestoreCommandResult> = {
  name: 'restore',
  description: 'restore a backup into a new database (or --to NAME); or a dump file made outside pgkeep (--file)',
  arguments: [{ name: '[backup]', description: 'backup id, or latest' }],
  options: [
    { flags: '--file <path>', description: 'restore this dump instead: pg_dump custom (.dump), directory, tar or .sql, optionally .gz/.zst (detected from its content)' },
    { flags: '--to <database>', description: 'target database (default: <db>_restore_<timestamp>)' },
    { flags: '--overwrite', description: 'replace the target database if it exists (asks to confirm; a safety backup is taken first)' },
    { flags: '--force', description: 'confirm --overwrite without asking (for scripts)' },
    { flags: '--jobs <n>', description: 'connections loading rows (a big table over all of them) and building indexes (default: one per core, at most 8)', parse: positiveInt('--jobs') },
    { flags: '--no-owner', description: 'do not restore object ownership (nor the database owner: the restoring role owns it)' },
    { flags: '--no-acl', description: 'do not restore privileges (GRANT/REVOKE), on objects nor on the database' },
    { flags: '--table <pattern>', description: 'only tables matching, with their indexes, constraints, triggers (repeatable; pg_dump patterns)', parse: collect },
    { flags: '--schema <pattern>', description: 'only objects of schemas matching (repeatable)', parse: collect },
    { flags: '--schema-only', description: 'only the definitions, no rows' },
    { flags: '--data-only', description: 'only rows, into the existing tables of --to (needs --clean: the tables are emptied first)' },
    { flags: '--clean', description: 'into the existing --to database: replace only the restored objects, in one transaction (asks to confirm; a safety backup is taken first)' },
    { flags: '--role <role>', description: 'restore as this role (SET ROLE)' },
    { flags: '--reindex', description: 'REINDEX what was restored' },
    { flags: '--globals', description: "first create the backup's roles that do not exist on the server (existing roles are left as they are)" },
    { flags: '--dry-run', description: 'print the plan (target, what is dropped and created, TOC entries, size) and change nothing' },
  ],
  help: {
    globals: ['config', 'repo', 'source', 'db', 'identity'],
    examples: ['pgkeep restore latest', 'pgkeep restore latest --to app --overwrite', 'pgkeep restore --file backup_2024.sql.gz --db postgresql://app@localhost/app'],
  },
  parse: requestParser(RestoreCommandRequest, ({ args: [ref], options, given }) => {
    if (options.file !== undefined) {
      if (ref !== undefined) throw new PgkeepError('USAGE', `give either a backup id ("${ref}") or --file, not both`);
      const unsupported = ['dataOnly', 'clean', 'globals'].filter((o) => options[o] !== undefined);
      if (unsupported.length > 0) {
        throw new PgkeepError('USAGE', `--file restores the whole dump into a new database (or --overwrite): ${unsupported.map((o) => `--${o.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} work with backups in the repository only`);
      }
    } else if (ref === undefined) {
      throw new PgkeepError('USAGE', "missing required argument 'backup': give a backup id (or latest), or --file PATH (see pgkeep restore --help)");
    }
    return {
      backup: ref,
      file: options.file,
      to: options.to,
      overwrite: Boolean(options.overwrite),
      force: Boolean(options.force),
      jobs: options.jobs,
      noOwner: given.includes('owner'),
      noAcl: given.includes('acl'),
      tables: listOf(options.table),
      schemas: listOf(options.schema),
      schemaOnly: Boolean(options.schemaOnly),
      dataOnly: Boolean(options.dataOnly),
      clean: Boolean(options.clean),
      role: options.role,
      reindex: Boolean(options.reindex),
      globals: Boolean(options.globals),
      dryRun: Boolean(options.dryRun),
    };
  }),
  async run(ctx, { backup, file, dryRun, dataOnly, clean, globals, ...common }) {
    const { settings } = ctx;
    const source = resolveSource(settings);
    if (file !== undefined) {
      const fileRequest = { file, ...common };
      if (dryRun) return { kind: 'file-plan', plan: await planRestoreFile(ctx, source, fileRequest) };
      return { kind: 'file', result: await runRestoreFile(ctx, source, fileRequest) };
    }
    const request: RestoreRequest = { backup: backup!, ...common, dataOnly, clean, globals };
    if (dryRun) {
      const repository = source.repos.length > 1 ? (await repositoriesWithBackup(settings, backup!, source.name))[0]!.repository : await openRepository(settings, { source: source.name });
      return { kind: 'plan', plan: await planRestore(ctx, repository, source, request) };
    }
    // Several repositories: the first that holds the backup, falling back on a checksum failure; --repo picks one.
    const result = source.repos.length > 1 ? await runRestoreFromRepositories(ctx, source, request) : await runRestore(ctx, await openRepository(settings, { source: source.name }), source, request);
    return { kind: 'restored', result };
  },
  print(result, out) {
    if (result.kind === 'file-plan') printFileRestorePlan(result.plan, out);
    else if (result.kind === 'file') printFileRestoreDone(result.result, out);
    else if (result.kind === 'plan') printRestorePlan(result.plan, out);
    else printRestoreDone(result.result, out);
  },
};

// Printing for a terminal (moved from src/cli/print.ts)

function printRestoreDone(result: RestoreResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (result.tables.length > 0) {
    out.line(
      formatTable(
        ['TABLE', 'BACKUP', 'RESTORED', ''],
        result.tables.map((t) => [`${t.schema}.${t.name}`, formatCount(t.expected), formatCount(t.actual), t.expected === t.actual ? 'ok' : 'DIFFERENT']),
        [1, 2],
      ),
    );
  }
  const rows = result.tables.reduce((n, t) => n + t.actual, 0);
  out.line(
    `restored ${result.backup.source}/${result.backup.id} into ${result.cleaned ? 'existing database (selected objects replaced) ' : result.replaced ? 'existing database ' : 'new database '}"${result.database}" in ${formatDuration(result.durationMs)}: ` +
      `row counts match the backup (${result.tables.length} tables, ${formatCount(rows)} rows)`,
  );
  if (result.schema?.compared) out.line(`schema: ${result.schema.objects} objects (definitions, owners, privileges) match the backup's`);
  if (result.databaseState === 'reproduced') out.line("database: owner, privileges, comment, settings and locale match the backup's");
  if (result.safetyBackup) out.line(`the replaced database was saved first as backup ${result.safetyBackup}`);
  if (result.globals) out.line(globalsLine(result.globals, 'created'));
  for (const m of result.migrations?.tables ?? []) {
    const at = (state: { rows: number; latest: string | null }) => `${state.latest ?? 'no known version'} (${state.rows} rows)`;
    out.line(
      `migrations: ${m.schema}.${m.name} ${m.actual ? `at ${at(m.actual)}` : 'missing'}: ` +
        (m.ok ? 'as recorded at backup time' : `DIFFERS from ${at(m.expected)} recorded at backup time`),
    );
  }
  out.line(`connect: ${result.connection}`);
}

function globalsLine(g: NonNullable<RestoreResult['globals']>, verb: string): string {
  return (
    `roles: ${verb} ${g.created.length}${g.created.length > 0 ? ` (${g.created.join(', ')})` : ''}; ` +
    `${g.existing.length} existed and were left as they are${g.skipped.length > 0 ? `; ${g.skipped.length} tablespace/per-database statement(s) skipped` : ''}`
  );
}

/** --dry-run: what the restore would do; nothing was changed. */
function printRestorePlan(plan: RestorePlan, out: CommandOutput): void {
  if (out.json) return out.document({ dryRun: true, ...plan });
  const how = {
    new: 'a new database, created',
    overwrite: 'exists: replaced whole (--overwrite), after a safety backup',
    clean: 'exists: the restored objects are dropped and recreated inside it, in one transaction (--clean), after a safety backup',
  }[plan.mode];
  out.line(`plan: restore ${plan.backup.source}/${plan.backup.id} (${plan.backup.format} format)${plan.options.length > 0 ? `, ${plan.options.join(', ')}` : ''}`);
  out.line(`target: database "${plan.database}" on ${plan.server}: ${how}`);
  out.line(`drop: ${plan.drops.length === 0 ? 'nothing' : ''}`);
  for (const d of plan.drops) out.line(`  ${d}`);
  if (plan.entries.length > 0) {
    out.line(`create (${plan.entries.length} TOC entries):`);
    for (const e of plan.entries) out.line(`  ${String(e.id).padStart(5)}; ${e.entry}`);
  } else {
    out.line('create: everything in the plain SQL dump (psql runs it whole)');
  }
  if (plan.tables.length > 0) {
    out.line(formatTable(['TABLE', 'ROWS'], plan.tables.map((t) => [`${t.schema}.${t.name}`, t.rows === null ? '-' : formatCount(t.rows)]), [1]));
  }
  if (plan.databaseState.length > 0) {
    out.line('database state:');
    for (const line of plan.databaseState) out.line(`  ${line}`);
  }
  if (plan.globals) out.line(globalsLine(plan.globals, 'would create'));
  out.line(`estimated size: ${formatBytes(plan.estimatedBytes)} of dump data; ${plan.tables.length} table(s) with rows`);
  out.line('dry run: nothing was changed');
}

function printFileRestoreDone(result: FileRestoreResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (result.tables.length > 0) out.line(formatTable(['TABLE', 'ROWS'], result.tables.map((t) => [`${t.schema}.${t.name}`, formatCount(t.rows)]), [1]));
  const rows = result.tables.reduce((n, t) => n + t.rows, 0);
  out.line(
    `restored ${result.file} (${result.format}${result.compression === 'none' ? '' : `, ${result.compression}`}) into ${result.replaced ? 'existing' : 'new'} database "${result.database}" ` +
      `in ${formatDuration(result.durationMs)}: ${result.tables.length} tables, ${formatCount(rows)} rows`,
  );
  if (result.safetyBackup) out.line(`the replaced database was saved first as backup ${result.safetyBackup}`);
  out.line(`connect: ${result.connection}`);
}

/** restore --file --dry-run */
function printFileRestorePlan(plan: FileRestorePlan, out: CommandOutput): void {
  if (out.json) return out.document({ dryRun: true, ...plan });
  out.line(`plan: restore ${plan.file}: ${plan.format} dump${plan.compression === 'none' ? '' : `, ${plan.compression}-compressed`}, ${formatBytes(plan.bytes)}`);
  out.line(`target: database "${plan.database}" on ${plan.server}: ${plan.mode === 'new' ? 'a new database, created' : 'exists: replaced whole (--overwrite), after a safety backup'}`);
  if (plan.entries.length > 0) {
    out.line(`create (${plan.entries.length} TOC entries):`);
    for (const e of plan.entries) out.line(`  ${String(e.id).padStart(5)}; ${e.entry}`);
  } else {
    out.line(`create: everything in the ${plan.format === 'plain' ? 'SQL script (psql runs it whole)' : 'archive'}`);
  }
  out.line('dry run: nothing was changed');
}

