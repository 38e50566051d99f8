import { z } from 'zod';
import { BackupFormat } from '../config/config-schema.js';
import { PgkeepError } from '../errors.js';
import type { DatabaseState } from '../postgres/database-state.js';
import { IntegritySchema } from './manifest-integrity.js';

export const MANIFEST_FORMAT = 2;

const DigestSchema = z.object({ size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/) });
/**
 * The raw (uncompressed, decrypted) bytes of an object: size and SHA-256. A
 * content stream (format 2 on) records only its size: its ref is a Merkle
 * tree (each chunk checked against its id, the lists too, the root in this
 * checksummed manifest) that proves every byte and its place, so a second
 * SHA-256 pass over the whole stream proved nothing new and cost ~0.7 s of
 * CPU per GB on every backup (docs/benchmarks.md). Older manifests have it.
 */
const RawDigestSchema = z.object({ size: z.number().int().nonnegative(), sha256: z.string().regex(/^[0-9a-f]{64}$/).optional() });

/**
 * A path inside the backup folder: '/'-separated names, none empty, "." or
 * "..", no backslash or control character. A manifest is data from the
 * repository, so an object name must never reach outside its backup folder.
 */
const ObjectName = z
  .string()
  .min(1)
  .max(1024)
  .refine((name) => name.split('/').every((part) => part !== '' && part !== '.' && part !== '..' && !/[\\\x00-\x1f]/.test(part)), {
    message: 'not a path inside the backup folder',
  });

/** One stored object, with checksums and sizes before and after compression (and, later, encryption). */
export const ObjectSchema = z.object({
  /** Path relative to the backup folder, e.g. "dump.zst" or "dump.d/toc.dat.zst". */
  name: ObjectName,
  /**
   * What the object holds: "dump" (the whole archive), "dump-file" (one file of a directory dump),
   * "globals" (pg_dumpall --globals-only: roles, memberships, tablespaces, as SQL),
   * "database-state" (the database's own state as JSON, DatabaseStateSchema; in clear also in the manifest, except in encrypted repositories),
   * "base" (a physical backup's tar of the main data directory), "tablespace" (the tar of one tablespace, `file` = its OID),
   * "wal" (an archived WAL file, never listed in a manifest).
   */
  role: z.enum(['dump', 'dump-file', 'globals', 'database-state', 'base', 'tablespace', 'wal']),
  /** For dump-file: the file name inside the dump directory. */
  file: z
    .string()
    .regex(/^(?!\.\.?$)[^/\\\x00-\x1f]{1,255}$/, 'not a plain file name')
    .optional(),
  raw: RawDigestSchema,
  stored: DigestSchema,
  compression: z.enum(['zstd', 'none']),
  /** age, to these public keys (a passphrase repository's own key included); null when stored in clear. */
  encryption: z.object({ method: z.literal('age'), recipients: z.array(z.string()) }).nullable(),
  /**
   * In a deduplicating repository: the stream as chunks of the content store
   * (docs/content-store.md), instead of a file in the backup folder. `stored`
   * is then what this backup added to the store, and its sha256 that of this
   * ref's JSON; `raw` is the whole stream's size (and, in format 1 manifests,
   * its SHA-256): every read checks each chunk against its id and the size.
   */
  content: z
    .object({
      size: z.number().int().nonnegative(),
      chunks: z.number().int().nonnegative(),
      depth: z.number().int().nonnegative().max(8),
      root: z.array(z.string().regex(/^[0-9a-f]{64}$/)).max(64),
    })
    .optional(),
}).refine((o) => o.content !== undefined || o.raw.sha256 !== undefined, { message: 'an object stored as a file needs its SHA-256', path: ['raw', 'sha256'] });
export type BackupObject = z.infer<typeof ObjectSchema>;

