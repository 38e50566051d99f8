import { configuredSourceName, repositoryUrls, toolPaths } from '../config/settings.js';
import { identitiesFor, manifestKeysOf, readIdentities } from './repository-keys.js';
import { isPgkeepError, PgkeepError, toPgkeepError } from '../errors.js';
import { requireLogical, type Manifest, type PhysicalManifest } from '../repository/manifest.js';
import type { DamagedBackup, Repository } from '../repository/repository.js';
import type { Verification } from '../repository/verification.js';
import { WalArchive } from '../repository/wal-archive.js';
import { verifyWal, type WalReport } from '../verify/verify-wal.js';
import { verifyBackup, type VerifyReport } from '../verify/verify-backup.js';
import { PGKEEP_VERSION } from '../version.js';
import type { CommandContext } from './command-context.js';
import { openRepository, repositoriesWithBackup } from './open-repository.js';
import { runRestoreTest, type RestoreTestReport } from './restore-test.js';
import { runPhysicalRestoreTest, type PhysicalRestoreTestReport } from './physical-restore-test.js';
import type { RecoveryTarget } from './pitr.js';

export interface VerifyRequest {
  /** Also restore into a scratch database and check it (implied by scratch and deep). */
  restoreTest?: boolean | undefined;
  /** same-server, local, or a postgresql:// URL. */
  scratch?: string | undefined;
  /** Compare table content hashes (backup --checksums) and run pg_amcheck. */
  deep?: boolean | undefined;
  /** Parallel pg_restore workers for the restore test. */
  jobs?: number | undefined;
  /** A physical backup: recover to this point instead of the end of the backup (a PITR drill). */
  target?: RecoveryTarget | undefined;
}

export interface VerifyResult extends VerifyReport {
  kind: Verification['kind'];
  /** How far the manifest itself is proven: checksum, authentication (encrypted repositories), or neither (older pgkeep). */
  manifest?: string | undefined;
  restoreTest?: RestoreTestReport | undefined;
  physicalTest?: PhysicalRestoreTestReport | undefined;
  /** Where the evidence was stored, or undefined when it could not be (a warning said why). */
  recorded?: string | undefined;
  /** --json output of a failed verification: the error, beside the report. */
  error?: { code: string; message: string } | undefined;
}

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
    const { repository, manifest } = (await repositoriesWithBackup(settings, ref, configured, undefined, ctx.warn))[0]!;
    return verifyResolved(ctx, repository, manifest, request);
  }
  const repository = await openRepository(settings, { source: settings.options.source });
  return verifyResolved(ctx, repository, await repository.resolveBackup(ref, settings.options.source, undefined, ctx.warn), request);
}

