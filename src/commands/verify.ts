import { configuredSourceName, repositoryUrls } from '../config/settings.js';
import { readIdentities } from '../repository/repository-keys.js';
import { isPgkeepError, PgkeepError, toPgkeepError } from '../errors.js';
import type { PhysicalManifest } from '../repository/manifest.js';
import type { DamagedBackup, Repository } from '../repository/repository.js';
import { verifyWal, type WalReport } from '../verify/verify-wal.js';
import type { CommandContext } from '../registry/command-context.js';
import { openRepository, repositoriesWithBackup } from '../repository/open-repository.js';
import { z } from 'zod';
import { resolveSource } from '../config/settings.js';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { positiveInt } from '../registry/option-values.js';
import { formatBytes, formatCount, formatDuration, formatTable } from '../cli/format.js';
import { runVerifyCopies, verifiesSeveralCopies, type CopiesReport } from '../verify/run-verify-copies.js';
import { verifyResolved, type VerifyRequest, type VerifyResult } from '../verify/verify-resolved.js';
import { checkRepositoryContent, type RepositoryContentCheck } from '../repository/content-store/check-repository-content.js';

/**
 * Checks one backup:
 *
 *  1. integrity, from the repository alone: checksums, sizes, full
 *     decompression, the dump's table of contents against the manifest
 *  2. with --restore-test (or --scratch, --deep): restore it into a scratch
 *     database and prove it there (see runRestoreTest), unless step 1 failed
 *  3. store the evidence in the repository (verifications/<id>/<time>.json),
 *     also when a check failed; an interrupted verification stores nothing
 *
 * Throws on failure, naming the first mismatch: ROW_COUNT_MISMATCH or
 * VERIFY_FAILED (with the result in details.report), or the restore's own error.
 */
export async function runVerify(ctx: CommandContext, ref: string, request: VerifyRequest = {}): Promise<VerifyResult> {
  const { settings } = ctx;
  // A source with several repositories: the first (in config order) that holds the backup; --repo picks one.
  const configured = configuredSourceName(settings);
  if (repositoryUrls(settings, configured).length > 1) {
    const { repository, manifest } = (await repositoriesWithBackup(settings, ref, configured, drillKind(request), ctx.warn))[0]!;
    return verifyResolved(ctx, repository, manifest, request);
  }
  const repository = await openRepository(settings, { source: settings.options.source });
  return verifyResolved(ctx, repository, await repository.resolveBackup(ref, settings.options.source, drillKind(request), ctx.warn), request);
}

/** A PITR drill of "latest" drills the newest physical backup. */
const drillKind = (request: VerifyRequest) => (request.pitrDrill || request.target ? ('physical' as const) : undefined);

/**
 * Verifies the WAL archive of a source: every archived file read back against
 * its record, and for each physical backup the window of recovery targets it
 * can reach (across timelines). Throws VERIFY_FAILED (with the report) on a
 * damaged file or a backup whose own WAL is not all there.
 */
export async function runVerifyWal(ctx: CommandContext, repository: Repository, source: string): Promise<WalReport> {
  const backups = (await repository.listBackups(source)).filter((m): m is PhysicalManifest => m.kind === 'physical');
  const identities = repository.info.encryption ? await readIdentities(repository, ctx.keys) : [];
  ctx.info(`verifying the WAL archive of ${source} in ${repository.location}`);
  const report = await verifyWal(repository.walArchive(source), backups, { identities, signal: ctx.signal, onFile: (name) => ctx.progress({ phase: 'verify WAL', bytes: 0, item: name }) });
  if (!report.ok) throw new PgkeepError('VERIFY_FAILED', `the WAL archive of ${source} failed verification: ${report.problems[0]}`, { details: { report } });
  return report;
}

/** One backup's outcome in `verify all`. */
export interface VerifyAllEntry {
  source: string;
  id: string;
  state: 'ok' | 'failed' | 'damaged';
  /** How far its manifest is proven (intact ones), or what is wrong. */
  detail: string;
}

/**
 * `verify all`: the integrity of every backup in the repository (of
 * --source, when given), one after the other, going on past a broken one,
 * so every broken backup is named: damaged manifests (never readable), and
 * backups whose objects fail their checks. Throws VERIFY_FAILED naming them
 * (the entries in details.result) when any is broken.
 */