export const TableSchema = z.object({
  schema: z.string(),
  name: z.string(),
  /** Exact count read in the dump's snapshot; null when the dump holds no data. */
  rows: z.number().int().nonnegative().nullable(),
  /** backup --checksums: a content hash of the table's rows read in the same snapshot (see tableChecksums). */
  checksum: z.string().optional(),
});
export type TableCount = z.infer<typeof TableSchema>;

/**
 * The state of an application's migration table at backup time (Rails,
 * Flyway, Knex, Prisma, EF Core, Alembic, ...), so a restore can tell whether
 * the restored schema is at the version the app expects.
 */
export const MigrationStateSchema = z.object({
  schema: z.string(),
  name: z.string(),
  rows: z.number().int().nonnegative(),
  /** The newest applied migration (version, id or name), null when the table is empty or its layout is unknown. */
  latest: z.string().nullable(),
});
export type MigrationState = z.infer<typeof MigrationStateSchema>;

/** The database-level state (postgres/database-state.ts): what pg_dump leaves out without --create. */
export const DatabaseStateSchema = z.object({
  owner: z.string(),
  /** null: the default privileges (never granted nor revoked). */
  acl: z
    .array(z.object({ grantee: z.string().nullable(), grantor: z.string(), privilege: z.enum(['CONNECT', 'CREATE', 'TEMPORARY']), grantable: z.boolean() }))
    .nullable(),
  comment: z.string().nullable(),
  settings: z.array(z.string()),
  roleSettings: z.array(z.object({ role: z.string(), settings: z.array(z.string()) })),
  connectionLimit: z.number().int(),
  localeProvider: z.enum(['libc', 'icu', 'builtin']),
  /** ICU locale (or the builtin provider's), null for libc. */
  locale: z.string().nullable(),
  icuRules: z.string().nullable(),
}) satisfies z.ZodType<Omit<DatabaseState, 'encoding' | 'collate' | 'ctype'>>;

/**
 * A deduplicating backup's share of the content store, as its writer saw it
 * (absent in plain repositories and in manifests of older pgkeep): `chunks`
 * of its streams, `newChunks` of them stored by this backup (the rest were
 * already there), and `addedBytes`, the bytes of the packs this backup wrote
 * (compressed chunks, chunk lists, pack headers and, where encrypted, age):
 * what it added to storage. The sum over every backup that was written into
 * a repository is the bytes of all packs ever written there.
 */
export const ContentTotalsSchema = z.object({
  chunks: z.number().int().nonnegative(),
  newChunks: z.number().int().nonnegative(),
  addedBytes: z.number().int().nonnegative(),
  packs: z.number().int().nonnegative(),
});
export type ContentTotals = z.infer<typeof ContentTotalsSchema>;

/** What every manifest has, whatever its kind (identity, then after `kind`: times, labels, the pgkeep that wrote it). */
const manifestIdentity = {
  format: z.literal(MANIFEST_FORMAT),
  id: z.string(),
  source: z.string(),
};
const manifestHead = {
  name: z.string().nullable(),
  labels: z.array(z.string()),
  startedAt: z.string(),
  finishedAt: z.string(),
  durationMs: z.number().nonnegative(),
  pgkeep: z.object({ version: z.string(), codec: z.string() }),
  /** Checksum and, in encrypted repositories, authentication of everything else (manifest-integrity.ts); absent in manifests of older pgkeep. */
  integrity: IntegritySchema.optional(),
};

/** The fields of `manifestIdentity`, the kind and `manifestHead`, for a manifest being written now, in the order its file lists them. */
export function writeManifestHead<K extends Manifest['kind']>(head: {
  id: string;
  source: string;
  kind: K;
  name: string | null;
  labels: string[];
  startedAt: Date;
  finishedAt: Date;
  codec: string;
  pgkeepVersion: string;
}) {
  return {
    format: MANIFEST_FORMAT,
    id: head.id,
    source: head.source,
    kind: head.kind,
    name: head.name,
    labels: head.labels,
    startedAt: head.startedAt.toISOString(),
    finishedAt: head.finishedAt.toISOString(),
    durationMs: head.finishedAt.getTime() - head.startedAt.getTime(),
    pgkeep: { version: head.pgkeepVersion, codec: head.codec },
  } as const;
}

