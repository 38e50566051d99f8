import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseNamePattern, selectDataTables, type CatalogTable, type SelectionOptions } from '../../src/postgres/table-selection.js';

function table(schema: string, name: string, extra: Partial<CatalogTable> = {}): CatalogTable {
  return { schema, name, kind: 'r', visible: schema === 'public', extensionMember: false, ...extra };
}

/** A catalog with the situations pg_dump's selection rules care about. */
const catalog: CatalogTable[] = [
  table('public', 'users'),
  table('public', 'Users'), // a different table: created as "Users"
  table('public', 'orders'),
  table('public', 'order_items'),
  table('public', 'logs'),
  table('public', 'a.b'), // a dot in the name
  table('public', 'axb'),
  table('public', 'star*'),
  table('public', 'starfish'),
  table('public', 'say"hi'),
  table('public', 'measurements', { kind: 'p' }), // partitioned parent: no rows of its own
  table('public', 'measurements_2024', { kind: 'r' }),
  table('public', 'measurements_2025', { kind: 'r' }),
  table('public', 'remote_stuff', { kind: 'f' }), // foreign table
  table('public', 'stats_mv', { kind: 'm' }), // materialized view
  table('public', 'spatial_ref_sys', { extensionMember: true }),
  table('app', 'users'), // not on the search_path
  table('app', 'events'),
  table('app_old', 'events'),
  table('App', 'things'), // schema created as "App"
  table('audit', 'log_1'),
  table('audit', 'log_2'),
  table('audit', 'log_x'),
];

function select(options: SelectionOptions): string[] {
  return selectDataTables(catalog, options).map((t) => `${t.schema}.${t.name}`);
}

describe('parseNamePattern', () => {
  it('an unqualified pattern has no schema part', () => {
    const p = parseNamePattern('users');
    assert.equal(p.schema, undefined);
    assert.ok(p.name.test('users'));
    assert.ok(!p.name.test('users2'), 'patterns are anchored at the end');
    assert.ok(!p.name.test('my_users'), 'patterns are anchored at the start');
  });

  it('the first unquoted dot separates schema from name', () => {
    const p = parseNamePattern('app.users');
    assert.ok(p.schema);
    assert.ok(p.schema.test('app'));
    assert.ok(!p.schema.test('application'));
    assert.ok(p.name.test('users'));
    assert.ok(!p.name.test('app.users'));
  });

  it('* matches any run of characters and ? exactly one', () => {
    const star = parseNamePattern('order*');
    assert.ok(star.name.test('order'));
    assert.ok(star.name.test('orders'));
    assert.ok(star.name.test('order_items'));
    assert.ok(!star.name.test('reorder'));
    const question = parseNamePattern('log_?');
    assert.ok(question.name.test('log_1'));
    assert.ok(question.name.test('log_x'));
    assert.ok(!question.name.test('log_'));
    assert.ok(!question.name.test('log_10'));
  });

  it('unquoted letters fold to lower case; quoted ones keep their case', () => {
    const unquoted = parseNamePattern('Users');
    assert.ok(unquoted.name.test('users'));
    assert.ok(!unquoted.name.test('Users'));
    const quoted = parseNamePattern('"Users"');
    assert.ok(quoted.name.test('Users'));
    assert.ok(!quoted.name.test('users'));
    const mixed = parseNamePattern('"Foo"Bar');
    assert.ok(mixed.name.test('Foobar'));
    assert.ok(!mixed.name.test('FooBar'));
  });

  it('inside double quotes * ? and . are literal', () => {
    const dotted = parseNamePattern('"a.b"');
    assert.equal(dotted.schema, undefined, 'a quoted dot does not separate schema and name');
    assert.ok(dotted.name.test('a.b'));
    assert.ok(!dotted.name.test('axb'), 'a quoted dot is not a regex wildcard');
    const star = parseNamePattern('"star*"');
    assert.ok(star.name.test('star*'));
    assert.ok(!star.name.test('starfish'));
    const question = parseNamePattern('"why?"');
    assert.ok(question.name.test('why?'));
    assert.ok(!question.name.test('whyy'));
    assert.ok(!question.name.test('why'));
  });

  it('"" inside double quotes is one literal double quote', () => {
    const p = parseNamePattern('"say""hi"');
    assert.ok(p.name.test('say"hi'));
    assert.ok(!p.name.test('sayhi'));
    assert.ok(!p.name.test('say""hi'));
  });

  it('quoted schema and quoted name together', () => {
    const p = parseNamePattern('"My Schema"."My.Table"');
    assert.ok(p.schema?.test('My Schema'));
    assert.ok(!p.schema?.test('my schema'));
    assert.ok(p.name.test('My.Table'));
    assert.ok(!p.name.test('my.table'));
  });

  it('schema.* matches every name in the schema', () => {
    const p = parseNamePattern('audit.*');
    assert.ok(p.schema?.test('audit'));
    assert.ok(!p.schema?.test('audit2'));
    assert.ok(p.name.test('log_1'));
    assert.ok(p.name.test(''));
  });

  it('a database.schema.name pattern keeps the schema and name parts', () => {
    const p = parseNamePattern('mydb.public.users');
    assert.ok(p.schema?.test('public'));
    assert.ok(!p.schema?.test('mydb'));
    assert.ok(p.name.test('users'));
  });

  it('$ is matched literally, as psql documents', () => {
    const p = parseNamePattern('price$');
    assert.ok(p.name.test('price$'));
    assert.ok(!p.name.test('price'));
  });

  it('other regular-expression characters are literal inside quotes', () => {
    const p = parseNamePattern('"a+b(c)|[d]"');
    assert.ok(p.name.test('a+b(c)|[d]'));
    assert.ok(!p.name.test('aab(c)'));
    assert.ok(!p.name.test('d'));
  });

  it('unquoted, regular-expression bracket expressions work as in pg_dump (e.g. [0-9])', () => {
    // psql "Patterns": all regular-expression special characters work as specified,
    // except . (separator), * (→ .*), ? (→ .) and $ (literal). pg_dump passes -t to the
    // server the same way, so log_[0-9] selects log_1 and log_2 there.
    const p = parseNamePattern('log_[0-9]');
    assert.ok(p.name.test('log_1'));
    assert.ok(p.name.test('log_2'));
    assert.ok(!p.name.test('log_x'));
  });
});

