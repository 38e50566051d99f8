import { toolPaths } from '../config/settings.js';
import { identitiesFor, manifestKeysOf } from '../repository/repository-keys.js';
import { isPgkeepError, PgkeepError, toPgkeepError } from '../errors.js';
import { requireLogical, type Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { DrillKind, Verification } from '../repository/verification.js';
import { verifyBackup, type VerifyReport } from './verify-backup.js';
import { PGKEEP_VERSION } from '../version.js';
import type { CommandContext } from '../registry/command-context.js';
import { runRestoreTest, type RestoreTestReport } from './run-restore-test.js';
import { runPhysicalRestoreTest, type PhysicalRestoreTestReport } from './run-physical-restore-test.js';
import type { RecoveryTarget } from '../restore/run-pitr.js';

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
  /** A physical backup: a PITR drill, to `target` or else a random point of the window. */
  pitrDrill?: boolean | undefined;
}

export interface VerifyResult extends VerifyReport {
  kind: Verification['kind'];
  /** Restore tests: which drill (status judges the age of each kind on its own). */
  drill?: DrillKind | undefined;
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
 * Verifies one backup already found (`manifest`, read from `repository`):
 *
 *  1. integrity, from the repository alone: checksums, sizes, full
 *     decompression, the dump's table of contents against the manifest
 *  2. with a restore test (restoreTest, scratch or deep): restore it into a
 *     scratch database and prove it there (runRestoreTest, or
 *     runPhysicalRestoreTest for a physical backup), unless step 1 failed
 *  3. store the evidence in the repository (verifications/<id>/<time>.json),
 *     also when a check failed; an interrupted verification stores nothing
 *
 * Shared by verify (one copy, or every copy of a multi-repository source) and verify all.
 */
export async function verifyResolved(ctx: CommandContext, repository: Repository, manifest: Manifest, request: VerifyRequest = {}): Promise<VerifyResult> {
  const { settings } = ctx;
  const restoreTest = Boolean(request.restoreTest || request.pitrDrill || request.scratch !== undefined || request.deep);
  const physical = restoreTest && manifest.kind === 'physical' ? manifest : undefined;
  if (physical && (request.scratch !== undefined || request.deep)) {
    throw new PgkeepError('USAGE', `backup ${manifest.id} is a physical backup: its restore test recovers the whole cluster into a throwaway one (--scratch and --deep apply to logical backups; pg_amcheck always runs)`);
  }
  if ((request.target || request.pitrDrill) && !physical) throw new PgkeepError('USAGE', `backup ${manifest.id} is a ${manifest.kind} backup: --pitr-drill, --target-time and --latest apply to physical backups`);
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
  const drill: DrillKind | undefined = !restoreTest ? undefined : !physical ? 'logical-restore-test' : request.target || request.pitrDrill ? 'pitr-drill' : 'physical-restore-test';
  const result: VerifyResult = { ...report, kind: restoreTest ? 'restore-test' : 'integrity', drill, manifest: manifestCheck };

  // 2. the restore test
  if (report.ok && restoreTest) {
    try {
      if (physical) result.physicalTest = await runPhysicalRestoreTest(ctx, repository, physical, { target: request.target, pitrDrill: request.pitrDrill });
      else result.restoreTest = await runRestoreTest(ctx, repository, logical!, identities, { scratch: request.scratch, deep: request.deep, jobs: request.jobs, toc });
    } catch (error) {
      // bad input (a target outside the window) is not a failed drill: nothing is recorded
      if (isPgkeepError(error, 'ABORTED') || isPgkeepError(error, 'USAGE') || ctx.signal.aborted) throw error;
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
      ...(result.drill ? { drill: result.drill } : {}),
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
              recoveryPoint: {
                ...physicalTest.recoveryPoint,
                ...(physicalTest.pitr ? { targetReached: physicalTest.pitr.reached, lastReplayedAt: physicalTest.pitr.lastReplayedAt, stopRecordAt: physicalTest.pitr.stopRecordAt } : {}),
              },
              ...(physicalTest.pitr ? { recoverableTo: physicalTest.pitr.recoverableTo.at, rpoMs: physicalTest.pitr.rpoMs } : {}),
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
        ...(physicalTest ? { databases: physicalTest.databases, probes: physicalTest.probes, notes: physicalTest.notes, extractMs: physicalTest.extractMs, ...(physicalTest.facts ? { facts: physicalTest.facts } : {}), ...(physicalTest.pitr ? { pitr: physicalTest.pitr } : {}) } : {}),
      },
    });
    return repository.verificationFolder(verification.source, verification.backupId);
  } catch (error) {
    ctx.warn(`could not store the verification record in ${repository.location}: ${(error as Error).message}`);
    return undefined;
  }
}

