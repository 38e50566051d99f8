import type pg from 'pg';
import { PgkeepError } from '../errors.js';
import { quoteIdent, quoteLiteral, runInTransaction } from './pg-client.js';

/**
 * The database-level state pg_dump leaves out unless it runs with --create:
 * what `CREATE DATABASE`, `ALTER DATABASE`, `COMMENT ON DATABASE`,
 * `GRANT … ON DATABASE` and `ALTER ROLE … IN DATABASE … SET` made. A backup
 * records it (readDatabaseState) and a restore applies it to the database it
 * created (databaseStateStatements), then reads it back and compares
 * (compareDatabaseState).
 */

/** One privilege of the database's ACL, as aclexplode() gives it. */
export interface DatabaseGrant {
  /** null: PUBLIC. */
  grantee: string | null;
  grantor: string;
  privilege: 'CONNECT' | 'CREATE' | 'TEMPORARY';
  grantable: boolean;
}

export interface RoleSettings {
  role: string;
  /** As pg_db_role_setting stores them: "name=value". */
  settings: string[];
}

export type LocaleProvider = 'libc' | 'icu' | 'builtin';

/** What CREATE DATABASE fixes for good: the encoding and the locale. */
export interface DatabaseLocale {
  encoding: string;
  collate: string;
  ctype: string;
  /** Absent in manifests of older pgkeep: libc. */
  localeProvider?: LocaleProvider | undefined;
  /** The ICU locale (PostgreSQL 15-16 daticulocale, 17+ datlocale), or the builtin provider's locale (17+). */
  locale?: string | null | undefined;
  /** ICU tailoring rules (PostgreSQL 16+). */
  icuRules?: string | null | undefined;
}

/** What can change after CREATE DATABASE: owner, privileges, comment, settings, connection limit. */
export interface DatabaseProperties {
  owner: string;
  /** null: never granted nor revoked (the default: CONNECT and TEMPORARY to PUBLIC, everything to the owner). */
  acl: DatabaseGrant[] | null;
  comment: string | null;
  /** ALTER DATABASE … SET, as "name=value". */
  settings: string[];
  /** ALTER ROLE … IN DATABASE … SET, by role name. */
  roleSettings: RoleSettings[];
  /** -1: no limit. */
  connectionLimit: number;
}

export type DatabaseState = DatabaseLocale & DatabaseProperties;

/** Which parts of the state a restore reproduces (--no-owner, --no-acl; role settings need the roles). */
export interface StateParts {
  owner: boolean;
  acl: boolean;
  roleSettings: boolean;
}

const PROVIDERS: Record<string, LocaleProvider> = { c: 'libc', i: 'icu', b: 'builtin' };

/**
 * Reads a database's state (by default the current one's) from the catalogs,
 * which differ by version: datlocprovider and daticulocale since 15,
 * daticurules since 16, datlocale (ICU and builtin) since 17.
 */
