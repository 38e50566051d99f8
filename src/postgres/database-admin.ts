import type pg from 'pg';
import { PgkeepError } from '../errors.js';
import { createDatabaseOptions, type DatabaseLocale } from './database-state.js';
import { quoteIdent, quoteLiteral } from './pg-client.js';

/** PostgreSQL truncates identifiers to 63 bytes; names we make must fit. */
export const MAX_IDENTIFIER_BYTES = 63;

export function fitIdentifier(prefix: string, suffix: string): string {
  let head = prefix;
  while (Buffer.byteLength(head + suffix) > MAX_IDENTIFIER_BYTES) head = head.slice(0, -1);
  return head + suffix;
}

/**
 * Creates an empty database from template0 with the source's encoding and
 * locale (provider, ICU or builtin locale, ICU rules: so text sorts and
 * compares as it did), falling back to the server's default locale when that
 * locale does not exist here or this server cannot express it.
 */
export async function createDatabase(client: pg.Client, name: string, locale: DatabaseLocale | undefined): Promise<{ localeKept: boolean }> {
  const base = `CREATE DATABASE ${quoteIdent(name)} TEMPLATE template0`;
  if (locale) {
    const version = Number((await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v);
    const options = createDatabaseOptions(locale, version);
    if (options !== undefined) {
      try {
        await client.query(`${base} ${options}`);
        return { localeKept: true };
      } catch (error) {
        const code = (error as { code?: string }).code;
        // invalid locale, provider or option on this server: fall back below
        if (code !== '22023' && code !== '42809' && code !== '0A000' && code !== '42601' && code !== '42704') throw createError(error, name);
      }
    }
  }
  try {
    await client.query(locale ? `${base} ENCODING ${quoteLiteral(locale.encoding)}` : base);
  } catch (error) {
    throw createError(error, name);
  }
  return { localeKept: false };
}

function createError(error: unknown, name: string): PgkeepError {
  const code = (error as { code?: string }).code;
  if (code === '42501') return new PgkeepError('DB_PRIVILEGE', `cannot create database "${name}": the role lacks CREATEDB (grant it, or restore as a role that has it)`, { cause: error });
  if (code === '42P04') return new PgkeepError('DB_EXISTS', `database "${name}" already exists`, { cause: error });
  return new PgkeepError('DB_QUERY_FAILED', `cannot create database "${name}": ${(error as Error).message}`, { cause: error });
}

export async function terminateConnections(client: pg.Client, name: string): Promise<void> {
  await client.query('SELECT pg_catalog.pg_terminate_backend(pid) FROM pg_catalog.pg_stat_activity WHERE datname = $1 AND pid <> pg_catalog.pg_backend_pid()', [name]);
}

/** Drops a database, ending its sessions first (and again if one was still going away). */
export async function dropDatabase(client: pg.Client, name: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await terminateConnections(client, name);
    try {
      await client.query(`DROP DATABASE IF EXISTS ${quoteIdent(name)}`);
      return;
    } catch (error) {
      // 55006: a terminated session had not exited yet (pg_terminate_backend does not wait).
      if ((error as { code?: string }).code !== '55006' || attempt >= 10) throw error;
      await new Promise((r) => setTimeout(r, 100 * attempt));
    }
  }
}

/** Renames a database, pushing out sessions that reconnect in between. */
export async function renameDatabase(client: pg.Client, from: string, to: string): Promise<void> {
  for (let attempt = 1; ; attempt++) {
    await terminateConnections(client, from);
    try {
      await client.query(`ALTER DATABASE ${quoteIdent(from)} RENAME TO ${quoteIdent(to)}`);
      return;
    } catch (error) {
      // 55006: still in use by a session that reconnected; try again briefly.
      if ((error as { code?: string }).code !== '55006' || attempt >= 5) throw error;
      await new Promise((r) => setTimeout(r, 200 * attempt));
    }
  }
}
