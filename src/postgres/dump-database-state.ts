import type { TocEntry } from '../pipeline/custom-toc.js';
import type { DatabaseLocale, LocaleProvider } from './database-state.js';
import { quoteIdent } from './pg-client.js';

/**
 * The database-level state a pg_dump archive carries (its DATABASE,
 * DATABASE PROPERTIES entries and the database's COMMENT and ACL, which
 * pg_restore applies only with --create, under the original name): the
 * locale to create the database with, its owner, and its statements
 * rewritten for the database they are applied to.
 */
export interface DumpDatabaseState {
  /** The database's name in the dump. */
  name: string;
  owner: string | null;
  locale: DatabaseLocale | undefined;
  /** COMMENT, CONNECTION LIMIT, SET, ALTER ROLE … IN DATABASE … SET, as pg_dump wrote them (for the original name). */
  properties: string[];
  /** REVOKE/GRANT on the database (and SET/RESET SESSION AUTHORIZATION around another grantor's). */
  acl: string[];
}

export function dumpDatabaseState(toc: readonly TocEntry[]): DumpDatabaseState | undefined {
  const database = toc.find((e) => e.desc === 'DATABASE');
  if (!database) return undefined;
  const of = (test: (e: TocEntry) => boolean) => toc.filter(test).flatMap((e) => splitStatements(e.defn ?? ''));
  const own = `DATABASE ${database.tag}`;
  return {
    name: database.tag,
    owner: database.owner,
    locale: parseCreateDatabase(database.defn ?? ''),
    properties: [...of((e) => e.desc === 'COMMENT' && e.tag === own), ...of((e) => e.desc === 'DATABASE PROPERTIES')],
    acl: of((e) => e.desc === 'ACL' && e.tag === own),
  };
}

/** CREATE DATABASE … WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = icu LOCALE = '…' ICU_LOCALE = '…' → the locale. */
export function parseCreateDatabase(sql: string): DatabaseLocale | undefined {
  const options = new Map<string, string>();
  for (const match of sql.matchAll(/\b([A-Z_]+) = ('(?:[^']|'')*'|[^\s;]+)/g)) {
    const value = match[2]!;
    options.set(match[1]!, value.startsWith("'") ? value.slice(1, -1).replace(/''/g, "'") : value);
  }
  const encoding = options.get('ENCODING');
  const collate = options.get('LC_COLLATE') ?? options.get('LOCALE');
  const ctype = options.get('LC_CTYPE') ?? options.get('LOCALE');
  if (!encoding || !collate || !ctype) return undefined;
  const provider = (options.get('LOCALE_PROVIDER') ?? 'libc') as LocaleProvider;
  return {
    encoding,
    collate,
    ctype,
    localeProvider: provider,
    locale: options.get('ICU_LOCALE') ?? options.get('BUILTIN_LOCALE') ?? null,
    icuRules: options.get('ICU_RULES') ?? null,
  };
}

/** Splits SQL at semicolons outside quotes ('…', E'…' with backslashes, "…"). */
export function splitStatements(sql: string): string[] {
  const statements: string[] = [];
  let start = 0;
  for (let i = 0; i < sql.length; i++) {
    const c = sql[i];
    if (c === "'") {
      const escapes = i > 0 && /[eE]/.test(sql[i - 1]!);
      for (i++; i < sql.length; i++) {
        if (escapes && sql[i] === '\\') i++;
        else if (sql[i] === "'") {
          if (sql[i + 1] === "'") i++;
          else break;
        }
      }
    } else if (c === '"') {
      for (i++; i < sql.length; i++) {
        if (sql[i] === '"') {
          if (sql[i + 1] === '"') i++;
          else break;
        }
      }
    } else if (c === ';') {
      const statement = sql.slice(start, i).trim();
      if (statement) statements.push(statement);
      start = i + 1;
    }
  }
  const rest = sql.slice(start).trim();
  if (rest && !rest.startsWith('--')) statements.push(rest);
  return statements.filter((s) => !/^--/.test(s));
}

/**
 * A statement about database `from` rewritten for database `to`: the name
 * is replaced where the statement names the database (DATABASE <name>),
 * never inside a quoted role name or literal before it.
 */
export function renameDatabaseIn(statement: string, from: string, to: string): string {
  const forms = [quoteIdent(from), ...(/^[a-z_][a-z0-9_$]*$/.test(from) ? [from] : [])].map((f) => f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'));
  const pattern = new RegExp(`(^|[^"'])(\\bDATABASE )(?:${forms.join('|')})(?=[ ;]|$)`);
  return statement.replace(pattern, (_m, before: string, keyword: string) => `${before}${keyword}${quoteIdent(to)}`);
}

const IDENT = String.raw`("(?:[^"]|"")*"|[^\s;,"]+)`;

/** The roles the statements name (grantees, role settings, session authorizations), PUBLIC left out. */
export function rolesInStatements(statements: readonly string[]): string[] {
  const roles = new Set<string>();
  const patterns = [new RegExp(`^ALTER ROLE ${IDENT} IN DATABASE`), new RegExp(`^GRANT .* TO ${IDENT}`), new RegExp(`^REVOKE .* FROM ${IDENT}`), new RegExp(`^SET SESSION AUTHORIZATION ${IDENT}`)];
  for (const statement of statements) {
    for (const pattern of patterns) {
      const name = pattern.exec(statement)?.[1];
      if (name === undefined || name === 'PUBLIC') continue;
      roles.add(name.startsWith('"') ? name.slice(1, -1).replace(/""/g, '"') : name);
    }
  }
  return [...roles];
}