export const LogicalManifestSchema = z.object({
  ...manifestIdentity,
  kind: z.literal('logical'),
  ...manifestHead,
  server: z.object({
    version: z.string(),
    versionNum: z.number().int(),
    systemIdentifier: z.string().nullable(),
    host: z.string(),
    port: z.number().int(),
  }),
  tools: z.object({ pgDump: z.string() }),
  database: z.object({
    name: z.string(),
    encoding: z.string(),
    collate: z.string(),
    ctype: z.string(),
    sizeBytes: z.number().int().nonnegative(),
    /**
     * Everything else CREATE/ALTER DATABASE, COMMENT, GRANT and ALTER ROLE … IN DATABASE set. Absent in manifests of
     * older pgkeep, and in encrypted repositories, where it is only in the encrypted "database-state" object.
     */
    state: DatabaseStateSchema.optional(),
  }),
  options: z.object({
    format: BackupFormat,
    schemaOnly: z.boolean(),
    dataOnly: z.boolean(),
    tables: z.array(z.string()),
    excludeTables: z.array(z.string()),
    schemas: z.array(z.string()),
    excludeSchemas: z.array(z.string()),
    noOwner: z.boolean(),
    noAcl: z.boolean(),
    jobs: z.number().int().positive(),
    compressLevel: z.number().int(),
    /** backup --checksums: tables carry a content hash (absent in manifests of older pgkeep). */
    checksums: z.boolean().optional(),
  }),
  snapshot: z.string().nullable(),
  /** Set when the backup holds a globals object: whether role passwords are in it (only into encrypted repositories, by a role that may read pg_authid). */
  globals: z
    .object({
      rolePasswords: z.boolean(),
      /** Set for the backups of one `backup --all-databases` run: they hold the same globals dump (same SHA-256). */
      run: z.string().optional(),
    })
    .optional(),
  objects: z.array(ObjectSchema),
  tables: z.array(TableSchema),
  /** Migration tables found among the dumped tables; absent in manifests of older pgkeep. */
  migrations: z.array(MigrationStateSchema).optional(),
  totals: z.object({ rawBytes: z.number().int().nonnegative(), storedBytes: z.number().int().nonnegative(), rows: z.number().int().nonnegative(), content: ContentTotalsSchema.optional() }),
});
export type LogicalManifest = z.infer<typeof LogicalManifestSchema>;

const LSN = z.string().regex(/^[0-9A-F]{1,8}\/[0-9A-F]{1,8}$/);
const SEGMENT = z.string().regex(/^[0-9A-F]{24}$/);

/**
 * A physical backup (pg_basebackup of the whole cluster): the base tar and
 * where it sits in the WAL. It is consistent once WAL from `walStart` to
 * `walStop` is replayed; those segments live in the source's WAL archive,
 * not in the backup folder.
 */
