import { configuredSources, repositoryUrls, validateName, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import { readSourceCatalog, removeBackupWithRecords } from '../repository/source-catalog.js';
import { Repository } from '../repository/repository.js';
import { repositoryAt } from '../repository/open-repository.js';
import type { CommandContext } from '../registry/command-context.js';
import { z } from 'zod';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { formatAge, formatTable } from '../cli/format.js';

function openUrl(settings: Settings, url: string): Promise<Repository> {
  return repositoryAt(settings, url).open();
}

/** One source as `pgkeep sources` shows it, over all its repositories. */
export interface SourceSummary {
  name: string;
  /** Defined in the config file (it comes back with its next backup even after `sources remove`). */
  configured: boolean;
  /** Repositories that hold anything of it. */
  repositories: string[];
  backups: number;
  lastBackup: { id: string; finishedAt: string } | null;
  failures: number;
  /** Archived WAL: the source is archiving or was. */
  wal: boolean;
}

export interface SourcesResult {
  sources: SourceSummary[];
  /** Repositories that could not be opened, with why. */
  unreachable: { repository: string; error: string }[];
}

/** What one repository holds of a source. */
interface Holding {
  repository: Repository;
  backups: { id: string; finishedAt: string }[];
  unreadable: number;
  failures: number;
  wal: boolean;
  pins: number;
}

async function readHolding(repository: Repository, source: string): Promise<Holding | undefined> {
  if (!(await repository.holdsSource(source))) return undefined;
  const catalog = await readSourceCatalog(repository, source);
  const wal = await repository.holdsWal(source);
  return {
    repository,
    backups: catalog.backups.map((m) => ({ id: m.id, finishedAt: m.finishedAt })),
    unreadable: catalog.unreadable.length,
    failures: catalog.failures.length,
    wal,
    pins: catalog.pins.size,
  };
}

/**
 * Every source: those of the config, and those found in the repositories
 * (the config's top-level ones, and each configured source's own), with what
 * each repository holds of it.
 */
export async function runListSources(ctx: CommandContext): Promise<SourcesResult> {
  const settings = ctx.settings;
  const configured = configuredSources(settings);
  const urls = new Set<string>(repositoryUrls(settings));
  for (const name of configured) for (const url of repositoryUrls(settings, name)) urls.add(url);
  const result: SourcesResult = { sources: [], unreachable: [] };
  const byName = new Map<string, Holding[]>(configured.map((name) => [name, []]));
  for (const url of urls) {
    let repository: Repository;
    try {
      repository = await openUrl(settings, url);
    } catch (error) {
      // an empty location is not an error here: it holds no source yet
      if ((error as PgkeepError).code !== 'REPO_MISSING') result.unreachable.push({ repository: url, error: (error as Error).message });
      continue;
    }
    for (const name of await repository.listSources()) {
      const holding = await readHolding(repository, name);
      if (!holding) continue;
      byName.set(name, [...(byName.get(name) ?? []), holding]);
    }
  }
  for (const [name, holdings] of [...byName].sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0))) {
    const backups = holdings.flatMap((h) => h.backups).sort((a, b) => (a.finishedAt < b.finishedAt ? -1 : 1));
    result.sources.push({
      name,
      configured: configured.includes(name),
      repositories: holdings.map((h) => h.repository.location),
      backups: new Set(backups.map((b) => b.id)).size,
      lastBackup: backups.at(-1) ?? null,
      failures: holdings.reduce((n, h) => n + h.failures, 0),
      wal: holdings.some((h) => h.wal),
    });
  }
  return result;
}

export interface RemoveSourceRequest {
  /** Also delete its backups, WAL and pins (without it, a source holding any is refused). */
  withBackups?: boolean | undefined;
  /** Skip the typed confirmation (scripts, no terminal). */
  force?: boolean | undefined;
}

export interface RemoveSourceResult {
  source: string;
  repositories: string[];
  removedBackups: number;
  removedWal: boolean;
  /** Still in the config: its next backup creates it again. */
  stillConfigured: boolean;
}

/**
 * Removes a source from its repositories: a phantom left by failed attempts at
 * once, one that holds backups (or WAL, or pins) only with --with-backups and
 * the typed confirmation restore uses (--force without a terminal). Under the
 * source's lock; backups go one by one, manifest first, so an interrupted
 * removal leaves fewer backups, never a broken one.
 */
