import type pg from 'pg';
import { PgkeepError, abortError } from '../errors.js';
import { pgClientConfig, serverLabel, type ConnectionInfo } from './connection-info.js';

export type PgClient = pg.Client;

/**
 * Opens a connection and turns connection failures into errors a user can act
 * on. While the connection lives, aborting `signal` closes it, so a query that
 * waits (on a lock, say) fails at once instead of holding the command open.
 */
export async function connect(info: ConnectionInfo, signal?: AbortSignal): Promise<pg.Client> {
  // imported on the first connection: a command that talks to no server (list, --help) does not load pg
  const { default: driver } = await import('pg');
  const client = new driver.Client(pgClientConfig(info));
  // An idle client whose server goes away emits 'error'; without a listener that crashes the process.
  client.on('error', () => undefined);
  const onAbort = () => void client.end().catch(() => undefined);
  if (signal) {
    signal.addEventListener('abort', onAbort, { once: true });
    client.once('end', () => signal.removeEventListener('abort', onAbort));
  }
  try {
    await client.connect();
    return client;
  } catch (error) {
    signal?.removeEventListener('abort', onAbort);
    await client.end().catch(() => undefined);
    if (signal?.aborted) throw abortError(signal);
    throw connectionError(error, info);
  }
}

/** Runs `fn` with a connection that is closed afterwards whatever happens. */
export async function withClient<T>(info: ConnectionInfo, fn: (client: pg.Client) => Promise<T>, signal?: AbortSignal): Promise<T> {
  const client = await connect(info, signal);
  try {
    return await fn(client);
  } finally {
    await client.end().catch(() => undefined);
  }
}

/** Runs the statements in one transaction: all of them or none (rolled back, and the error thrown on). */
export async function runInTransaction(client: pg.Client, statements: readonly string[]): Promise<void> {
  await client.query('BEGIN');
  try {
    for (const statement of statements) await client.query(statement);
    await client.query('COMMIT');
  } catch (error) {
    await client.query('ROLLBACK').catch(() => undefined);
    throw error;
  }
}

export function connectionError(error: unknown, info: ConnectionInfo): PgkeepError {
  const failure = describeConnectionError(error, info);
  if (!info.guessed || failure.code === 'DB_QUERY_FAILED') return failure;
  // A first run without any database named: say so, and what was tried, before the server's reason.
  return new PgkeepError(
    failure.code,
    `no database given (no --db, DATABASE_URL, POSTGRES_* or PG* variables, .env file, or source in a pgkeep.yaml): tried the default, database "${info.database}" as user "${info.user}" at ${serverLabel(info)}, and it failed: ${failure.message.replace(/^cannot connect to PostgreSQL at [^:]+(:\d+)?: /, '')}`,
    { cause: error },
  );
}

function describeConnectionError(error: unknown, info: ConnectionInfo): PgkeepError {
  if (error instanceof PgkeepError) return error;
  const e = error as { code?: string; message?: string };
  const where = serverLabel(info);
  switch (e.code) {
    case 'ECONNREFUSED':
      return new PgkeepError('DB_UNREACHABLE', `cannot connect to PostgreSQL at ${where}: connection refused (is the server running, and are host and port right?)`, { cause: error });
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new PgkeepError('DB_UNREACHABLE', `cannot connect to PostgreSQL at ${where}: host name "${info.host}" not found`, { cause: error });
    case 'ETIMEDOUT':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
      return new PgkeepError('DB_UNREACHABLE', `cannot connect to PostgreSQL at ${where}: ${e.code} (check the host, the port and any firewall)`, { cause: error });
    case 'ENOENT':
      return new PgkeepError('DB_UNREACHABLE', `cannot connect to PostgreSQL at ${where}: no server socket there`, { cause: error });
    case '28P01':
    case '28000':
      return new PgkeepError('DB_AUTH_FAILED', `authentication failed for user "${info.user}" at ${where}: check the password (DATABASE_URL, PGPASSWORD, ~/.pgpass) and pg_hba.conf`, { cause: error });
    case '3D000':
      return new PgkeepError('DB_MISSING', `database "${info.database}" does not exist at ${where}: check the database name`, { cause: error });
    default:
      if (/timeout/i.test(e.message ?? '')) {
        return new PgkeepError('DB_UNREACHABLE', `cannot connect to PostgreSQL at ${where}: connection timed out`, { cause: error });
      }
      if (/password/i.test(e.message ?? '') && /SASL|client password must be a string/i.test(e.message ?? '')) {
        return new PgkeepError('DB_AUTH_FAILED', `the server at ${where} asks for a password for user "${info.user}" and none is configured: set DATABASE_URL, PGPASSWORD or ~/.pgpass`, { cause: error });
      }
      return new PgkeepError('DB_QUERY_FAILED', `PostgreSQL at ${where}: ${e.message ?? String(error)}`, { cause: error });
  }
}

/** Double-quotes an SQL identifier. */
export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}

export function quoteLiteral(value: string): string {
  return `'${value.replace(/'/g, "''")}'`;
}