export const PhysicalManifestSchema = z.object({
  ...manifestIdentity,
  kind: z.literal('physical'),
  ...manifestHead,
  server: z.object({
    version: z.string(),
    versionNum: z.number().int(),
    systemIdentifier: z.string(),
    host: z.string(),
    port: z.number().int(),
  }),
  tools: z.object({ pgBasebackup: z.string() }),
  physical: z.object({
    startLsn: LSN,
    stopLsn: LSN,
    timeline: z.number().int().positive(),
    /** First and last WAL segment the backup needs to become consistent. */
    walStart: SEGMENT,
    walStop: SEGMENT,
    segmentSize: z.number().int().positive(),
    /** The backup history file PostgreSQL wrote (START/STOP WAL LOCATION, CHECKPOINT LOCATION, LABEL, START/STOP TIME). */
    backupLabel: z.string(),
    /** When the backup became consistent: recovery targets before this cannot be reached from it. */
    stopTime: z.string(),
    tablespaces: z.array(z.object({ oid: z.number().int(), name: z.string(), location: z.string() })),
    /**
     * Facts for the restore test to check: each database's tables and their
     * pg_class.reltuples, read from the catalog right after the backup
     * stopped; absent in manifests of older pgkeep.
     */
    facts: z
      .object({
        takenAt: z.string(),
        databases: z.array(z.object({ name: z.string(), tables: z.array(z.object({ schema: z.string(), name: z.string(), reltuples: z.number() })) })),
      })
      .optional(),
  }),
  objects: z.array(ObjectSchema),
  totals: z.object({ rawBytes: z.number().int().nonnegative(), storedBytes: z.number().int().nonnegative(), content: ContentTotalsSchema.optional() }),
});
export type PhysicalManifest = z.infer<typeof PhysicalManifestSchema>;

/** Any backup's manifest; `kind` tells which. */
export const ManifestSchema = z.discriminatedUnion('kind', [LogicalManifestSchema, PhysicalManifestSchema]);
export type Manifest = LogicalManifest | PhysicalManifest;

export type DatabaseStateRecord = z.infer<typeof DatabaseStateSchema>;

/**
 * The recorded database-level state with the encoding and locale: from the
 * manifest, else from the backup's "database-state" object (`load` reads it:
 * encrypted repositories keep it only there); undefined for a backup of an older pgkeep.
 */
export async function databaseStateOf(manifest: LogicalManifest, load?: (object: BackupObject) => Promise<Buffer>): Promise<DatabaseState | undefined> {
  const { encoding, collate, ctype } = manifest.database;
  let state = manifest.database.state;
  const object = manifest.objects.find((o) => o.role === 'database-state');
  if (!state && object && load) {
    const parsed = DatabaseStateSchema.safeParse(JSON.parse((await load(object)).toString('utf8')));
    if (!parsed.success) throw new PgkeepError('MANIFEST_INVALID', `backup ${manifest.id}: object ${object.name} is not a database state (${parsed.error.issues[0]?.message ?? 'invalid'})`);
    state = parsed.data;
  }
  return state ? { encoding, collate, ctype, ...state } : undefined;
}

/** The state as the manifest stores it: encoding, collate and ctype live beside it. */
export function manifestState(state: DatabaseState): NonNullable<LogicalManifest['database']['state']> {
  const { encoding: _e, collate: _c, ctype: _t, ...rest } = state;
  return { ...rest, localeProvider: rest.localeProvider ?? 'libc', locale: rest.locale ?? null, icuRules: rest.icuRules ?? null };
}

/**
 * Upgrades of stored manifests, keyed on the format they upgrade from: each
 * takes a manifest of format N to format N + 1, and keeps every older
 * manifest readable (test/unit/manifest-upgrade.test.ts reads the stored
 * manifests of test/support/fixtures/manifests/).
 *
 * 1 → 2: format 2 lets a content stream's `raw` omit its SHA-256 (see
 * RawDigestSchema); a format 1 manifest is a format 2 one as it is. The
 * number moved so that a pgkeep that needs every object's SHA-256 refuses
 * these manifests as newer than it reads, not as damaged.
 */
const UPGRADES: Readonly<Record<number, (manifest: Record<string, unknown>) => Record<string, unknown>>> = {
  1: (m) => ({ ...m, format: 2 }),
};

/**
 * A manifest as stored (parsed JSON) brought to the current format, then
 * checked against the schema. Errors say what is wrong in words (the caller
 * names the backup): MANIFEST_INVALID for a damaged one, REPO_FORMAT for one
 * written by a newer pgkeep.
 */
