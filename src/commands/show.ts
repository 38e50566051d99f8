import { configuredSources, repositoryUrls, selectedSourceName, type Settings } from '../config/settings.js';
import type { Manifest } from '../repository/manifest.js';
import { listPins, type Pin } from '../repository/pins.js';
import { openRepository, repositoriesWithBackup } from './open-repository.js';

export interface ShowResult {
  manifest: Manifest;
  /** Set when the backup is pinned (prune never deletes it). */
  pin: Pin | undefined;
}

/** One backup's manifest, by id or "latest" (several repositories: from the first that holds it), and its pin. */
export async function runShow(settings: Settings, ref: string): Promise<ShowResult> {
  const source = settings.options.source;
  const configured = source ?? (configuredSources(settings).length > 0 ? selectedSourceName(settings) : undefined);
  const { repository, manifest } =
    repositoryUrls(settings, configured).length > 1
      ? (await repositoriesWithBackup(settings, ref, configured))[0]!
      : await (async () => {
          const repository = await openRepository(settings, { source });
          return { repository, manifest: await repository.resolveBackup(ref, source) };
        })();
  return { manifest, pin: (await listPins(repository, manifest.source)).get(manifest.id) };
}
