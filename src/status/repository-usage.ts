import { dedupRatio, readContentUsage, type ContentUsage } from '../repository/content-store/content-usage.js';
import type { Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';

/**
 * A deduplicating repository as a whole (every source in it): what its
 * backups hold and what storing them costs. Status, the metrics and the
 * dashboard show it for each repository of a source that deduplicates.
 */
export interface RepositoryUsage extends ContentUsage {
  /** Complete backups of every source in the repository. */
  backups: number;
  /** The sum of their logical sizes: what restoring each of them would read. */
  logicalBytes: number;
  /** logicalBytes / storedBytes; null while nothing is stored. */
  dedupRatio: number | null;
}

/** The backups of one source, as a caller already holds them (serve's catalog), or undefined: read them. */
export type HeldBackups = (source: string) => readonly Manifest[] | undefined;

/**
 * Reads a repository's usage: the content store's size from two listings
 * (no pack read), and the logical sizes from the manifests of each source in
 * turn (held ones are not read again), so memory is one source's manifests
 * at a time. Undefined for a repository that does not deduplicate.
 */
export async function readRepositoryUsage(repository: Repository, held: HeldBackups = () => undefined, signal?: AbortSignal): Promise<RepositoryUsage | undefined> {
  const content = await readContentUsage(repository, signal);
  if (!content) return undefined;
  let backups = 0;
  let logicalBytes = 0;
  for (const source of await repository.listSources()) {
    signal?.throwIfAborted();
    const manifests = held(source) ?? (await repository.listBackups(source, []));
    backups += manifests.length;
    for (const m of manifests) logicalBytes += m.totals.rawBytes;
  }
  return { ...content, backups, logicalBytes, dedupRatio: dedupRatio(logicalBytes, content.storedBytes) ?? null };
}
