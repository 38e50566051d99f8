import { configuredSources, repositoryUrls, selectedSourceName, type Settings } from '../config/settings.js';
import type { Manifest } from '../repository/manifest.js';
import { openRepository, repositoriesWithBackup } from './open-repository.js';

/** One backup's manifest, by id or "latest" (several repositories: from the first that holds it). */
export async function runShow(settings: Settings, ref: string): Promise<Manifest> {
  const source = settings.options.source;
  const configured = source ?? (configuredSources(settings).length > 0 ? selectedSourceName(settings) : undefined);
  if (repositoryUrls(settings, configured).length > 1) return (await repositoriesWithBackup(settings, ref, configured))[0]!.manifest;
  const repository = await openRepository(settings, { source });
  return repository.resolveBackup(ref, source);
}
