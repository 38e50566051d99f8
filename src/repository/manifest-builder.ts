import { PgkeepError } from '../errors.js';
import { PGKEEP_VERSION } from '../version.js';
import { LogicalManifestSchema, MANIFEST_FORMAT, PhysicalManifestSchema, type BackupObject, type ContentTotals, type LogicalManifest, type Manifest, type PhysicalManifest } from './manifest.js';
import { canonicalManifest, sealManifest, type ManifestKey } from './manifest-integrity.js';

/**
 * The one place manifests are made: the backup writer builds every new
 * manifest here, and every manifest's text (new, or copied as read) comes
 * from manifestText. Nothing above src/repository/ writes a manifest literal.
 */

export type BackupKind = Manifest['kind'];
export type ManifestOf<K extends BackupKind> = K extends 'logical' ? LogicalManifest : PhysicalManifest;

/** The fields the writer fills in: identity, times, the pgkeep that wrote it, objects, totals, integrity. */
type WriterFields = 'format' | 'id' | 'source' | 'kind' | 'name' | 'labels' | 'startedAt' | 'finishedAt' | 'durationMs' | 'pgkeep' | 'integrity' | 'objects' | 'totals';

/** What a backup of kind K says about itself beyond what the writer knows (server, tools, database, tables, WAL position, ...). */
export type ManifestBody<K extends BackupKind> = Omit<ManifestOf<K>, WriterFields>;

export interface ManifestHead<K extends BackupKind> {
  id: string;
  source: string;
  kind: K;
  name: string | null;
  labels: readonly string[];
  startedAt: Date;
  finishedAt: Date;
  /** The zstd codec the objects were compressed with (its name is recorded). */
  codec: string;
}

/**
 * A new manifest of the current format: the head, the body, the objects as
 * stored and their totals, checked against the schema (a manifest pgkeep
 * writes is always one it can read: a mistake is an internal error before
 * anything is published). In an encrypted repository the database's own
 * state is left out: manifests are in clear and settings may be secrets
 * (the encrypted "database-state" object holds it). In a deduplicating
 * repository `options.content` is what the backup's content session wrote
 * (totals.content: chunks, new chunks, bytes added).
 */
export function buildManifest<K extends BackupKind>(
  head: ManifestHead<K>,
  body: ManifestBody<K>,
  objects: readonly BackupObject[],
  options: { encrypted: boolean; content?: ContentTotals | undefined },
): ManifestOf<K> {
  const common = {
    format: MANIFEST_FORMAT,
    id: head.id,
    source: head.source,
    kind: head.kind,
    name: head.name,
    labels: [...head.labels],
    startedAt: head.startedAt.toISOString(),
    finishedAt: head.finishedAt.toISOString(),
    durationMs: Math.max(0, head.finishedAt.getTime() - head.startedAt.getTime()),
    pgkeep: { version: PGKEEP_VERSION, codec: head.codec },
  };
  const rawBytes = objects.reduce((n, o) => n + o.raw.size, 0);
  const storedBytes = objects.reduce((n, o) => n + o.stored.size, 0);
  const content = options.content ? { content: options.content } : {};
  const parsed =
    head.kind === 'logical'
      ? (() => {
          const logical = body as ManifestBody<'logical'>;
          const { state, ...database } = logical.database;
          return LogicalManifestSchema.safeParse({
            ...common,
            ...logical,
            database: options.encrypted || state === undefined ? database : { ...database, state },
            objects: [...objects],
            totals: { rawBytes, storedBytes, rows: logical.tables.reduce((n, t) => n + (t.rows ?? 0), 0), ...content },
          });
        })()
      : PhysicalManifestSchema.safeParse({ ...common, ...(body as ManifestBody<'physical'>), objects: [...objects], totals: { rawBytes, storedBytes, ...content } });
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new PgkeepError('INTERNAL', `the manifest of backup ${head.source}/${head.id} would be invalid at ${issue.path.join('.') || 'the top level'}: ${issue.message}`);
  }
  return parsed.data as ManifestOf<K>;
}

/**
 * The text of a manifest file: the manifest with its integrity (a checksum
 * and, with `keys`, an HMAC per key). A manifest read from a repository and
 * written unchanged without keys (copy) keeps `asRead`, its text byte for
 * byte, with the authentication its writer gave it.
 */
export function manifestText(manifest: Manifest, keys: readonly ManifestKey[], asRead?: string): string {
  if (asRead !== undefined && keys.length === 0) return asRead;
  const { integrity: _old, ...rest } = manifest;
  return `${JSON.stringify({ ...rest, integrity: sealManifest(canonicalManifest(rest), keys) }, null, 2)}\n`;
}

/**
 * The body of a manifest read from a repository: what its backup said about
 * itself, for writing the same backup again through a writer (copy into a
 * repository that stores it differently: other chunks, other encryption).
 */
export function manifestBodyOf<K extends BackupKind>(manifest: ManifestOf<K>): ManifestBody<K> {
  const body: Record<string, unknown> = { ...manifest };
  for (const field of WRITER_FIELDS) delete body[field];
  return body as ManifestBody<K>;
}

const WRITER_FIELDS: readonly WriterFields[] = ['format', 'id', 'source', 'kind', 'name', 'labels', 'startedAt', 'finishedAt', 'durationMs', 'pgkeep', 'integrity', 'objects', 'totals'];
