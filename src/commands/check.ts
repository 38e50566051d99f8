import { statfs } from 'node:fs/promises';
import * as path from 'node:path';
import { repositoryUrls, type ResolvedSource } from '../config/settings.js';
import { PgkeepError, throwIfAborted, toPgkeepError } from '../errors.js';
import { connect, type PgClient } from '../postgres/pg-client.js';
import { serverMajor, toolInfo, type PgTool } from '../postgres/pg-tools.js';
import { readServerInfo } from '../postgres/server-info.js';
import { readCatalogTables, selectDataTables } from '../postgres/table-selection.js';
import { serverLabel } from '../postgres/connection-info.js';
import { Repository } from '../repository/repository.js';
import { repositoryAt } from '../repository/open-repository.js';
import { formatBytes } from '../cli/format.js';
import type { CommandContext } from '../registry/command-context.js';
import { readIdentities } from '../repository/repository-keys.js';
import { z } from 'zod';
import { configuredSources, loadSettings, resolveSource } from '../config/settings.js';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { positiveInt } from '../registry/option-values.js';

export interface CheckItem {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
}

/** What a check covered: logical backups (pg_dump), physical ones (pg_basebackup and WAL archiving), or both. */
export type CheckScope = 'logical' | 'physical';

export interface CheckReport {
  source: string;
  ok: boolean;
  /** What was checked, and why (asked for, or what the source uses). */
  scopes: CheckScope[];
  scopeReason: string;
  items: CheckItem[];
  /** Age of the newest archived WAL file, in seconds (after the forced switch). */
  archiveLagSeconds: number | undefined;
}

export interface CheckRequest {
  /** How long to wait for the forced WAL switch to reach the archive; default 60 s. */
  walTimeoutMs?: number | undefined;
  /** Only these (--logical, --physical); default: what the source uses. */
  scopes?: CheckScope[] | undefined;
}

/** Free space below this many times the newest backup's stored size is a warning (below 1x it fails). */
const FREE_SPACE_MARGIN = 2;

/**
 * Pre-flight of a source, fitted to what it uses:
 *
 *  1. the server answers (a failure is an item: the repository is still checked)
 *  2. logical: pg_dump, pg_restore and psql are at least the server's version;
 *     the role can read every table a backup dumps (schema USAGE, SELECT)
 *  3. physical: pg_basebackup's version, wal_level, archive_mode,
 *     archive_command running pgkeep wal-push for this source, max_wal_senders,
 *     REPLICATION; then a forced WAL switch that must reach the repository
 *  4. every repository of the source: it opens, is writable (a probe object),
 *     its lock is free or stale, there is room for another backup (local
 *     repositories), and an encrypted one's key is at hand
 *
 * A source uses physical backups when the repository holds a physical backup
 * or WAL of it, the config schedules physical backups, or the server's
 * archive_command runs pgkeep wal-push; otherwise it is checked as logical
 * only, so a pg_dump setup does not fail on archiving it never needed.
 * Every finding is an item; the report fails when any item fails.
 */
