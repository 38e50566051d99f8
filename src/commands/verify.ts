import { toolPaths } from '../config/settings.js';
import { readIdentities } from './repository-keys.js';
import { PgkeepError } from '../errors.js';
import { verifyBackup, type VerifyReport } from '../verify/verify-backup.js';
import type { CommandContext } from './command-context.js';
import { openRepository } from './open-repository.js';

/**
 * Checks one backup from the repository alone: checksums, sizes, full
 * decompression, and the dump's table of contents against the manifest.
 * Returns the report; throws VERIFY_FAILED (with the report) when it fails.
 */
export async function runVerify(ctx: CommandContext, ref: string): Promise<VerifyReport> {
  const { settings } = ctx;
  const source = settings.options.source;
  const repository = await openRepository(settings, { source });
  const manifest = await repository.resolveBackup(ref, source);
  const identities = manifest.objects.some((o) => o.encryption) ? await readIdentities(repository, ctx.keys) : [];
  ctx.info(`verifying ${manifest.source}/${manifest.id} in ${repository.location}`);
  const report = await verifyBackup(repository, manifest, {
    identities,
    signal: ctx.signal,
    ...toolPaths(settings),
    onProgress: (object, bytes) => ctx.progress({ phase: 'verify', bytes, totalBytes: manifest.totals.rawBytes, item: object }),
  });
  if (!report.ok) {
    throw new PgkeepError('VERIFY_FAILED', `backup ${manifest.id} failed verification: ${report.problems[0]}`, { details: { report } });
  }
  return report;
}
