import type { CheckAllReport, CheckReport } from '../commands/check.js';
import type { CopyResult } from '../commands/copy.js';
import type { PitrResult } from '../commands/pitr.js';
import type { TablePitrResult } from '../commands/pitr-table.js';
import type { ListedDamage, ListRepositories } from '../commands/list.js';
import type { RestorePlan, RestoreResult } from '../commands/restore.js';
import type { FileRestorePlan, FileRestoreResult } from '../commands/restore-file.js';
import type { ExtractResult } from '../commands/extract.js';
import type { AllDatabasesResult } from '../commands/backup-all.js';
import type { PinResult } from '../commands/pin.js';
import type { PruneResult } from '../commands/prune.js';
import type { StatusResult } from '../commands/status.js';
import type { ShowResult } from '../commands/show.js';
import type { RemoveSourceResult, SourcesResult } from '../commands/sources.js';
import type { VerifyResult } from '../commands/verify.js';
import type { Manifest, PhysicalManifest } from '../repository/manifest.js';
import type { CopiesReport } from '../commands/verify-copies.js';
import type { Pin } from '../repository/pins.js';
import type { VerifyReport } from '../verify/verify-backup.js';
import type { Verification } from '../repository/verification.js';
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
export function printList(
  backups: Manifest[],
  location: string,
  json: boolean,
  repositories?: ListRepositories,
  pinned: ReadonlySet<string> = new Set(),
  verifications: ReadonlyMap<string, Verification> = new Map(),
  damaged: readonly ListedDamage[] = [],
): void {
  const where = (i: number) => repositories!.where[i]!;
  const isPinned = (m: Manifest) => pinned.has(`${m.source}/${m.id}`);
  const verified = (m: Manifest) => verifications.get(`${m.source}/${m.id}`);
  if (json) {
    const readable: object[] = backups.map((m, i) => ({
      ...summary(m),
      pinned: isPinned(m),
      verification: verificationSummary(verified(m)),
      ...(repositories ? { repositories: where(i).map((r) => repositories.locations[r]!) } : {}),
    }));
    const unreadable = damaged.map((d) => ({ id: d.id, source: d.source, damaged: { code: d.code, message: d.message, repository: d.location } }));
    return printJson([...readable, ...unreadable]);
  }
  // Damaged backups are listed after the readable ones, each with what is wrong: never hidden, never blocking.
  const printDamaged = () => {
    for (const d of damaged) out(`DAMAGED  ${d.source}/${d.id}${repositories ? ` in ${d.location}` : ''}: ${d.message}`);
  };
  if (backups.length === 0) {
    out(damaged.length > 0 ? `no readable backups in ${location}` : `no backups in ${location} yet`);
    return printDamaged();
  }
  out(
    formatTable(
      ['ID', 'SOURCE', 'KIND', 'FORMAT', 'SIZE', 'DURATION', 'AGE', 'VERIFIED', 'LABELS', 'PIN', ...(repositories ? ['REPOS'] : [])],
      backups.map((m, i) => [
        m.id,
        m.source,
        m.kind,
        m.kind === 'logical' ? m.options.format : 'tar',
        formatBytes(m.totals.storedBytes),
        formatDuration(m.durationMs),
        formatAge(new Date(m.finishedAt)),
        verificationLabel(verified(m)),
        m.labels.join(','),
        isPinned(m) ? 'pinned' : '',
        ...(repositories ? [where(i).map((r) => repositories.names[r]!).join(',')] : []),
      ]),
      [4, 5],
    ),
  );
  printDamaged();
  if (repositories) out(`repositories: ${repositories.names.map((name, r) => `${name} = ${repositories.locations[r]}`).join(', ')}`);
}

/** "restore ok 2h ago", "integrity ok 5m ago", "FAILED restore 1d ago", or "-" when never verified. */
export function verificationLabel(v: Verification | undefined): string {
  if (!v) return '-';
  const what = v.kind === 'restore-test' ? 'restore' : 'integrity';
  const age = formatAge(new Date(v.finishedAt));
  return v.ok ? `${what} ok ${age}` : `FAILED ${what} ${age}`;
}