export async function runVerifyAll(ctx: CommandContext): Promise<VerifyAllEntry[]> {
  const source = ctx.settings.options.source;
  const repository = await openRepository(ctx.settings, { source });
  const damaged: DamagedBackup[] = [];
  const backups = await repository.listBackups(source, damaged);
  const entries: VerifyAllEntry[] = damaged.map((d) => ({ source: d.source, id: d.id, state: 'damaged', detail: d.error.message }));
  for (const manifest of backups) {
    try {
      const result = await verifyResolved(ctx, repository, manifest);
      entries.push({ source: manifest.source, id: manifest.id, state: 'ok', detail: `manifest ${result.manifest ?? 'read'}` });
    } catch (error) {
      if (isPgkeepError(error, 'ABORTED') || ctx.signal.aborted) throw error;
      const failure = toPgkeepError(error);
      // Only verdicts on the backup; a repository or key that cannot be read stops the run.
      if (!['VERIFY_FAILED', 'CHECKSUM_MISMATCH', 'MANIFEST_INVALID', 'STORAGE_NOT_FOUND'].includes(failure.code)) throw error;
      entries.push({ source: manifest.source, id: manifest.id, state: failure.code === 'MANIFEST_INVALID' ? 'damaged' : 'failed', detail: failure.message });
    }
  }
  entries.sort((a, b) => (a.source < b.source ? -1 : a.source > b.source ? 1 : a.id < b.id ? -1 : 1));
  const broken = entries.filter((e) => e.state !== 'ok');
  if (broken.length > 0) {
    throw new PgkeepError('VERIFY_FAILED', `${broken.length} of ${entries.length} backup(s) in ${repository.location} are broken: ${broken.map((e) => `${e.source}/${e.id}`).join(', ')}`, { details: { result: entries } });
  }
  return entries;
}

const VerifyCommandRequest = z.object({
  /** wal: the source's WAL archive; all: the integrity of every backup; one: one backup (every copy of it when everyCopy). */
  mode: z.enum(['wal', 'all', 'one', 'content']),
  /** content: the share of the content store's packs to read (1: all). */
  fraction: z.number().positive().max(1).optional(),
  ref: z.string().optional(),
  restoreTest: z.boolean().optional(),
  scratch: z.string().optional(),
  deep: z.boolean().optional(),
  jobs: z.number().int().positive().optional(),
  target: z.union([z.object({ kind: z.literal('latest') }), z.object({ kind: z.literal('time'), value: z.string() })]).optional(),
  /** A PITR drill: to `target`, or a random point of the window. */
  pitrDrill: z.boolean().optional(),
  /** A source with several repositories: verify the backup in each (the CLI); a job verifies the first copy. */
  everyCopy: z.boolean(),
});
export type VerifyCommandRequest = z.output<typeof VerifyCommandRequest>;

export type VerifyCommandResult =
  | { mode: 'wal'; wal: WalReport }
  | { mode: 'all'; entries: VerifyAllEntry[] }
  | { mode: 'copies'; copies: CopiesReport }
  | { mode: 'one'; report: VerifyResult }
  | { mode: 'content'; content: RepositoryContentCheck };

