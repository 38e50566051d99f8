import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { userInfo } from 'node:os';
import * as path from 'node:path';
import { PgkeepError } from '../errors.js';
import { parseDatabaseUrl, parsePort, type ConnectionInfo } from '../postgres/connection-info.js';
import { NAME_PATTERN, repoEntryUrl, type BackupOptionsConfig, type PgkeepConfig, type ProbeConfig, type S3OptionsConfig, type SourceConfig } from './config-schema.js';
import { deepFreeze, loadConfig } from './load-config.js';
import { s3EnvOptions } from './s3-env.js';
import { parseDuration } from '../retention/duration.js';
import type { OpenStorageOptions } from '../storage/open-storage.js';

/** Options every command takes. */
export interface GlobalOptions {
  config?: string | undefined;
  repo?: string | undefined;
  db?: string | undefined;
  source?: string | undefined;
  /** age identity file (restore, verify of encrypted repositories). */
  identity?: string | undefined;
}

/**
 * Everything a command needs to know about its configuration, resolved once
 * and frozen. Only this module reads the environment (the one its caller,
 * the CLI, hands over); commands take Settings.
 */
export interface Settings {
  readonly cwd: string;
  readonly configFile: string | undefined;
  readonly config: Readonly<PgkeepConfig>;
  readonly env: Readonly<Record<string, string | undefined>>;
  readonly options: Readonly<GlobalOptions>;
}

/** A database being backed up, with everything needed to reach it. */
export interface ResolvedSource {
  readonly name: string;
  readonly connection: ConnectionInfo;
  readonly backup: Readonly<BackupOptionsConfig>;
  /** The first of `repos`. */
  readonly repo: string;
  /** Every repository a backup of this source is written to, in config order (one unless the config lists `repos`). */
  readonly repos: readonly string[];
  readonly pgBin: string | undefined;
  readonly tempDir: string | undefined;
  /**
   * The config file defines it (or an --all-databases run found its database
   * on the server). Only such a source, or one with a backup, gets a failure
   * record: a first attempt that fails (a typo, no database given) must not
   * leave a source behind that is "at risk" forever.
   */
  readonly configured: boolean;
}

/**
 * Reads the config and the environment the caller hands over (the CLI passes
 * process.env and its working folder; config reads no process state itself).
 */
export function loadSettings(options: GlobalOptions, context: { env: NodeJS.ProcessEnv; cwd: string }): Settings {
  const { cwd } = context;
  const env = { ...readDotenv(cwd), ...context.env };
  const loaded = loadConfig(options.config, env, cwd);
  return deepFreeze({ cwd, configFile: loaded.path, config: loaded.config, env, options: { ...options } });
}

/** A .env file in the working folder, as the teams' own scripts read it; the real environment wins. */
function readDotenv(cwd: string): Record<string, string> {
  const file = path.join(cwd, '.env');
  if (!existsSync(file)) return {};
  // loaded only for a .env file: dotenv (and node:crypto, which it loads) cost every command ~5 ms of start-up
  const { parse: parseDotenv } = createRequire(import.meta.url)('dotenv') as typeof import('dotenv');
  try {
    return parseDotenv(readFileSync(file));
  } catch (error) {
    throw new PgkeepError('CONFIG_INVALID', `cannot read ${file}: ${(error as Error).message}`, { cause: error });
  }
}

/** Source names from the config file, in file order. */
export function configuredSources(settings: Settings): string[] {
  return Object.keys(settings.config.sources ?? {});
}

/**
 * The source whose repositories a reading command looks in: --source, else
 * the config's only (or chosen) source; undefined with no config (the
 * repository's own sources are searched then).
 */
export function configuredSourceName(settings: Settings): string | undefined {
  return settings.options.source ?? (configuredSources(settings).length > 0 ? selectedSourceName(settings) : undefined);
}

/**
 * The source a command works on: --source, else the only one in the config,
 * else (zero-config) one named after the database. `undefined` when the config
 * has several sources and none was chosen.
 */
export function selectedSourceName(settings: Settings): string | undefined {
  const names = configuredSources(settings);
  const chosen = settings.options.source;
  if (chosen !== undefined) {
    if (names.length > 0 && !names.includes(chosen)) {
      throw new PgkeepError('SOURCE_UNKNOWN', `no source "${chosen}" in ${path.basename(settings.configFile!)}: the sources are ${names.join(', ')}`);
    }
    validateName(chosen, 'source');
    return chosen;
  }
  if (names.length === 1) return names[0];
  if (names.length > 1) return undefined;
  return sourceNameForDatabase(resolveConnection(settings, undefined).database);
}

