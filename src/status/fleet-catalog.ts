import { setImmediate as nextTurn } from 'node:timers/promises';
import { toPgkeepError } from '../errors.js';
import type { Manifest } from '../repository/manifest.js';
import { isManifestDamage, type Repository } from '../repository/repository.js';
import type { BackupFailure } from '../repository/backup-failures.js';
import type { Pin } from '../repository/pins.js';
import { listSource, readFailureRecord, readPinRecord, readVerificationRecord } from '../repository/source-listing.js';
import type { Verification } from '../repository/verification.js';
import { assessHealth, newestDrill, noteDrill, type HealthThresholds, type RepositoryFacts, type SourceStatus } from './health.js';
import { readRepositoryUsage, type RepositoryUsage } from './repository-usage.js';

/** A repository of a source as serve opened it (or why it could not). */
export interface OpenedRepository {
  url: string;
  repository?: Repository | undefined;
  error?: unknown;
}

export interface FleetCatalogOptions {
  /** The sources, in display order, with their health thresholds. */
  sources: readonly { name: string; thresholds: HealthThresholds }[];
  /** Opens the repositories of a source (again, while one is missing or cannot be opened). */
  open(source: string): Promise<OpenedRepository[]>;
  now(): Date;
  /** Called with each status the catalog assesses (serve's alerts); errors are the caller's to catch. */
  onStatus?: ((status: SourceStatus) => void) | undefined;
  /** Longest stretch of parsing before the catalog lets the HTTP side in (default 10 ms). */
  sliceMs?: number | undefined;
  /** Sources read at once (default 4): a slow store (S3) is waited on in parallel, never parsed in parallel. */
  parallel?: number | undefined;
}

/** One backup as the catalog holds it: where it is, whether it is pinned, its newest verification. */
export interface CatalogBackup {
  manifest: Manifest;
  /** Locations holding it, in config order. */
  repositories: string[];
  pinned: boolean;
  verification: Verification | undefined;
}

/** The work the catalog did since start: pages and scrapes must not add to it (issue 21's "per-request cost"). */
export interface CatalogCounts {
  /** Listings of a source's folder (one per source and repository per refresh). */
  listings: number;
  /** Manifests read and parsed. */
  manifests: number;
  /** Other records read: verifications, pins, failure records. */
  records: number;
}

/** What the catalog holds of one source in one repository. */
interface RepositoryState {
  location: string;
  /** The location holds no repository yet: the first backup creates it. */
  missing: boolean;
  error: { code: string; message: string } | undefined;
  manifests: Map<string, { stamp: string; manifest: Manifest }>;
  unreadable: Map<string, { stamp: string; error: ReturnType<typeof toPgkeepError> }>;
  /** Verification records by key (null: unreadable); records are never rewritten, so a key is read once. */
  verifications: Map<string, Verification | null>;
  pins: Map<string, { stamp: string; pin: Pin | undefined }>;
  failures: Map<string, { stamp: string; failure: (BackupFailure & { key: string }) | undefined }>;
  lastWalAt: Date | undefined;
  /** A deduplicating repository as a whole (every source in it), read on each refresh; never per request. */
  usage: RepositoryUsage | undefined;
}

interface SourceEntry {
  name: string;
  thresholds: HealthThresholds;
  opened: OpenedRepository[] | undefined;
  states: Map<string, RepositoryState>;
  loaded: boolean;
  onLoaded: (() => void)[];
  /** A refresh that has not started yet: a second request joins it instead of queueing another. */
  pending: Promise<void> | undefined;
  /** The refresh chain of this source (one at a time). */
  running: Promise<void>;
  status: SourceStatus | undefined;
  backups: CatalogBackup[];
}

/**
 * Serve's in-memory catalog of every source's backups, verifications,
 * failures and health. Loaded once at start, then kept current by an
 * incremental refresh: one listing of each source's folder, and reads of only
 * the records that are new or changed (records gone from the listing are
 * dropped). Serve refreshes a source after each of its own jobs, and every
 * source on a timer to pick up other writers (the CLI, another host writing
 * the same bucket). Pages, the API, /metrics and the alerts read what is held
 * here: no request reads a manifest.
 *
 * Reading yields to the event loop at least every `sliceMs` of work, so a
 * load of thousands of manifests never holds the HTTP side for long.
 */
