import assert from 'node:assert/strict';
import { Readable } from 'node:stream';
import { describe, it } from 'node:test';
import { text } from 'node:stream/consumers';
import { GlobalsFilter, readIdentifier } from '../../src/postgres/globals-sql.js';

/** pg_dumpall --globals-only output of PostgreSQL 15, shortened. */
const DUMP = `--
-- PostgreSQL database cluster dump
--

SET default_transaction_read_only = off;
SET client_encoding = 'UTF8';

--
-- Roles
--

CREATE ROLE app;
ALTER ROLE app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:abc';
COMMENT ON ROLE app IS 'the app';
CREATE ROLE "Odd ""Role""";
ALTER ROLE "Odd ""Role""" WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS PASSWORD 'SCRAM-SHA-256$4096:xyz';
CREATE ROLE readers;
ALTER ROLE readers WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB NOLOGIN NOREPLICATION NOBYPASSRLS;

--
-- User Configurations
--

ALTER ROLE app SET statement_timeout TO '5s';
ALTER ROLE app IN DATABASE shop SET work_mem TO '64MB';
ALTER ROLE readers SET search_path TO 'x';

--
-- Role memberships
--

GRANT readers TO app GRANTED BY postgres;
GRANT app TO readers GRANTED BY postgres;
GRANT readers TO "Odd ""Role""" GRANTED BY postgres;

--
-- Tablespaces
--

CREATE TABLESPACE fast OWNER postgres LOCATION '/srv/fast';
GRANT ALL ON TABLESPACE fast TO app;

--
-- PostgreSQL database cluster dump complete
--
`;

async function filter(existing: string[], input: string, chunk = 7) {
  const f = new GlobalsFilter(new Set(existing));
  const parts: string[] = [];
  for (let i = 0; i < input.length; i += chunk) parts.push(input.slice(i, i + chunk));
  const out = await text(Readable.from(parts.map((p) => Buffer.from(p))).pipe(f));
  return { out, report: f.report };
}

describe('GlobalsFilter', () => {
  it('creates only missing roles and leaves existing ones exactly as they are', async () => {
    const { out, report } = await filter(['postgres', 'readers'], DUMP);
    assert.deepEqual(report.created, ['app', 'Odd "Role"']);
    assert.deepEqual(report.existing, ['postgres', 'readers']);
    assert.match(out, /^CREATE ROLE app;$/m);
    assert.match(out, /^ALTER ROLE app WITH .*PASSWORD/m);
    assert.match(out, /^COMMENT ON ROLE app IS/m);
    assert.match(out, /^ALTER ROLE "Odd ""Role""" WITH/m);
    assert.doesNotMatch(out, /ROLE postgres|ROLE readers/, 'nothing about existing roles');
    assert.match(out, /^ALTER ROLE app SET statement_timeout/m);
  });

  it('grants memberships to created roles only', async () => {
    const { out } = await filter(['postgres', 'readers'], DUMP);
    assert.match(out, /^GRANT readers TO app GRANTED BY postgres;$/m);
    assert.match(out, /^GRANT readers TO "Odd ""Role""" GRANTED BY postgres;$/m);
    assert.doesNotMatch(out, /GRANT app TO readers/, 'an existing role gets no new membership');
  });

  it('skips tablespaces and per-database role settings, and reports them', async () => {
    const { out, report } = await filter([], DUMP);
    assert.doesNotMatch(out, /TABLESPACE|IN DATABASE/);
    assert.equal(report.skipped.length, 3);
    assert.ok(report.skipped.every((s) => !s.includes('/srv/fast')), 'locations are not echoed');
  });

  it('wraps everything in one transaction, committed only at the end of the input', async () => {
    const { out } = await filter([], DUMP, 1000);
    const lines = out.trim().split('\n');
    assert.equal(lines[0], 'BEGIN;');
    assert.equal(lines.at(-1), 'COMMIT;');
    assert.equal(out.match(/COMMIT;/g)?.length, 1);
    assert.equal((await filter([], '')).out, 'BEGIN;\nCOMMIT;\n');
  });

  it('reads plain and quoted role names', () => {
    assert.deepEqual(readIdentifier('CREATE ROLE app;', 12), { name: 'app', end: 15 });
    assert.deepEqual(readIdentifier('CREATE ROLE "a ""b"" c";', 12), { name: 'a "b" c', end: 23 });
    assert.equal(readIdentifier('CREATE ROLE "unterminated', 12), undefined);
  });
});
