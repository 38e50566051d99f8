import type { Settings } from '../config/settings.js';
import type { Manifest } from '../repository/manifest.js';
import { openRepository } from './open-repository.js';

/** One backup's manifest, by id or "latest". */
export async function runShow(settings: Settings, ref: string): Promise<Manifest> {
  const source = settings.options.source;
  const repository = await openRepository(settings, { source });
  return repository.resolveBackup(ref, source);
}
