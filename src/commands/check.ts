import type { ResolvedSource } from '../config/settings.js';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { connect } from '../postgres/pg-client.js';
import { serverMajor, toolInfo, type PgTool } from '../postgres/pg-tools.js';
import { readServerInfo } from '../postgres/server-info.js';
import type { Repository } from '../repository/repository.js';
import { WalArchive } from '../repository/wal-archive.js';
import type { CommandContext } from './command-context.js';
import { readIdentities } from './repository-keys.js';

export interface CheckItem {
  name: string;
  status: 'ok' | 'warn' | 'fail';
  detail: string;
}

export interface CheckReport {
  source: string;
  ok: boolean;
  items: CheckItem[];
  /** Age of the newest archived WAL file, in seconds (after the forced switch). */
  archiveLagSeconds: number | undefined;
}

export interface CheckRequest {
  /** How long to wait for the forced WAL switch to reach the archive; default 60 s. */
  walTimeoutMs?: number | undefined;
}

/**
 * Pre-flight of a source, and a live test of its WAL archiving:
 *
 *  1. the server answers; the client programs are at least its version
 *  2. the repository opens; an encrypted one's key is at hand (when given)
 *  3. archiving: wal_level, archive_mode, archive_command runs pgkeep wal-push
 *     for this source, max_wal_senders, replication privilege
 *  4. force a WAL switch and wait for that segment to arrive in the
 *     repository; report the archive lag
 *
 * Every finding is an item; the report fails when any item fails.
 */
export async function runCheck(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: CheckRequest = {}): Promise<CheckReport> {
  const items: CheckItem[] = [];
  const add = (name: string, status: CheckItem['status'], detail: string) => items.push({ name, status, detail });
  let archiveLagSeconds: number | undefined;

  // 1. server and tools
  const client = await connect(source.connection, ctx.signal);
  try {
    const server = await readServerInfo(client);
    add('server', 'ok', `PostgreSQL ${server.version} at ${source.connection.host}:${source.connection.port}`);
    const major = Math.floor(serverMajor(server.versionNum));
    for (const tool of ['pg_dump', 'pg_restore', 'psql', 'pg_basebackup'] as PgTool[]) {
      try {
        const info = await toolInfo(tool, source.pgBin);
        if (info.major < major) add(tool, 'fail', `${tool} ${info.version} is older than the server: install postgresql-client-${major} or set PG_BIN`);
        else add(tool, 'ok', `${tool} ${info.version} (${info.path})`);
      } catch (error) {
        add(tool, 'fail', (error as Error).message);
      }
    }

    // 2. repository and key
    add('repository', 'ok', `${repository.location}${repository.info.encryption ? ', encrypted' : ''}`);
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

    // 3. archiving settings
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

    // 4. a live switch, through the archive
    if (archiving && pushes && sourceFlag) {
      throwIfAborted(ctx.signal);
      const archive = new WalArchive(repository.storage, source.name);
      const switched = (await client.query<{ name: string }>('SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal()) AS name')).rows[0]!.name;
      ctx.info(`forced a WAL switch: waiting for ${switched} in the archive`);
      const deadline = Date.now() + (request.walTimeoutMs ?? 60_000);
      let record = await archive.readRecord(switched);
      while (!record && Date.now() < deadline) {
        throwIfAborted(ctx.signal);
        await new Promise((resolve) => setTimeout(resolve, 250));
        record = await archive.readRecord(switched);
      }
      if (record) {
        archiveLagSeconds = Math.max(0, (Date.now() - new Date(record.pushedAt).getTime()) / 1000);
        add('archiving', 'ok', `${switched} arrived in the repository`);
      } else {
        const failed = (await client.query<{ wal: string | null; at: Date | null }>('SELECT last_failed_wal AS wal, last_failed_time AS at FROM pg_catalog.pg_stat_archiver')).rows[0];
        add('archiving', 'fail', `${switched} did not reach the repository within ${Math.round((request.walTimeoutMs ?? 60_000) / 1000)} s${failed?.wal ? ` (the archiver last failed on ${failed.wal}: see the server log)` : ''}`);
      }
    }
  } finally {
    await client.end().catch(() => undefined);
  }
  const report = { source: source.name, ok: items.every((i) => i.status !== 'fail'), items, archiveLagSeconds };
  if (!report.ok) {
    const first = items.find((i) => i.status === 'fail')!;
    throw new PgkeepError('CHECK_FAILED', `check of source ${source.name} failed: ${first.name}: ${first.detail}`, { details: { report } });
  }
  return report;
}
