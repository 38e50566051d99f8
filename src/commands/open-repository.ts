import { repositoryUrl, storageOptions, type Settings } from '../config/settings.js';
import { Repository } from '../repository/repository.js';
import { openStorage } from '../storage/open-storage.js';

/** Opens the repository the settings point at (for `source`, when given). */
export async function openRepository(settings: Settings, options: { source?: string | undefined; createIfEmpty?: boolean } = {}): Promise<Repository> {
  return Repository.open(openStorage(repositoryUrl(settings, options.source), storageOptions(settings)), { createIfEmpty: options.createIfEmpty ?? false });
}
