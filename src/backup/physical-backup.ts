import { readClusterTableEstimates } from '../postgres/table-estimates.js';
import { Writable } from 'node:stream';
import type { ResolvedSource } from '../config/settings.js';
import { validateName } from '../config/settings.js';
import { PgkeepError, throwIfAborted } from '../errors.js';
import { DEFAULT_ZSTD_LEVEL, defaultZstd } from '../pipeline/zstd.js';
import { libpqEnv } from '../postgres/connection-info.js';
import { connect, type PgClient } from '../postgres/pg-client.js';
import { assertToolNotOlder, toolInfo } from '../postgres/pg-tools.js';
import { startProcess } from '../postgres/run-process.js';
import { readServerInfo } from '../postgres/server-info.js';
import { parseLsn, segmentName, segmentRange } from '../postgres/wal-file.js';
import { validateBackupName } from '../repository/backup-id.js';
import type { PhysicalManifest } from '../repository/manifest.js';
import type { BackupWriter } from '../repository/backup-writer.js';
import type { Repository } from '../repository/repository.js';
import { WalArchive } from '../repository/wal-archive.js';
import type { CommandContext } from '../registry/command-context.js';
import { readIdentities } from '../repository/repository-keys.js';

export interface PhysicalBackupRequest {
  name?: string | undefined;
  labels?: string[] | undefined;
  compressLevel?: number | undefined;
  /** How long to wait for the WAL the backup needs to reach the archive; default 120 s. */
  walTimeoutMs?: number | undefined;
}

const DEFAULT_WAL_TIMEOUT_MS = 120_000;

/**
 * Takes a physical backup of the whole cluster of `source` into `repository`:
 *
 *  1. connect: server version and system identifier, check pg_basebackup is
 *     new enough and that WAL archiving is on (a physical backup without its
 *     WAL cannot be recovered)
 *  2. begin the backup writer: the source lock, leftovers cleared, the id
 *  3. stream pg_basebackup (tar to stdout) through zstd, age and checksums
 *     into base.tar.zst[.age]. With -X fetch the tar holds the WAL from start
 *     to stop too (a few segments), so the backup restores to a consistent
 *     state on its own, and the server does not wait for archiving (with
 *     -X none it would block in pg_backup_stop, with no timeout, until the
 *     archiver caught up)
 *  4. wait until every WAL segment from the start to the stop LSN, and the
 *     backup history file, are in the source's WAL archive
 *  5. write the manifest, last: only now does the backup exist
 */