export async function runCheck(ctx: CommandContext, source: ResolvedSource, request: CheckRequest = {}): Promise<CheckReport> {
  const items: CheckItem[] = [];
  const add = (name: string, status: CheckItem['status'], detail: string) => items.push({ name, status, detail });
  let archiveLagSeconds: number | undefined;

  const repositories = await openSourceRepositories(ctx, source);
  const usesPhysical = await physicalUse(ctx, source, repositories);

  let client: PgClient | undefined;
  try {
    client = await connect(source.connection, ctx.signal);
  } catch (error) {
    throwIfAborted(ctx.signal);
    add('server', 'fail', toPgkeepError(error).message);
  }
  let scopes: CheckScope[] = request.scopes ?? [];
  let scopeReason = 'as asked';
  try {
    let major: number | undefined;
    let archiveCommand = '';
    if (client) {
      const server = await readServerInfo(client);
      add('server', 'ok', `PostgreSQL ${server.version} at ${serverLabel(source.connection)}, database ${source.connection.database}`);
      major = Math.floor(serverMajor(server.versionNum));
      archiveCommand = (await client.query<{ setting: string }>("SELECT setting FROM pg_catalog.pg_settings WHERE name = 'archive_command'")).rows[0]?.setting ?? '';
    }
    if (scopes.length === 0) {
      const why = usesPhysical ?? (/wal-push/.test(archiveCommand) ? "the server's archive_command runs pgkeep wal-push" : undefined);
      scopes = why ? ['logical', 'physical'] : ['logical'];
      scopeReason = why ? `physical too: ${why}` : 'logical only: no physical backup, WAL or physical schedule for this source, and the server does not archive through pgkeep (check --physical checks archiving anyway)';
    }

    // 2. logical: the client programs and what the role can read
    if (client && major !== undefined) {
      const tools: PgTool[] = [...(scopes.includes('logical') ? (['pg_dump', 'pg_restore', 'psql'] as PgTool[]) : []), ...(scopes.includes('physical') ? (['pg_basebackup'] as PgTool[]) : [])];
      for (const tool of tools) {
        try {
          const info = await toolInfo(tool, source.pgBin);
          // The version policy (README, "Versions"): only the programs that read the server must be as new as it;
          // pg_restore and psql load into newer servers.
          const readsServer = tool === 'pg_dump' || tool === 'pg_basebackup';
          if (readsServer && info.major < major) add(tool, 'fail', `${tool} ${info.version} is older than the server: install postgresql-client-${major} or set PG_BIN`);
          else add(tool, 'ok', `${tool} ${info.version} (${info.path})`);
        } catch (error) {
          add(tool, 'fail', (error as Error).message);
        }
      }
      if (scopes.includes('logical')) await checkReadable(client, source, add);
    }

    // 3. physical: archiving settings and a live switch through the archive
    if (client && scopes.includes('physical')) {
      const live = await checkArchiving(client, source, add);
      const archive = repositories.find((r) => r.repository)?.repository;
      if (live && archive) {
        throwIfAborted(ctx.signal);
        const wal = archive.walArchive(source.name);
        const switched = (await client.query<{ name: string }>('SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal()) AS name')).rows[0]!.name;
        ctx.info(`forced a WAL switch: waiting for ${switched} in the archive`);
        const deadline = Date.now() + (request.walTimeoutMs ?? 60_000);
        let record = await wal.readRecord(switched);
        while (!record && Date.now() < deadline) {
          throwIfAborted(ctx.signal);
          await new Promise((resolve) => setTimeout(resolve, 250));
          record = await wal.readRecord(switched);
        }
        if (record) {
          archiveLagSeconds = Math.max(0, (Date.now() - new Date(record.pushedAt).getTime()) / 1000);
          add('archiving', 'ok', `${switched} arrived in the repository`);
        } else {
          const failed = (await client.query<{ wal: string | null }>('SELECT last_failed_wal AS wal FROM pg_catalog.pg_stat_archiver')).rows[0];
          add('archiving', 'fail', `${switched} did not reach the repository within ${Math.round((request.walTimeoutMs ?? 60_000) / 1000)} s${failed?.wal ? ` (the archiver last failed on ${failed.wal}: see the server log)` : ''}`);
        }
      }
    }
  } finally {
    await client?.end().catch(() => undefined);
  }

  // 4. the repositories and keys
  for (const opened of repositories) await checkRepository(ctx, source, opened, add);

  const report: CheckReport = { source: source.name, ok: items.every((i) => i.status !== 'fail'), scopes, scopeReason, items, archiveLagSeconds };
  if (!report.ok) {
    const first = items.find((i) => i.status === 'fail')!;
    throw new PgkeepError('CHECK_FAILED', `check of source ${source.name} failed: ${first.name}: ${first.detail}`, { details: { report } });
  }
  return report;
}

/** `check` of every configured source (a config with several and no --source). */
export interface CheckAllReport {
  ok: boolean;
  sources: CheckReport[];
}

