import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  compareDatabaseState,
  createDatabaseOptions,
  databaseStateStatements,
  expectedState,
  rolesNamed,
  settingAssignment,
  splitGucList,
  type DatabaseState,
} from '../../src/postgres/database-state.js';
import { parseCreateDatabase, renameDatabaseIn, rolesInStatements, splitStatements } from '../../src/postgres/dump-database-state.js';
import { compareSchemaDumps, parseSchemaDump } from '../../src/verify/schema-compare.js';

const STATE: DatabaseState = {
  encoding: 'UTF8',
  collate: 'C.UTF-8',
  ctype: 'C.UTF-8',
  localeProvider: 'icu',
  locale: 'de-DE',
  icuRules: null,
  owner: 'owner_role',
  acl: [
    { grantee: 'owner_role', grantor: 'owner_role', privilege: 'CREATE', grantable: false },
    { grantee: 'owner_role', grantor: 'owner_role', privilege: 'CONNECT', grantable: false },
    { grantee: 'app_reader', grantor: 'owner_role', privilege: 'CONNECT', grantable: false },
  ],
  comment: "it's the db",
  settings: ['work_mem=7MB', 'search_path="$user", public, "odd, one"'],
  roleSettings: [{ role: 'app_reader', settings: ['statement_timeout=5s'] }],
  connectionLimit: 17,
};
const ALL = { owner: true, acl: true, roleSettings: true };

describe('database state', () => {
  test('list settings are given back as a list of literals, others as one literal', () => {
    assert.deepEqual(splitGucList('"$user", public, "odd, one"'), ['$user', 'public', 'odd, one']);
    assert.deepEqual(splitGucList('"say ""hi"""'), ['say "hi"']);
    assert.equal(settingAssignment('search_path="$user", public'), `"search_path" TO '$user', 'public'`);
    assert.equal(settingAssignment('DateStyle=ISO, MDY'), `"DateStyle" TO 'ISO, MDY'`);
    assert.equal(settingAssignment("app.note=it's"), `"app.note" TO 'it''s'`);
  });

  test('statements: owner first, then privileges (owner grants before others), comment, limit, settings, role settings', () => {
    const sql = databaseStateStatements('copy', STATE, ALL, 'postgres');
    assert.deepEqual(sql, [
      'ALTER DATABASE "copy" OWNER TO "owner_role"',
      'REVOKE ALL ON DATABASE "copy" FROM PUBLIC',
      'REVOKE ALL ON DATABASE "copy" FROM "owner_role"',
      'GRANT CREATE, CONNECT ON DATABASE "copy" TO "owner_role"',
      'GRANT CONNECT ON DATABASE "copy" TO "app_reader"',
      `COMMENT ON DATABASE "copy" IS 'it''s the db'`,
      'ALTER DATABASE "copy" CONNECTION LIMIT 17',
      `ALTER DATABASE "copy" SET "work_mem" TO '7MB'`,
      `ALTER DATABASE "copy" SET "search_path" TO '$user', 'public', 'odd, one'`,
      `ALTER ROLE "app_reader" IN DATABASE "copy" SET "statement_timeout" TO '5s'`,
    ]);
  });

  test('--no-owner: the restoring role takes the owner\'s place, also in the ACL; --no-acl: no GRANT/REVOKE', () => {
    const sql = databaseStateStatements('copy', STATE, { owner: false, acl: true, roleSettings: true }, 'me');
    assert.ok(!sql.some((s) => s.includes('OWNER TO')));
    assert.ok(sql.includes('GRANT CREATE, CONNECT ON DATABASE "copy" TO "me"'));
    assert.ok(!databaseStateStatements('copy', STATE, { owner: true, acl: false, roleSettings: true }, 'me').some((s) => /^(GRANT|REVOKE)/.test(s)));
    assert.deepEqual(rolesNamed(STATE, ALL), ['app_reader', 'owner_role']);
    assert.deepEqual(rolesNamed(STATE, { owner: false, acl: false, roleSettings: false }), []);
  });

  test('comparison names each difference; the default ACL equals an explicit one with the same items', () => {
    assert.deepEqual(compareDatabaseState(STATE, STATE, { locale: true }), []);
    const lost: DatabaseState = { ...STATE, owner: 'postgres', acl: null, comment: null, settings: [], roleSettings: [], localeProvider: 'libc', locale: null, connectionLimit: -1 };
    const differences = compareDatabaseState(STATE, lost, { locale: true });
    assert.deepEqual(differences.slice(0, 3), ['the locale provider is "libc" where the backup had "icu"', 'the icu locale is none where the backup had "de-DE"', 'the owner is "postgres" where the backup had "owner_role"']);
    assert.ok(differences.some((d) => d.startsWith('the privileges are {=Tc/postgres,postgres=CTc/postgres} where the backup had {owner_role=Cc/owner_role,app_reader=c/owner_role}')));
    assert.ok(differences.includes('database setting work_mem=7MB is missing'));
    assert.ok(differences.includes('setting of role app_reader statement_timeout=5s is missing'));
    assert.ok(differences.includes('the connection limit is -1 where the backup had 17'));
    const defaults = { ...STATE, acl: null };
    const explicit = { ...STATE, acl: expectedState({ ...STATE, acl: null }, ALL, 'x').acl };
    assert.deepEqual(compareDatabaseState(defaults, explicit, { locale: true }), []);
    assert.deepEqual(compareDatabaseState(STATE, { ...STATE, localeProvider: 'libc', locale: null }, { locale: false }), []);
  });

  test('CREATE DATABASE options by server version: the provider is always named from 15; ICU cannot be expressed before', () => {
    assert.equal(createDatabaseOptions(STATE, 150000), `ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8' LOCALE_PROVIDER icu ICU_LOCALE 'de-DE'`);
    assert.equal(createDatabaseOptions(STATE, 140000), undefined);
    assert.equal(createDatabaseOptions({ ...STATE, icuRules: '&a < b' }, 150000), undefined);
    assert.match(createDatabaseOptions({ ...STATE, icuRules: '&a < b' }, 160000)!, /ICU_RULES '&a < b'$/);
    assert.equal(createDatabaseOptions({ ...STATE, localeProvider: 'libc', locale: null }, 120000), `ENCODING 'UTF8' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'`);
    assert.match(createDatabaseOptions({ ...STATE, localeProvider: 'libc', locale: null }, 170000)!, /LOCALE_PROVIDER libc$/);
    assert.match(createDatabaseOptions({ ...STATE, localeProvider: 'builtin', locale: 'C.UTF-8' }, 170000)!, /LOCALE_PROVIDER builtin BUILTIN_LOCALE 'C.UTF-8'$/);
  });
});