export async function runPhysicalBackup(ctx: CommandContext, repository: Repository, source: ResolvedSource, request: PhysicalBackupRequest = {}): Promise<PhysicalManifest> {
  if (request.name !== undefined) validateBackupName(request.name);
  const labels = [...new Set([...(source.backup.labels ?? []), ...(request.labels ?? [])])].map((label) => validateName(label, 'label'));
  const startedAt = new Date();
  const { signal } = ctx;

  // 1. the server, the tool, the archiving
  const client = await connect(source.connection, signal);
  let writer: BackupWriter<'physical'> | undefined;
  try {
    const server = await readServerInfo(client);
    const tool = await toolInfo('pg_basebackup', source.pgBin);
    assertToolNotOlder(tool, 'pg_basebackup', server.versionNum, server.version);
    const settings = await readArchiveSettings(client);
    checkArchiving(settings, source.name);
    if (!server.systemIdentifier) {
      throw new PgkeepError('DB_PRIVILEGE', `cannot read the system identifier of ${source.connection.host}:${source.connection.port} (pg_control_system()): a physical backup needs a superuser or a role with pg_monitor`);
    }
    const tablespaces = await readTablespaces(client);
    if (tablespaces.length > 0) {
      throw new PgkeepError('USAGE', `the cluster has tablespaces outside the data directory (${tablespaces.map((t) => t.name).join(', ')}): pgkeep backup --physical supports only clusters without them so far`);
    }

    // The archive must already be reaching this repository. If nothing was archived yet, switch WAL and wait
    // for it first: the server's own push then creates the source's folders, owned by the server's OS user
    // (created first by this process, as another user such as root, they would lock the archiver out).
    const archive = repository.walArchive(source.name);
    if (!(await archive.readInfo())) {
      // txid_current() commits a transaction id, so there is WAL to switch away from.
      await client.query('SELECT pg_catalog.txid_current()');
      const switched = await client.query<{ name: string }>('SELECT pg_catalog.pg_walfile_name(pg_catalog.pg_switch_wal()) AS name').catch(() => undefined);
      if (switched) {
        ctx.info(`nothing archived for ${source.name} yet: waiting for ${switched.rows[0]!.name} to arrive first`);
        await waitForWal(archive, [switched.rows[0]!.name], request.walTimeoutMs ?? DEFAULT_WAL_TIMEOUT_MS, signal, client);
      }
    }

    // 2. lock, leftovers, id
    const codec = defaultZstd();
    writer = await repository.beginBackup(source.name, 'physical', {
      command: 'backup --physical',
      database: source.connection.database,
      startedAt,
      name: request.name,
      labels,
      codec,
      keys: ctx.keys,
      info: (message) => ctx.info(message),
      warn: (message) => ctx.warn(message),
      signal,
    });
    const backupId = writer.id;
    ctx.info(`physical backup of ${source.connection.host}:${source.connection.port} (${source.name}) as ${backupId}`);

    // 3. pg_basebackup → zstd → age → repository
    let startLsn: string | undefined;
    let timeline: number | undefined;
    let stopLsn: string | undefined;
    const basebackup = startProcess(tool.path, ['-D', '-', '-F', 't', '-X', 'fetch', '-c', 'fast', '-v', '--no-password', '-l', `pgkeep ${backupId}`], {
      env: libpqEnv(source.connection),
      signal,
      stdout: 'pipe',
      isErrorLine: (line) => /error|FATAL|could not/i.test(line),
      onStderrLine: (line) => {
        const start = /write-ahead log start point: ([0-9A-F]+\/[0-9A-F]+) on timeline (\d+)/.exec(line);
        if (start) [startLsn, timeline] = [start[1], Number(start[2])];
        const end = /write-ahead log end point: ([0-9A-F]+\/[0-9A-F]+)/.exec(line);
        if (end) stopLsn = end[1];
      },
    });
    await writer.store({ name: 'base.tar', role: 'base' }, basebackup.stdout!, {
      level: request.compressLevel ?? source.backup.compressLevel ?? DEFAULT_ZSTD_LEVEL,
      signal,
      complete: basebackup.done,
      onRawBytes: (bytes) => ctx.progress({ phase: 'basebackup', bytes }),
    });
    if (!startLsn || !stopLsn || !timeline) throw new PgkeepError('TOOL_FAILED', 'pg_basebackup did not report its start and end WAL locations');
    // facts the restore test checks: a catalog read per database, right after the stop (see compareTableEstimates)
    const factsAt = new Date().toISOString();
    const facts = await readClusterTableEstimates(source.connection, signal).catch((error: Error) => {
      ctx.warn(`could not record the table facts the restore test checks: ${error.message}`);
      return undefined;
    });

    // 4. the WAL it needs, in the archive
    const segmentSize = settings.segmentSize;
    const walStart = segmentName(timeline, parseLsn(startLsn), segmentSize);
    const walStop = segmentName(timeline, parseLsn(stopLsn), segmentSize);
    const historyFile = `${walStart}.${(parseLsn(startLsn) % BigInt(segmentSize)).toString(16).toUpperCase().padStart(8, '0')}.backup`;
    const needed = [...segmentRange(walStart, walStop, segmentSize), historyFile];
    ctx.info(`waiting for WAL ${walStart}..${walStop} in the archive`);
    await waitForWal(archive, needed, request.walTimeoutMs ?? DEFAULT_WAL_TIMEOUT_MS, signal, client);
    const info = await archive.readInfo();
    if (info && info.systemIdentifier !== server.systemIdentifier) {
      throw new PgkeepError('WAL_FOREIGN', `the WAL archive of source ${source.name} belongs to system ${info.systemIdentifier}, this server is ${server.systemIdentifier}: check archive_command's --source`);
    }
    const label = await readBackupLabel(archive, historyFile, repository, ctx);

    // 5. the manifest, last (the writer adds the objects and totals)
    const finishedAt = new Date();
    return await writer.commit(
      {
        server: { version: server.version, versionNum: server.versionNum, systemIdentifier: server.systemIdentifier, host: source.connection.host, port: source.connection.port },
        tools: { pgBasebackup: tool.version },
        physical: {
          startLsn,
          stopLsn,
          timeline,
          walStart,
          walStop,
          segmentSize,
          backupLabel: label,
          stopTime: labelTime(label, 'STOP TIME') ?? finishedAt.toISOString(),
          tablespaces,
          ...(facts ? { facts: { takenAt: factsAt, databases: facts } } : {}),
        },
      },
      finishedAt,
    );
  } finally {
    // Not committed: the writer removes what it stored and releases the lock.
    await writer?.abort();
    await client.end().catch(() => undefined);
  }
}

interface ArchiveSettings {
  walLevel: string;
  archiveMode: string;
  archiveCommand: string;
  maxWalSenders: number;
  segmentSize: number;
}