export class FleetCatalog {
  private readonly entries = new Map<string, SourceEntry>();
  private readonly sliceMs: number;
  private sliceStart = performance.now();
  private stopped = false;
  private slots: number;
  private readonly waiting: (() => void)[] = [];
  readonly counts: CatalogCounts = { listings: 0, manifests: 0, records: 0 };
  /** Goes up with every assessment: a reader that keeps something derived from the statuses knows when to redo it. */
  version = 0;
  /** When the last refresh of every source ended (undefined before the first load ends). */
  refreshedAt: Date | undefined;

  constructor(private readonly options: FleetCatalogOptions) {
    this.sliceMs = options.sliceMs ?? 10;
    this.slots = options.parallel ?? 4;
    for (const { name, thresholds } of options.sources) {
      this.entries.set(name, { name, thresholds, opened: undefined, states: new Map(), loaded: false, onLoaded: [], pending: undefined, running: Promise.resolve(), status: undefined, backups: [] });
    }
  }

  /** Source names, in display order. */
  get sources(): string[] {
    return [...this.entries.keys()];
  }

  has(source: string): boolean {
    return this.entries.has(source);
  }

  /** Whether every source has been read once. */
  get loaded(): boolean {
    return [...this.entries.values()].every((e) => e.loaded);
  }

  /** How many sources have been read once. */
  get loadedCount(): number {
    return [...this.entries.values()].filter((e) => e.loaded).length;
  }

  /** Resolves once the source (every source, without one) has been read once, or the catalog stopped. */
  async whenLoaded(source?: string): Promise<void> {
    const entries = source === undefined ? [...this.entries.values()] : [this.entries.get(source)].filter((e): e is SourceEntry => e !== undefined);
    await Promise.all(entries.map((e) => (e.loaded || this.stopped ? undefined : new Promise<void>((resolve) => e.onLoaded.push(resolve)))));
  }

  /**
   * Refreshes one source, or every source: lists, reads what is new or
   * changed, reassesses. A refresh of a source already waiting to run is
   * joined, not repeated. Never rejects: a repository that cannot be read is
   * the status's finding.
   */
  async refresh(source?: string): Promise<void> {
    const entries = source === undefined ? [...this.entries.values()] : [this.entries.get(source)].filter((e): e is SourceEntry => e !== undefined);
    await Promise.all(entries.map((entry) => this.refreshEntry(entry)));
    if (source === undefined && !this.stopped) this.refreshedAt = this.options.now();
  }

  /** Reassesses every source at the current time without reading anything (ages grow, a grace ends). */
  reassess(source?: string): void {
    for (const entry of this.entries.values()) {
      if ((source === undefined || entry.name === source) && entry.loaded) this.assess(entry);
    }
  }

  /** The status of a source (undefined before its first read). */
  status(source: string): SourceStatus | undefined {
    return this.entries.get(source)?.status;
  }

  /** The statuses of the sources read so far, in display order. */
  statuses(): SourceStatus[] {
    return [...this.entries.values()].flatMap((e) => (e.status ? [e.status] : []));
  }

  /** The complete backups of a source, oldest first (the same array until something changes). */
  backups(source: string): readonly CatalogBackup[] {
    return this.entries.get(source)?.backups ?? [];
  }

  /** A backup by id in any source. */
  findBackup(id: string): CatalogBackup | undefined {
    for (const entry of this.entries.values()) {
      const found = entry.backups.find((b) => b.manifest.id === id);
      if (found) return found;
    }
    return undefined;
  }

  /** Each repository of a source as last read: its location, and why it could not be read. */
  repositories(source: string): { location: string; missing: boolean; error: { code: string; message: string } | undefined }[] {
    return [...(this.entries.get(source)?.states.values() ?? [])].map(({ location, missing, error }) => ({ location, missing, error }));
  }

  /** Stops: queued refreshes are dropped, one in progress ends at its next step (shutdown stays bounded). */
  stop(): void {
    this.stopped = true;
    for (const entry of this.entries.values()) for (const resolve of entry.onLoaded.splice(0)) resolve();
    for (const wake of this.waiting.splice(0)) wake();
  }

