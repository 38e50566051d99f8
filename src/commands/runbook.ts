import { z } from 'zod';
import { resolveHealthThresholds } from '../config/health-settings.js';
import { resolveSource, type Settings } from '../config/settings.js';
import { serverLabel, type ConnectionInfo } from '../postgres/connection-info.js';
import { requestParser, type CommandSpec } from '../registry/command-spec.js';
import type { Manifest } from '../repository/manifest.js';
import { sourcesWithRepositories } from '../repository/source-repositories.js';
import { collectSourceStatus } from '../status/health.js';
import { runbookHtml, runbookMarkdown, type RunbookFacts, type RunbookRepository } from '../status/runbook.js';
import type { CommandContext } from '../registry/command-context.js';

export interface RunbookRequest {
  format: 'md' | 'html';
}

export interface RunbookResult {
  format: 'md' | 'html';
  /** Each source's runbook as markdown. */
  sources: { source: string; markdown: string }[];
  /** What is printed: the runbooks, one after the other (html: one page). */
  text: string;
}

/**
 * `pgkeep runbook`: the disaster-recovery runbook of each source, written from
 * this installation (src/status/runbook.ts writes the text):
 *
 *  1. the sources (--source, the config's, or every source in the repository)
 *  2. per source: what its repositories hold, its drills and health (status's reading)
 *  3. the newest logical backup's manifest (the example table, the objects to read by hand)
 *  4. the text
 */
export async function runRunbook(ctx: CommandContext, request: RunbookRequest, now = new Date()): Promise<RunbookResult> {
  const sources: RunbookResult['sources'] = [];
  for (const { source, repositories } of await sourcesWithRepositories(ctx.settings)) {
    const status = await collectSourceStatus(source, repositories, resolveHealthThresholds(ctx.settings, source), now);
    const newest = { logical: status.lastBackupByKind.logical, physical: status.lastBackupByKind.physical };
    const repos: RunbookRepository[] = repositories.map((opened) => {
      const info = opened.repository?.info;
      const url = opened.repository?.location ?? opened.url;
      const encryption = info?.encryption;
      return {
        url,
        offsite: /^[a-z][a-z0-9+.-]*:\/\//i.test(url) && !url.startsWith('file://'),
        encryption: !encryption ? { kind: 'none' } : encryption.passphrase ? { kind: 'passphrase' } : { kind: 'recipients', recipients: encryption.recipients },
        dedup: info?.content !== undefined,
        holdsNewestLogical: newest.logical?.repositories.includes(url) ?? false,
        holdsNewestPhysical: newest.physical?.repositories.includes(url) ?? false,
        error: opened.repository ? undefined : (opened.error as Error | undefined)?.message,
      };
    });
    const manifest = newest.logical ? await readNewest(repositories, source, newest.logical.id, newest.logical.repositories) : undefined;
    const physical = newest.physical ? await readNewest(repositories, source, newest.physical.id, newest.physical.repositories) : undefined;
    const connection = sourceConnection(ctx.settings, source);
    const facts: RunbookFacts = {
      source,
      database: manifest?.kind === 'logical' ? manifest.database.name : (connection?.database ?? source),
      server: connection ? serverLabel(connection) : undefined,
      connection: connection ? conninfo({ host: connection.host, port: String(connection.port), dbname: connection.database, user: connection.user }) : undefined,
      configFile: ctx.settings.configFile,
      repositories: repos,
      newestLogical:
        manifest?.kind === 'logical'
          ? {
              id: manifest.id,
              finishedAt: manifest.finishedAt,
              format: manifest.options.format,
              serverVersion: manifest.server.version,
              largestTable: [...manifest.tables].filter((t) => t.rows !== null).sort((a, b) => (b.rows ?? 0) - (a.rows ?? 0)).map((t) => ({ schema: t.schema, name: t.name, rows: t.rows ?? 0 }))[0],
              objects: manifest.objects.map((o) => ({ name: o.name, role: o.role, encrypted: o.encryption !== null, content: o.content !== undefined })),
            }
          : undefined,
      newestPhysical: physical?.kind === 'physical' ? { id: physical.id, finishedAt: physical.finishedAt, serverVersion: physical.server.version } : undefined,
      status,
      keys: {
        identityFile: ctx.keys.identityFile,
        passphraseFile: ctx.settings.env.PGKEEP_PASSPHRASE_FILE ?? ctx.settings.config.passphraseFile,
        passphraseFromEnv: Boolean(ctx.settings.env.PGKEEP_PASSPHRASE),
      },
      now,
    };
    sources.push({ source, markdown: runbookMarkdown(facts) });
  }
  const markdown = sources.map((s) => s.markdown).join('\n');
  return { format: request.format, sources, text: request.format === 'html' ? runbookHtml(markdown, 'pgkeep runbook') : markdown };
}

/** The manifest of a backup from the first repository that holds it (undefined when none can be read now). */
async function readNewest(repositories: readonly { url: string; repository?: { location: string; readManifest(source: string, id: string): Promise<Manifest> } | undefined }[], source: string, id: string, holders: readonly string[]): Promise<Manifest | undefined> {
  for (const opened of repositories) {
    if (!opened.repository || !holders.includes(opened.repository.location)) continue;
    try {
      return await opened.repository.readManifest(source, id);
    } catch {
      // damaged here: another may hold it
    }
  }
  return undefined;
}

/** A libpq connection string: each value quoted (a name may hold spaces or quotes); never a password. */
function conninfo(values: Record<string, string | undefined>): string {
  return Object.entries(values)
    .filter((e): e is [string, string] => e[1] !== undefined && e[1] !== '')
    .map(([k, v]) => `${k}='${v.replace(/\\/g, '\\\\').replace(/'/g, "\\'")}'`)
    .join(' ');
}

/** The source's connection as configured (no password is ever printed), or undefined without one. */
function sourceConnection(settings: Settings, source: string): ConnectionInfo | undefined {
  try {
    return resolveSource({ ...settings, options: { ...settings.options, source } }).connection;
  } catch {
    return undefined;
  }
}

const RunbookCommandRequest = z.object({ format: z.enum(['md', 'html']) });

/** `pgkeep runbook [--format md|html]`. */
export const runbookCommand: CommandSpec<z.output<typeof RunbookCommandRequest>, RunbookResult> = {
  name: 'runbook',
  description: 'print the disaster-recovery runbook of each source: four scenarios with the exact commands for this installation, RTO, RPO, keys',
  options: [{ flags: '--format <format>', description: 'md (default) or html' }],
  help: { globals: ['config', 'repo', 'source'], examples: ['pgkeep runbook > RUNBOOK.md', 'pgkeep runbook --source app --format html > runbook.html'] },
  parse: requestParser(RunbookCommandRequest, ({ options }) => ({ format: options.format ?? 'md' })),
  run: (ctx, request) => runRunbook(ctx, request),
  print(result, out) {
    if (out.json) return out.document(result);
    out.line(result.text.trimEnd());
  },
};

// Callable by name through the registry (serve, the dashboard), typed: see NamedCommands.
declare module '../registry/command-registry.js' {
  interface NamedCommands {
    runbook: typeof runbookCommand;
  }
}