describe('selectDataTables', () => {
  it('with no options selects every ordinary table that holds rows', () => {
    const selected = select({});
    assert.ok(selected.includes('public.users'));
    assert.ok(selected.includes('app.users'));
    assert.ok(selected.includes('App.things'));
    assert.equal(selected.length, catalog.filter((t) => t.kind === 'r' && !t.extensionMember).length);
  });

  it('partitioned parents, foreign tables, materialized views and extension members have no data', () => {
    const selected = select({});
    assert.ok(!selected.includes('public.measurements'), 'partitioned parent (kind p)');
    assert.ok(selected.includes('public.measurements_2024'), 'its partitions hold the rows');
    assert.ok(selected.includes('public.measurements_2025'));
    assert.ok(!selected.includes('public.remote_stuff'), 'foreign table (kind f)');
    assert.ok(!selected.includes('public.stats_mv'), 'materialized view (kind m)');
    assert.ok(!selected.includes('public.spatial_ref_sys'), 'extension member');
    // even when named explicitly
    assert.deepEqual(select({ tables: ['measurements', 'spatial_ref_sys', 'remote_stuff', 'stats_mv'] }), []);
  });

  it('-t with a partitioned parent does not pull in its partitions; a wildcard does', () => {
    assert.deepEqual(select({ tables: ['measurements'] }), []);
    assert.deepEqual(select({ tables: ['measurements*'] }), ['public.measurements_2024', 'public.measurements_2025']);
  });

  it('unqualified -t only matches tables visible on the search_path', () => {
    assert.deepEqual(select({ tables: ['users'] }), ['public.users']);
    assert.deepEqual(select({ tables: ['events'] }), [], 'app.events is not visible');
    assert.deepEqual(select({ tables: ['app.users'] }), ['app.users']);
    const visibleApp = selectDataTables([table('app', 'events', { visible: true })], { tables: ['events'] });
    assert.equal(visibleApp.length, 1, 'a visible table in another schema matches unqualified');
  });

  it('-t folds unquoted names to lower case; quoted names keep case', () => {
    assert.deepEqual(select({ tables: ['USERS'] }), ['public.users']);
    assert.deepEqual(select({ tables: ['"Users"'] }), ['public.Users']);
    assert.deepEqual(select({ tables: ['"App".things'] }), ['App.things']);
    assert.deepEqual(select({ tables: ['App.things'] }), [], 'unquoted App folds to app');
  });

  it('-t with quoted special characters matches literally', () => {
    assert.deepEqual(select({ tables: ['"a.b"'] }), ['public.a.b']);
    assert.deepEqual(select({ tables: ['"star*"'] }), ['public.star*']);
    assert.deepEqual(select({ tables: ['star*'] }), ['public.star*', 'public.starfish']);
    assert.deepEqual(select({ tables: ['"say""hi"'] }), ['public.say"hi']);
  });

  it('several -t patterns are a union', () => {
    assert.deepEqual(select({ tables: ['orders', 'audit.log_1'] }), ['public.orders', 'audit.log_1']);
  });

  it('schema.* selects all data tables of a schema', () => {
    assert.deepEqual(select({ tables: ['audit.*'] }), ['audit.log_1', 'audit.log_2', 'audit.log_x']);
    assert.deepEqual(select({ tables: ['app*.*'] }), ['app.users', 'app.events', 'app_old.events']);
  });

  it('-t ignores -n and -N', () => {
    assert.deepEqual(select({ tables: ['app.users'], schemas: ['audit'] }), ['app.users']);
    assert.deepEqual(select({ tables: ['app.users'], excludeSchemas: ['app'] }), ['app.users']);
  });

  it('-T excludes tables, also from -t selections', () => {
    const all = select({});
    const withoutLogs = select({ excludeTables: ['logs'] });
    assert.ok(all.includes('public.logs'));
    assert.deepEqual(withoutLogs, all.filter((t) => t !== 'public.logs'));
    assert.deepEqual(select({ tables: ['audit.*'], excludeTables: ['audit.log_x'] }), ['audit.log_1', 'audit.log_2']);
    assert.deepEqual(select({ tables: ['order*'], excludeTables: ['order_?tems'] }), ['public.orders']);
  });

  it('unqualified -T only excludes visible tables', () => {
    const selected = select({ excludeTables: ['users'] });
    assert.ok(!selected.includes('public.users'));
    assert.ok(selected.includes('app.users'), 'app.users is not on the search_path');
  });

  it('-n selects schemas; -N excludes them and wins over -n', () => {
    assert.deepEqual(select({ schemas: ['audit'] }), ['audit.log_1', 'audit.log_2', 'audit.log_x']);
    assert.deepEqual(select({ schemas: ['app*'] }), ['app.users', 'app.events', 'app_old.events']);
    assert.deepEqual(select({ schemas: ['app*'], excludeSchemas: ['app_old'] }), ['app.users', 'app.events']);
    const noPublic = select({ excludeSchemas: ['public'] });
    assert.ok(noPublic.length > 0);
    assert.ok(noPublic.every((t) => !t.startsWith('public.')));
  });

  it('-n folds unquoted schema names; quoted ones keep case', () => {
    assert.deepEqual(select({ schemas: ['"App"'] }), ['App.things']);
    assert.deepEqual(select({ schemas: ['APP'] }), ['app.users', 'app.events']);
  });

  it('-n with -T: the exclusion still applies', () => {
    assert.deepEqual(select({ schemas: ['audit'], excludeTables: ['audit.log_?'] }), []);
  });

  it('keeps the catalog order and returns the catalog objects', () => {
    const result = selectDataTables(catalog, { tables: ['audit.log_2', 'audit.log_1'] });
    assert.deepEqual(
      result.map((t) => t.name),
      ['log_1', 'log_2'],
    );
    assert.ok(result.every((t) => catalog.includes(t)));
  });
});
