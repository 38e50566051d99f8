import { configuredSources, repositoryUrls, selectedSourceName, type Settings } from '../config/settings.js';
import type { Manifest } from '../repository/manifest.js';
import { listPins, type Pin } from '../repository/pins.js';
import { openRepository, repositoriesWithBackup } from './open-repository.js';

/** One backup's manifest, by id or "latest" (several repositories: from the first that holds it), and its pin. */
export async function runShow(settings: Settings, ref: string): Promise<{ manifest: Manifest; pin: Pin | undefined }> {
  const source = settings.options.source;
  const configured = source ?? (configuredSources(settings).length > 0 ? selectedSourceName(settings) : undefined);
  if (repositoryUrls(settings, configured).length > 1) {
    const { repository, manifest } = (await repositoriesWithBackup(settings, ref, configured))[0]!;
    return { manifest, pin: (await listPins(repository, manifest.source)).get(manifest.id) };
  }
  const repository = await openRepository(settings, { source });
  const manifest = await repository.resolveBackup(ref, source);
  return { manifest, pin: (await listPins(repository, manifest.source)).get(manifest.id) };
}