export async function readDatabaseState(client: pg.Client, database?: string): Promise<DatabaseState> {
  const version = Number((await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v);
  const provider = version >= 150000 ? 'd.datlocprovider::text' : "'c'";
  const locale = version >= 170000 ? 'd.datlocale' : version >= 150000 ? 'd.daticulocale' : 'NULL::text';
  const rules = version >= 160000 ? 'd.daticurules' : 'NULL::text';
  const result = await client.query<{
    owner: string;
    encoding: string;
    collate: string;
    ctype: string;
    provider: string;
    locale: string | null;
    icu_rules: string | null;
    connlimit: number;
    comment: string | null;
    acl: DatabaseGrant[] | null;
    settings: string[];
    role_settings: RoleSettings[];
  }>(
    `SELECT pg_catalog.pg_get_userbyid(d.datdba) AS owner, pg_catalog.pg_encoding_to_char(d.encoding) AS encoding,
            d.datcollate AS collate, d.datctype AS ctype, ${provider} AS provider, ${locale} AS locale, ${rules} AS icu_rules,
            d.datconnlimit AS connlimit, pg_catalog.shobj_description(d.oid, 'pg_database') AS comment,
            CASE WHEN d.datacl IS NOT NULL THEN coalesce((
              SELECT json_agg(json_build_object(
                       'grantee', CASE WHEN a.grantee = 0 THEN NULL ELSE pg_catalog.pg_get_userbyid(a.grantee) END,
                       'grantor', pg_catalog.pg_get_userbyid(a.grantor), 'privilege', a.privilege_type, 'grantable', a.is_grantable))
                FROM pg_catalog.aclexplode(d.datacl) a), '[]') END AS acl,
            coalesce((SELECT s.setconfig FROM pg_catalog.pg_db_role_setting s WHERE s.setdatabase = d.oid AND s.setrole = 0), '{}') AS settings,
            coalesce((SELECT json_agg(json_build_object('role', r.rolname, 'settings', s.setconfig) ORDER BY r.rolname)
                        FROM pg_catalog.pg_db_role_setting s JOIN pg_catalog.pg_roles r ON r.oid = s.setrole
                       WHERE s.setdatabase = d.oid), '[]') AS role_settings
       FROM pg_catalog.pg_database d WHERE d.datname = coalesce($1, current_database())`,
    [database ?? null],
  );
  const row = result.rows[0];
  if (!row) throw new Error(`database "${database}" does not exist`);
  return {
    encoding: row.encoding,
    collate: row.collate,
    ctype: row.ctype,
    localeProvider: PROVIDERS[row.provider] ?? 'libc',
    locale: row.locale,
    icuRules: row.icu_rules,
    owner: row.owner,
    acl: row.acl,
    comment: row.comment,
    settings: row.settings,
    roleSettings: row.role_settings,
    connectionLimit: row.connlimit,
  };
}

/** "icu de-DE", "libc de_DE.UTF-8": the locale as a person recognises it. */
export function describeLocale(locale: DatabaseLocale): string {
  const provider = locale.localeProvider ?? 'libc';
  if (provider === 'libc') return `libc ${locale.collate}${locale.ctype !== locale.collate ? `/${locale.ctype}` : ''}`;
  return `${provider} ${locale.locale ?? '?'}${locale.icuRules ? ' (with ICU rules)' : ''}`;
}

/**
 * The options of CREATE DATABASE that give the database this encoding and
 * locale on a server of `serverVersion`, or undefined when that server cannot
 * express the provider (ICU before 15, builtin before 17). The provider is
 * always named on 15 and later: left out, it would be template0's.
 */
export function createDatabaseOptions(locale: DatabaseLocale, serverVersion: number): string | undefined {
  const provider = locale.localeProvider ?? 'libc';
  let options = `ENCODING ${quoteLiteral(locale.encoding)} LC_COLLATE ${quoteLiteral(locale.collate)} LC_CTYPE ${quoteLiteral(locale.ctype)}`;
  if (serverVersion < 150000) return provider === 'libc' ? options : undefined;
  options += ` LOCALE_PROVIDER ${provider}`;
  if (provider === 'icu') {
    if (!locale.locale) return undefined;
    options += ` ICU_LOCALE ${quoteLiteral(locale.locale)}`;
    if (locale.icuRules) {
      if (serverVersion < 160000) return undefined;
      options += ` ICU_RULES ${quoteLiteral(locale.icuRules)}`;
    }
  } else if (provider === 'builtin') {
    if (serverVersion < 170000 || !locale.locale) return undefined;
    options += ` BUILTIN_LOCALE ${quoteLiteral(locale.locale)}`;
  }
  return options;
}

/** Settings whose value is a list of names, each quoted: pg_dump's variable_is_guc_list_quote(). */
const LIST_QUOTE_SETTINGS = new Set(['local_preload_libraries', 'search_path', 'session_preload_libraries', 'shared_preload_libraries', 'temp_tablespaces', 'unix_socket_directories']);

/**
 * "name=value" as pg_db_role_setting stores it → "name TO value" for SET.
 * A list setting (search_path) is stored as quoted names ("$user", public)
 * and must be given back as a list of literals, as pg_dump does.
 */
export function settingAssignment(entry: string): string {
  const at = entry.indexOf('=');
  const name = at < 0 ? entry : entry.slice(0, at);
  const value = at < 0 ? '' : entry.slice(at + 1);
  const values = LIST_QUOTE_SETTINGS.has(name.toLowerCase()) ? splitGucList(value) : [value];
  return `${quoteIdent(name)} TO ${values.length > 0 ? values.map(quoteLiteral).join(', ') : "''"}`;
}

/** PostgreSQL's SplitGUCList: comma-separated names, double-quoted where needed ("" inside quotes is one "). */
export function splitGucList(value: string): string[] {
  const items: string[] = [];
  let i = 0;
  const skipSpace = () => {
    while (i < value.length && /\s/.test(value[i]!)) i++;
  };
  skipSpace();
  if (i >= value.length) return items;
  for (;;) {
    let item = '';
    if (value[i] === '"') {
      for (i++; i < value.length; i++) {
        if (value[i] === '"') {
          if (value[i + 1] === '"') {
            item += '"';
            i++;
          } else break;
        } else item += value[i];
      }
      i++;
    } else {
      while (i < value.length && value[i] !== ',' && !/\s/.test(value[i]!)) item += value[i++];
    }
    items.push(item);
    skipSpace();
    if (value[i] === ',') {
      i++;
      skipSpace();
    } else break;
  }
  return items;
}

const PRIVILEGE_ORDER: DatabaseGrant['privilege'][] = ['CREATE', 'TEMPORARY', 'CONNECT'];
const PRIVILEGE_LETTER: Record<DatabaseGrant['privilege'], string> = { CREATE: 'C', TEMPORARY: 'T', CONNECT: 'c' };

/** The ACL in effect: the recorded one, or the default for `owner` when none was ever set (datacl NULL). */
export function effectiveAcl(acl: DatabaseGrant[] | null, owner: string): DatabaseGrant[] {
  if (acl !== null) return acl;
  return [
    { grantee: null, grantor: owner, privilege: 'TEMPORARY', grantable: false },
    { grantee: null, grantor: owner, privilege: 'CONNECT', grantable: false },
    ...PRIVILEGE_ORDER.map((privilege) => ({ grantee: owner, grantor: owner, privilege, grantable: false })),
  ];
}

/** An ACL as psql's \l shows it: {=Tc/owner,owner=CTc/owner} (names unquoted). */
export function formatAcl(acl: readonly DatabaseGrant[]): string {
  const items = new Map<string, string>();
  for (const grant of acl) {
    const key = `${grant.grantee ?? ''}=\u0000/${grant.grantor}`;
    items.set(key, (items.get(key) ?? '') + PRIVILEGE_LETTER[grant.privilege] + (grant.grantable ? '*' : ''));
  }
  return `{${[...items].map(([key, letters]) => key.replace('\u0000', letters)).join(',')}}`;
}

/** The ACL with the backup's owner replaced by the restored database's (--no-owner restores owned by the restoring role). */
function withOwner(acl: DatabaseGrant[] | null, from: string, to: string): DatabaseGrant[] | null {
  if (acl === null || from === to) return acl;
  return acl.map((g) => ({ ...g, grantee: g.grantee === from ? to : g.grantee, grantor: g.grantor === from ? to : g.grantor }));
}

/** The state the restored database should have, given what the restore reproduces and who restores it. */
export function expectedState(state: DatabaseState, parts: StateParts, restorer: string): DatabaseState {
  const owner = parts.owner ? state.owner : restorer;
  return {
    ...state,
    owner,
    acl: parts.acl ? withOwner(state.acl, state.owner, owner) : null,
    roleSettings: parts.roleSettings ? state.roleSettings : [],
  };
}

/**
 * The statements that give the database `database` (just created by
 * `restorer`) the recorded properties: owner first (as pg_dump orders them:
 * ALTER OWNER rewrites the ACL), then the privileges, the comment, the
 * connection limit and the settings. Without `parts.owner` the restoring
 * role stays the owner and takes the original owner's place in the ACL.
 */
export function databaseStateStatements(database: string, state: DatabaseState, parts: StateParts, restorer: string): string[] {
  const db = quoteIdent(database);
  const want = expectedState(state, parts, restorer);
  const statements: string[] = [];
  if (parts.owner && state.owner !== restorer) statements.push(`ALTER DATABASE ${db} OWNER TO ${quoteIdent(state.owner)}`);
  if (want.acl !== null) {
    statements.push(`REVOKE ALL ON DATABASE ${db} FROM PUBLIC`, `REVOKE ALL ON DATABASE ${db} FROM ${quoteIdent(want.owner)}`);
    // One GRANT per grantee, grantor and grant option; the owner's grants first: others may hold theirs through them.
    const groups = new Map<string, DatabaseGrant[]>();
    for (const grant of [...want.acl].sort((a, b) => Number(b.grantor === want.owner) - Number(a.grantor === want.owner))) {
      const key = JSON.stringify([grant.grantee, grant.grantor, grant.grantable]);
      groups.set(key, [...(groups.get(key) ?? []), grant]);
    }
    for (const grants of groups.values()) {
      const { grantee, grantor, grantable } = grants[0]!;
      const privileges = PRIVILEGE_ORDER.filter((p) => grants.some((g) => g.privilege === p)).join(', ');
      const grant = `GRANT ${privileges} ON DATABASE ${db} TO ${grantee === null ? 'PUBLIC' : quoteIdent(grantee)}${grantable ? ' WITH GRANT OPTION' : ''}`;
      // A superuser's GRANT is recorded as the owner's; another grantor must grant it itself.
      if (grantor === want.owner) statements.push(grant);
      else statements.push(`SET ROLE ${quoteIdent(grantor)}`, grant, 'RESET ROLE');
    }
  }
  if (state.comment !== null) statements.push(`COMMENT ON DATABASE ${db} IS ${quoteLiteral(state.comment)}`);
  if (state.connectionLimit !== -1) statements.push(`ALTER DATABASE ${db} CONNECTION LIMIT ${Math.trunc(state.connectionLimit)}`);
  for (const setting of state.settings) statements.push(`ALTER DATABASE ${db} SET ${settingAssignment(setting)}`);
  if (parts.roleSettings) {
    for (const { role, settings } of state.roleSettings) {
      for (const setting of settings) statements.push(`ALTER ROLE ${quoteIdent(role)} IN DATABASE ${db} SET ${settingAssignment(setting)}`);
    }
  }
  return statements;
}

/** The roles the state names that must exist where it is applied. */
export function rolesNamed(state: DatabaseProperties, parts: StateParts): string[] {
  const roles = new Set<string>();
  if (parts.owner) roles.add(state.owner);
  if (parts.acl) {
    for (const g of state.acl ?? []) {
      if (g.grantee !== null && (parts.owner || g.grantee !== state.owner)) roles.add(g.grantee);
      if (parts.owner || g.grantor !== state.owner) roles.add(g.grantor);
    }
  }
  if (parts.roleSettings) for (const r of state.roleSettings) roles.add(r.role);
  return [...roles].sort();
}

/** Which of `roles` the server lacks. */
export async function missingRoles(client: pg.Client, roles: readonly string[]): Promise<string[]> {
  if (roles.length === 0) return [];
  const found = await client.query<{ rolname: string }>('SELECT rolname FROM pg_catalog.pg_roles WHERE rolname = ANY($1::text[])', [roles]);
  const present = new Set(found.rows.map((r) => r.rolname));
  return roles.filter((r) => !present.has(r));
}

/**
 * What differs between the state a restore should have produced and the
 * restored database's, one line each, in the order a person checks them;
 * empty when they match. `locale: false` skips encoding and locale (the
 * restore fell back to the server's default and said so).
 */
export function compareDatabaseState(expected: DatabaseState, actual: DatabaseState, options: { locale: boolean }): string[] {
  const out: string[] = [];
  const differ = (what: string, want: unknown, got: unknown) => {
    if (JSON.stringify(want ?? null) !== JSON.stringify(got ?? null)) out.push(`${what} is ${show(got)} where the backup had ${show(want)}`);
  };
  if (options.locale) {
    differ('the encoding', expected.encoding, actual.encoding);
    differ('the locale provider', expected.localeProvider ?? 'libc', actual.localeProvider ?? 'libc');
    differ('LC_COLLATE', expected.collate, actual.collate);
    differ('LC_CTYPE', expected.ctype, actual.ctype);
    if ((expected.localeProvider ?? 'libc') !== 'libc') differ(`the ${expected.localeProvider} locale`, expected.locale, actual.locale);
    differ('the ICU rules', expected.icuRules ?? null, actual.icuRules ?? null);
  }
  differ('the owner', expected.owner, actual.owner);
  const aclKey = (g: DatabaseGrant) => `${g.grantee ?? ''}=${PRIVILEGE_LETTER[g.privilege]}${g.grantable ? '*' : ''}/${g.grantor}`;
  const wantAcl = effectiveAcl(expected.acl, expected.owner);
  const gotAcl = effectiveAcl(actual.acl, actual.owner);
  const missing = wantAcl.filter((g) => !gotAcl.some((h) => aclKey(h) === aclKey(g)));
  const extra = gotAcl.filter((g) => !wantAcl.some((h) => aclKey(h) === aclKey(g)));
  if (missing.length > 0 || extra.length > 0) {
    out.push(`the privileges are ${formatAcl(gotAcl)} where the backup had ${formatAcl(wantAcl)}${missing.length > 0 ? ` (missing ${missing.map(aclKey).join(', ')})` : ''}${extra.length > 0 ? ` (extra ${extra.map(aclKey).join(', ')})` : ''}`);
  }
  differ('the comment', expected.comment, actual.comment);
  differ('the connection limit', expected.connectionLimit, actual.connectionLimit);
  out.push(...diffSettings('database setting', expected.settings, actual.settings));
  const roles = [...new Set([...expected.roleSettings, ...actual.roleSettings].map((r) => r.role))].sort();
  for (const role of roles) {
    const of = (list: RoleSettings[]) => list.find((r) => r.role === role)?.settings ?? [];
    out.push(...diffSettings(`setting of role ${role}`, of(expected.roleSettings), of(actual.roleSettings)));
  }
  return out;
}

function diffSettings(what: string, want: readonly string[], got: readonly string[]): string[] {
  return [
    ...want.filter((s) => !got.includes(s)).map((s) => `${what} ${s} is missing`),
    ...got.filter((s) => !want.includes(s)).map((s) => `${what} ${s} is not in the backup`),
  ];
}

function show(value: unknown): string {
  return value === null || value === undefined ? 'none' : typeof value === 'string' ? `"${value}"` : String(value);
}

/**
 * Gives `database` (created by the connected role, and loaded) the recorded
 * state, in one transaction, then reads it back: returns what differs from
 * what the backup recorded (see compareDatabaseState); `locale: false` when
 * the database was created with the server's default locale.
 */
export async function applyDatabaseState(client: pg.Client, database: string, state: DatabaseState, parts: StateParts, options: { locale: boolean }): Promise<string[]> {
  const restorer = (await client.query<{ u: string }>('SELECT current_user AS u')).rows[0]!.u;
  const statements = databaseStateStatements(database, state, parts, restorer);
  try {
    await runInTransaction(client, statements);
  } catch (error) {
    const code = (error as { code?: string }).code;
    const hint = code === '42501' ? ': restore as a superuser (or a member of the owner role), or leave parts out with --no-owner / --no-acl' : '';
    throw new PgkeepError('RESTORE_FAILED', `could not give "${database}" the owner, privileges and settings of the backup (${(error as Error).message})${hint}`, { cause: error });
  }
  return compareDatabaseState(expectedState(state, parts, restorer), await readDatabaseState(client, database), options);
}
