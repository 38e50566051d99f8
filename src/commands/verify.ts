import { configuredSources, repositoryUrls, selectedSourceName, toolPaths } from '../config/settings.js';
import { identitiesFor, readIdentities } from './repository-keys.js';
import type { PhysicalManifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { WalArchive } from '../repository/wal-archive.js';
import { verifyWal, type WalReport } from '../verify/verify-wal.js';
import { PgkeepError } from '../errors.js';
import { verifyBackup, type VerifyReport } from '../verify/verify-backup.js';
import type { CommandContext } from './command-context.js';
import { openRepository, repositoriesWithBackup } from './open-repository.js';

/**
 * Checks one backup from the repository alone: checksums, sizes, full
 * decompression, and the dump's table of contents against the manifest.
 * Returns the report; throws VERIFY_FAILED (with the report) when it fails.
 */
export async function runVerify(ctx: CommandContext, ref: string): Promise<VerifyReport> {
  const { settings } = ctx;
  let source = settings.options.source;
  // A source with several repositories: the first (in config order) that holds the backup; --repo picks one.
  const configured = source ?? (configuredSources(settings).length > 0 ? selectedSourceName(settings) : undefined);
  let repository;
  let manifest;
  if (repositoryUrls(settings, configured).length > 1) {
    source = configured;
    ({ repository, manifest } = (await repositoriesWithBackup(settings, ref, source))[0]!);
  } else {
    repository = await openRepository(settings, { source });
    manifest = await repository.resolveBackup(ref, source);
  }
  const identities = await identitiesFor(repository, manifest, ctx.keys);
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
