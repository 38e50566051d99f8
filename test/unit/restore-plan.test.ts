import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import type { TocEntry } from '../../src/pipeline/custom-toc.js';
import { planSelection, tocListFile } from '../../src/postgres/restore-plan.js';

let nextId = 1;
const byName = new Map<string, TocEntry>();
function entry(desc: string, namespace: string | null, tag: string, deps: string[] = [], key = `${desc} ${namespace}.${tag}`): TocEntry {
  const e: TocEntry = { dumpId: nextId++, desc, namespace, tag, owner: 'postgres', section: 2, hasData: desc === 'TABLE DATA', dependencies: deps.map((d) => byName.get(d)!.dumpId) };
  byName.set(key, e);
  return e;
}

/** A table of contents shaped like pg_dump's (see the awkward fixture's): dependencies point at earlier entries. */
const TOC: TocEntry[] = [
  entry('ENCODING', null, 'ENCODING'),
  entry('SCHEMA', null, 'sales', [], 'schema sales'),
  entry('EXTENSION', null, 'citext', [], 'ext citext'),
  entry('TYPE', 'public', 'mood', [], 'type mood'),
  entry('FUNCTION', 'public', 'audit()', [], 'fn audit'),
  entry('SEQUENCE', 'public', 'shared_seq', [], 'seq shared'),
  entry('TABLE', 'public', 'customers', ['ext citext']),
  entry('TABLE', 'public', 'orders', ['type mood', 'seq shared']),
  entry('SEQUENCE', 'public', 'orders_id_seq', ['TABLE public.orders'], 'seq orders'),
  entry('COMMENT', 'public', 'TABLE orders', ['TABLE public.orders'], 'comment orders'),
  entry('VIEW', 'public', 'order_view', ['TABLE public.orders'], 'view'),
  entry('TABLE', 'sales', 'leads', ['schema sales']),
  entry('TABLE DATA', 'public', 'customers', ['TABLE public.customers']),
  entry('TABLE DATA', 'public', 'orders', ['TABLE public.orders']),
  entry('TABLE DATA', 'sales', 'leads', ['TABLE sales.leads']),
  entry('SEQUENCE SET', 'public', 'orders_id_seq', ['seq orders'], 'setval orders'),
  entry('SEQUENCE SET', 'public', 'shared_seq', ['seq shared'], 'setval shared'),
  entry('CONSTRAINT', 'public', 'customers customers_pkey', ['TABLE public.customers'], 'pk customers'),
  entry('CONSTRAINT', 'public', 'orders orders_pkey', ['TABLE public.orders'], 'pk orders'),
  entry('INDEX', 'public', 'orders_idx', ['TABLE public.orders'], 'idx orders'),
  entry('TRIGGER', 'public', 'orders audit', ['fn audit', 'TABLE public.orders'], 'trg orders'),
  entry('FK CONSTRAINT', 'public', 'orders orders_customer_fkey', ['pk customers', 'TABLE public.orders', 'TABLE public.customers'], 'fk orders'),
];

/** A partitioned table as pg_dump 15 lists it: partitions created alone, then attached; a partitioned key and index. */
const PARTITIONED: TocEntry[] = [
  entry('TABLE', 'public', 'events'),
  entry('TABLE', 'public', 'events_2024', ['TABLE public.events']),
  entry('TABLE', 'public', 'events_2025', ['TABLE public.events']),
  entry('TABLE ATTACH', 'public', 'events_2024', ['TABLE public.events_2024', 'TABLE public.events']),
  entry('TABLE ATTACH', 'public', 'events_2025', ['TABLE public.events_2025', 'TABLE public.events']),
  entry('TABLE DATA', 'public', 'events_2024', ['TABLE public.events_2024']),
  entry('TABLE DATA', 'public', 'events_2025', ['TABLE public.events_2025']),
  entry('CONSTRAINT', 'public', 'events events_pkey', ['TABLE public.events'], 'pk events'),
  entry('CONSTRAINT', 'public', 'events_2024 events_2024_pkey', ['TABLE public.events_2024', 'pk events'], 'pk 2024'),
  entry('CONSTRAINT', 'public', 'events_2025 events_2025_pkey', ['TABLE public.events_2025', 'pk events'], 'pk 2025'),
  entry('INDEX', 'public', 'events_note', ['TABLE public.events'], 'idx events'),
  entry('INDEX', 'public', 'events_2024_note_idx', ['TABLE public.events_2024', 'idx events'], 'idx 2024'),
  entry('INDEX ATTACH', 'public', 'events_2024_note_idx', ['idx 2024', 'idx events', 'TABLE public.events_2024', 'TABLE public.events'], 'attach idx 2024'),
  entry('INDEX ATTACH', 'public', 'events_2024_pkey', ['pk 2024', 'TABLE public.events_2024', 'pk events', 'TABLE public.events'], 'attach pk 2024'),
  entry('INDEX ATTACH', 'public', 'events_2025_pkey', ['pk 2025', 'TABLE public.events_2025', 'pk events', 'TABLE public.events'], 'attach pk 2025'),
];
const names = (entries: TocEntry[]) => entries.map((e) => `${e.desc} ${e.tag}`);

