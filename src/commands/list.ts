import { repositoryUrls, selectedSourceName, type Settings } from '../config/settings.js';
import { dedupFigures, type Manifest } from '../repository/manifest.js';
import { listPins } from '../repository/pins.js';
import type { DamagedBackup, Repository } from '../repository/repository.js';
import { drillKindOf, type Verification } from '../repository/verification.js';
import { openRepositoriesSettled, openRepository, repositoryLabels } from '../repository/open-repository.js';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { z } from 'zod';
import { formatAge, formatBytes, formatDuration, formatTable, verificationLabel } from '../cli/format.js';

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

export type ListResult = Awaited<ReturnType<typeof runList>>;

/** `pgkeep list`. */
export const listCommand: CommandSpec<Record<string, never>, ListResult> = {
  name: 'list',
  description: 'list the backups in the repository',
  options: [],
  help: { globals: ['config', 'repo', 'source'], examples: ['pgkeep list --repo /srv/backups', 'pgkeep list --source app --json'] },
  parse: requestParser(z.object({}).strict(), () => ({})),
  async run(ctx) {
    const listed = await runList(ctx.settings);
    for (const { location, message } of listed.repositories?.unavailable ?? []) ctx.warn(`cannot read ${location}: ${message}`);
    return listed;
  },
  print: ({ location, backups, repositories, pinned, verifications, damaged }, out) => printList(backups, location, out, repositories, pinned, verifications, damaged),
};

// Printing for a terminal (moved from src/cli/print.ts)

/**
 * `repositories`, for a source with several: a REPOS column (short names, with
 * a legend) and `repositories: [locations]` in --json.
 */
function printList(
  backups: Manifest[],
  location: string,
  out: CommandOutput,
  repositories?: ListRepositories,
  pinned: ReadonlySet<string> = new Set(),
  verifications: ReadonlyMap<string, Verification> = new Map(),
  damaged: readonly ListedDamage[] = [],
): void {
  const where = (i: number) => repositories!.where[i]!;
  const isPinned = (m: Manifest) => pinned.has(`${m.source}/${m.id}`);
  const verified = (m: Manifest) => verifications.get(`${m.source}/${m.id}`);
  if (out.json) {
    const readable: object[] = backups.map((m, i) => ({
      ...summary(m),
      pinned: isPinned(m),
      verification: verificationSummary(verified(m)),
      ...(repositories ? { repositories: where(i).map((r) => repositories.locations[r]!) } : {}),
    }));
    const unreadable = damaged.map((d) => ({ id: d.id, source: d.source, damaged: { code: d.code, message: d.message, repository: d.location } }));
    return out.document([...readable, ...unreadable]);
  }
  // Damaged backups are listed after the readable ones, each with what is wrong: never hidden, never blocking.
  const printDamaged = () => {
    for (const d of damaged) out.line(`DAMAGED  ${d.source}/${d.id}${repositories ? ` in ${d.location}` : ''}: ${d.message}`);
  };
  if (backups.length === 0) {
    out.line(damaged.length > 0 ? `no readable backups in ${location}` : `no backups in ${location} yet`);
    return printDamaged();
  }
  // with a deduplicated backup listed: its logical size and what it added (a plain backup added all it stored)
  const deduplicated = backups.some((m) => dedupFigures(m) !== undefined);
  out.line(
    formatTable(
      ['ID', 'SOURCE', 'KIND', 'FORMAT', ...(deduplicated ? ['LOGICAL', 'ADDED'] : ['SIZE']), 'DURATION', 'AGE', 'VERIFIED', 'LABELS', 'PIN', ...(repositories ? ['REPOS'] : [])],
      backups.map((m, i) => [
        m.id,
        m.source,
        m.kind,
        m.kind === 'logical' ? m.options.format : 'tar',
        ...(deduplicated ? [formatBytes(m.totals.rawBytes), formatBytes(dedupFigures(m)?.addedBytes ?? m.totals.storedBytes)] : [formatBytes(m.totals.storedBytes)]),
        formatDuration(m.durationMs),
        formatAge(new Date(m.finishedAt)),
        verificationLabel(verified(m)),
        m.labels.join(','),
        isPinned(m) ? 'pinned' : '',
        ...(repositories ? [where(i).map((r) => repositories.names[r]!).join(',')] : []),
      ]),
      deduplicated ? [4, 5, 6] : [4, 5],
    ),
  );
  printDamaged();
  if (repositories) out.line(`repositories: ${repositories.names.map((name, r) => `${name} = ${repositories.locations[r]}`).join(', ')}`);
}

function verificationSummary(v: Verification | undefined) {
  if (!v) return null;
  return { kind: v.kind, drill: drillKindOf(v) ?? null, ok: v.ok, finishedAt: v.finishedAt, durationMs: v.durationMs, restoreMs: v.restore?.durationMs ?? null, rpoMs: v.restore?.rpoMs ?? null, problem: v.problems[0] ?? null };
}

/**
 * The fields of a backup that list --json gives (the full manifest is in show --json).
 * A deduplicated backup adds `logicalBytes` (= rawBytes), `addedBytes` (the packs it
 * wrote), `chunks` and `newChunks` (null in manifests of older pgkeep).
 */
function summary(m: Manifest) {
  return { ...kindSummary(m), ...dedupSummary(m) };
}

function dedupSummary(m: Manifest) {
  const d = dedupFigures(m);
  return d ? { logicalBytes: d.logicalBytes, addedBytes: d.addedBytes, chunks: d.chunks ?? null, newChunks: d.newChunks ?? null } : {};
}

function kindSummary(m: Manifest) {
  if (m.kind === 'physical') {
    return {
      id: m.id,
      source: m.source,
      kind: m.kind,
      format: 'tar',
      labels: m.labels,
      startedAt: m.startedAt,
      finishedAt: m.finishedAt,
      durationMs: m.durationMs,
      rawBytes: m.totals.rawBytes,
      storedBytes: m.totals.storedBytes,
      deduplicated: m.objects.some((o) => o.content !== undefined),
      startLsn: m.physical.startLsn,
      stopLsn: m.physical.stopLsn,
      timeline: m.physical.timeline,
    };
  }
  return {
    id: m.id,
    source: m.source,
    kind: m.kind,
    format: m.options.format,
    database: m.database.name,
    labels: m.labels,
    startedAt: m.startedAt,
    finishedAt: m.finishedAt,
    durationMs: m.durationMs,
    rawBytes: m.totals.rawBytes,
    /** For a deduplicated backup: what it added to the content store. */
    storedBytes: m.totals.storedBytes,
    deduplicated: m.objects.some((o) => o.content !== undefined),
    tables: m.tables.length,
    rows: m.totals.rows,
  };
}

// Callable by name through the registry (serve, the dashboard), typed: see NamedCommands.
declare module '../registry/command-registry.js' {
  interface NamedCommands {
    list: typeof listCommand;
  }
}
