import { configuredSourceName, repositoryUrls, type Settings } from '../config/settings.js';
import { PgkeepError, toPgkeepError } from '../errors.js';
import type { CommandContext } from '../registry/command-context.js';
import { repositoriesWithBackupSettled } from '../repository/open-repository.js';
import { verifyResolved, type VerifyRequest, type VerifyResult } from './verify-resolved.js';
import { isUnreadError } from './verify-backup.js';

/** One repository's copy of a backup, and what verifying it found. */
export interface CopyVerification {
  repository: string;
  ok: boolean;
  report?: VerifyResult | undefined;
  /** Set when the copy could not be verified at all (unreadable manifest, missing key, …). */
  error?: { code: string; message: string } | undefined;
  /** The copy could not be read (network, I/O): no verdict on it, neither intact nor damaged. */
  unread?: boolean | undefined;
}

export interface CopiesReport {
  id: string;
  source: string;
  ok: boolean;
  copies: CopyVerification[];
  /** Repositories of the source that do not hold this backup (it was written to the others only). */
  missingFrom: string[];
  /** --json output of a failed verification: the error, beside the reports. */
  error?: { code: string; message: string } | undefined;
}

/**
 * Verifies a backup of a source with several repositories (`repos:`): every
 * copy, in config order, because an off-site copy nobody reads is only hoped
 * to be intact. Resolves when every copy is intact; otherwise throws
 * VERIFY_FAILED naming the damaged copies and, when there is one, the intact
 * copy that restore will use (restore falls back to it on its own).
 * A restore test (`request.restoreTest`, `--scratch`, `--deep`) runs once, on
 * the first copy that passes the integrity check: the copies hold the same dump.
 * `--repo`, or a source with one repository, verifies that one only (runVerify).
 */
export async function runVerifyCopies(ctx: CommandContext, ref: string, request: VerifyRequest = {}): Promise<CopiesReport> {
  const { settings } = ctx;
  const source = configuredSourceName(settings);

  // 1. the newest backup matching `ref` in any repository, and every repository that holds it
  // a PITR drill of "latest" drills the newest physical backup
  const { found: holders, failed } = await repositoriesWithBackupSettled(settings, ref, source, request.pitrDrill || request.target ? 'physical' : undefined);
  const { id, source: sourceName } = holders[0]!.manifest;
  const holding = new Set(holders.map((h) => h.repository.location));
  // a repository that could not be read (the network) may well hold the backup: it is unverified, not missing
  const unreadable = failed.filter((f) => isUnreadError(f.error));
  const missingFrom = repositoryUrls(settings, source).filter((url) => !holding.has(url) && !unreadable.some((f) => f.url === url));

  // 2. each copy verified on its own, as `--repo` would
  const copies: CopyVerification[] = [];
  let restoreTested = false;
  for (const { repository, manifest } of holders) {
    let report: VerifyResult | undefined;
    try {
      report = await verifyResolved(ctx, repository, manifest, restoreTested ? {} : request);
      copies.push({ repository: repository.location, ok: true, report });
    } catch (error) {
      const failure = toPgkeepError(error);
      if (failure.code === 'ABORTED') throw failure;
      report = failure.details?.report as VerifyResult | undefined;
      copies.push({ repository: repository.location, ok: false, report, error: { code: failure.code, message: failure.message }, ...(isUnreadError(failure) ? { unread: true } : {}) });
    }
    // once one intact copy went through the restore test, the others only need their integrity checked
    if (report?.objects.every((o) => o.ok)) restoreTested = true;
  }

  for (const { url, error } of unreadable) {
    const failure = toPgkeepError(error);
    copies.push({ repository: url, ok: false, error: { code: failure.code, message: failure.message }, unread: true });
  }

  // 3. the verdict: every copy intact, or which are damaged and which one to restore from
  const result: CopiesReport = { id, source: sourceName, ok: copies.every((c) => c.ok), copies, missingFrom };
  if (!result.ok) {
    const damaged = copies.filter((c) => !c.ok && !c.unread);
    const unread = copies.filter((c) => c.unread);
    const intact = copies.find((c) => c.ok);
    const advice = intact ? `; the copy in ${intact.repository} is intact (restore falls back to it)` : '';
    const notRead = unread.map((c) => `; the copy in ${c.repository} could not be read (${c.error?.message})`).join('');
    if (damaged.length === 0) {
      // nothing was found wrong: only unreadable copies, which is the network's or the disk's failure, not the backup's
      const first = unread[0]!;
      throw new PgkeepError(first.error!.code as PgkeepError['code'], `backup ${id} could not be verified everywhere${notRead}${advice}`, { details: { copies: result } });
    }
    const what = damaged.map((c) => `in ${c.repository}: ${c.report?.problems[0] ?? c.error?.message}`).join('; ');
    throw new PgkeepError('VERIFY_FAILED', `backup ${id} is damaged ${what}${advice}${notRead}`, { details: { copies: result } });
  }
  return result;
}


/** True when verify should check several copies: the source has several repositories and no --repo picks one. */
export function verifiesSeveralCopies(settings: Settings): boolean {
  return repositoryUrls(settings, configuredSourceName(settings)).length > 1;
}
