import { z } from 'zod';
import { retentionSchemas } from './retention-schema.js';
import { serveSchemas } from './serve-schema.js';

/** Names of sources and backups: they become path segments in the repository. */
export const NAME_PATTERN = /^[A-Za-z0-9._-]{1,100}$/;

export const BackupFormat = z.enum(['custom', 'directory', 'plain']);
export type BackupFormat = z.infer<typeof BackupFormat>;

export const repoEntryUrl = (entry: RepoEntry): string => entry.url;

/*
 * The config file's schemas are made on first use, when a config file is read: making them all (with
 * those of retention-schema.ts and serve-schema.ts) cost every command ~10 ms of start-up, and most
 * runs (wal-push, cron jobs with --repo and the environment) read no config file.
 */

function build() {
  const { HealthSchema, RetentionSchema } = retentionSchemas();
  const { NotifySchema, ScheduleSchema, ServeSchema } = serveSchemas();

  /** Options of a logical backup; the same keys in the config and as flags. */
  const BackupOptionsSchema = z
    .object({
      format: BackupFormat.optional(),
      jobs: z.coerce.number().int().min(1).max(64).optional(),
      schemaOnly: z.boolean().optional(),
      dataOnly: z.boolean().optional(),
      tables: z.array(z.string().min(1)).optional(),
      excludeTables: z.array(z.string().min(1)).optional(),
      schemas: z.array(z.string().min(1)).optional(),
      excludeSchemas: z.array(z.string().min(1)).optional(),
      noOwner: z.boolean().optional(),
      noAcl: z.boolean().optional(),
      compressLevel: z.number().int().min(1).max(19).optional(),
      /** Record a content hash of every table (read in the dump's snapshot), for verify --deep. */
      checksums: z.boolean().optional(),
      /** Store roles and tablespaces (pg_dumpall --globals-only) beside the dump; default on. */
      globals: z.boolean().optional(),
      labels: z.array(z.string().regex(NAME_PATTERN, 'labels use letters, digits, ".", "_" and "-"')).optional(),
    })
    .strict();

  /** A positive duration: 10s, 0.5s, 2m (units s, m, h). */
  const S3Duration = z.string().regex(/^(?:\d+(?:\.\d+)?[smh])+$/, 'expected a duration such as 0.5s, 30s or 2m (units s, m, h)');

  /** Options of s3:// repositories; credentials come from the standard AWS chain, never from here. */
  const S3OptionsSchema = z
    .object({
      endpoint: z.string().url().optional(),
      region: z.string().min(1).optional(),
      forcePathStyle: z.boolean().optional(),
      storageClass: z.string().min(1).optional(),
      sse: z.enum(['AES256', 'aws:kms']).optional(),
      kmsKeyId: z.string().min(1).optional(),
      /**
       * A fixed multipart part size in MiB (5 .. 5120), for servers that want equal
       * parts (Cloudflare R2). Default: parts growing from 8 MiB, so objects up to
       * S3's 5 TiB limit fit with bounded memory.
       */
      partSizeMiB: z.coerce.number().int().min(5).max(5120).optional(),
      /** Network waits, as durations (0.5s, 10s, 2m): see README, "S3 timeouts". */
      connectTimeout: S3Duration.optional(),
      /** Longest silence on a connection, sending or receiving (default 60s). */
      idleTimeout: S3Duration.optional(),
      /** Longest one attempt may take until its response begins, its body sent (default 10m). */
      requestTimeout: S3Duration.optional(),
      /** How long a broken download keeps resuming without a new byte (default 2m). */
      retryBudget: S3Duration.optional(),
      /** Attempts per request, and failures in a row a download survives (default 5). */
      maxAttempts: z.coerce.number().int().min(1).max(50).optional(),
    })
    .strict();

  /**
   * Storage-driver options, one section per driver (`storage: { s3: { … } }`).
   * The older spelling, `s3:` next to `storage`, stays accepted as an alias.
   */
  const StorageOptionsSchema = z.object({ s3: S3OptionsSchema.optional() }).strict();

  /**
   * A repository in `repos`: its URL, or `{ url, s3 }` with S3 options of its own
   * (storage class, SSE, endpoint…). A plain URL is read as `{ url }`, so errors
   * in either form name the exact key.
   */
  const RepoEntrySchema = z.preprocess(
    (value) => (typeof value === 'string' ? { url: value } : value),
    z
      .object(
        {
          url: z.string({ error: 'a repository needs a url' }).min(1, 'a repository URL cannot be empty'),
          storage: StorageOptionsSchema.optional(),
          /** Alias of storage.s3 (the older spelling). */
          s3: S3OptionsSchema.optional(),
        },
        { error: 'a repository is a path or URL, or { url: …, storage: { s3: { … } } }' },
      )
      .strict(),
  );

  /**
   * One SQL probe of a restore test: a query run in the restored scratch
   * database (read-only); its first column of its first row must equal
   * `expect`, or with "non-zero" (the default) be a number other than 0 or true.
   * A bare string is a probe that expects "non-zero".
   */
  const ProbeSchema = z.union([
    z.string().min(1, 'a probe needs an SQL query'),
    z
      .object({
        sql: z.string().min(1, 'a probe needs an SQL query'),
        expect: z.union([z.string(), z.number(), z.boolean()]).optional(),
      })
      .strict(),
  ]);

  /** Restore tests (verify --restore-test). */
  const VerifyOptionsSchema = z
    .object({
      /** Where restore tests restore: same-server, local, or a postgresql:// URL of a dedicated server. */
      scratch: z.string().min(1).optional(),
      probes: z.array(ProbeSchema).optional(),
    })
    .strict();

  /** Several repositories of one source: each backup is written to all of them in one pass. */
  const RepoListSchema = z
    .array(RepoEntrySchema, {
      error: '"repos" takes a list of repository paths or URLs (or { url, s3 } entries), e.g. repos: [./backups, s3://bucket/prefix]',
    })
    .min(1, '"repos" needs at least one repository')
    .refine((entries) => new Set(entries.map((entry) => entry.url)).size === entries.length, '"repos" lists the same repository twice');

  const SourceSchema = z
    .object({
      /** postgresql:// URL; the fields below override its parts. */
      db: z.string().min(1).optional(),
      host: z.string().min(1).optional(),
      // coerced: a ${DB_PORT} from the environment arrives as text
      port: z.coerce.number().int().min(1).max(65535).optional(),
      user: z.string().min(1).optional(),
      database: z.string().min(1).optional(),
      password: z.string().optional(),
      passwordFile: z.string().min(1).optional(),
      sslmode: z.enum(['disable', 'allow', 'prefer', 'require', 'verify-ca', 'verify-full']).optional(),
      repo: z.string().min(1).optional(),
      /** Several repositories; wins over `repo` when both are given. */
      repos: RepoListSchema.optional(),
      backup: BackupOptionsSchema.optional(),
      retention: RetentionSchema.optional(),
      health: HealthSchema.optional(),
      verify: VerifyOptionsSchema.optional(),
      /** Cron schedules of `pgkeep serve`. */
      schedule: ScheduleSchema.optional(),
    })
    .strict();

  const ConfigSchema = z
    .object({
      /** Default repository of every source. */
      repo: z.string().min(1).optional(),
      /** Default repositories of every source; wins over `repo` when both are given. */
      repos: RepoListSchema.optional(),
      /** Folder of the PostgreSQL client programs to use. */
      pgBin: z.string().min(1).optional(),
      /** Where directory-format dumps and parallel restores are staged; default the OS temp folder. */
      tempDir: z.string().min(1).optional(),
      /** Defaults for the backups of every source. */
      backup: BackupOptionsSchema.optional(),
      /** Defaults for the restore tests of every source; a source's own `verify` keys win. */
      verify: VerifyOptionsSchema.optional(),
      /** Storage-driver options, per driver: the defaults of every repository of that driver. */
      storage: StorageOptionsSchema.optional(),
      /** Alias of storage.s3 (the older spelling). */
      s3: S3OptionsSchema.optional(),
      /** Default retention of every source (a source's own keys win, key by key). */
      retention: RetentionSchema.optional(),
      /** Default status thresholds of every source (a source's own keys win, key by key). */
      health: HealthSchema.optional(),
      /** age identity file for restore and verify of encrypted repositories. */
      identityFile: z.string().min(1).optional(),
      /** File holding the passphrase of a passphrase-encrypted repository. */
      passphraseFile: z.string().min(1).optional(),
      /** The daemon (`pgkeep serve`): listen address, token, state folder, job limits. */
      serve: ServeSchema.optional(),
      /** Alert channels of the daemon and `pgkeep notify test`. */
      notify: NotifySchema.optional(),
      sources: z
        .record(z.string().regex(NAME_PATTERN, 'source names use letters, digits, ".", "_" and "-" (at most 100)'), SourceSchema)
        .optional(),
    })
    .strict();
  return { BackupOptionsSchema, S3OptionsSchema, StorageOptionsSchema, RepoEntrySchema, ProbeSchema, VerifyOptionsSchema, RepoListSchema, SourceSchema, ConfigSchema };
}

type Schemas = ReturnType<typeof build>;
let built: Schemas | undefined;
/** The config file's schemas, made on first use. */
export const configSchemas = (): Schemas => (built ??= build());
export type BackupOptionsConfig = z.infer<Schemas['BackupOptionsSchema']>;
export type S3OptionsConfig = z.infer<Schemas['S3OptionsSchema']>;
export type StorageOptionsConfig = z.infer<Schemas['StorageOptionsSchema']>;
export type RepoEntry = z.infer<Schemas['RepoEntrySchema']>;
export type ProbeConfig = z.infer<Schemas['ProbeSchema']>;
export type VerifyOptionsConfig = z.infer<Schemas['VerifyOptionsSchema']>;
export type SourceConfig = z.infer<Schemas['SourceSchema']>;
export type PgkeepConfig = z.infer<Schemas['ConfigSchema']>;