describe('planSelection', () => {
  it('a table comes with its rows, indexes, constraints, triggers, comment and owned sequence; not views or foreign keys to other tables', () => {
    const plan = planSelection(TOC, { tables: ['orders'], newDatabase: false });
    const got = names(plan.entries);
    for (const wanted of ['TABLE orders', 'TABLE DATA orders', 'SEQUENCE orders_id_seq', 'SEQUENCE SET orders_id_seq', 'COMMENT TABLE orders', 'CONSTRAINT orders orders_pkey', 'INDEX orders_idx', 'TRIGGER orders audit']) {
      assert.ok(got.includes(wanted), `${wanted} in ${got.join(', ')}`);
    }
    for (const unwanted of ['VIEW order_view', 'FK CONSTRAINT orders orders_customer_fkey', 'TABLE customers', 'TYPE mood', 'FUNCTION audit()']) assert.ok(!got.includes(unwanted), unwanted);
    assert.deepEqual(plan.dataTables, [{ schema: 'public', name: 'orders' }]);
  });

  it('into a new database it also brings what the table needs, without rows', () => {
    const got = names(planSelection(TOC, { tables: ['public.orders'], newDatabase: true }).entries);
    for (const wanted of ['TYPE mood', 'SEQUENCE shared_seq', 'FUNCTION audit()']) assert.ok(got.includes(wanted), wanted);
    assert.ok(!got.includes('TABLE DATA customers'));
  });

  it('with both tables the foreign key between them is kept', () => {
    const got = names(planSelection(TOC, { tables: ['orders', 'customers'], newDatabase: true }).entries);
    assert.ok(got.includes('FK CONSTRAINT orders orders_customer_fkey'));
    assert.ok(got.includes('EXTENSION citext'));
  });

  it('--schema takes every object of the schema; into an existing database not the schema itself', () => {
    const fresh = planSelection(TOC, { schemas: ['sales'], newDatabase: true });
    assert.deepEqual(names(fresh.entries).filter((n) => n !== 'ENCODING ENCODING'), ['SCHEMA sales', 'TABLE leads', 'TABLE DATA leads']);
    const existing = planSelection(TOC, { schemas: ['sales'], newDatabase: false });
    assert.ok(!names(existing.entries).includes('SCHEMA sales'));
    assert.deepEqual(existing.schemas, ['sales']);
  });

  it('a pattern that matches nothing is a usage error naming it', () => {
    assert.throws(() => planSelection(TOC, { tables: ['orders', 'nope'], newDatabase: true }), /--table "nope" matches no table/);
    assert.throws(() => planSelection(TOC, { schemas: ['nope'], newDatabase: true }), /--schema "nope" matches no schema/);
  });

  it('the -L list keeps archive order and names each entry after its id', () => {
    const plan = planSelection(TOC, { tables: ['orders'], newDatabase: false });
    const ids = tocListFile(plan.entries).trim().split('\n').map((line) => Number(line.split(';')[0]));
    assert.deepEqual(ids, [...ids].sort((a, b) => a - b));
  });

  it('a partition into a new database comes attached to its parent, which comes empty, with the partitioned key and index', () => {
    const plan = planSelection(PARTITIONED, { tables: ['public.events_2024'], newDatabase: true });
    const got = names(plan.entries);
    for (const wanted of ['TABLE events', 'TABLE events_2024', 'TABLE ATTACH events_2024', 'TABLE DATA events_2024', 'CONSTRAINT events events_pkey', 'INDEX events_note', 'INDEX ATTACH events_2024_pkey', 'INDEX ATTACH events_2024_note_idx']) {
      assert.ok(got.includes(wanted), `${wanted} in ${got.join(', ')}`);
    }
    for (const unwanted of ['TABLE events_2025', 'TABLE ATTACH events_2025', 'TABLE DATA events_2025', 'INDEX ATTACH events_2025_pkey']) assert.ok(!got.includes(unwanted), unwanted);
    assert.deepEqual(plan.dataTables, [{ schema: 'public', name: 'events_2024' }]);
    const ids = plan.entries.map((e) => e.dumpId);
    assert.ok(ids.indexOf(byName.get('TABLE ATTACH public.events_2024')!.dumpId) < ids.indexOf(byName.get('attach pk 2024')!.dumpId), 'attached before its index');
  });

  it('a partition into an existing database is attached to the parent there', () => {
    const got = names(planSelection(PARTITIONED, { tables: ['events_2024'], newDatabase: false }).entries);
    assert.ok(got.includes('TABLE ATTACH events_2024'), got.join(', '));
    assert.ok(!got.includes('TABLE events'), 'the parent is left alone');
  });

  it('a partitioned table comes with all its partitions and their rows', () => {
    for (const newDatabase of [true, false]) {
      const plan = planSelection(PARTITIONED, { tables: ['public.events'], newDatabase });
      const got = names(plan.entries);
      for (const wanted of ['TABLE events', 'TABLE events_2024', 'TABLE events_2025', 'TABLE ATTACH events_2024', 'TABLE ATTACH events_2025', 'CONSTRAINT events_2025 events_2025_pkey', 'INDEX ATTACH events_2025_pkey']) {
        assert.ok(got.includes(wanted), `${wanted} in ${got.join(', ')}`);
      }
      assert.deepEqual(plan.dataTables, [{ schema: 'public', name: 'events_2024' }, { schema: 'public', name: 'events_2025' }]);
    }
  });
});