export async function runRemoveSource(ctx: CommandContext, name: string, request: RemoveSourceRequest = {}): Promise<RemoveSourceResult> {
  validateName(name, 'source');
  const settings = ctx.settings;
  const stillConfigured = configuredSources(settings).includes(name);
  const urls = stillConfigured ? repositoryUrls(settings, name) : repositoryUrls(settings);
  const holdings: Holding[] = [];
  for (const url of urls) {
    const holding = await readHolding(await openUrl(settings, url), name);
    if (holding) holdings.push(holding);
  }
  if (holdings.length === 0) {
    throw new PgkeepError('SOURCE_UNKNOWN', `no source "${name}" in ${urls.join(', ')}: see pgkeep sources`);
  }
  const backups = holdings.reduce((n, h) => n + h.backups.length + h.unreadable, 0);
  const wal = holdings.some((h) => h.wal);
  const pins = holdings.reduce((n, h) => n + h.pins, 0);
  if (backups + pins > 0 || wal) {
    const what = [backups > 0 ? `${backups} backup(s)` : '', wal ? 'archived WAL' : '', pins > 0 ? `${pins} pin(s)` : ''].filter(Boolean).join(', ');
    if (!request.withBackups) {
      throw new PgkeepError('USAGE', `source "${name}" still holds ${what}: to delete them with it, pass --with-backups`);
    }
    const where = holdings.map((h) => h.repository.location).join(', ');
    if (!request.force && !(await ctx.confirm(`This deletes source "${name}" with ${what} from ${where}. Type the source name to confirm:`, name))) {
      throw new PgkeepError('CONFIRMATION_REQUIRED', `not removing source "${name}": confirm by typing its name, or pass --force when running without a terminal`);
    }
  }
  for (const holding of holdings) {
    const repository = holding.repository;
    const lock = await repository.lockSource(name, 'sources remove');
    try {
      for (const backup of holding.backups) {
        ctx.info(`removing backup ${backup.id} of ${name} from ${repository.location}`);
        await removeBackupWithRecords(repository, name, backup.id);
      }
      // what is left: unreadable backups, WAL, pins, verifications, failures, the source record
      await repository.removeSourceContents(name);
    } finally {
      await lock.release();
    }
    await repository.removeSourceFolder(name);
  }
  return { source: name, repositories: holdings.map((h) => h.repository.location), removedBackups: backups, removedWal: wal, stillConfigured };
}

/** `pgkeep sources`. */
export const sourcesCommand: CommandSpec<Record<string, never>, SourcesResult> = {
  name: 'sources',
  description: 'list the sources: configured ones and those found in the repositories, with their backups and failures',
  options: [],
  help: { globals: ['config', 'repo'], examples: ['pgkeep sources', 'pgkeep sources --repo s3://my-bucket/app --json'] },
  parse: requestParser(z.object({}).strict(), () => ({})),
  run: (ctx) => runListSources(ctx),
  print: (result, out) => printSources(result, out),
};

const RemoveSourceCommandRequest = z.object({ name: z.string(), withBackups: z.boolean().optional(), force: z.boolean().optional() });

/** `pgkeep sources remove NAME`. */
export const removeSourceCommand: CommandSpec<z.output<typeof RemoveSourceCommandRequest>, RemoveSourceResult> = {
  name: 'sources remove',
  description: 'remove a source from its repositories (one that holds backups, WAL or pins only with --with-backups and a typed confirmation)',
  arguments: [{ name: '<name>', description: 'the source' }],
  options: [
    { flags: '--with-backups', description: 'also delete its backups, archived WAL and pins' },
    { flags: '--force', description: 'do not ask to type the name (scripts, no terminal)' },
  ],
  help: { globals: ['config', 'repo'], examples: ['pgkeep sources remove root', 'pgkeep sources remove old-app --with-backups', 'pgkeep sources remove old-app --with-backups --force   # in a script'] },
  parse: requestParser(RemoveSourceCommandRequest, ({ args: [name], options }) => ({ name, withBackups: options.withBackups, force: options.force })),
  run: (ctx, { name, ...request }) => runRemoveSource(ctx, name, request),
  print: (result, out) => printSourceRemoved(result, out),
};

// Printing for a terminal (moved from src/cli/print.ts)

/** `sources`: one row per source, configured or found in a repository. */
function printSources(result: SourcesResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  if (result.sources.length === 0) out.line('no sources yet: configure one in pgkeep.yaml, or take a first backup (pgkeep backup)');
  else {
    out.line(
      formatTable(
        ['SOURCE', 'CONFIGURED', 'BACKUPS', 'LAST BACKUP', 'FAILURES', 'WAL', 'REPOSITORIES'],
        result.sources.map((s) => [
          s.name,
          s.configured ? 'yes' : 'no',
          String(s.backups),
          s.lastBackup ? `${s.lastBackup.id} (${formatAge(new Date(s.lastBackup.finishedAt))})` : '-',
          String(s.failures),
          s.wal ? 'yes' : '-',
          s.repositories.join(', ') || '-',
        ]),
        [2, 4],
      ),
    );
  }
  for (const u of result.unreachable) out.line(`cannot read ${u.repository}: ${u.error}`);
}

function printSourceRemoved(result: RemoveSourceResult, out: CommandOutput): void {
  if (out.json) return out.document(result);
  const what = [result.removedBackups > 0 ? `${result.removedBackups} backup(s)` : '', result.removedWal ? 'its archived WAL' : ''].filter(Boolean).join(' and ');
  out.line(`removed source ${result.source}${what ? ` with ${what}` : ''} from ${result.repositories.join(', ')}`);
  if (result.stillConfigured) out.line(`it is still in the configuration file: its next backup creates it again`);
}
