import type { CheckReport } from '../commands/check.js';
import type { CopyResult } from '../commands/copy.js';
import type { PitrResult } from '../commands/pitr.js';
import type { TablePitrResult } from '../commands/pitr-table.js';
import type { ListRepositories } from '../commands/list.js';
import type { RestoreResult } from '../commands/restore.js';
import type { Manifest, PhysicalManifest } from '../repository/manifest.js';
import type { VerifyReport } from '../verify/verify-backup.js';
import type { WalReport } from '../verify/verify-wal.js';
import { formatAge, formatBytes, formatCount, formatDuration, formatTable } from './format.js';

/** Printing of each command's result: JSON as is, or text for people. */

const out = (text: string): void => void process.stdout.write(`${text}\n`);
const printJson = (value: unknown): void => out(JSON.stringify(value, null, 2));

export function printBackupDone(manifest: Manifest, location: string, json: boolean): void {
  if (json) return printJson(manifest);
  if (manifest.kind === 'physical') {
    const p = manifest.physical;
    out(
      `physical backup ${manifest.id} of ${manifest.source} done in ${formatDuration(manifest.durationMs)}: ` +
        `${formatBytes(manifest.totals.rawBytes)} copied, ${formatBytes(manifest.totals.storedBytes)} stored; ` +
        `WAL ${p.startLsn} to ${p.stopLsn} on timeline ${p.timeline} (${p.walStart}..${p.walStop}) is archived`,
    );
    out(`repository: ${location}`);
    return;
  }
  out(
    `backup ${manifest.id} of ${manifest.source} done in ${formatDuration(manifest.durationMs)}: ` +
      `${formatBytes(manifest.totals.rawBytes)} dumped, ${formatBytes(manifest.totals.storedBytes)} stored, ` +
      `${manifest.tables.length} tables, ${formatCount(manifest.totals.rows)} rows`,
  );
  out(`repository: ${location}`);
}

/**
 * `repositories`, for a source with several: a REPOS column (short names, with
 * a legend) and `repositories: [locations]` in --json.
 */
export function printList(backups: Manifest[], location: string, json: boolean, repositories?: ListRepositories): void {
  const where = (i: number) => repositories!.where[i]!;
  if (json) return printJson(backups.map((m, i) => (repositories ? { ...summary(m), repositories: where(i).map((r) => repositories.locations[r]!) } : summary(m))));
  if (backups.length === 0) return out(`no backups in ${location} yet`);
  out(
    formatTable(
      ['ID', 'SOURCE', 'KIND', 'FORMAT', 'SIZE', 'DURATION', 'AGE', 'LABELS', ...(repositories ? ['REPOS'] : [])],
      backups.map((m, i) => [
        m.id,
        m.source,
        m.kind,
        m.kind === 'logical' ? m.options.format : 'tar',
        formatBytes(m.totals.storedBytes),
        formatDuration(m.durationMs),
        formatAge(new Date(m.finishedAt)),
        m.labels.join(','),
        ...(repositories ? [where(i).map((r) => repositories.names[r]!).join(',')] : []),
      ]),
      [4, 5],
    ),
  );
  if (repositories) out(`repositories: ${repositories.names.map((name, r) => `${name} = ${repositories.locations[r]}`).join(', ')}`);
}

/** The fields of a backup that list --json gives (the full manifest is in show --json). */
function summary(m: Manifest) {
  if (m.kind === 'physical') {
    return {
      id: m.id,
      source: m.source,
      kind: m.kind,
      format: 'tar',
      labels: m.labels,
      startedAt: m.startedAt,
      finishedAt: m.finishedAt,
      durationMs: m.durationMs,
      rawBytes: m.totals.rawBytes,
      storedBytes: m.totals.storedBytes,
      startLsn: m.physical.startLsn,
      stopLsn: m.physical.stopLsn,
      timeline: m.physical.timeline,
    };
  }
  return {
    id: m.id,
    source: m.source,
    kind: m.kind,
    format: m.options.format,
    database: m.database.name,
    labels: m.labels,
    startedAt: m.startedAt,
    finishedAt: m.finishedAt,
    durationMs: m.durationMs,
    rawBytes: m.totals.rawBytes,
    storedBytes: m.totals.storedBytes,
    tables: m.tables.length,
    rows: m.totals.rows,
  };
}