/** `pgkeep verify`; the jobs `restoreTest` (scheduled) and `verify` (the API's "verify this backup"). */
export const verifyCommand: CommandSpec<VerifyCommandRequest, VerifyCommandResult> = {
  name: 'verify',
  description: "check a backup: checksums, decompression, table of contents against the manifest; --restore-test also restores it into a scratch database and proves it (--wal: the WAL archive and each physical backup's PITR window)",
  arguments: [{ name: '[backup]', description: 'backup id, latest, or all (the integrity of every backup, naming the broken ones)' }],
  options: [
    { flags: '--restore-test', description: 'restore into a scratch database, compare row counts, schema, migrations, run probes; then drop it' },
    { flags: '--scratch <where>', description: 'where to restore-test: same-server (database pgkeep_verify_<id>), local (a throwaway cluster), or a postgresql:// URL' },
    { flags: '--deep', description: 'with a restore test: compare table content hashes (backup --checksums) and run pg_amcheck' },
    { flags: '--jobs <n>', description: 'parallel pg_restore workers for the restore test', parse: positiveInt('--jobs') },
    { flags: '--pitr-drill', description: 'a physical backup ("latest": the newest physical one): recover to a random point between its end and the newest archived transaction, prove the target was reached, and report the RPO the archive gives' },
    { flags: '--target-time <time>', description: 'a PITR drill to this time instead of a random one' },
    { flags: '--latest', description: 'a PITR drill to the end of the archived WAL' },
    { flags: '--wal', description: "verify the source's WAL archive: every file's checksums, gaps, and the recovery window of each physical backup" },
    { flags: '--read-data-subset <percent>', description: 'a deduplicating repository: every chunk of every backup is indexed, and this share of the packs (today\'s slot) is read whole, so daily runs cover all; 100% reads all' },
  ],
  help: { globals: ['config', 'repo', 'source', 'db', 'identity'], examples: ['pgkeep verify latest --restore-test', 'pgkeep verify latest --pitr-drill', 'pgkeep verify --read-data-subset 10%'] },
  parse: requestParser(VerifyCommandRequest, ({ args: [ref], options }) => {
    if (options.wal) return { mode: 'wal', everyCopy: true };
    if (options.readDataSubset !== undefined) {
      const match = /^(\d+(?:\.\d+)?)%?$/.exec(String(options.readDataSubset).trim());
      const percent = match ? Number(match[1]) : NaN;
      if (!(percent > 0 && percent <= 100)) throw new PgkeepError('USAGE', `--read-data-subset takes a share of the packs such as 10% (got "${String(options.readDataSubset)}")`);
      if (ref !== undefined) throw new PgkeepError('USAGE', '--read-data-subset checks the whole repository: give no backup');
      return { mode: 'content', fraction: percent / 100, everyCopy: false };
    }
    if (ref === undefined) throw new PgkeepError('USAGE', 'verify needs a backup id, latest or all (or --wal for the WAL archive)');
    if (ref === 'all') {
      // every backup's integrity, naming each broken one (one repository: --repo or the source's first)
      if (options.restoreTest || options.pitrDrill || options.scratch !== undefined || options.deep) throw new PgkeepError('USAGE', 'verify all checks integrity only: restore-test one backup at a time (verify ID --restore-test)');
      return { mode: 'all', everyCopy: true };
    }
    const targetTime = options.targetTime as string | undefined;
    if (targetTime !== undefined && options.latest) throw new PgkeepError('USAGE', 'give --target-time or --latest, not both');
    if (targetTime !== undefined && Number.isNaN(new Date(targetTime).getTime())) throw new PgkeepError('USAGE', `--target-time "${targetTime}" is not a time: use e.g. 2026-11-21T14:05:00Z`);
    const target = options.latest ? { kind: 'latest' } : targetTime !== undefined ? { kind: 'time', value: targetTime } : undefined;
    const pitrDrill = Boolean(options.pitrDrill) || target !== undefined;
    return { mode: 'one', ref, restoreTest: Boolean(options.restoreTest) || pitrDrill, pitrDrill: pitrDrill || undefined, scratch: options.scratch, deep: options.deep, jobs: options.jobs, target, everyCopy: true };
  }),
  async run(ctx, request) {
    if (request.mode === 'wal') {
      const source = resolveSource(ctx.settings);
      const repository = await openRepository(ctx.settings, { source: source.name });
      return { mode: 'wal', wal: await runVerifyWal(ctx, repository, source.name) };
    }
    if (request.mode === 'all') return { mode: 'all', entries: await runVerifyAll(ctx) };
    if (request.mode === 'content') return { mode: 'content', content: await runVerifyContent(ctx, request.fraction ?? 1) };
    const { ref, mode: _mode, everyCopy, ...verify } = request;
    // A source with several repositories: every copy is verified (--repo picks one).
    if (everyCopy && verifiesSeveralCopies(ctx.settings)) return { mode: 'copies', copies: await runVerifyCopies(ctx, ref!, verify) };
    return { mode: 'one', report: await runVerify(ctx, ref!, verify) };
  },
  print(result, out) {
    if (result.mode === 'content') printContentCheck(result.content, out);
    else if (result.mode === 'wal') printWalVerify(result.wal, out);
    else if (result.mode === 'all') printVerifyAll(result.entries, out);
    else if (result.mode === 'copies') printVerifyCopies(result.copies, out);
    else printVerify(result.report, out);
  },
  printFailure(error, out, request) {
    const details = error.details;
    if (request.mode === 'wal') {
      if (details?.report) printWalVerify(details.report as WalReport, out);
      return false;
    }
    if (request.mode === 'all') {
      if (details?.result && !out.json) printVerifyAll(details.result as VerifyAllEntry[], out);
      return false;
    }
    if (request.mode === 'content') {
      if (details?.content && !out.json) printContentCheck(details.content as RepositoryContentCheck, out);
      return false;
    }
    const failure = { code: error.code, message: error.message };
    if (details?.copies) {
      // one JSON document: the reports of every copy, with the error beside them
      printVerifyCopies(out.json ? { ...(details.copies as CopiesReport), error: failure } : (details.copies as CopiesReport), out);
      return out.json;
    }
    if (details?.report) {
      const report = details.report as VerifyResult;
      printVerify(out.json ? { ...report, error: failure } : report, out);
      return out.json;
    }
    return false;
  },
  jobs: [
    {
      kind: 'restoreTest',
      scheduled: true,
      // the restore test of `verify --restore-test`: scratch from the source's verify: config, evidence recorded
      request: ({ target }) => ({ mode: 'one', ref: target ?? 'latest', restoreTest: true, everyCopy: false }),
      outcome: (result) => {
        const report = (result as { report: VerifyResult }).report;
        return { backupId: report.id, bytes: report.objects.reduce((sum, o) => sum + o.rawBytes, 0), detail: `restore test of ${report.id} passed` };
      },
    },
    {
      kind: 'pitrDrill',
      scheduled: true,
      // verify latest --pitr-drill: the newest physical backup, to a random point of the window; evidence recorded as a pitr-drill
      request: ({ target }) => ({ mode: 'one', ref: target ?? 'latest', restoreTest: true, pitrDrill: true, everyCopy: false }),
      outcome: (result) => {
        const report = (result as { report: VerifyResult }).report;
        const pitr = report.physicalTest?.pitr;
        return { backupId: report.id, bytes: report.objects.reduce((sum, o) => sum + o.rawBytes, 0), detail: `PITR drill of ${report.id} to ${pitr?.target ?? 'its target'} passed${pitr ? ` (RPO ${formatDuration(pitr.rpoMs)})` : ''}` };
      },
    },
    {
      kind: 'verify',
      scheduled: false,
      request: ({ target }) => ({ mode: 'one', ref: target ?? 'latest', everyCopy: false }),
      outcome: (result) => {
        const report = (result as { report: VerifyResult }).report;
        return { backupId: report.id, bytes: report.objects.reduce((sum, o) => sum + o.rawBytes, 0), detail: `backup ${report.id} verified` };
      },
    },
  ],
};

