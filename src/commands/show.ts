import { configuredSourceName, repositoryUrls, type Settings } from '../config/settings.js';
import { dedupFigures, type Manifest } from '../repository/manifest.js';
import { listPins, type Pin } from '../repository/pins.js';
import type { Verification } from '../repository/verification.js';
import { openRepository, repositoriesWithBackup } from '../repository/open-repository.js';
import { z } from 'zod';
import { requestParser, type CommandOutput, type CommandSpec } from '../registry/command-spec.js';
import { formatAge, formatBytes, formatCount, formatDuration, formatTable, verificationLabel } from '../cli/format.js';
import type { PhysicalManifest } from '../repository/manifest.js';

export interface ShowResult {
  manifest: Manifest;
  /** Set when the backup is pinned (prune never deletes it). */
  pin: Pin | undefined;
  /** The newest verification of this backup in the repository it was read from. */
  verification: Verification | undefined;
}

/** One backup's manifest, by id or "latest" (several repositories: from the first that holds it), its pin and its last verification. */
export async function runShow(settings: Settings, ref: string): Promise<ShowResult> {
  const source = settings.options.source;
  const configured = configuredSourceName(settings);
  const { repository, manifest } =
    repositoryUrls(settings, configured).length > 1
      ? (await repositoriesWithBackup(settings, ref, configured))[0]!
      : await (async () => {
          const repository = await openRepository(settings, { source });
          return { repository, manifest: await repository.resolveBackup(ref, source) };
        })();
  return {
    manifest,
    pin: (await listPins(repository, manifest.source)).get(manifest.id),
    verification: await repository.lastVerification(manifest.source, manifest.id),
  };
}

/** `pgkeep show ID|latest`. */
export const showCommand: CommandSpec<{ ref: string }, ShowResult> = {
  name: 'show',
  description: 'show one backup: id or "latest"',
  arguments: [{ name: '<backup>', description: 'backup id, or latest' }],
  options: [],
  help: { globals: ['config', 'repo', 'source', 'identity'], examples: ['pgkeep show latest', 'pgkeep show 20261121T020000Z --json'] },
  parse: requestParser(z.object({ ref: z.string() }), ({ args }) => ({ ref: args[0] })),
  run: (ctx, request) => runShow(ctx.settings, request.ref),
  print: (result, out) => printShow(result, out),
};

// Printing for a terminal (moved from src/cli/print.ts)

/** show: the manifest, readable; --json gives the manifest with the last verification record added as `verification`. */
function printShow({ manifest: m, verification, pin }: ShowResult, out: CommandOutput): void {
  if (out.json) return out.document({ ...m, verification: verification ?? null, pin: pin ?? null });
  if (m.kind === 'physical') return printShowPhysical(m, out);
  const options = m.options;
  const selection = [
    options.schemaOnly && 'schema only',
    options.dataOnly && 'data only',
    options.tables.length > 0 && `tables ${options.tables.join(', ')}`,
    options.excludeTables.length > 0 && `excluding tables ${options.excludeTables.join(', ')}`,
    options.schemas.length > 0 && `schemas ${options.schemas.join(', ')}`,
    options.excludeSchemas.length > 0 && `excluding schemas ${options.excludeSchemas.join(', ')}`,
    options.noOwner && 'no owners',
    options.noAcl && 'no privileges',
  ].filter(Boolean);
  const lines: [string, string][] = [
    ['backup', m.id],
    ['source', m.source],
    ['kind', `${m.kind}, ${options.format} format${options.jobs > 1 ? `, ${options.jobs} jobs` : ''}`],
    ['contents', selection.length > 0 ? selection.join('; ') : 'whole database'],
    ['labels', m.labels.join(', ') || '-'],
    ...(pin ? [['pinned', `yes, by ${pin.by} at ${pin.pinnedAt}${pin.reason ? `: ${pin.reason}` : ''}`] as [string, string]] : []),
    ['started', m.startedAt],
    ['finished', `${m.finishedAt} (${formatDuration(m.durationMs)}, ${formatAge(new Date(m.finishedAt))})`],
    ['database', `${m.database.name} on ${m.server.host}:${m.server.port}, ${formatBytes(m.database.sizeBytes)}, ${m.database.encoding} ${m.database.collate}`],
    [
      'db state',
      m.database.state
        ? `owner ${m.database.state.owner}, locale ${m.database.state.localeProvider}${m.database.state.locale ? ` ${m.database.state.locale}` : ''}, ${m.database.state.acl === null ? 'default privileges' : `${m.database.state.acl.length} privileges`}, ${m.database.state.settings.length + m.database.state.roleSettings.reduce((n, r) => n + r.settings.length, 0)} settings${m.database.state.comment !== null ? ', a comment' : ''}`
        : m.objects.some((o) => o.role === 'database-state')
          ? 'recorded (encrypted object)'
          : 'not recorded (older pgkeep)',
    ],
    ['server', `PostgreSQL ${m.server.version}${m.server.systemIdentifier ? `, system id ${m.server.systemIdentifier}` : ''}`],
    ['tools', `pg_dump ${m.tools.pgDump}, pgkeep ${m.pgkeep.version} (${m.pgkeep.codec})`],
    ['size', sizeLine(m, 'dumped')],
    ...chunksLine(m),
    ['rows', `${formatCount(m.totals.rows)} in ${m.tables.length} tables${m.options.checksums ? ', with content checksums' : ''}`],
    ['verified', verifiedLine(verification)],
    ...(m.migrations && m.migrations.length > 0
      ? ([['migrations', m.migrations.map((s) => `${s.schema}.${s.name} ${s.latest ?? '(no version)'} (${s.rows} rows)`).join(', ')]] as [string, string][])
      : []),
    ['roles', m.globals ? `stored (globals object), ${m.globals.rolePasswords ? 'with password hashes, encrypted' : 'without passwords'}` : 'not stored'],
  ];
  const width = Math.max(...lines.map(([k]) => k.length));
  for (const [key, value] of lines) out.line(`${key.padEnd(width)}  ${value}`);
  out.line('');
  out.line(
    formatTable(
      objectHeader(m),
      m.objects.map((o) => [o.name, formatBytes(o.raw.size), formatBytes(o.stored.size), o.stored.sha256.slice(0, 16)]),
      [1, 2],
    ),
  );
  if (m.tables.length > 0) {
    out.line('');
    out.line(formatTable(['TABLE', 'ROWS'], m.tables.map((t) => [`${t.schema}.${t.name}`, t.rows === null ? '-' : formatCount(t.rows)]), [1]));
  }
}