/** runVerify of a backup already found: `manifest`, read from `repository`. */
export async function verifyResolved(ctx: CommandContext, repository: Repository, manifest: Manifest, request: VerifyRequest = {}): Promise<VerifyResult> {
  const { settings } = ctx;
  const restoreTest = Boolean(request.restoreTest || request.scratch !== undefined || request.deep);
  const physical = restoreTest && manifest.kind === 'physical' ? manifest : undefined;
  if (physical && (request.scratch !== undefined || request.deep)) {
    throw new PgkeepError('USAGE', `backup ${manifest.id} is a physical backup: its restore test recovers the whole cluster into a throwaway one (--scratch and --deep apply to logical backups; pg_amcheck always runs)`);
  }
  if (request.target && !physical) throw new PgkeepError('USAGE', '--target-time and --latest apply to the restore test of a physical backup');
  const logical = restoreTest && !physical ? requireLogical(manifest, 'a restore test') : undefined;
  if (logical?.options.dataOnly) {
    throw new PgkeepError('USAGE', `backup ${manifest.id} is data-only: it has no schema to restore into an empty scratch database, so it cannot be restore-tested; verify it without --restore-test`);
  }
  const identities = await identitiesFor(repository, manifest, ctx.keys);
  const startedAt = new Date();
  // The manifest first: a changed one is refused before any object is read.
  const manifestCheck = repository.authenticateManifest(manifest, manifestKeysOf(repository, identities));


  // 1. integrity
  ctx.info(`verifying ${manifest.source}/${manifest.id} in ${repository.location}`);
  let toc: string | undefined;
  const report = await verifyBackup(repository, manifest, {
    identities,
    signal: ctx.signal,
    ...toolPaths(settings),
    onProgress: (object, bytes) => ctx.progress({ phase: 'verify', bytes, totalBytes: manifest.totals.rawBytes, item: object }),
    onToc: (listing) => (toc = listing),
  });
  const result: VerifyResult = { ...report, kind: restoreTest ? 'restore-test' : 'integrity', manifest: manifestCheck };

  // 2. the restore test
  if (report.ok && restoreTest) {
    try {
      if (physical) result.physicalTest = await runPhysicalRestoreTest(ctx, repository, physical, { target: request.target });
      else result.restoreTest = await runRestoreTest(ctx, repository, logical!, identities, { scratch: request.scratch, deep: request.deep, jobs: request.jobs, toc });
    } catch (error) {
      if (isPgkeepError(error, 'ABORTED') || ctx.signal.aborted) throw error;
      result.problems = [...result.problems, `restore failed: ${toPgkeepError(error).message}`];
      result.ok = false;
      result.durationMs = Date.now() - startedAt.getTime();
      result.recorded = await record(ctx, repository, manifest, result, startedAt);
      throw error;
    }
    result.problems = [...result.problems, ...(result.restoreTest ?? result.physicalTest)!.problems.map((p) => p.message)];
    result.ok = result.problems.length === 0;
  }
  result.durationMs = Date.now() - startedAt.getTime();

  // 3. the evidence
  result.recorded = await record(ctx, repository, manifest, result, startedAt);
  if (!report.ok) {
    throw new PgkeepError('VERIFY_FAILED', `backup ${manifest.id} failed verification: ${report.problems[0]}`, { details: { report: result } });
  }
  const first = (result.restoreTest ?? result.physicalTest)?.problems[0];
  if (first) throw new PgkeepError(first.code, `restore test of backup ${manifest.id} failed: ${first.message}`, { details: { report: result } });
  return result;
}

/** Stores the verification record; a repository that refuses the write costs a warning, not the verification. */
async function record(ctx: CommandContext, repository: Repository, manifest: Manifest, result: VerifyResult, startedAt: Date): Promise<string | undefined> {
  const test = result.restoreTest;
  const physicalTest = result.physicalTest;
  try {
    const verification = await repository.writeVerification({
      format: 1,
      backupId: manifest.id,
      source: manifest.source,
      kind: result.kind,
      ok: result.ok,
      startedAt: startedAt.toISOString(),
      finishedAt: new Date().toISOString(),
      durationMs: result.durationMs,
      repository: repository.location,
      pgkeepVersion: PGKEEP_VERSION,
      problems: result.problems,
      restore: test
        ? { scratch: `${test.scratch.kind}: "${test.scratch.database}" on ${test.scratch.server}`, durationMs: test.restoreMs, method: 'logical' }
        : physicalTest
          ? {
              scratch: physicalTest.scratch,
              durationMs: physicalTest.restoreMs,
              method: physicalTest.method,
              target: physicalTest.target,
              replayMs: physicalTest.replayMs,
              walFiles: physicalTest.walFiles,
              walBytes: physicalTest.walBytes,
              recoveryPoint: physicalTest.recoveryPoint,
            }
          : null,
      tables: test ? test.tables.map((t) => ({ schema: t.schema, name: t.name, expected: t.expected, actual: t.actual })) : [],
      checks: {
        objects: result.objects.map((o) => ({ name: o.name, ok: o.ok })),
        toc: result.tables,
        ...(test
          ? {
              schema: test.schema,
              migrations: test.migrations,
              probes: test.probes,
              deep: test.deep,
              contentMismatches: test.tables.filter((t) => t.contentOk === false).map((t) => `${t.schema}.${t.name}`),
              notes: test.notes,
            }
          : {}),
        ...(physicalTest ? { databases: physicalTest.databases, probes: physicalTest.probes, notes: physicalTest.notes, extractMs: physicalTest.extractMs } : {}),
      },
    });
    return repository.verificationFolder(verification.source, verification.backupId);
  } catch (error) {
    ctx.warn(`could not store the verification record in ${repository.location}: ${(error as Error).message}`);
    return undefined;
  }
}

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
  const report = await verifyWal(new WalArchive(repository.storage, source), backups, { identities, signal: ctx.signal, onFile: (name) => ctx.progress({ phase: 'verify WAL', bytes: 0, item: name }) });
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