/**
 * `verify --read-data-subset`: the content store of the repository (--repo,
 * or the source's first); VERIFY_FAILED naming every damaged pack and the
 * backups it affects.
 */
async function runVerifyContent(ctx: CommandContext, fraction: number): Promise<RepositoryContentCheck> {
  const repository = await openRepository(ctx.settings, { source: ctx.settings.options.source });
  const content = await checkRepositoryContent(repository, ctx.keys, { fraction });
  const broken = [...content.damaged.map((d) => `pack ${d.pack.slice(0, 16)}… ${d.reason} (backups: ${d.backups.join(', ') || 'none'})`), ...content.missing.map((m) => `backup ${m.backup} names ${m.chunks} chunk(s) in no pack`)];
  if (broken.length > 0) throw new PgkeepError('VERIFY_FAILED', `the content store of ${repository.location} is damaged: ${broken.join('; ')}`, { details: { content } });
  return content;
}

function printContentCheck(c: RepositoryContentCheck, out: CommandOutput): void {
  if (out.json) return out.document(c);
  const share = c.fraction >= 1 ? 'every pack' : `slot ${c.slot + 1} of ${c.slots} (${Math.round(c.fraction * 100)}% of the packs; the next runs read the others)`;
  out.line(`content store of ${c.repository}: ${c.packsChecked} of ${c.packsTotal} pack(s) read (${formatBytes(c.bytesRead)}), ${share}${c.blobsChecked ? '' : '; checked against their names only (no identity: blobs not opened)'}`);
  for (const d of c.damaged) out.line(`  DAMAGED pack ${d.pack}: ${d.reason}; backups with chunks in it: ${d.backups.join(', ') || 'none'}`);
  for (const m of c.missing) out.line(`  MISSING ${m.chunks} chunk(s) of backup ${m.backup}`);
  for (const u of c.unreadable) out.line(`  UNREADABLE manifest of ${u}`);
  if (c.damaged.length + c.missing.length === 0) out.line('  every chunk of every backup is indexed; the packs read are whole');
}

