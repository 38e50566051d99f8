import { selectedSourceName, type Settings } from '../config/settings.js';
import type { Manifest } from '../repository/manifest.js';
import { openRepository } from './open-repository.js';

/**
 * Complete backups from the repository alone (no database needed), oldest
 * first. With --source (or a single-source config) only that source's.
 */
export async function runList(settings: Settings): Promise<{ location: string; backups: Manifest[] }> {
  const source = settings.options.source !== undefined || settings.configFile ? selectedSourceName(settings) : undefined;
  const repository = await openRepository(settings, { source });
  return { location: repository.location, backups: await repository.listBackups(source) };
}
