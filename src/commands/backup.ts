import { PgkeepError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import { z } from 'zod';
import { resolveSource } from '../config/settings.js';
import { listOf, requestParser, type CommandSpec, type CommandOutput } from '../registry/command-spec.js';
import { collect, positiveInt } from '../registry/option-values.js';
import { formatBytes, formatCount, formatDuration, formatTable } from '../cli/format.js';
import { refuseOlderClient } from '../postgres/pg-tools.js';
import { openRepositories, openRepository } from '../repository/open-repository.js';
import { runPhysicalBackup } from '../backup/physical-backup.js';
import { runBackupAllDatabases, type AllDatabasesResult } from '../backup/all-databases.js';

import { runBackup } from '../backup/logical-backup.js';
/** Options of `pgkeep backup` that apply to logical backups only (commander names; --no-owner is "owner"). */
const LOGICAL_ONLY = ['format', 'schemaOnly', 'dataOnly', 'table', 'excludeTable', 'schema', 'excludeSchema', 'jobs', 'owner', 'acl'];

const BackupCommandRequest = z.object({
  /** backup --physical: the whole cluster with pg_basebackup. */
  physical: z.boolean(),
  /** backup --all-databases: every database of the server, each its own backup. */
  allDatabases: z.boolean(),
  walTimeoutMs: z.number().int().positive().optional(),
  name: z.string().optional(),
  format: z.enum(['custom', 'directory', 'plain']).optional(),
  schemaOnly: z.boolean().optional(),
  dataOnly: z.boolean().optional(),
  tables: z.array(z.string()).optional(),
  excludeTables: z.array(z.string()).optional(),
  schemas: z.array(z.string()).optional(),
  excludeSchemas: z.array(z.string()).optional(),
  noOwner: z.literal(true).optional(),
  noAcl: z.literal(true).optional(),
  jobs: z.number().int().positive().optional(),
  labels: z.array(z.string()).optional(),
  compressLevel: z.number().int().positive().optional(),
  checksums: z.boolean().optional(),
  globals: z.boolean().optional(),
});
export type BackupCommandRequest = z.output<typeof BackupCommandRequest>;

export type BackupCommandResult = { manifest: Manifest; location: string; all?: undefined } | { all: AllDatabasesResult; manifest?: undefined };

/** `pgkeep backup` (logical, --physical, --all-databases); the jobs `logical` and `physical`. */
export const backupCommand: CommandSpec<BackupCommandRequest, BackupCommandResult> = {
  name: 'backup',
  description: 'take a logical backup with pg_dump (or, with --physical, of the whole cluster with pg_basebackup)',
  options: [
    { flags: '--physical', description: 'physical backup of the whole cluster for point-in-time recovery (needs WAL archiving to pgkeep wal-push)' },
    { flags: '--wal-timeout <seconds>', description: "physical: how long to wait for the backup's WAL to reach the archive (default 120)", parse: positiveInt('--wal-timeout') },
    { flags: '--name <name>', description: 'name appended to the backup id, e.g. before-migration' },
    { flags: '--format <format>', description: 'pg_dump format', choices: ['custom', 'directory', 'plain'] },
    { flags: '--schema-only', description: 'only the schema, no data' },
    { flags: '--data-only', description: 'only the data, no schema' },
    { flags: '--table <pattern>', description: 'only tables matching (repeatable; pg_dump patterns)', parse: collect },
    { flags: '--exclude-table <pattern>', description: 'leave out tables matching (repeatable)', parse: collect },
    { flags: '--schema <pattern>', description: 'only schemas matching (repeatable)', parse: collect },
    { flags: '--exclude-schema <pattern>', description: 'leave out schemas matching (repeatable)', parse: collect },
    { flags: '--no-owner', description: 'do not record object ownership' },
    { flags: '--no-acl', description: 'do not record privileges (GRANT/REVOKE)' },
    { flags: '--jobs <n>', description: 'parallel pg_dump workers (directory format)', parse: positiveInt('--jobs') },
    { flags: '--label <label>', description: 'label to attach (repeatable)', parse: collect },
    { flags: '--compress-level <n>', description: 'zstd level 1-19 (default 3)', parse: positiveInt('--compress-level') },
    { flags: '--checksums', description: 'also record a content hash of every table, for verify --deep (one md5 per row)' },
    { flags: '--globals', description: 'fail the backup when roles and tablespaces (pg_dumpall --globals-only) cannot be read; by default they are stored beside the dump when readable, with a warning otherwise' },
    { flags: '--no-globals', description: 'do not store roles and tablespaces' },
    { flags: '--all-databases', description: 'every database of the server, each as its own backup (source named after the database), sharing one globals dump' },
  ],
  help: {
    globals: ['config', 'repo', 'db', 'source'],
    examples: ['pgkeep backup --db postgresql://app@db.internal:5432/app --repo /srv/backups', 'pgkeep backup --name before-migration --label release-42', 'pgkeep backup --physical --source main'],
  },
  parse: requestParser(BackupCommandRequest, ({ options, given }) => {
    if (options.physical) {
      const logicalOnly = LOGICAL_ONLY.filter((k) => given.includes(k));
      if (logicalOnly.length > 0) {
        throw new PgkeepError('USAGE', `--physical backs up the whole cluster: --${logicalOnly[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/^(owner|acl)$/, 'no-$1')} applies to logical backups only`);
      }
    }
    return {
      physical: Boolean(options.physical),
      allDatabases: Boolean(options.allDatabases),
      walTimeoutMs: options.walTimeout === undefined ? undefined : (options.walTimeout as number) * 1000,
      name: options.name,
      format: options.format,
      schemaOnly: options.schemaOnly,
      dataOnly: options.dataOnly,
      tables: listOf(options.table),
      excludeTables: listOf(options.excludeTable),
      schemas: listOf(options.schema),
      excludeSchemas: listOf(options.excludeSchema),
      noOwner: given.includes('owner') ? true : undefined,
      noAcl: given.includes('acl') ? true : undefined,
      jobs: options.jobs,
      labels: listOf(options.label),
      compressLevel: options.compressLevel,
      checksums: options.checksums,
      globals: options.globals,
    };
  }),
  async run(ctx, request) {
    const source = resolveSource(ctx.settings);
    if (request.physical) {
      await refuseOlderClient('pg_basebackup', source.connection, source.pgBin, ctx.signal);
      // The WAL archive is in the source's first repository (where wal-push writes): so is the base backup.
      const repository = await openRepository(ctx.settings, { source: source.name, createIfEmpty: true });
      const manifest = await runPhysicalBackup(ctx, repository, source, { name: request.name, labels: request.labels, compressLevel: request.compressLevel, walTimeoutMs: request.walTimeoutMs });
      return { manifest, location: repository.location };
    }
    // Before any repository is created: a pg_dump older than the server is refused with nothing left behind.
    await refuseOlderClient('pg_dump', source.connection, source.pgBin, ctx.signal);
    // Several repositories (repos: in pgkeep.yaml): one pg_dump, written to all of them.
    const repositories = request.allDatabases ? [] : await openRepositories(ctx.settings, { source: source.name, createIfEmpty: true });
    const { physical: _physical, allDatabases, walTimeoutMs: _walTimeout, ...backup } = request;
    if (allDatabases) return { all: await runBackupAllDatabases(ctx, source, backup) };
    const manifest = await runBackup(ctx, repositories, source, backup);
    return { manifest, location: repositories.map((r) => r.location).join(', ') };
  },
  print(result, out) {
    if (result.all) printAllDatabasesDone(result.all, out);
    else printBackupDone(result.manifest, result.location, out);
  },
  printFailure(error, out, request) {
    // what --all-databases backed up before the failure
    const partial = error.details?.result;
    if (request.allDatabases && partial && !out.json) printAllDatabasesDone(partial as AllDatabasesResult, out);
  },
  jobs: [
    {
      kind: 'logical',
      scheduled: true,
      backup: true,
      request: () => ({ physical: false, allDatabases: false }),
      outcome: ({ manifest }) => ({ backupId: manifest!.id, bytes: manifest!.totals.rawBytes, detail: `backup ${manifest!.id}` }),
    },
    {
      kind: 'physical',
      scheduled: true,
      backup: true,
      request: () => ({ physical: true, allDatabases: false }),
      outcome: ({ manifest }) => ({ backupId: manifest!.id, bytes: manifest!.totals.storedBytes, detail: `backup ${manifest!.id}` }),
    },
  ],
};

// Printing for a terminal (moved from src/cli/print.ts)

function printBackupDone(manifest: Manifest, location: string, out: CommandOutput): void {
  if (out.json) return out.document(manifest);
  if (manifest.kind === 'physical') {
    const p = manifest.physical;
    out.line(
      `physical backup ${manifest.id} of ${manifest.source} done in ${formatDuration(manifest.durationMs)}: ` +
        `${formatBytes(manifest.totals.rawBytes)} copied, ${formatBytes(manifest.totals.storedBytes)} stored; ` +
        `WAL ${p.startLsn} to ${p.stopLsn} on timeline ${p.timeline} (${p.walStart}..${p.walStop}) is archived`,
    );
    out.line(`repository: ${location}`);
    return;
  }
  out.line(
    `backup ${manifest.id} of ${manifest.source} done in ${formatDuration(manifest.durationMs)}: ` +
      `${formatBytes(manifest.totals.rawBytes)} dumped, ${formatBytes(manifest.totals.storedBytes)} stored, ` +
      `${manifest.tables.length} tables, ${formatCount(manifest.totals.rows)} rows`,
  );
  out.line(`repository: ${location}`);
}

function printAllDatabasesDone(result: AllDatabasesResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (result.backups.length > 0) {
    out.line(
      formatTable(
        ['DATABASE', 'SOURCE', 'BACKUP', 'STORED', 'TABLES', 'ROWS'],
        result.backups.map((b) => [b.database, b.source, b.id, formatBytes(b.storedBytes), String(b.tables), formatCount(b.rows)]),
        [3, 4, 5],
      ),
    );
  }
  out.line(`all databases (run ${result.run}): ${result.backups.length} backed up${result.failed.length > 0 ? `, ${result.failed.length} FAILED (${result.failed.map((f) => f.database).join(', ')})` : ''}; roles ${result.globals ? 'stored once, in every backup of the run' : 'not stored'}`);
}
