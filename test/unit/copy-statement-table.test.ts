import assert from 'node:assert/strict';
import { test } from 'node:test';
import { copyStatementTable } from '../../src/restore/copy-statement-table.js';

test('copyStatementTable reads the table of a COPY as pg_dump writes it', () => {
  assert.deepEqual(copyStatementTable('COPY public.events (id, body) FROM stdin;\n'), ['public', 'events']);
  assert.deepEqual(copyStatementTable('COPY public.t1 FROM stdin;\n'), ['public', 't1']);
  assert.deepEqual(copyStatementTable('COPY "My Schema"."odd ""name"".x" (a) FROM stdin;\n'), ['My Schema', 'odd "name".x']);
  assert.deepEqual(copyStatementTable('COPY s_1."select" (a) FROM stdin;\n'), ['s_1', 'select']);
  // no schema (pg_dump before 9.x wrote none): unknown, so the table is counted instead
  assert.equal(copyStatementTable('COPY events (id) FROM stdin;\n'), undefined);
  assert.equal(copyStatementTable('INSERT INTO public.t VALUES (1);'), undefined);
});