export function upgradeManifest(raw: unknown): Manifest {
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw)) throw new PgkeepError('MANIFEST_INVALID', 'its manifest is not a JSON object');
  let manifest = raw as Record<string, unknown>;
  const format = manifest.format;
  if (typeof format !== 'number' || !Number.isInteger(format) || format < 1) {
    throw new PgkeepError('MANIFEST_INVALID', `its manifest is invalid at format: expected a format number, got ${JSON.stringify(format)}`);
  }
  if (format > MANIFEST_FORMAT) throw new PgkeepError('REPO_FORMAT', `it has manifest format ${format}; this pgkeep reads format ${MANIFEST_FORMAT}: upgrade pgkeep`);
  for (let from = format; from < MANIFEST_FORMAT; from++) {
    const upgrade = UPGRADES[from];
    if (!upgrade) throw new PgkeepError('MANIFEST_INVALID', `its manifest has format ${from}, which no pgkeep wrote`);
    manifest = upgrade(manifest);
  }
  const parsed = ManifestSchema.safeParse(manifest);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new PgkeepError('MANIFEST_INVALID', `its manifest is invalid at ${issue.path.join('.') || 'the top level'}: ${issue.message}`);
  }
  return parsed.data;
}

/** The raw size and SHA-256 of an object stored as a file (the schema requires the digest there; only content streams may lack it). */
export function fileDigest(object: BackupObject): { size: number; sha256: string } {
  if (object.raw.sha256 === undefined) throw new PgkeepError('MANIFEST_INVALID', `object ${object.name} is stored as a file but its manifest has no SHA-256 for it`);
  return { size: object.raw.size, sha256: object.raw.sha256 };
}

/** Physical manifests only. */
export function isPhysical(manifest: Manifest): manifest is PhysicalManifest {
  return manifest.kind === 'physical';
}

/**
 * From when a backup can be recovered: a physical backup becomes consistent
 * at its stop time (recovery targets before it cannot be reached from it); a
 * logical one is a snapshot, taken by the time it finished.
 */
export function consistentAt(manifest: Manifest): string {
  if (manifest.kind === 'physical') {
    const stop = Date.parse(manifest.physical.stopTime);
    if (!Number.isNaN(stop)) return new Date(stop).toISOString();
  }
  return manifest.finishedAt;
}

/** The database a backup holds ('(cluster)' for a physical backup: all of them). */
export function backupDatabaseName(manifest: Manifest): string {
  return manifest.kind === 'logical' ? manifest.database.name : '(cluster)';
}

/** The logical manifest, or a clear error naming the command that handles a physical backup. */
export function requireLogical(manifest: Manifest, what: string): LogicalManifest {
  if (manifest.kind === 'logical') return manifest;
  throw new PgkeepError('USAGE', `backup ${manifest.id} is a physical backup (the whole cluster): ${what} works on logical backups; recover it with pgkeep pitr --pgdata DIR`);
}

/** What a backup means for a deduplicating repository's size; undefined for a backup stored as files. */
export interface DedupFigures {
  /** The backup's streams in full (what a restore reads). */
  logicalBytes: number;
  /** What writing it added to storage: its packs (older manifests: its new chunks, compressed). */
  addedBytes: number;
  /** Chunks of its streams and how many were new; undefined in manifests of older pgkeep. */
  chunks: number | undefined;
  newChunks: number | undefined;
}

export function dedupFigures(manifest: Manifest): DedupFigures | undefined {
  // a manifest reduced to its totals (the status module's unit tests build such) is not deduplicated
  if (manifest.totals.content === undefined && !(manifest.objects as BackupObject[] | undefined)?.some((o) => o.content !== undefined)) return undefined;
  const content = manifest.totals.content;
  return {
    logicalBytes: manifest.totals.rawBytes,
    addedBytes: content?.addedBytes ?? manifest.totals.storedBytes,
    chunks: content?.chunks,
    newChunks: content?.newChunks,
  };
}