/** Checks each source in turn; when any fails, CHECK_FAILED carries every report (`details.all`). */
export async function runCheckAll(ctx: CommandContext, sources: readonly ResolvedSource[], request: CheckRequest = {}): Promise<CheckAllReport> {
  const reports: CheckReport[] = [];
  for (const source of sources) {
    try {
      reports.push(await runCheck(ctx, source, request));
    } catch (error) {
      const report = (error as PgkeepError).details?.report as CheckReport | undefined;
      if (!report) throw error;
      reports.push(report);
    }
  }
  const all: CheckAllReport = { ok: reports.every((r) => r.ok), sources: reports };
  const failed = reports.filter((r) => !r.ok);
  if (failed.length > 0) {
    const item = failed[0]!.items.find((i) => i.status === 'fail')!;
    throw new PgkeepError('CHECK_FAILED', `check failed for ${failed.length} of ${reports.length} sources (${failed.map((r) => r.source).join(', ')}): ${failed[0]!.source}: ${item.name}: ${item.detail}`, { details: { all } });
  }
  return all;
}

interface OpenedRepository {
  url: string;
  repository?: Repository | undefined;
  error?: PgkeepError | undefined;
}

async function openSourceRepositories(ctx: CommandContext, source: ResolvedSource): Promise<OpenedRepository[]> {
  const opened: OpenedRepository[] = [];
  for (const url of repositoryUrls(ctx.settings, source.name)) {
    try {
      opened.push({ url, repository: await repositoryAt(ctx.settings, url).open() });
    } catch (error) {
      opened.push({ url, error: toPgkeepError(error) });
    }
  }
  return opened;
}

/** Why the source uses physical backups, from the config and the repositories; undefined when nothing says it does. */
async function physicalUse(ctx: CommandContext, source: ResolvedSource, repositories: OpenedRepository[]): Promise<string | undefined> {
  if (ctx.settings.config.sources?.[source.name]?.schedule?.physical) return 'the config schedules physical backups';
  for (const { repository } of repositories) {
    if (!repository) continue;
    if (await repository.holdsWal(source.name)) return `${repository.location} holds WAL of this source`;
    const backups = await repository.listBackups(source.name).catch(() => []);
    if (backups.some((m) => m.kind === 'physical')) return `${repository.location} holds a physical backup of this source`;
  }
  return undefined;
}

/** The role can reach every table a backup of this source dumps: USAGE on its schema and SELECT on it. */
async function checkReadable(client: PgClient, source: ResolvedSource, add: (name: string, status: CheckItem['status'], detail: string) => void): Promise<void> {
  const tables = selectDataTables(await readCatalogTables(client), source.backup);
  const denied = (
    await client.query<{ schema: string; name: string; kind: string }>(
      `SELECT n.nspname AS schema, c.relname AS name, c.relkind::text AS kind
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p', 'S')
          AND n.nspname <> 'information_schema' AND n.nspname !~ '^pg_'
          AND NOT (pg_catalog.has_schema_privilege(n.oid, 'USAGE') AND pg_catalog.has_table_privilege(c.oid, 'SELECT'))`,
    )
  ).rows;
  // pg_dump locks and reads each table it dumps, and reads every sequence and partitioned table of a whole-database dump
  const selected = new Set(tables.map((t) => `${t.schema}.${t.name}`));
  const wholeDatabase = !source.backup.tables?.length && !source.backup.schemas?.length;
  const blocking = denied.filter((d) => (d.kind === 'r' ? selected.has(`${d.schema}.${d.name}`) : wholeDatabase));
  const quoted = blocking.slice(0, 5).map((d) => `${d.schema}.${d.name}`);
  if (blocking.length === 0) add('privileges', 'ok', `role ${source.connection.user} can read all ${tables.length} table(s) a backup dumps`);
  else {
    add(
      'privileges',
      'fail',
      `role ${source.connection.user} cannot read ${blocking.length} relation(s): ${quoted.join(', ')}${blocking.length > quoted.length ? ', …' : ''} (GRANT SELECT, and USAGE on the schema, or exclude them in the source's backup options)`,
    );
  }
}

