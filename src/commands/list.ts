import { repositoryUrls, selectedSourceName, type Settings } from '../config/settings.js';
import type { Manifest } from '../repository/manifest.js';
import { listPins } from '../repository/pins.js';
import type { DamagedBackup, Repository } from '../repository/repository.js';
import type { Verification } from '../repository/verification.js';
import { openRepositoriesSettled, openRepository, repositoryLabels } from './open-repository.js';

/** Where the listed backups are, when the source has several repositories. */
export interface ListRepositories {
  /** Short names (local, s3, local1, ...), in config order. */
  names: string[];
  locations: string[];
  /** For each listed backup, the indexes of the repositories that hold it. */
  where: number[][];
  /** Repositories that could not be read, with why. */
  unavailable: { location: string; message: string }[];
}

/**
 * Complete backups from the repository alone (no database needed), oldest
 * first. With --source (or a single-source config) only that source's.
 * When the source has several repositories, all are read: a backup in
 * several is listed once, with where it is.
 */
export interface ListedDamage {
  source: string;
  id: string;
  location: string;
  code: string;
  message: string;
}

export async function runList(
  settings: Settings,
): Promise<{ location: string; backups: Manifest[]; repositories?: ListRepositories; pinned: Set<string>; verifications: Map<string, Verification>; damaged: ListedDamage[] }> {
  const source = settings.options.source !== undefined || settings.configFile ? selectedSourceName(settings) : undefined;
  const urls = repositoryUrls(settings, source);
  const verifications = new Map<string, Verification>();
  const damaged: ListedDamage[] = [];
  const collect = async (repository: Repository) => {
    const found: DamagedBackup[] = [];
    const backups = await repository.listBackups(source, found);
    for (const d of found) damaged.push({ source: d.source, id: d.id, location: repository.location, code: d.error.code, message: d.error.message });
    return backups;
  };
  if (urls.length <= 1) {
    const repository = await openRepository(settings, { source });
    const backups = await collect(repository);
    await addVerifications(verifications, repository, backups);
    return { location: repository.location, backups, pinned: await pinnedIn([repository], backups), verifications, damaged };
  }
  const byKey = new Map<string, { manifest: Manifest; where: number[] }>();
  const unavailable: ListRepositories['unavailable'] = [];
  const errors: unknown[] = [];
  const locations: string[] = [];
  const opened = await openRepositoriesSettled(settings, { source });
  for (const [index, { url, repository, error }] of opened.entries()) {
    locations.push(repository?.location ?? url);
    try {
      if (!repository) throw error;
      const backups = await collect(repository);
      await addVerifications(verifications, repository, backups);
      for (const manifest of backups) {
        const key = `${manifest.source}/${manifest.id}`;
        const entry = byKey.get(key);
        if (entry) entry.where.push(index);
        else byKey.set(key, { manifest, where: [index] });
      }
    } catch (failure) {
      errors.push(failure);
      unavailable.push({ location: repository?.location ?? url, message: failure instanceof Error ? failure.message : String(failure) });
    }
  }
  if (errors.length === opened.length) throw errors[0];
  const entries = [...byKey.values()].sort((a, b) => {
    const [x, y] = [a.manifest, b.manifest];
    return x.startedAt < y.startedAt ? -1 : x.startedAt > y.startedAt ? 1 : x.id < y.id ? -1 : 1;
  });
  return {
    pinned: await pinnedIn(opened.flatMap((o) => (o.repository ? [o.repository] : [])), entries.map((e) => e.manifest)),
    location: locations.join(', '),
    backups: entries.map((e) => e.manifest),
    repositories: { names: repositoryLabels(urls), locations, where: entries.map((e) => e.where), unavailable },
    verifications,
    damaged,
  };
}

/** "source/id" of the listed backups pinned in any of the repositories. */
async function pinnedIn(repositories: Repository[], backups: Manifest[]): Promise<Set<string>> {
  const pinned = new Set<string>();
  for (const source of new Set(backups.map((m) => m.source))) {
    for (const repository of repositories) {
      for (const id of (await listPins(repository, source)).keys()) pinned.add(`${source}/${id}`);
    }
  }
  return pinned;
}

/**
 * The newest verification of each listed backup, by "<source>/<id>"; with
 * several repositories, the newest of any of them.
 */
async function addVerifications(into: Map<string, Verification>, repository: Repository, backups: readonly Manifest[]): Promise<void> {
  for (const source of new Set(backups.map((m) => m.source))) {
    for (const [id, verification] of await repository.lastVerifications(source)) {
      const key = `${source}/${id}`;
      const known = into.get(key);
      if (!known || verification.startedAt > known.startedAt) into.set(key, verification);
    }
  }
}