function verifiedLine(v: Verification | undefined): string {
  if (!v) return 'never (pgkeep verify ID --restore-test)';
  const restore = v.restore ? `, restored in ${formatDuration(v.restore.durationMs)} (${v.restore.scratch})` : '';
  return `${verificationLabel(v)} (${v.finishedAt}${restore})${v.ok ? '' : `: ${v.problems[0] ?? 'failed'}`}`;
}

function printShowPhysical(m: PhysicalManifest, out: CommandOutput): void {
  const p = m.physical;
  const lines: [string, string][] = [
    ['backup', m.id],
    ['source', m.source],
    ['kind', 'physical (pg_basebackup, tar)'],
    ['labels', m.labels.join(', ') || '-'],
    ['started', m.startedAt],
    ['finished', `${m.finishedAt} (${formatDuration(m.durationMs)}, ${formatAge(new Date(m.finishedAt))})`],
    ['server', `PostgreSQL ${m.server.version} on ${m.server.host}:${m.server.port}, system id ${m.server.systemIdentifier}`],
    ['tools', `pg_basebackup ${m.tools.pgBasebackup}, pgkeep ${m.pgkeep.version} (${m.pgkeep.codec})`],
    ['WAL', `${p.startLsn} to ${p.stopLsn} on timeline ${p.timeline}: segments ${p.walStart} to ${p.walStop}`],
    ['consistent', `from ${p.stopTime} (the earliest recovery target this backup reaches)`],
    ['tablespaces', p.tablespaces.length === 0 ? 'none besides pg_default' : p.tablespaces.map((t) => `${t.name} (${t.location})`).join(', ')],
    ['size', sizeLine(m, 'copied')],
    ...chunksLine(m),
  ];
  const width = Math.max(...lines.map(([k]) => k.length));
  for (const [key, value] of lines) out.line(`${key.padEnd(width)}  ${value}`);
  out.line('');
  out.line(formatTable(objectHeader(m), m.objects.map((o) => [o.name, formatBytes(o.raw.size), formatBytes(o.stored.size), o.stored.sha256.slice(0, 16)]), [1, 2]));
}

/** Plain: raw and stored sizes; deduplicated: the logical size and what this backup added to the repository's storage. */
function sizeLine(m: Manifest, verb: string): string {
  const d = dedupFigures(m);
  if (!d) return `${formatBytes(m.totals.rawBytes)} ${verb}, ${formatBytes(m.totals.storedBytes)} stored (${ratio(m.totals.rawBytes, m.totals.storedBytes)})`;
  return `${formatBytes(d.logicalBytes)} ${verb} (logical size), ${formatBytes(d.addedBytes)} added to the repository (the rest deduplicated)`;
}

/** The objects' table: a deduplicated object's "stored" is its new chunks, compressed (what it added), and its checksum that of its stream ref (the manifest's content record). */
function objectHeader(m: Manifest): string[] {
  return dedupFigures(m) ? ['OBJECT', 'RAW', 'ADDED', 'SHA-256 (STREAM REF)'] : ['OBJECT', 'RAW', 'STORED', 'SHA-256 (STORED)'];
}

/** A deduplicated backup's chunks: how many were new, how many were already stored. */
function chunksLine(m: Manifest): [string, string][] {
  const d = dedupFigures(m);
  if (!d) return [];
  if (d.chunks === undefined || d.newChunks === undefined) return [['chunks', `${formatCount(m.objects.reduce((n, o) => n + (o.content?.chunks ?? 0), 0))} (new and reused not recorded: older pgkeep)`]];
  return [['chunks', `${formatCount(d.chunks)}: ${formatCount(d.newChunks)} new, ${formatCount(d.chunks - d.newChunks)} reused`]];
}

function ratio(raw: number, stored: number): string {
  return stored === 0 ? '-' : `${(raw / stored).toFixed(1)}x`;
}

// Callable by name through the registry (serve, the dashboard), typed: see NamedCommands.
declare module '../registry/command-registry.js' {
  interface NamedCommands {
    show: typeof showCommand;
  }
}
