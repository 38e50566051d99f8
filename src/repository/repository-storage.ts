import type { Storage } from '../storage/storage.js';

/**
 * The storage under each open Repository, for the modules of src/repository/
 * that keep their own part of the format (pins, failure records, catalogs,
 * keys). Repository.storage is private: nothing above src/repository/ reaches
 * storage (eslint.config.js forbids importing this file from there).
 * A WeakMap, not a field, so the lean WAL path (repository-keys.ts) can ask
 * without loading repository.ts.
 */
const storages = new WeakMap<object, Storage>();

/** Called by the Repository constructor. */
export function registerStorage(repository: object, storage: Storage): void {
  storages.set(repository, storage);
}

/** The storage of an open repository; undefined for anything else. */
export function storageOf(repository: object): Storage | undefined {
  return storages.get(repository);
}