function printVerifyAll(entries: VerifyAllEntry[], out: CommandOutput): void {
  if (out.json) return out.document(entries);
  for (const e of entries) out.line(`${e.state === 'ok' ? 'ok     ' : e.state === 'failed' ? 'FAILED ' : 'DAMAGED'}  ${e.source}/${e.id}  ${e.detail}`);
}

// Printing for a terminal (moved from src/cli/print.ts)

function printVerify(report: VerifyResult, out: CommandOutput): void {
  if (out.json) return out.document(report);
  if (report.manifest) out.line(`manifest: ${report.manifest}`);
  for (const o of report.objects) {
    out.line(`${o.ok ? 'ok    ' : 'FAILED'}  ${o.name}  ${formatBytes(o.storedBytes)} stored, ${formatBytes(o.rawBytes)} raw${o.problem ? `: ${o.problem}` : ''}`);
  }
  out.line(`tables: ${report.tables.found} of ${report.tables.expected} in the dump's table of contents`);
  const test = report.restoreTest;
  if (test) {
    out.line(`restore test: restored into "${test.scratch.database}" on ${test.scratch.server} in ${formatDuration(test.restoreMs)} (dropped afterwards)`);
    if (test.tables.length > 0) {
      const deep = test.tables.some((t) => t.contentOk !== undefined);
      out.line(
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
    if (test.schema) out.line(`schema: ${test.schema.checked - test.schema.missing.length} of ${test.schema.checked} objects of the table of contents present${test.schema.missing.length ? `; missing: ${test.schema.missing.join(', ')}` : ''}`);
    if (test.schemaDump?.compared) out.line(`whole schema: ${test.schemaDump.objects} objects (definitions, owners, privileges) ${test.schemaDump.differences === 0 ? 'match the backup' : `DIFFER from the backup (${test.schemaDump.differences})`}`);
    if (test.databaseState) out.line(`database state (owner, privileges, comment, settings, locale): ${test.databaseState.differences.length === 0 ? 'matches the backup' : `DIFFERS: ${test.databaseState.differences.join('; ')}`}`);
    for (const m of test.migrations.tables) {
      out.line(`migrations: ${m.schema}.${m.name} ${m.ok ? 'matches the backup' : 'DIFFERS from the backup'} (${m.actual ? `${m.actual.latest ?? 'no version'}, ${m.actual.rows} rows` : 'missing'}; recorded ${m.expected.latest ?? 'no version'}, ${m.expected.rows} rows)`);
    }
    test.probes.forEach((p, i) => out.line(`probe ${i + 1}: ${p.ok ? 'ok    ' : 'FAILED'}  ${p.sql.replace(/\s+/g, ' ').trim()} → ${p.error ? `error: ${p.error}` : (p.value ?? 'no value')}`));
    if (test.deep) {
      const { amcheck } = test.deep;
      const found = amcheck.status === 'skipped' ? 'skipped' : amcheck.ok ? 'no corruption found' : 'CORRUPTION FOUND';
      const checks = amcheck.checks === 'btree' ? ' (B-tree indexes only: heap checks skipped)' : '';
      out.line(`deep: content of ${test.deep.compared} table(s) compared with the backup's checksums; amcheck${amcheck.version ? ` ${amcheck.version}` : ''}: ${found}${checks}`);
    }
    for (const note of test.notes) out.line(`note: ${note}`);
  }
  const drill = report.physicalTest;
  if (drill) {
    out.line(`${drill.method === 'pitr' ? 'PITR drill' : 'restore test'}: recovered to ${drill.target} in ${formatDuration(drill.restoreMs)} on ${drill.scratch} (removed afterwards)`);
    out.line(`  extract ${formatDuration(drill.extractMs)}, WAL replay ${formatDuration(drill.replayMs)} (${drill.walFiles} file(s), ${formatBytes(drill.walBytes)})`);
    const point = drill.recoveryPoint;
    out.line(`  recovery point: ${point.stoppedAt ?? (point.redoDoneAt ? `redo done at ${point.redoDoneAt}` : 'end of recovery')}${point.lastTransactionAt ? `; last transaction at ${point.lastTransactionAt}` : ''}${point.timeline ? `; new timeline ${point.timeline}` : ''}`);
    const pitr = drill.pitr;
    if (pitr) {
      out.line(`  window: ${pitr.window.from} → ${pitr.window.to}; target ${pitr.target} (${pitr.chosen === 'random' ? 'chosen at random' : pitr.chosen === 'given' ? 'given' : 'the end of the archive'})`);
      out.line(`  target ${pitr.reached ? 'reached' : 'NOT reached'}: last transaction replayed ${pitr.lastReplayedAt ?? 'none'}${pitr.stopRecordAt ? `, stopped at the transaction of ${pitr.stopRecordAt}` : ''}`);
      out.line(`  RPO the archive gives: ${formatDuration(pitr.rpoMs)} (newest recoverable point ${pitr.recoverableTo.at}, ${pitr.recoverableTo.basis === 'commit' ? 'the newest transaction archived' : 'when the newest segment was archived'})`);
    }
    const facts = drill.facts;
    if (facts) out.line(`  facts: ${facts.matched} of ${facts.recorded} table(s) recorded at backup time present with their row estimates${facts.missing.length ? `; missing: ${facts.missing.slice(0, 5).join(', ')}` : ''}${facts.differing.length ? `; estimates differ: ${facts.differing.slice(0, 5).map((d) => d.table).join(', ')}` : ''}`);
    for (const d of drill.databases) out.line(`  database ${d.name}: accepts connections; pg_amcheck ${d.amcheck.status === 'skipped' ? 'skipped' : d.amcheck.ok ? 'found nothing' : 'FOUND CORRUPTION'}`);
    drill.probes.forEach((p, i) => out.line(`  probe ${i + 1}: ${p.ok ? 'ok    ' : 'FAILED'}  ${p.sql.replace(/\s+/g, ' ').trim()} → ${p.error ? `error: ${p.error}` : (p.value ?? 'no value')}`));
    for (const note of drill.notes) out.line(`note: ${note}`);
  }
  if (report.ok) out.line(`backup ${report.id} ${test || drill ? 'restores and checks out' : 'is intact'} (${formatDuration(report.durationMs)})`);
  else for (const problem of report.problems) out.line(`problem: ${problem}`);
}

/** Verification of every copy of a backup (a source with several repositories). */
function printVerifyCopies(result: CopiesReport, out: CommandOutput): void {
  if (out.json) return out.document(result);
  for (const copy of result.copies) {
    out.line(`${copy.repository}:`);
    if (copy.report) printVerify(copy.report, { ...out, json: false });
    else out.line(`FAILED  ${copy.error?.message ?? 'not verified'}`);
  }
  for (const url of result.missingFrom) out.line(`${url}: does not hold backup ${result.id}`);
  if (result.ok) out.line(`backup ${result.id} is intact in ${result.copies.length} ${result.copies.length === 1 ? 'repository' : 'repositories'}`);
}

function printWalVerify(report: WalReport, out: CommandOutput): void {
  if (out.json) return out.document(report);
  out.line(`WAL archive of ${report.source}: ${report.files} file(s), ${formatBytes(report.bytes)} stored, ${report.damaged.length} damaged`);
  for (const d of report.damaged) out.line(`FAILED  ${d.name}: ${d.problem}`);
  for (const w of report.windows) {
    const through = w.through ? `through ${w.through.lsn} (${w.through.segment}, timeline ${w.through.timeline})` : 'nothing';
    out.line(
      `${w.consistent ? 'ok    ' : 'FAILED'}  backup ${w.backup}: ${w.consistent ? `recovery targets from ${w.from.time} (LSN ${w.from.lsn}) ${through}` : 'its own WAL is not all archived'}` +
        `${w.gapAt ? `; first gap at ${w.gapAt}` : ''}${w.timelines.length > 1 ? `; timelines ${w.timelines.join(' → ')}` : ''}`,
    );
  }
  out.line(report.ok ? 'the WAL archive is intact' : `problem: ${report.problems[0]}`);
}