  private refreshEntry(entry: SourceEntry): Promise<void> {
    if (entry.pending) return entry.pending;
    const run = entry.running.then(async () => {
      entry.pending = undefined;
      await this.withSlot(() => this.read(entry));
    });
    entry.pending = run;
    entry.running = run.catch(() => undefined);
    return entry.running;
  }

  private async withSlot(work: () => Promise<void>): Promise<void> {
    while (this.slots === 0 && !this.stopped) await new Promise<void>((resolve) => this.waiting.push(resolve));
    if (this.stopped) return;
    this.slots--;
    try {
      await work();
    } finally {
      this.slots++;
      this.waiting.shift()?.();
    }
  }

  /** Lets the HTTP side in once this stretch of work has taken sliceMs. */
  private async slice(): Promise<void> {
    if (performance.now() - this.sliceStart < this.sliceMs) return;
    await nextTurn();
    this.sliceStart = performance.now();
  }

  private async read(entry: SourceEntry): Promise<void> {
    if (this.stopped) return;
    // a location that was missing or failed to open is opened again: the first backup creates it, an outage ends
    if (!entry.opened || entry.opened.some((o) => !o.repository)) {
      try {
        entry.opened = await this.options.open(entry.name);
      } catch (error) {
        // the source's repositories cannot even be named: its one finding, and the page still loads
        entry.opened = [{ url: `the repositories of ${entry.name}`, error }];
      }
    }
    const locations = new Set<string>();
    for (const opened of entry.opened) {
      if (this.stopped) return;
      const location = opened.repository?.location ?? opened.url;
      locations.add(location);
      let state = entry.states.get(location);
      if (!state) {
        state = { location, missing: false, error: undefined, manifests: new Map(), unreadable: new Map(), verifications: new Map(), pins: new Map(), failures: new Map(), lastWalAt: undefined, usage: undefined };
        entry.states.set(location, state);
      }
      if (!opened.repository) {
        const failure = toPgkeepError(opened.error, 'STORAGE_IO');
        state.missing = failure.code === 'REPO_MISSING';
        state.error = state.missing ? undefined : { code: failure.code, message: failure.message };
        continue;
      }
      try {
        await this.readRepository(entry.name, opened.repository, state);
        state.usage = opened.repository.info.content ? await readRepositoryUsage(opened.repository, (source) => this.heldBackups(entry, source, location)) : undefined;
        state.missing = false;
        state.error = undefined;
      } catch (error) {
        const failure = toPgkeepError(error, 'STORAGE_IO');
        // what was read before stays: the next good listing is incremental again
        state.error = { code: failure.code, message: failure.message };
      }
    }
    for (const location of entry.states.keys()) if (!locations.has(location)) entry.states.delete(location);
    if (this.stopped) return;
    this.assess(entry);
    if (!entry.loaded) {
      entry.loaded = true;
      for (const resolve of entry.onLoaded.splice(0)) resolve();
    }
  }

  private async readRepository(source: string, repository: Repository, state: RepositoryState): Promise<void> {
    const listing = await listSource(repository, source);
    this.counts.listings++;
    await this.slice();
    const drop = <V>(held: Map<string, V>, present: { has(key: string): boolean }) => {
      for (const key of [...held.keys()]) if (!present.has(key)) held.delete(key);
    };
    drop(state.manifests, listing.manifests);
    drop(state.unreadable, listing.manifests);
    for (const [id, stamp] of listing.manifests) {
      if (this.stopped) return;
      if (state.manifests.get(id)?.stamp === stamp || state.unreadable.get(id)?.stamp === stamp) continue;
      this.counts.manifests++;
      try {
        state.manifests.set(id, { stamp, manifest: await repository.readManifest(source, id) });
        state.unreadable.delete(id);
      } catch (error) {
        // removed since the listing: the next listing drops it
        if (toPgkeepError(error).code === 'BACKUP_NOT_FOUND') continue;
        if (!isManifestDamage(error) && toPgkeepError(error).code !== 'REPO_FORMAT') throw error;
        state.manifests.delete(id);
        state.unreadable.set(id, { stamp, error: toPgkeepError(error) });
      }
      await this.slice();
    }
    drop(state.verifications, listing.verifications);
    for (const key of listing.verifications.keys()) {
      if (this.stopped) return;
      if (state.verifications.has(key)) continue;
      this.counts.records++;
      state.verifications.set(key, (await readVerificationRecord(repository, key)) ?? null);
      await this.slice();
    }
    drop(state.pins, listing.pins);
    for (const [id, stamp] of listing.pins) {
      if (state.pins.get(id)?.stamp === stamp) continue;
      this.counts.records++;
      const pin = await readPinRecord(repository, source, id);
      if (pin === undefined) state.pins.delete(id);
      else state.pins.set(id, { stamp, pin: pin ?? undefined });
    }
    drop(state.failures, listing.failures);
    for (const [key, stamp] of listing.failures) {
      if (state.failures.get(key)?.stamp === stamp) continue;
      this.counts.records++;
      state.failures.set(key, { stamp, failure: await readFailureRecord(repository, key) });
    }
    state.lastWalAt = listing.lastWalAt;
  }