export function resolveSource(settings: Settings): ResolvedSource {
  const name = selectedSourceName(settings);
  if (name === undefined) {
    throw new PgkeepError('SOURCE_UNKNOWN', `${path.basename(settings.configFile!)} has several sources: choose one with --source (${configuredSources(settings).join(', ')})`);
  }
  const sourceConfig = settings.config.sources?.[name];
  return deepFreeze({
    name,
    connection: resolveConnection(settings, sourceConfig),
    backup: { ...settings.config.backup, ...sourceConfig?.backup },
    repo: repositoryUrl(settings, name),
    repos: repositoryUrls(settings, name),
    ...toolPaths(settings),
    configured: sourceConfig !== undefined,
  });
}

/** Where the PostgreSQL programs are (PG_BIN > config pgBin) and where to stage temp files. */
export function toolPaths(settings: Settings): { pgBin: string | undefined; tempDir: string | undefined } {
  return {
    pgBin: settings.env.PG_BIN || configPath(settings, settings.config.pgBin),
    tempDir: settings.env.PGKEEP_TEMP_DIR || configPath(settings, settings.config.tempDir),
  };
}

/** A restore-test probe, normalised: `expect` is a value to equal, or "non-zero". */
export interface Probe {
  sql: string;
  expect: string | number | boolean;
}

/**
 * Restore-test settings of a source: the source's `verify` keys over the
 * top-level ones (a source's probes replace the defaults, they do not add).
 */
export function verifySettings(settings: Settings, sourceName: string | undefined): { scratch: string | undefined; probes: Probe[] } {
  const own = sourceName ? settings.config.sources?.[sourceName]?.verify : undefined;
  const merged = { ...settings.config.verify, ...own };
  const probe = (p: ProbeConfig): Probe => (typeof p === 'string' ? { sql: p, expect: 'non-zero' } : { sql: p.sql, expect: p.expect ?? 'non-zero' });
  return { scratch: merged.scratch, probes: (merged.probes ?? []).map(probe) };
}

/**
 * The connection of a dedicated scratch server (verify --scratch URL): the
 * URL's parts, with the password from the URL or else PGPASSWORD/PGPASSFILE,
 * as libpq would.
 */
export function scratchConnection(settings: Settings, url: string): ConnectionInfo {
  const parsed = parseDatabaseUrl(url, '--scratch');
  const user = parsed.user ?? settings.env.PGUSER ?? safeOsUser();
  return {
    ...parsed,
    host: parsed.host ?? 'localhost',
    port: parsed.port ?? 5432,
    user,
    database: parsed.database ?? 'postgres',
    ...(parsed.password === undefined && settings.env.PGPASSWORD ? { password: settings.env.PGPASSWORD } : {}),
    ...(settings.env.PGPASSFILE ? { passfile: settings.env.PGPASSFILE } : {}),
  };
}

/**
 * Driver options for opening the repository at `url` (S3 endpoint, storage
 * class, ...): the config's `s3:` defaults, overridden by the options of that
 * repository's own `repos:` entry when it has some.
 */
export function storageOptions(settings: Settings, url: string): OpenStorageOptions {
  const merged: S3OptionsConfig = { ...s3Section(settings.config, ''), ...repoEntryOptions(settings, url) };
  const spoolDir = toolPaths(settings).tempDir;
  // PGKEEP_S3_* are defaults under what the configuration sets.
  const fromEnv = s3EnvOptions(settings.env);
  if (Object.keys(merged).length === 0 && !spoolDir && Object.keys(fromEnv).length === 0) return {};
  return {
    s3: {
      ...fromEnv,
      ...(merged.endpoint ? { endpoint: merged.endpoint } : {}),
      ...(merged.region ? { region: merged.region } : {}),
      ...(merged.forcePathStyle !== undefined ? { forcePathStyle: merged.forcePathStyle } : {}),
      ...(merged.storageClass ? { storageClass: merged.storageClass } : {}),
      ...(merged.sse ? { sse: merged.sse } : {}),
      ...(merged.kmsKeyId ? { kmsKeyId: merged.kmsKeyId } : {}),
      ...(merged.partSizeMiB ? { partSize: merged.partSizeMiB * 1024 * 1024 } : {}),
      ...(merged.connectTimeout ? { connectionTimeoutMs: s3Duration(merged.connectTimeout, 's3.connectTimeout') } : {}),
      ...(merged.idleTimeout ? { idleTimeoutMs: s3Duration(merged.idleTimeout, 's3.idleTimeout') } : {}),
      ...(merged.requestTimeout ? { requestTimeoutMs: s3Duration(merged.requestTimeout, 's3.requestTimeout') } : {}),
      ...(merged.retryBudget ? { retryBudgetMs: s3Duration(merged.retryBudget, 's3.retryBudget') } : {}),
      ...(merged.maxAttempts ? { maxAttempts: merged.maxAttempts } : {}),
      ...(spoolDir ? { spoolDir } : {}),
    },
  };
}

