import { repositoryUrl, selectedSourceName, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { Repository } from '../repository/repository.js';
import { openStorage } from '../storage/open-storage.js';

export interface InitResult {
  location: string;
  created: boolean;
  id: string;
}

/** Creates a repository; on an existing pgkeep repository it changes nothing (safe to run twice). */
export async function runInit(settings: Settings): Promise<InitResult> {
  const source = safeSourceName(settings);
  const storage = openStorage(repositoryUrl(settings, source));
  try {
    const repository = await Repository.init(storage);
    return { location: repository.location, created: true, id: repository.info.id };
  } catch (error) {
    if (!(error instanceof PgkeepError && error.code === 'REPO_EXISTS')) throw error;
    const existing = await Repository.open(storage);
    return { location: existing.location, created: false, id: existing.info.id };
  }
}

function safeSourceName(settings: Settings): string | undefined {
  try {
    return selectedSourceName(settings);
  } catch {
    return undefined;
  }
}
