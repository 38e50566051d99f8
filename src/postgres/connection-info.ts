import type { ClientConfig } from 'pg';
import { PgkeepError } from '../errors.js';
import { inheritedEnv } from './child-env.js';

/**
 * Where and how to connect to one PostgreSQL database. The password is a
 * secret: it reaches child processes only through their environment and is
 * left out of every string made for display.
 */
export interface ConnectionInfo {
  readonly host: string;
  readonly port: number;
  readonly user: string;
  readonly database: string;
  readonly password?: string | undefined;
  readonly passfile?: string | undefined;
  readonly sslmode?: string | undefined;
  /** Further libpq parameters from the URL query (sslrootcert, application_name, ...). */
  readonly params?: Readonly<Record<string, string>>;
  /** No --db, environment, .env or config named a server or database: host, port and database are defaults. */
  readonly guessed?: true | undefined;
}

const LIBPQ_ENV: Record<string, string> = {
  sslmode: 'PGSSLMODE',
  sslrootcert: 'PGSSLROOTCERT',
  sslcert: 'PGSSLCERT',
  sslkey: 'PGSSLKEY',
  application_name: 'PGAPPNAME',
  connect_timeout: 'PGCONNECT_TIMEOUT',
  options: 'PGOPTIONS',
  target_session_attrs: 'PGTARGETSESSIONATTRS',
};

/** Parses postgres:// and postgresql:// URLs into the parts that are present. */
export function parseDatabaseUrl(url: string, what = 'database URL'): Partial<ConnectionInfo> {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    throw new PgkeepError('CONFIG_INVALID', `${what} is not a valid URL: expected postgresql://user:password@host:5432/dbname`);
  }
  if (parsed.protocol !== 'postgresql:' && parsed.protocol !== 'postgres:') {
    throw new PgkeepError('CONFIG_INVALID', `${what} must start with postgresql:// (got ${parsed.protocol}//)`);
  }
  const params: Record<string, string> = {};
  let host = parsed.hostname ? decodeURIComponent(parsed.hostname) : undefined;
  let sslmode: string | undefined;
  for (const [key, value] of parsed.searchParams) {
    if (key === 'host') host = value;
    else if (key === 'sslmode') sslmode = value;
    else if (key === 'port' || key === 'user' || key === 'password' || key === 'dbname') continue;
    else params[key] = value;
  }
  const portText = parsed.port || parsed.searchParams.get('port') || '';
  const database = decodeURIComponent(parsed.pathname.replace(/^\//, '')) || parsed.searchParams.get('dbname') || undefined;
  const info: { -readonly [K in keyof ConnectionInfo]?: ConnectionInfo[K] } = {};
  if (host) info.host = host.replace(/^\[(.*)\]$/, '$1');
  if (portText) info.port = parsePort(portText, what);
  const user = decodeURIComponent(parsed.username) || parsed.searchParams.get('user');
  if (user) info.user = user;
  const password = parsed.password ? decodeURIComponent(parsed.password) : parsed.searchParams.get('password');
  if (password) info.password = password;
  if (database) info.database = database;
  if (sslmode) info.sslmode = sslmode;
  if (Object.keys(params).length > 0) info.params = params;
  return info;
}

export function parsePort(text: string | number, what: string): number {
  const port = typeof text === 'number' ? text : Number(text);
  if (!Number.isInteger(port) || port < 1 || port > 65535) {
    throw new PgkeepError('CONFIG_INVALID', `${what}: port "${text}" is not a number from 1 to 65535`);
  }
  return port;
}

/** libpq environment for pg_dump/pg_restore/psql: the only way a password reaches them. */
export function libpqEnv(info: ConnectionInfo, base: NodeJS.ProcessEnv = inheritedEnv()): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  // Drop inherited PG* settings so the child connects exactly where we resolved.
  for (const [key, value] of Object.entries(base)) {
    if (!key.startsWith('PG')) env[key] = value;
  }
  env.PGHOST = info.host;
  env.PGPORT = String(info.port);
  env.PGUSER = info.user;
  env.PGDATABASE = info.database;
  if (info.password !== undefined) env.PGPASSWORD = info.password;
  if (info.passfile !== undefined) env.PGPASSFILE = info.passfile;
  if (info.sslmode !== undefined) env.PGSSLMODE = info.sslmode;
  for (const [key, value] of Object.entries(info.params ?? {})) {
    const name = LIBPQ_ENV[key];
    if (name) env[name] = value;
  }
  env.PGAPPNAME ??= 'pgkeep';
  return env;
}

/** Configuration for the `pg` driver. */
export function pgClientConfig(info: ConnectionInfo): ClientConfig {
  const ssl = info.sslmode;
  return {
    host: info.host,
    port: info.port,
    user: info.user,
    database: info.database,
    ...(info.password !== undefined ? { password: info.password } : {}),
    application_name: info.params?.application_name ?? 'pgkeep',
    connectionTimeoutMillis: 15_000,
    ...(ssl === 'require' || ssl === 'verify-ca'
      ? { ssl: { rejectUnauthorized: false } }
      : ssl === 'verify-full'
        ? { ssl: { rejectUnauthorized: true } }
        : {}),
  };
}

/** postgresql://user@host:port/db, for display: never the password. */
export function describeConnection(info: ConnectionInfo, database = info.database): string {
  const host = info.host.startsWith('/') ? `?host=${encodeURIComponent(info.host)}` : '';
  const hostPart = host ? '' : info.host.includes(':') ? `[${info.host}]` : info.host;
  const query = host || (info.sslmode ? `?sslmode=${info.sslmode}` : '');
  return `postgresql://${encodeURIComponent(info.user)}@${hostPart}:${info.port}/${encodeURIComponent(database)}${query}`;
}

export function withDatabase(info: ConnectionInfo, database: string): ConnectionInfo {
  // a database chosen by name is no longer a guess
  const { guessed: _guessed, ...rest } = info;
  return { ...rest, database };
}

/** host:port as people write it, for messages. */
export function serverLabel(info: ConnectionInfo): string {
  return info.host.startsWith('/') ? `socket ${info.host} port ${info.port}` : `${info.host}:${info.port}`;
}