function s3Duration(text: string, what: string): number {
  const { ms } = parseDuration(text, what);
  if (ms < 1) throw new PgkeepError('CONFIG_INVALID', `${what}: ${text} is too short: give at least 1ms worth, e.g. 0.5s`);
  return ms;
}

/** The S3 options of the `repos:` entry (of any source, or the top level) whose URL is `url`. */
/** The S3 driver's section: `storage.s3`, or its alias `s3` (not both: which would win is not obvious). */
function s3Section(holder: { storage?: { s3?: S3OptionsConfig | undefined } | undefined; s3?: S3OptionsConfig | undefined }, where: string): S3OptionsConfig | undefined {
  if (holder.storage?.s3 && holder.s3) throw new PgkeepError('CONFIG_INVALID', `${where}give S3 options once, under storage.s3 (s3: is its older alias)`);
  return holder.storage?.s3 ?? holder.s3;
}

function repoEntryOptions(settings: Settings, url: string): S3OptionsConfig | undefined {
  const { config } = settings;
  if (!settings.configFile) return undefined;
  const base = path.dirname(settings.configFile);
  const lists = [config.repos, ...Object.values(config.sources ?? {}).map((s) => s.repos)];
  for (const list of lists) {
    for (const entry of list ?? []) {
      const options = s3Section(entry, `the repos entry ${entry.url}: `);
      if (options && localOrUrl(entry.url, base) === url) return options;
    }
  }
  return undefined;
}

/**
 * Keys for encrypted repositories: identities (to decrypt) from --identity >
 * PGKEEP_AGE_IDENTITY_FILE > the config's identityFile, and a passphrase from
 * PGKEEP_PASSPHRASE > PGKEEP_PASSPHRASE_FILE > the config's passphraseFile.
 * Files are read only when asked for, so a command that needs no key never fails on one.
 */
export interface KeySettings {
  identityFile: string | undefined;
  passphrase(): string | undefined;
  /** The content key of an encrypted deduplicating repository, from PGKEEP_CONTENT_KEY_FILE: lets a backup host write without the identity. */
  contentKey?(): string | undefined;
}

export function keySettings(settings: Settings): KeySettings {
  const { env, options, config } = settings;
  const identityFile = options.identity
    ? path.resolve(settings.cwd, options.identity)
    : env.PGKEEP_AGE_IDENTITY_FILE
      ? path.resolve(settings.cwd, env.PGKEEP_AGE_IDENTITY_FILE)
      : configPath(settings, config.identityFile);
  return {
    identityFile,
    passphrase: () => {
      if (env.PGKEEP_PASSPHRASE) return env.PGKEEP_PASSPHRASE;
      if (env.PGKEEP_PASSPHRASE_FILE) return readSecretFile(path.resolve(settings.cwd, env.PGKEEP_PASSPHRASE_FILE), 'PGKEEP_PASSPHRASE_FILE');
      const file = configPath(settings, config.passphraseFile);
      return file ? readSecretFile(file, 'passphraseFile') : undefined;
    },
    contentKey: () => (env.PGKEEP_CONTENT_KEY_FILE ? readSecretFile(path.resolve(settings.cwd, env.PGKEEP_CONTENT_KEY_FILE), 'PGKEEP_CONTENT_KEY_FILE') : undefined),
  };
}

/** --repo > PGKEEP_REPO > BACKUP_DIR > the source's repos/repo > the config's repos/repo > ./backups: the first repository. */
export function repositoryUrl(settings: Settings, sourceName?: string): string {
  return repositoryUrls(settings, sourceName)[0]!;
}

/**
 * Every repository of a source, in config order. --repo, PGKEEP_REPO and
 * BACKUP_DIR always mean exactly one repository (and win, in that order).
 * Otherwise the source's own `repos` (or `repo`), else the top-level `repos`
 * (or `repo`): at each level `repos` wins over `repo`. Default ./backups.
 */
export function repositoryUrls(settings: Settings, sourceName?: string): string[] {
  const { options, env, config } = settings;
  if (options.repo) return [localOrUrl(options.repo, settings.cwd)];
  if (env.PGKEEP_REPO) return [localOrUrl(env.PGKEEP_REPO, settings.cwd)];
  if (env.BACKUP_DIR) return [localOrUrl(env.BACKUP_DIR, settings.cwd)];
  const source = sourceName ? config.sources?.[sourceName] : undefined;
  const fromFile = source?.repos ?? (source?.repo !== undefined ? [{ url: source.repo }] : undefined) ?? config.repos ?? (config.repo !== undefined ? [{ url: config.repo }] : undefined);
  if (fromFile) return [...new Set(fromFile.map((entry) => localOrUrl(repoEntryUrl(entry), path.dirname(settings.configFile!))))];
  return [path.join(settings.cwd, 'backups')];
}