export function printShow(m: Manifest, json: boolean): void {
  if (json) return printJson(m);
  if (m.kind === 'physical') return printShowPhysical(m);
  const options = m.options;
  const selection = [
    options.schemaOnly && 'schema only',
    options.dataOnly && 'data only',
    options.tables.length > 0 && `tables ${options.tables.join(', ')}`,
    options.excludeTables.length > 0 && `excluding tables ${options.excludeTables.join(', ')}`,
    options.schemas.length > 0 && `schemas ${options.schemas.join(', ')}`,
    options.excludeSchemas.length > 0 && `excluding schemas ${options.excludeSchemas.join(', ')}`,
    options.noOwner && 'no owners',
    options.noAcl && 'no privileges',
  ].filter(Boolean);
  const lines: [string, string][] = [
    ['backup', m.id],
    ['source', m.source],
    ['kind', `${m.kind}, ${options.format} format${options.jobs > 1 ? `, ${options.jobs} jobs` : ''}`],
    ['contents', selection.length > 0 ? selection.join('; ') : 'whole database'],
    ['labels', m.labels.join(', ') || '-'],
    ['started', m.startedAt],
    ['finished', `${m.finishedAt} (${formatDuration(m.durationMs)}, ${formatAge(new Date(m.finishedAt))})`],
    ['database', `${m.database.name} on ${m.server.host}:${m.server.port}, ${formatBytes(m.database.sizeBytes)}, ${m.database.encoding} ${m.database.collate}`],
    ['server', `PostgreSQL ${m.server.version}${m.server.systemIdentifier ? `, system id ${m.server.systemIdentifier}` : ''}`],
    ['tools', `pg_dump ${m.tools.pgDump}, pgkeep ${m.pgkeep.version} (${m.pgkeep.codec})`],
    ['size', `${formatBytes(m.totals.rawBytes)} dumped, ${formatBytes(m.totals.storedBytes)} stored (${ratio(m.totals.rawBytes, m.totals.storedBytes)})`],
    ['rows', `${formatCount(m.totals.rows)} in ${m.tables.length} tables`],
  ];
  const width = Math.max(...lines.map(([k]) => k.length));
  for (const [key, value] of lines) out(`${key.padEnd(width)}  ${value}`);
  out('');
  out(
    formatTable(
      ['OBJECT', 'RAW', 'STORED', 'SHA-256 (STORED)'],
      m.objects.map((o) => [o.name, formatBytes(o.raw.size), formatBytes(o.stored.size), o.stored.sha256.slice(0, 16)]),
      [1, 2],
    ),
  );
  if (m.tables.length > 0) {
    out('');
    out(formatTable(['TABLE', 'ROWS'], m.tables.map((t) => [`${t.schema}.${t.name}`, t.rows === null ? '-' : formatCount(t.rows)]), [1]));
  }
}