function verificationSummary(v: Verification | undefined) {
  if (!v) return null;
  return { kind: v.kind, ok: v.ok, finishedAt: v.finishedAt, durationMs: v.durationMs, restoreMs: v.restore?.durationMs ?? null, problem: v.problems[0] ?? null };
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

/** show: the manifest, readable; --json gives the manifest with the last verification record added as `verification`. */
export function printShow({ manifest: m, verification, pin }: ShowResult, json: boolean): void {
  if (json) return printJson({ ...m, verification: verification ?? null, pin: pin ?? null });
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
    ...(pin ? [['pinned', `yes, by ${pin.by} at ${pin.pinnedAt}${pin.reason ? `: ${pin.reason}` : ''}`] as [string, string]] : []),
    ['started', m.startedAt],
    ['finished', `${m.finishedAt} (${formatDuration(m.durationMs)}, ${formatAge(new Date(m.finishedAt))})`],
    ['database', `${m.database.name} on ${m.server.host}:${m.server.port}, ${formatBytes(m.database.sizeBytes)}, ${m.database.encoding} ${m.database.collate}`],
    [
      'db state',
      m.database.state
        ? `owner ${m.database.state.owner}, locale ${m.database.state.localeProvider}${m.database.state.locale ? ` ${m.database.state.locale}` : ''}, ${m.database.state.acl === null ? 'default privileges' : `${m.database.state.acl.length} privileges`}, ${m.database.state.settings.length + m.database.state.roleSettings.reduce((n, r) => n + r.settings.length, 0)} settings${m.database.state.comment !== null ? ', a comment' : ''}`
        : m.objects.some((o) => o.role === 'database-state')
          ? 'recorded (encrypted object)'
          : 'not recorded (older pgkeep)',
    ],
    ['server', `PostgreSQL ${m.server.version}${m.server.systemIdentifier ? `, system id ${m.server.systemIdentifier}` : ''}`],
    ['tools', `pg_dump ${m.tools.pgDump}, pgkeep ${m.pgkeep.version} (${m.pgkeep.codec})`],
    ['size', `${formatBytes(m.totals.rawBytes)} dumped, ${formatBytes(m.totals.storedBytes)} stored (${ratio(m.totals.rawBytes, m.totals.storedBytes)})`],
    ['rows', `${formatCount(m.totals.rows)} in ${m.tables.length} tables${m.options.checksums ? ', with content checksums' : ''}`],
    ['verified', verifiedLine(verification)],
    ...(m.migrations && m.migrations.length > 0
      ? ([['migrations', m.migrations.map((s) => `${s.schema}.${s.name} ${s.latest ?? '(no version)'} (${s.rows} rows)`).join(', ')]] as [string, string][])
      : []),
    ['roles', m.globals ? `stored (globals object), ${m.globals.rolePasswords ? 'with password hashes, encrypted' : 'without passwords'}` : 'not stored'],
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

function verifiedLine(v: Verification | undefined): string {
  if (!v) return 'never (pgkeep verify ID --restore-test)';
  const restore = v.restore ? `, restored in ${formatDuration(v.restore.durationMs)} (${v.restore.scratch})` : '';
  return `${verificationLabel(v)} (${v.finishedAt}${restore})${v.ok ? '' : `: ${v.problems[0] ?? 'failed'}`}`;
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

export function printVerify(report: VerifyResult, json: boolean): void {
  if (json) return printJson(report);
  if (report.manifest) out(`manifest: ${report.manifest}`);
  for (const o of report.objects) {
    out(`${o.ok ? 'ok    ' : 'FAILED'}  ${o.name}  ${formatBytes(o.storedBytes)} stored, ${formatBytes(o.rawBytes)} raw${o.problem ? `: ${o.problem}` : ''}`);
  }
  out(`tables: ${report.tables.found} of ${report.tables.expected} in the dump's table of contents`);
  const test = report.restoreTest;
  if (test) {
    out(`restore test: restored into "${test.scratch.database}" on ${test.scratch.server} in ${formatDuration(test.restoreMs)} (dropped afterwards)`);
    if (test.tables.length > 0) {
      const deep = test.tables.some((t) => t.contentOk !== undefined);
      out(
        formatTable(
          ['TABLE', 'BACKUP', 'RESTORED', ...(deep ? ['CONTENT'] : []), ''],
          test.tables.map((t) => [
            `${t.schema}.${t.name}`,
            formatCount(t.expected),
            formatCount(t.actual),
            ...(deep ? [t.contentOk === undefined ? '-' : t.contentOk ? 'same' : 'DIFFERENT'] : []),
            t.expected === t.actual && t.contentOk !== false ? 'ok' : 'DIFFERENT',
          ]),
          [1, 2],
        ),
      );
    }
    if (test.schema) out(`schema: ${test.schema.checked - test.schema.missing.length} of ${test.schema.checked} objects of the table of contents present${test.schema.missing.length ? `; missing: ${test.schema.missing.join(', ')}` : ''}`);
    if (test.schemaDump?.compared) out(`whole schema: ${test.schemaDump.objects} objects (definitions, owners, privileges) ${test.schemaDump.differences === 0 ? 'match the backup' : `DIFFER from the backup (${test.schemaDump.differences})`}`);
    if (test.databaseState) out(`database state (owner, privileges, comment, settings, locale): ${test.databaseState.differences.length === 0 ? 'matches the backup' : `DIFFERS: ${test.databaseState.differences.join('; ')}`}`);
    for (const m of test.migrations.tables) {
      out(`migrations: ${m.schema}.${m.name} ${m.ok ? 'matches the backup' : 'DIFFERS from the backup'} (${m.actual ? `${m.actual.latest ?? 'no version'}, ${m.actual.rows} rows` : 'missing'}; recorded ${m.expected.latest ?? 'no version'}, ${m.expected.rows} rows)`);
    }
    test.probes.forEach((p, i) => out(`probe ${i + 1}: ${p.ok ? 'ok    ' : 'FAILED'}  ${p.sql.replace(/\s+/g, ' ').trim()} → ${p.error ? `error: ${p.error}` : (p.value ?? 'no value')}`));
    if (test.deep) {
      const { amcheck } = test.deep;
      const found = amcheck.status === 'skipped' ? 'skipped' : amcheck.ok ? 'no corruption found' : 'CORRUPTION FOUND';
      const checks = amcheck.checks === 'btree' ? ' (B-tree indexes only: heap checks skipped)' : '';
      out(`deep: content of ${test.deep.compared} table(s) compared with the backup's checksums; amcheck${amcheck.version ? ` ${amcheck.version}` : ''}: ${found}${checks}`);
    }
    for (const note of test.notes) out(`note: ${note}`);
  }
  const drill = report.physicalTest;
  if (drill) {
    out(`${drill.method === 'pitr' ? 'PITR drill' : 'restore test'}: recovered to ${drill.target} in ${formatDuration(drill.restoreMs)} on ${drill.scratch} (removed afterwards)`);
    out(`  extract ${formatDuration(drill.extractMs)}, WAL replay ${formatDuration(drill.replayMs)} (${drill.walFiles} file(s), ${formatBytes(drill.walBytes)})`);
    const point = drill.recoveryPoint;
    out(`  recovery point: ${point.stoppedAt ?? (point.redoDoneAt ? `redo done at ${point.redoDoneAt}` : 'end of recovery')}${point.lastTransactionAt ? `; last transaction at ${point.lastTransactionAt}` : ''}${point.timeline ? `; new timeline ${point.timeline}` : ''}`);
    for (const d of drill.databases) out(`  database ${d.name}: accepts connections; pg_amcheck ${d.amcheck.status === 'skipped' ? 'skipped' : d.amcheck.ok ? 'found nothing' : 'FOUND CORRUPTION'}`);
    drill.probes.forEach((p, i) => out(`  probe ${i + 1}: ${p.ok ? 'ok    ' : 'FAILED'}  ${p.sql.replace(/\s+/g, ' ').trim()} → ${p.error ? `error: ${p.error}` : (p.value ?? 'no value')}`));
    for (const note of drill.notes) out(`note: ${note}`);
  }
  if (report.ok) out(`backup ${report.id} ${test || drill ? 'restores and checks out' : 'is intact'} (${formatDuration(report.durationMs)})`);
  else for (const problem of report.problems) out(`problem: ${problem}`);
}

/** Verification of every copy of a backup (a source with several repositories). */
export function printVerifyCopies(result: CopiesReport, json: boolean): void {
  if (json) return printJson(result);
  for (const copy of result.copies) {
    out(`${copy.repository}:`);
    if (copy.report) printVerify(copy.report, false);
    else out(`FAILED  ${copy.error?.message ?? 'not verified'}`);
  }
  for (const url of result.missingFrom) out(`${url}: does not hold backup ${result.id}`);
  if (result.ok) out(`backup ${result.id} is intact in ${result.copies.length} ${result.copies.length === 1 ? 'repository' : 'repositories'}`);
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
    `restored ${result.backup.source}/${result.backup.id} into ${result.cleaned ? 'existing database (selected objects replaced) ' : result.replaced ? 'existing database ' : 'new database '}"${result.database}" in ${formatDuration(result.durationMs)}: ` +
      `row counts match the backup (${result.tables.length} tables, ${formatCount(rows)} rows)`,
  );
  if (result.schema?.compared) out(`schema: ${result.schema.objects} objects (definitions, owners, privileges) match the backup's`);
  if (result.databaseState === 'reproduced') out("database: owner, privileges, comment, settings and locale match the backup's");
  if (result.safetyBackup) out(`the replaced database was saved first as backup ${result.safetyBackup}`);
  if (result.globals) out(globalsLine(result.globals, 'created'));
  for (const m of result.migrations?.tables ?? []) {
    const at = (state: { rows: number; latest: string | null }) => `${state.latest ?? 'no known version'} (${state.rows} rows)`;
    out(
      `migrations: ${m.schema}.${m.name} ${m.actual ? `at ${at(m.actual)}` : 'missing'}: ` +
        (m.ok ? 'as recorded at backup time' : `DIFFERS from ${at(m.expected)} recorded at backup time`),
    );
  }
  out(`connect: ${result.connection}`);
}

function globalsLine(g: NonNullable<RestoreResult['globals']>, verb: string): string {
  return (
    `roles: ${verb} ${g.created.length}${g.created.length > 0 ? ` (${g.created.join(', ')})` : ''}; ` +
    `${g.existing.length} existed and were left as they are${g.skipped.length > 0 ? `; ${g.skipped.length} tablespace/per-database statement(s) skipped` : ''}`
  );
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

/** --dry-run: what the restore would do; nothing was changed. */
export function printRestorePlan(plan: RestorePlan, json: boolean): void {
  if (json) return printJson({ dryRun: true, ...plan });
  const how = {
    new: 'a new database, created',
    overwrite: 'exists: replaced whole (--overwrite), after a safety backup',
    clean: 'exists: the restored objects are dropped and recreated inside it, in one transaction (--clean), after a safety backup',
  }[plan.mode];
  out(`plan: restore ${plan.backup.source}/${plan.backup.id} (${plan.backup.format} format)${plan.options.length > 0 ? `, ${plan.options.join(', ')}` : ''}`);
  out(`target: database "${plan.database}" on ${plan.server}: ${how}`);
  out(`drop: ${plan.drops.length === 0 ? 'nothing' : ''}`);
  for (const d of plan.drops) out(`  ${d}`);
  if (plan.entries.length > 0) {
    out(`create (${plan.entries.length} TOC entries):`);
    for (const e of plan.entries) out(`  ${String(e.id).padStart(5)}; ${e.entry}`);
  } else {
    out('create: everything in the plain SQL dump (psql runs it whole)');
  }
  if (plan.tables.length > 0) {
    out(formatTable(['TABLE', 'ROWS'], plan.tables.map((t) => [`${t.schema}.${t.name}`, t.rows === null ? '-' : formatCount(t.rows)]), [1]));
  }
  if (plan.databaseState.length > 0) {
    out('database state:');
    for (const line of plan.databaseState) out(`  ${line}`);
  }
  if (plan.globals) out(globalsLine(plan.globals, 'would create'));
  out(`estimated size: ${formatBytes(plan.estimatedBytes)} of dump data; ${plan.tables.length} table(s) with rows`);
  out('dry run: nothing was changed');
}

export function printFileRestoreDone(result: FileRestoreResult, json: boolean): void {
  if (json) return printJson(result);
  if (result.tables.length > 0) out(formatTable(['TABLE', 'ROWS'], result.tables.map((t) => [`${t.schema}.${t.name}`, formatCount(t.rows)]), [1]));
  const rows = result.tables.reduce((n, t) => n + t.rows, 0);
  out(
    `restored ${result.file} (${result.format}${result.compression === 'none' ? '' : `, ${result.compression}`}) into ${result.replaced ? 'existing' : 'new'} database "${result.database}" ` +
      `in ${formatDuration(result.durationMs)}: ${result.tables.length} tables, ${formatCount(rows)} rows`,
  );
  if (result.safetyBackup) out(`the replaced database was saved first as backup ${result.safetyBackup}`);
  out(`connect: ${result.connection}`);
}

/** restore --file --dry-run */
export function printFileRestorePlan(plan: FileRestorePlan, json: boolean): void {
  if (json) return printJson({ dryRun: true, ...plan });
  out(`plan: restore ${plan.file}: ${plan.format} dump${plan.compression === 'none' ? '' : `, ${plan.compression}-compressed`}, ${formatBytes(plan.bytes)}`);
  out(`target: database "${plan.database}" on ${plan.server}: ${plan.mode === 'new' ? 'a new database, created' : 'exists: replaced whole (--overwrite), after a safety backup'}`);
  if (plan.entries.length > 0) {
    out(`create (${plan.entries.length} TOC entries):`);
    for (const e of plan.entries) out(`  ${String(e.id).padStart(5)}; ${e.entry}`);
  } else {
    out(`create: everything in the ${plan.format === 'plain' ? 'SQL script (psql runs it whole)' : 'archive'}`);
  }
  out('dry run: nothing was changed');
}

/** Without --output the rows went to stdout: the summary goes to stderr then. */
export function printExtractDone(result: ExtractResult, json: boolean): void {
  if (json) return printJson(result);
  const line =
    `extracted ${formatCount(result.rows)} row(s) of ${result.table.schema}.${result.table.name}${result.where ? ` where ${result.where}` : ''} ` +
    `from ${result.backup.source}/${result.backup.id} as ${result.format}${result.output ? ` to ${result.output}` : ''} in ${formatDuration(result.durationMs)}; scratch database "${result.scratch}" dropped`;
  if (result.output) out(line);
  else process.stderr.write(`${line}\n`);
}

export function printAllDatabasesDone(result: AllDatabasesResult, json: boolean): void {
  if (json) return printJson(result);
  if (result.backups.length > 0) {
    out(
      formatTable(
        ['DATABASE', 'SOURCE', 'BACKUP', 'STORED', 'TABLES', 'ROWS'],
        result.backups.map((b) => [b.database, b.source, b.id, formatBytes(b.storedBytes), String(b.tables), formatCount(b.rows)]),
        [3, 4, 5],
      ),
    );
  }
  out(`all databases (run ${result.run}): ${result.backups.length} backed up${result.failed.length > 0 ? `, ${result.failed.length} FAILED (${result.failed.map((f) => f.database).join(', ')})` : ''}; roles ${result.globals ? 'stored once, in every backup of the run' : 'not stored'}`);
}

/**
 * Prune's plan, one line per backup: "<action>  <id>  <kind>  <size>  <reasons>".
 * The format is stable (scripts and tests read it line by line).
 */
export function printPrune(result: PruneResult, json: boolean): void {
  if (json) return printJson(result);
  for (const report of result.reports) {
    out(`${report.source} in ${report.repository}${result.dryRun ? ' (dry run)' : ''}: ${report.policy.logical}`);
    if (report.backups.some((b) => b.kind === 'physical') && report.policy.physical !== report.policy.logical) out(`  physical backups: ${report.policy.physical}`);
    if (report.backups.length > 0) {
      const lines = formatTable(
        ['', 'ID', 'KIND', 'SIZE', 'WHY'],
        report.backups.map((b) => [b.action, b.id, b.kind, formatBytes(b.storedBytes), b.reasons.join(', ')]),
        [3],
      ).split('\n');
      for (const line of lines.slice(1)) out(`  ${line}`);
    }
    for (const u of report.unreadable) out(`  keep    ${u.id}  ${u.reason}`);
    for (const l of report.leftovers) out(`  ${l.action.padEnd(6)}  ${l.id}  ${l.reason} (last written ${l.lastActivity})`);
    if (report.wal) out(`  wal     ${report.wal}${!result.dryRun && report.walRemoved > 0 ? `: removed ${report.walRemoved}` : ''}`);
    if (report.error) {
      out(`  not pruned: ${report.error.message}`);
      continue;
    }
    const deleting = report.backups.filter((b) => b.action === 'delete');
    const removing = report.leftovers.filter((l) => l.action === 'remove');
    const bytes = deleting.reduce((n, b) => n + b.storedBytes, 0);
    const what = `${deleting.length} backup(s) (${formatBytes(bytes)}), ${removing.length} leftover(s)`;
    out(result.dryRun ? `  dry run: would delete ${what}; nothing was changed` : `  deleted ${what}; kept ${report.backups.length - deleting.length} backup(s)`);
  }
  if (result.reports.length === 0) out('no sources to prune');
}

export function printPin(result: PinResult, json: boolean): void {
  if (json) return printJson(result);
  if (result.pinned) out(`pinned ${result.source}/${result.id} in ${result.repositories.join(', ')}: prune will never delete it (pgkeep unpin ${result.id} to undo)`);
  else if (result.changed) out(`unpinned ${result.source}/${result.id} in ${result.repositories.join(', ')}: the retention policy applies to it again`);
  else out(`${result.source}/${result.id} was not pinned (nothing changed)`);
}

/** `sources`: one row per source, configured or found in a repository. */
export function printSources(result: SourcesResult, json: boolean): void {
  if (json) return printJson(result);
  if (result.sources.length === 0) out('no sources yet: configure one in pgkeep.yaml, or take a first backup (pgkeep backup)');
  else {
    out(
      formatTable(
        ['SOURCE', 'CONFIGURED', 'BACKUPS', 'LAST BACKUP', 'FAILURES', 'WAL', 'REPOSITORIES'],
        result.sources.map((s) => [
          s.name,
          s.configured ? 'yes' : 'no',
          String(s.backups),
          s.lastBackup ? `${s.lastBackup.id} (${formatAge(new Date(s.lastBackup.finishedAt))})` : '-',
          String(s.failures),
          s.wal ? 'yes' : '-',
          s.repositories.join(', ') || '-',
        ]),
        [2, 4],
      ),
    );
  }
  for (const u of result.unreachable) out(`cannot read ${u.repository}: ${u.error}`);
}

export function printSourceRemoved(result: RemoveSourceResult, json: boolean): void {
  if (json) return printJson(result);
  const what = [result.removedBackups > 0 ? `${result.removedBackups} backup(s)` : '', result.removedWal ? 'its archived WAL' : ''].filter(Boolean).join(' and ');
  out(`removed source ${result.source}${what ? ` with ${what}` : ''} from ${result.repositories.join(', ')}`);
  if (result.stillConfigured) out(`it is still in the configuration file: its next backup creates it again`);
}

/** `status`: one block per source; `status --check`: one line per problem (or one line saying all is well). */
export function printStatus(result: StatusResult, json: boolean, check: boolean): void {
  if (json) return printJson(result);
  if (check) {
    const findings = result.sources.flatMap((s) => s.findings);
    if (findings.length === 0) out(`OK: ${result.sources.map((s) => s.source).join(', ') || 'nothing to check'} healthy`);
    for (const f of findings) out(`${f.source}: ${f.message}`);
    return;
  }
  for (const [i, s] of result.sources.entries()) {
    if (i > 0) out('');
    out(`${s.source}: ${s.healthy ? 'healthy' : `${s.findings.length} problem(s)`}`);
    const b = s.lastBackup;
    const verification = (v: StatusResult['sources'][number]['lastVerification']) =>
      v ? `${v.ok ? 'ok' : 'FAILED'} ${formatAge(new Date(v.finishedAt))} (${v.backupId}${v.problem ? `: ${v.problem}` : ''})` : 'none';
    const lines: [string, string][] = [
      ['last backup', b ? `${b.id} (${b.kind}), finished ${formatAge(new Date(b.finishedAt))}, ${formatBytes(b.storedBytes)} stored, took ${formatDuration(b.durationMs)}` : 'none'],
      ['last failure', s.lastFailure ? `${formatAge(new Date(s.lastFailure.failedAt))}: ${s.lastFailure.message}` : 'none'],
      ['last verified', s.lastVerification ? `${s.lastVerification.kind} ${verification(s.lastVerification)}` : 'never'],
      ['restore test', verification(s.lastRestoreTest)],
      ...s.repositories.map((r): [string, string] => ['repository', `${r.location}: ${r.error ? `unreadable (${r.error})` : `${r.backups} backup(s), ${formatBytes(r.storedBytes)}`}`]),
      ['pitr', s.pitr.archiving ? `archiving, last WAL ${formatAge(new Date(s.pitr.lastArchivedAt!))}${s.pitr.window ? `, window ${s.pitr.window.from} → ${s.pitr.window.to}` : ''}` : 'not archiving'],
      ...s.findings.map((f): [string, string] => ['problem', f.message]),
    ];
    const width = Math.max(...lines.map(([k]) => k.length));
    for (const [key, value] of lines) out(`  ${key.padEnd(width)}  ${value}`);
  }
  if (result.sources.length === 0) out('no sources');
  if (result.leftovers.length > 0) out('');
  for (const line of result.leftovers) out(`leftover: ${line}`);
}

export function printPitr(result: PitrResult, json: boolean): void {
  if (json) return printJson(result);
  const { plan } = result;
  const target = plan.target.kind === 'latest' ? 'the end of the archived WAL' : plan.target.kind === 'immediate' ? 'the end of the backup' : `${plan.target.kind} ${plan.target.value}`;
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

export function printCheckAll(all: CheckAllReport, json: boolean): void {
  if (json) return printJson(all);
  all.sources.forEach((report, i) => {
    if (i > 0) out('');
    printCheck(report, false);
  });
}

export function printCheck(report: CheckReport, json: boolean): void {
  if (json) return printJson(report);
  const width = Math.max(...report.items.map((i) => i.name.length));
  out(`checking ${report.scopes.join(' and ')} backups of ${report.source} (${report.scopeReason})`);
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