function localOrUrl(value: string, base: string): string {
  if (value.startsWith('file://')) return path.resolve(base, value.slice('file://'.length));
  return /^[a-z][a-z0-9+.-]*:\/\//i.test(value) ? value : path.resolve(base, value);
}

function configPath(settings: Settings, value: string | undefined): string | undefined {
  return value === undefined ? undefined : path.resolve(settings.configFile ? path.dirname(settings.configFile) : settings.cwd, value);
}

/**
 * Connection of a source, merged field by field: --db > the source's own
 * connection in the config > the environment (DATABASE_URL > POSTGRES_* >
 * libpq PG*) > defaults (localhost:5432, the OS user).
 *
 * A config source's own settings beat the environment (unlike other keys)
 * because a PGHOST or DATABASE_URL meant for one app must not silently
 * redirect every source of a multi-source config.
 */
export function resolveConnection(settings: Settings, source: SourceConfig | undefined): ConnectionInfo {
  const env = settings.env;
  const layers: Partial<ConnectionInfo>[] = [];
  // lowest first
  layers.push({
    ...(env.PGHOST ? { host: env.PGHOST } : {}),
    ...(env.PGPORT ? { port: parsePort(env.PGPORT, 'PGPORT') } : {}),
    ...(env.PGUSER ? { user: env.PGUSER } : {}),
    ...(env.PGPASSWORD ? { password: env.PGPASSWORD } : {}),
    ...(env.PGDATABASE ? { database: env.PGDATABASE } : {}),
    ...(env.PGPASSFILE ? { passfile: env.PGPASSFILE } : {}),
    ...(env.PGSSLMODE ? { sslmode: env.PGSSLMODE } : {}),
  });
  layers.push({
    ...(env.POSTGRES_HOST ? { host: env.POSTGRES_HOST } : {}),
    ...(env.POSTGRES_PORT ? { port: parsePort(env.POSTGRES_PORT, 'POSTGRES_PORT') } : {}),
    ...(env.POSTGRES_USER ? { user: env.POSTGRES_USER } : {}),
    ...(env.POSTGRES_PASSWORD ? { password: env.POSTGRES_PASSWORD } : {}),
    ...(env.POSTGRES_DB ? { database: env.POSTGRES_DB } : {}),
  });
  if (env.DATABASE_URL) layers.push(parseDatabaseUrl(env.DATABASE_URL, 'DATABASE_URL'));
  if (source) {
    const where = `${path.basename(settings.configFile ?? 'config')}: sources`;
    if (source.db) layers.push(parseDatabaseUrl(source.db, `${where}.db`));
    layers.push({
      ...(source.host ? { host: source.host } : {}),
      ...(source.port ? { port: source.port } : {}),
      ...(source.user ? { user: source.user } : {}),
      ...(source.database ? { database: source.database } : {}),
      ...(source.password !== undefined ? { password: source.password } : {}),
      ...(source.passwordFile ? { password: readSecretFile(configPath(settings, source.passwordFile)!, `${where}.passwordFile`) } : {}),
      ...(source.sslmode ? { sslmode: source.sslmode } : {}),
    });
  }
  if (settings.options.db) layers.push(parseDatabaseUrl(settings.options.db, '--db'));

  const merged: Partial<ConnectionInfo> = Object.assign({}, ...layers);
  const user = merged.user ?? safeOsUser();
  // Nothing named a server or a database: what follows is pgkeep's guess, and a failure says so.
  const guessed = merged.host === undefined && merged.port === undefined && merged.database === undefined;
  return {
    ...merged,
    host: merged.host ?? 'localhost',
    port: merged.port ?? 5432,
    user,
    database: merged.database ?? user,
    ...(guessed ? { guessed: true as const } : {}),
  };
}

function safeOsUser(): string {
  try {
    return userInfo().username;
  } catch {
    return 'postgres';
  }
}

export function readSecretFile(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8').replace(/\r?\n$/, '');
  } catch (error) {
    throw new PgkeepError('CONFIG_INVALID', `${what}: cannot read ${file} (${(error as NodeJS.ErrnoException).code ?? 'error'})`, { cause: error });
  }
}

/** A source name from a database name: characters outside [A-Za-z0-9._-] become "_". */
export function sourceNameForDatabase(database: string): string {
  return database.replace(/[^A-Za-z0-9._-]/g, '_').slice(0, 100) || 'default';
}

export function validateName(name: string, what: string): string {
  if (!NAME_PATTERN.test(name) || name === '.' || name === '..') {
    throw new PgkeepError('INVALID_NAME', `invalid ${what} name "${name}": use letters, digits, ".", "_" and "-" (at most 100 characters)`);
  }
  return name;
}