describe('the database statements of a pg_dump archive', () => {
  test('CREATE DATABASE gives the locale', () => {
    assert.deepEqual(parseCreateDatabase("CREATE DATABASE icudb WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = icu LOCALE = 'C.UTF-8' ICU_LOCALE = 'de-DE';\n"), {
      encoding: 'UTF8',
      collate: 'C.UTF-8',
      ctype: 'C.UTF-8',
      localeProvider: 'icu',
      locale: 'de-DE',
      icuRules: null,
    });
    assert.equal(parseCreateDatabase("CREATE DATABASE x WITH TEMPLATE = template0 ENCODING = 'UTF8' LC_COLLATE = 'de_DE.UTF-8' LC_CTYPE = 'C';")!.ctype, 'C');
  });

  test('statements are renamed where they name the database, never inside a role name or literal', () => {
    const sql = splitStatements("COMMENT ON DATABASE icudb IS 'about DATABASE icudb; really';\nALTER ROLE \"DATABASE icudb\" IN DATABASE icudb SET work_mem TO '7MB';\nGRANT CONNECT ON DATABASE icudb TO app_reader;\n");
    assert.equal(sql.length, 3);
    assert.equal(renameDatabaseIn(sql[0]!, 'icudb', 'new db'), `COMMENT ON DATABASE "new db" IS 'about DATABASE icudb; really'`);
    assert.equal(renameDatabaseIn(sql[1]!, 'icudb', 'x'), `ALTER ROLE "DATABASE icudb" IN DATABASE "x" SET work_mem TO '7MB'`);
    assert.equal(renameDatabaseIn('REVOKE CONNECT,TEMPORARY ON DATABASE "Odd Name" FROM PUBLIC', 'Odd Name', 'x'), 'REVOKE CONNECT,TEMPORARY ON DATABASE "x" FROM PUBLIC');
    assert.deepEqual(rolesInStatements([...sql, 'REVOKE CONNECT ON DATABASE x FROM PUBLIC']).sort(), ['DATABASE icudb', 'app_reader']);
  });
});

describe('schema comparison', () => {
  const dump = (owner: string, extra = '') => `--
-- PostgreSQL database dump
--
SET statement_timeout = 0;

--
-- Name: t; Type: TABLE; Schema: public; Owner: ${owner}
--

CREATE TABLE public.t (
    id integer
);


ALTER TABLE public.t OWNER TO ${owner};

--
-- Data for Name: t; Type: TABLE DATA; Schema: public; Owner: ${owner}
--

COPY public.t (id) FROM stdin;
1
\\.
${extra}
--
-- Name: TABLE t; Type: ACL; Schema: public; Owner: ${owner}
--

GRANT SELECT ON TABLE public.t TO app_reader;
`;

  test('objects are compared, data blocks and session settings are not', () => {
    const a = parseSchemaDump(dump('postgres'));
    assert.deepEqual(a.map((o) => o.key), ['TABLE public.t', 'ACL public.TABLE t']);
    assert.deepEqual(compareSchemaDumps(a, parseSchemaDump(dump('postgres'))).differences, []);
  });

  test('a different owner, a missing grant and an extra object are named', () => {
    const expected = parseSchemaDump(dump('owner_role'));
    const actual = parseSchemaDump(dump('postgres', '\n--\n-- Name: u; Type: VIEW; Schema: public; Owner: postgres\n--\n\nCREATE VIEW public.u AS SELECT 1;\n').replace('GRANT SELECT ON TABLE public.t TO app_reader;', ''));
    const messages = compareSchemaDumps(expected, actual).differences.map((d) => d.message);
    assert.deepEqual(messages, [
      'TABLE public.t differs: the backup has "ALTER TABLE public.t OWNER TO owner_role;", the restored database "ALTER TABLE public.t OWNER TO postgres;"',
      'ACL public.TABLE t differs: the backup has "GRANT SELECT ON TABLE public.t TO app_reader;"',
      'VIEW public.u is in the restored database but not in the backup',
    ]);
    // --no-owner and --no-acl leave those out on both sides
    assert.deepEqual(compareSchemaDumps(parseSchemaDump(dump('owner_role'), { noOwner: true, noAcl: true }), parseSchemaDump(dump('postgres'), { noOwner: true, noAcl: true })).differences, []);
  });
});