function printShowPhysical(m: PhysicalManifest): void {
  const p = m.physical;
  const lines: [string, string][] = [
    ['backup', m.id],
    ['source', m.source],
    ['kind', 'physical (pg_basebackup, tar)'],
    ['labels', m.labels.join(', ') || '-'],
    ['started', m.startedAt],
    ['finished', `${m.finishedAt} (${formatDuration(m.durationMs)}, ${formatAge(new Date(m.finishedAt))})`],
    ['server', `PostgreSQL ${m.server.version} on ${m.server.host}:${m.server.port}, system id ${m.server.systemIdentifier}`],
    ['tools', `pg_basebackup ${m.tools.pgBasebackup}, pgkeep ${m.pgkeep.version} (${m.pgkeep.codec})`],
    ['WAL', `${p.startLsn} to ${p.stopLsn} on timeline ${p.timeline}: segments ${p.walStart} to ${p.walStop}`],
    ['consistent', `from ${p.stopTime} (the earliest recovery target this backup reaches)`],
    ['tablespaces', p.tablespaces.length === 0 ? 'none besides pg_default' : p.tablespaces.map((t) => `${t.name} (${t.location})`).join(', ')],
    ['size', `${formatBytes(m.totals.rawBytes)} copied, ${formatBytes(m.totals.storedBytes)} stored (${ratio(m.totals.rawBytes, m.totals.storedBytes)})`],
  ];
  const width = Math.max(...lines.map(([k]) => k.length));
  for (const [key, value] of lines) out(`${key.padEnd(width)}  ${value}`);
  out('');
  out(formatTable(['OBJECT', 'RAW', 'STORED', 'SHA-256 (STORED)'], m.objects.map((o) => [o.name, formatBytes(o.raw.size), formatBytes(o.stored.size), o.stored.sha256.slice(0, 16)]), [1, 2]));
}

function ratio(raw: number, stored: number): string {
  return stored === 0 ? '-' : `${(raw / stored).toFixed(1)}x`;
}

export function printVerify(report: VerifyReport, json: boolean): void {
  if (json) return printJson(report);
  for (const o of report.objects) {
    out(`${o.ok ? 'ok    ' : 'FAILED'}  ${o.name}  ${formatBytes(o.storedBytes)} stored, ${formatBytes(o.rawBytes)} raw${o.problem ? `: ${o.problem}` : ''}`);
  }
  out(`tables: ${report.tables.found} of ${report.tables.expected} in the dump's table of contents`);
  if (report.ok) out(`backup ${report.id} is intact (${formatDuration(report.durationMs)})`);
  else for (const problem of report.problems) out(`problem: ${problem}`);
}

export function printRestoreDone(result: RestoreResult, json: boolean): void {
  if (json) return printJson(result);
  if (result.tables.length > 0) {
    out(
      formatTable(
        ['TABLE', 'BACKUP', 'RESTORED', ''],
        result.tables.map((t) => [`${t.schema}.${t.name}`, formatCount(t.expected), formatCount(t.actual), t.expected === t.actual ? 'ok' : 'DIFFERENT']),
        [1, 2],
      ),
    );
  }
  const rows = result.tables.reduce((n, t) => n + t.actual, 0);
  out(
    `restored ${result.backup.source}/${result.backup.id} into ${result.replaced ? 'existing ' : 'new '}database "${result.database}" in ${formatDuration(result.durationMs)}: ` +
      `row counts match the backup (${result.tables.length} tables, ${formatCount(rows)} rows)`,
  );
  if (result.safetyBackup) out(`the replaced database was saved first as backup ${result.safetyBackup}`);
  out(`connect: ${result.connection}`);
}

export function printCopyDone(result: CopyResult, json: boolean): void {
  if (json) return printJson(result);
  if (!result.copied) {
    out(`backup ${result.source}/${result.id} is already in ${result.to} (same manifest): nothing copied`);
    return;
  }
  const verified =
    result.verification.mode === 'full'
      ? 'verified there (checksums, decompression, table of contents)'
      : 'integrity checked there (stored SHA-256 and size of every object; not decrypted: give --identity or a passphrase for a full verify)';
  out(
    `copied ${result.source}/${result.id} to ${result.to} in ${formatDuration(result.durationMs)}: ` +
      `${result.objects} object(s), ${formatBytes(result.bytes)}; ${verified}`,
  );
  if (result.createdDestination) out(`created the repository at ${result.to}${result.encryption ? ' with the same encryption as the source' : ''}`);
}