async function readArchiveSettings(client: PgClient): Promise<ArchiveSettings> {
  const rows = (await client.query<{ name: string; setting: string }>(
    "SELECT name, setting FROM pg_catalog.pg_settings WHERE name IN ('wal_level', 'archive_mode', 'archive_command', 'max_wal_senders', 'wal_segment_size')",
  )).rows;
  const get = (name: string) => rows.find((r) => r.name === name)?.setting ?? '';
  return { walLevel: get('wal_level'), archiveMode: get('archive_mode'), archiveCommand: get('archive_command'), maxWalSenders: Number(get('max_wal_senders')), segmentSize: Number(get('wal_segment_size')) || 16 * 1024 * 1024 };
}

/** A physical backup is useless without its WAL: refuse early, naming what to change in postgresql.conf. */
function checkArchiving(settings: ArchiveSettings, source: string): void {
  const fix = `set in postgresql.conf: wal_level = replica, archive_mode = on, archive_command = 'pgkeep wal-push %p --source ${source}', max_wal_senders = 3 or more, then restart`;
  if (settings.walLevel === 'minimal') throw new PgkeepError('USAGE', `wal_level is minimal: a physical backup needs replica or logical; ${fix}`);
  if (settings.archiveMode === 'off') throw new PgkeepError('USAGE', `archive_mode is off: a physical backup needs its WAL archived; ${fix}`);
  if (settings.maxWalSenders < 1) throw new PgkeepError('USAGE', `max_wal_senders is 0: pg_basebackup needs a WAL sender; ${fix}`);
  if (!/wal-push/.test(settings.archiveCommand)) {
    throw new PgkeepError('USAGE', `archive_command does not run pgkeep wal-push ("${settings.archiveCommand.slice(0, 80)}"): the backup's WAL would not reach the repository; ${fix}`);
  }
}

async function readTablespaces(client: PgClient): Promise<{ oid: number; name: string; location: string }[]> {
  const rows = (await client.query<{ oid: number; name: string; location: string }>(
    "SELECT oid::int AS oid, spcname AS name, pg_catalog.pg_tablespace_location(oid) AS location FROM pg_catalog.pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') ORDER BY oid",
  )).rows;
  return rows;
}

/**
 * Polls the archive until every name is there. On timeout the message names
 * the first missing file and what the server's archiver last reported.
 */
async function waitForWal(archive: WalArchive, names: string[], timeoutMs: number, signal: AbortSignal, client: PgClient): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  const pending = [...names];
  for (;;) {
    throwIfAborted(signal);
    while (pending.length > 0 && (await archive.readRecord(pending[0]!))) pending.shift();
    if (pending.length === 0) return;
    if (Date.now() > deadline) {
      const stats = (await client.query<{ failed: string | null; at: Date | null }>('SELECT last_failed_wal AS failed, last_failed_time AS at FROM pg_catalog.pg_stat_archiver').catch(() => undefined))?.rows[0];
      throw new PgkeepError(
        'WAL_TIMEOUT',
        `the WAL this backup needs (${pending[0]}) did not reach the archive within ${Math.round(timeoutMs / 1000)} s` +
          (stats?.failed ? ` (the server's archiver last failed on ${stats.failed} at ${stats.at?.toISOString()}: see the server log)` : '') +
          `: check archive_command and the server log; the backup was not kept`,
      );
    }
    await new Promise((resolve) => setTimeout(resolve, 250));
  }
}

/** The backup history file's text (the backup label plus STOP WAL LOCATION and STOP TIME). */
async function readBackupLabel(archive: WalArchive, name: string, repository: Repository, ctx: CommandContext): Promise<string> {
  const record = (await archive.readRecord(name))!;
  const identities = record.encryption ? await readIdentities(repository, ctx.keys).catch(() => undefined) : [];
  if (!identities) return `(encrypted in the archive as ${name}: give --identity to record it)`;
  const chunks: Buffer[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      chunks.push(chunk);
      callback();
    },
  });
  await archive.fetch(name, sink, { codec: defaultZstd(), identities, record });
  return Buffer.concat(chunks).toString('utf8');
}

/** "STOP TIME: 2026-11-21 02:00:00 UTC" → ISO time. */
export function labelTime(label: string, field: string): string | undefined {
  const match = new RegExp(`^${field}: (\\d{4}-\\d{2}-\\d{2}) (\\d{2}:\\d{2}:\\d{2}) (\\S+)$`, 'm').exec(label);
  if (!match) return undefined;
  const zone = match[3] === 'UTC' || match[3] === 'GMT' ? 'Z' : /^[+-]\d{2}(:?\d{2})?$/.test(match[3]!) ? match[3] : undefined;
  if (zone === undefined) return undefined;
  const date = new Date(`${match[1]}T${match[2]}${zone}`);
  return Number.isNaN(date.getTime()) ? undefined : date.toISOString();
}