/** The archiving settings; true when they let a live WAL switch be tested. */
async function checkArchiving(client: PgClient, source: ResolvedSource, add: (name: string, status: CheckItem['status'], detail: string) => void): Promise<boolean> {
  const settings = Object.fromEntries(
    (await client.query<{ name: string; setting: string }>(
      "SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN ('wal_level', 'archive_mode', 'archive_command', 'max_wal_senders', 'archive_timeout')",
    )).rows.map((r) => [r.name, r.setting]),
  );
  const fix = (what: string) => `${what} in postgresql.conf (then restart)`;
  add('wal_level', settings.wal_level === 'minimal' ? 'fail' : 'ok', settings.wal_level === 'minimal' ? fix('set wal_level = replica') : settings.wal_level!);
  const archiving = settings.archive_mode !== 'off';
  add('archive_mode', archiving ? 'ok' : 'fail', archiving ? settings.archive_mode! : fix('set archive_mode = on'));
  const command = settings.archive_command ?? '';
  const pushes = /wal-push/.test(command);
  const sourceFlag = new RegExp(`--source[= ]['"]?${source.name.replace(/[.]/g, '\\.')}(['"\\s]|$)`).test(command);
  add(
    'archive_command',
    pushes && sourceFlag ? 'ok' : 'fail',
    pushes && sourceFlag ? command : fix(`set archive_command = 'pgkeep wal-push %p --source ${source.name}'${pushes ? ` (it runs wal-push for another source)` : ''}`),
  );
  const senders = Number(settings.max_wal_senders);
  add('max_wal_senders', senders >= 2 ? 'ok' : 'fail', senders >= 2 ? String(senders) : fix('set max_wal_senders = 3 or more (pg_basebackup needs one)'));
  const role = (await client.query<{ ok: boolean }>('SELECT rolsuper OR rolreplication AS ok FROM pg_catalog.pg_roles WHERE rolname = current_user')).rows[0];
  add('replication', role?.ok ? 'ok' : 'fail', role?.ok ? `role ${source.connection.user} may replicate` : `role ${source.connection.user} lacks REPLICATION: ALTER ROLE ${source.connection.user} REPLICATION (and allow it in pg_hba.conf)`);
  return archiving && pushes && sourceFlag;
}