  /**
   * The manifests the catalog holds of a source in a repository (the one
   * being refreshed, or another source of the config already read there),
   * so the repository's logical size reads only the sources serve does not
   * follow; undefined: not held, read it.
   */
  private heldBackups(refreshing: SourceEntry, source: string, location: string): Manifest[] | undefined {
    const entry = this.entries.get(source);
    if (!entry || (entry !== refreshing && !entry.loaded)) return undefined;
    const state = entry.states.get(location);
    if (!state || state.error || state.missing) return undefined;
    return [...state.manifests.values()].map((m) => m.manifest);
  }

  /** The health verdict and the backup rows of a source from what is held (pure, no I/O). */
  private assess(entry: SourceEntry): void {
    const facts: RepositoryFacts[] = [];
    const rows = new Map<string, CatalogBackup>();
    for (const state of entry.states.values()) {
      if (state.error) {
        facts.push({ location: state.location, error: state.error });
        continue;
      }
      const backups = [...state.manifests.values()].map((m) => m.manifest).sort(byStart);
      // the newest verification of each backup (any kind), and the newest restore test of any backup
      const newestOf = new Map<string, Verification>();
      // the newest drill of each kind (and the newest that passed) of a backup held here
      const drills: NonNullable<RepositoryFacts['drills']> = {};
      for (const v of state.verifications.values()) {
        if (!v) continue;
        const held = newestOf.get(v.backupId);
        if (!held || v.startedAt > held.startedAt) newestOf.set(v.backupId, v);
        if (state.manifests.has(v.backupId)) noteDrill(drills, v);
      }
      const lastRestoreTest = newestDrill(drills);
      const pins = new Map([...state.pins].map(([id, p]) => [id, p.pin] as const));
      const failures = [...state.failures.values()].flatMap((f) => (f.failure ? [f.failure] : [])).sort((a, b) => (a.failedAt < b.failedAt ? -1 : a.failedAt > b.failedAt ? 1 : 0));
      const newest = backups.at(-1);
      facts.push({
        location: state.location,
        catalog: { backups, unreadable: [...state.unreadable].map(([id, u]) => ({ id, error: u.error })), leftovers: [], pins, failures },
        lastVerification: newest && newestOf.get(newest.id),
        lastRestoreTest,
        drills,
        lastWalAt: state.lastWalAt,
        usage: state.usage,
      });
      for (const manifest of backups) {
        const row = rows.get(manifest.id);
        const verification = newestOf.get(manifest.id);
        if (!row) rows.set(manifest.id, { manifest, repositories: [state.location], pinned: pins.has(manifest.id), verification });
        else {
          row.repositories.push(state.location);
          row.pinned ||= pins.has(manifest.id);
          if (verification && (!row.verification || verification.startedAt > row.verification.startedAt)) row.verification = verification;
        }
      }
    }
    entry.status = assessHealth(entry.name, facts, entry.thresholds, this.options.now());
    entry.backups = [...rows.values()].sort((a, b) => byStart(a.manifest, b.manifest));
    this.version++;
    this.options.onStatus?.(entry.status);
  }
}

function byStart(a: Manifest, b: Manifest): number {
  return a.startedAt < b.startedAt ? -1 : a.startedAt > b.startedAt ? 1 : a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}
