import { configuredSources, repositoryUrls, selectedSourceName, type Settings } from '../config/settings.js';
import type { Repository } from './repository.js';
import { openRepositoriesSettled } from './open-repository.js';

/** One source and each of its repositories, opened (or why not). */
export interface SourceRepositories {
  source: string;
  repositories: { url: string; repository?: Repository; error?: unknown }[];
}

/**
 * The sources a repository-wide command (prune, status) works on: --source;
 * else every source of the config; else (no config) every source found in
 * the repository (in an empty one, the source a backup would create). Each
 * with every one of its repositories.
 */
export async function sourcesWithRepositories(settings: Settings): Promise<SourceRepositories[]> {
  const configured = configuredSources(settings);
  if (settings.options.source !== undefined || configured.length > 0) {
    // selectedSourceName validates --source against the config
    const names = settings.options.source !== undefined ? [selectedSourceName(settings)!] : configured;
    const result: SourceRepositories[] = [];
    for (const source of names) result.push({ source, repositories: await openRepositoriesSettled(settings, { source }) });
    return result;
  }
  const [opened] = await openRepositoriesSettled(settings);
  if (!opened?.repository) throw opened?.error ?? new Error(`cannot open ${repositoryUrls(settings)[0]}`);
  const found = (await opened.repository.listSources()).sort();
  // an empty repository: the source a backup would create (named after the database), so status can say it has no backup
  const names = found.length > 0 ? found : [selectedSourceName(settings)!];
  return names.map((source) => ({ source, repositories: [opened] }));
}
