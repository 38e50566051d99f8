import { configuredSourceName, repositoryUrls, type Settings } from '../config/settings.js';
import type { Manifest } from '../repository/manifest.js';
import { listPins, type Pin } from '../repository/pins.js';
import type { Verification } from '../repository/verification.js';
import { openRepository, repositoriesWithBackup } from './open-repository.js';

export interface ShowResult {
  manifest: Manifest;
  /** Set when the backup is pinned (prune never deletes it). */
  pin: Pin | undefined;
  /** The newest verification of this backup in the repository it was read from. */
  verification: Verification | undefined;
}

/** One backup's manifest, by id or "latest" (several repositories: from the first that holds it), its pin and its last verification. */
export async function runShow(settings: Settings, ref: string): Promise<ShowResult> {
  const source = settings.options.source;
  const configured = configuredSourceName(settings);
  const { repository, manifest } =
    repositoryUrls(settings, configured).length > 1
      ? (await repositoriesWithBackup(settings, ref, configured))[0]!
      : await (async () => {
          const repository = await openRepository(settings, { source });
          return { repository, manifest: await repository.resolveBackup(ref, source) };
        })();
  return {
    manifest,
    pin: (await listPins(repository, manifest.source)).get(manifest.id),
    verification: await repository.lastVerification(manifest.source, manifest.id),
  };
}