/** One repository: it opens, takes a write, its lock, room for the next backup, the key of an encrypted one. */
async function checkRepository(ctx: CommandContext, source: ResolvedSource, opened: OpenedRepository, add: (name: string, status: CheckItem['status'], detail: string) => void): Promise<void> {
  const { repository } = opened;
  if (!repository) {
    if (opened.error?.code === 'REPO_MISSING') add('repository', 'warn', `no repository at ${opened.url} yet: the first backup creates it (or pgkeep init --repo ${opened.url})`);
    else add('repository', 'fail', opened.error?.message ?? `cannot open ${opened.url}`);
    return;
  }
  add('repository', 'ok', `${repository.location}${repository.info.encryption ? ', encrypted' : ''}`);

  try {
    await repository.probeWrite();
    add('writable', 'ok', `wrote and removed a test object in ${repository.location}`);
  } catch (error) {
    add('writable', 'fail', toPgkeepError(error).message);
  }

  const lock = await repository.inspectSourceLock(source.name).catch(() => undefined);
  if (!lock) add('lock', 'ok', `source ${source.name} is not locked`);
  else if (lock.stale) add('lock', 'ok', `stale lock of pid ${lock.owner.pid} (gone): the next backup takes it over`);
  else add('lock', 'warn', `held by ${lock.owner.command} (pid ${lock.owner.pid} on ${lock.owner.host}) since ${lock.owner.started}: a backup now would wait (LOCK_HELD); if that process is gone, remove sources/${source.name}/locks/source.lock`);

  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(repository.location) || repository.location.startsWith('file://')) {
    const folder = path.resolve(repository.location.replace(/^file:\/\//, ''));
    try {
      const fs = await statfs(folder);
      const free = fs.bavail * fs.bsize;
      const newest = (await repository.listBackups(source.name).catch(() => [])).at(-1);
      const need = newest ? newest.totals.storedBytes : 0;
      const status = free < need ? 'fail' : free < need * FREE_SPACE_MARGIN ? 'warn' : 'ok';
      add('free space', status, `${formatBytes(free)} free in ${folder}${newest ? `; the newest backup stored ${formatBytes(need)}` : ''}${status === 'ok' ? '' : ': make room before the next backup'}`);
    } catch (error) {
      add('free space', 'warn', `cannot measure the free space of ${folder}: ${(error as Error).message}`);
    }
  }

  if (repository.info.encryption) {
    if (ctx.keys.identityFile || repository.info.encryption.passphrase) {
      try {
        await readIdentities(repository, ctx.keys);
        add('key', 'ok', 'the given identity decrypts this repository');
      } catch (error) {
        add('key', 'fail', (error as Error).message);
      }
    } else {
      add('key', 'warn', 'no identity given: backups and wal-push need none, restore, verify and pitr will (--identity FILE)');
    }
  }
}

const CheckCommandRequest = z.object({ scopes: z.array(z.enum(['logical', 'physical'])).optional(), walTimeoutMs: z.number().int().positive().optional() });

export type CheckCommandResult = { report: CheckReport; all?: undefined } | { all: CheckAllReport; report?: undefined };

/** `pgkeep check`: one source, or each source of a config that has several (and no --source). */
export const checkCommand: CommandSpec<z.output<typeof CheckCommandRequest>, CheckCommandResult> = {
  name: 'check',
  description:
    'pre-flight of a source, fitted to what it uses: server, client programs, table privileges, repository (writable, lock, free space), keys; for physical sources also WAL archiving (forces a WAL switch and waits for it in the repository)',
  options: [
    { flags: '--logical', description: 'check only what logical backups (pg_dump) need' },
    { flags: '--physical', description: 'check only what physical backups and WAL archiving need, even for a source that does not use them yet' },
    { flags: '--wal-timeout <seconds>', description: 'how long to wait for the switched WAL segment (default 60)', parse: positiveInt('--wal-timeout') },
  ],
  help: { globals: ['config', 'repo', 'source', 'db', 'identity'], examples: ['pgkeep check --db postgresql://app@db.internal/app', 'pgkeep check --source main --physical', 'pgkeep check --json'] },
  parse: requestParser(CheckCommandRequest, ({ options }) => ({
    scopes: options.logical || options.physical ? [options.logical ? 'logical' : undefined, options.physical ? 'physical' : undefined].filter(Boolean) : undefined,
    walTimeoutMs: options.walTimeout === undefined ? undefined : (options.walTimeout as number) * 1000,
  })),
  async run(ctx, request) {
    const { settings } = ctx;
    // a config with several sources and no --source: check each of them
    const every = settings.options.source === undefined && configuredSources(settings).length > 1 ? configuredSources(settings) : undefined;
    if (!every) return { report: await runCheck(ctx, resolveSource(settings), request) };
    const sources = every.map((name) => resolveSource(loadSettings({ ...settings.options, source: name }, { env: settings.env, cwd: settings.cwd })));
    return { all: await runCheckAll(ctx, sources, request) };
  },
  print(result, out) {
    if (result.all) printCheckAll(result.all, out);
    else printCheck(result.report, out);
  },
  printFailure(error, out) {
    // the report is the one JSON document, failing or not (its ok is false)
    const { report, all } = error.details ?? {};
    if (all) printCheckAll(all as CheckAllReport, out);
    else if (report) printCheck(report as CheckReport, out);
    return out.json && Boolean(all ?? report);
  },
};

// Printing for a terminal (moved from src/cli/print.ts)

function printCheck(report: CheckReport, out: CommandOutput): void {
  if (out.json) return out.document(report);
  const width = Math.max(...report.items.map((i) => i.name.length));
  out.line(`checking ${report.scopes.join(' and ')} backups of ${report.source} (${report.scopeReason})`);
  for (const item of report.items) out.line(`${item.status === 'ok' ? 'ok  ' : item.status === 'warn' ? 'warn' : 'FAIL'}  ${item.name.padEnd(width)}  ${item.detail}`);
  if (report.archiveLagSeconds !== undefined) out.line(`archive lag: ${report.archiveLagSeconds.toFixed(1)} s (age of the newest archived WAL file)`);
  out.line(report.ok ? `source ${report.source}: all checks passed` : `source ${report.source}: some checks failed`);
}

function printCheckAll(all: CheckAllReport, out: CommandOutput): void {
  if (out.json) return out.document(all);
  all.sources.forEach((report, i) => {
    if (i > 0) out.line('');
    printCheck(report, { ...out, json: false });
  });
}