export function printPitr(result: PitrResult, json: boolean): void {
  if (json) return printJson(result);
  const { plan } = result;
  const target = plan.target.kind === 'latest' ? 'the end of the archived WAL' : `${plan.target.kind} ${plan.target.value}`;
  out(`backup   ${plan.backup.id} (timeline ${plan.backup.timeline}, consistent from ${plan.backup.stopTime}, LSN ${plan.backup.stopLsn})`);
  out(`target   ${target}`);
  out(`WAL      ${plan.walNeeded.first}..${plan.walNeeded.last} needed for consistency: ${plan.walNeeded.present ? 'all archived' : `MISSING ${plan.walNeeded.missing.join(', ')}`}`);
  for (const t of plan.walAvailable) {
    out(`         timeline ${t.timeline}: archived through ${t.last ?? '-'}${t.gapAt ? `, first gap at ${t.gapAt}` : ', no gap'}`);
  }
  if (plan.histories.length > 0) out(`         timeline histories: ${plan.histories.join(', ')}`);
  if (!result.restored) return out(`dry run: nothing was changed (data directory would be ${plan.pgdata})`);
  out(`restored into ${plan.pgdata} with recovery.signal and restore_command = pgkeep wal-fetch`);
  if (!result.started || !result.outcome) {
    out(`start it with: pg_ctl start -D ${plan.pgdata}${result.port ? ` -o "-p ${result.port}"` : ''} (as the server's OS user)`);
    return;
  }
  const o = result.outcome;
  out(`recovery ${o.state}${o.newTimeline ? ` on new timeline ${o.newTimeline}` : ''} in ${formatDuration(result.durationMs)}`);
  if (o.stoppedAt) out(`stopped: ${o.stoppedAt}`);
  if (o.redoDoneAt) out(`redo done at ${o.redoDoneAt}${o.lastTransactionAt ? `; last transaction committed at ${o.lastTransactionAt}` : ''}`);
  if (result.port) out(`the server is running on port ${result.port}`);
}

export function printTablePitr(result: TablePitrResult, json: boolean): void {
  if (json) return printJson(result);
  const { plan, outcome } = result.pitr;
  out(`recovered a throwaway cluster from backup ${plan.backup.id}${outcome?.stoppedAt ? ` (${outcome.stoppedAt})` : ''}, then removed it`);
  for (const t of result.tables) out(`${t.name}: ${formatCount(t.rows)} rows`);
  out(result.loadedIntoDatabase ? `loaded into ${result.output}` : `wrote ${result.output} (${result.format})`);
}

export function printCheck(report: CheckReport, json: boolean): void {
  if (json) return printJson(report);
  const width = Math.max(...report.items.map((i) => i.name.length));
  for (const item of report.items) out(`${item.status === 'ok' ? 'ok  ' : item.status === 'warn' ? 'warn' : 'FAIL'}  ${item.name.padEnd(width)}  ${item.detail}`);
  if (report.archiveLagSeconds !== undefined) out(`archive lag: ${report.archiveLagSeconds.toFixed(1)} s (age of the newest archived WAL file)`);
  out(report.ok ? `source ${report.source}: all checks passed` : `source ${report.source}: some checks failed`);
}

export function printWalVerify(report: WalReport, json: boolean): void {
  if (json) return printJson(report);
  out(`WAL archive of ${report.source}: ${report.files} file(s), ${formatBytes(report.bytes)} stored, ${report.damaged.length} damaged`);
  for (const d of report.damaged) out(`FAILED  ${d.name}: ${d.problem}`);
  for (const w of report.windows) {
    const through = w.through ? `through ${w.through.lsn} (${w.through.segment}, timeline ${w.through.timeline})` : 'nothing';
    out(
      `${w.consistent ? 'ok    ' : 'FAILED'}  backup ${w.backup}: ${w.consistent ? `recovery targets from ${w.from.time} (LSN ${w.from.lsn}) ${through}` : 'its own WAL is not all archived'}` +
        `${w.gapAt ? `; first gap at ${w.gapAt}` : ''}${w.timelines.length > 1 ? `; timelines ${w.timelines.join(' → ')}` : ''}`,
    );
  }
  out(report.ok ? 'the WAL archive is intact' : `problem: ${report.problems[0]}`);
}
