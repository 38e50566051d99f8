import assert from 'node:assert/strict';
import * as fs from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, it } from 'node:test';
import { loadSettings, scratchConnection, verifySettings } from '../../src/config/settings.js';
import { PgkeepError } from '../../src/errors.js';
import { describeProbeFailure, groupFindings, matchTocWithCatalog } from '../../src/verify/restore-checks.js';

const made: string[] = [];
after(async () => {
  await Promise.all(made.map((dir) => fs.rm(dir, { recursive: true, force: true })));
});

async function settingsWith(yaml: string, env: Record<string, string> = {}) {
  const cwd = await fs.mkdtemp(path.join(tmpdir(), 'pgkeep-verify-config-'));
  made.push(cwd);
  await fs.writeFile(path.join(cwd, 'pgkeep.yaml'), yaml);
  return loadSettings({}, { env, cwd });
}

// pg_restore --list prints names unquoted, so spaces inside names and argument lists must not confuse the matching.
const TOC = [
  ';',
  '; Archive created at 2026-11-21 08:00:00 UTC',
  ';',
  '5; 2615 16390 SCHEMA - Schema With Spaces postgres',
  '2; 3079 16400 EXTENSION - hstore ',
  '220; 1259 16410 TABLE public Mixed Case app',
  '221; 1259 16411 TABLE public orders app',
  '230; 1255 16420 FUNCTION public add(integer, integer) app',
  '231; 1255 16421 PROCEDURE public tidy() app',
  '240; 2606 16430 CONSTRAINT public orders orders_pkey app',
  '241; 2606 16431 FK CONSTRAINT public orders orders customer fk app',
  '250; 2620 16440 TRIGGER public orders audit orders app',
  '260; 1259 16450 INDEX public orders_note_idx app',
  '270; 1259 16460 VIEW public recent orders app',
  '280; 0 16411 TABLE DATA public orders app',
  '281; 0 0 SEQUENCE SET public orders_id_seq app',
  '282; 0 0 INDEX ATTACH public part_idx app',
  '283; 0 0 COMMENT public TABLE orders app',
  '284; 1259 16470 MATERIALIZED VIEW DATA public mv app',
].join('\n');

const CATALOG = [
  { kind: 'SCHEMA', key: '- Schema With Spaces' },
  { kind: 'EXTENSION', key: '- hstore' },
  { kind: 'TABLE', key: 'public Mixed Case' },
  { kind: 'TABLE', key: 'public orders' },
  { kind: 'FUNCTION', key: 'public add(' },
  { kind: 'PROCEDURE', key: 'public tidy(' },
  { kind: 'CONSTRAINT', key: 'public orders orders_pkey' },
  { kind: 'CONSTRAINT', key: 'public orders orders customer fk' },
  { kind: 'TRIGGER', key: 'public orders audit orders' },
  { kind: 'INDEX', key: 'public orders_note_idx' },
  { kind: 'VIEW', key: 'public recent orders' },
];

describe('matchTocWithCatalog', () => {
  it('finds every checked kind of TOC entry, names with spaces and routines included; data, comments and attachments are not checked', () => {
    assert.deepEqual(matchTocWithCatalog(TOC, CATALOG), { checked: 11, missing: [] });
  });

  it('names what the restored database lacks, without the owner', () => {
    const result = matchTocWithCatalog(TOC, CATALOG.filter((o) => o.key !== 'public recent orders' && o.kind !== 'FUNCTION'));
    assert.deepEqual(result.missing, ['FUNCTION public add(integer, integer)', 'VIEW public recent orders']);
  });

  it('a table is not taken for a view of the same name, nor a prefix of a longer name for the name', () => {
    const toc = '1; 1259 1 VIEW public orders app\n2; 1259 2 TABLE public order app';
    assert.deepEqual(matchTocWithCatalog(toc, [{ kind: 'TABLE', key: 'public orders' }]).missing, ['VIEW public orders', 'TABLE public order']);
  });
});

describe('probes', () => {
  it('a failed probe is one line: the query, what came back, what was expected', () => {
    assert.equal(
      describeProbeFailure({ sql: 'SELECT count(*)\n  FROM users', expect: 'non-zero', ok: false, value: '0' }, 1),
      'probe 2 (SELECT count(*) FROM users) returned "0" where the config expects a non-zero value',
    );
    assert.equal(describeProbeFailure({ sql: 'SELECT 1', expect: 3, ok: false, value: null, error: 'boom' }, 0), 'probe 1 (SELECT 1) failed: boom');
  });

  it('config: strings expect non-zero, objects keep their value; a source\'s verify keys win over the top level', async () => {
    const settings = await settingsWith(
      [
        'verify:',
        '  scratch: local',
        '  probes: ["SELECT 1"]',
        'sources:',
        '  app:',
        '    db: postgresql://u@h/app',
        '    verify:',
        '      probes:',
        '        - SELECT count(*) FROM users',
        '        - { sql: "SELECT max(version) FROM schema_migrations", expect: "20240101" }',
        '        - { sql: "SELECT true", expect: true }',
        '  other:',
        '    db: postgresql://u@h/other',
        '',
      ].join('\n'),
    );
    assert.deepEqual(verifySettings(settings, 'app'), {
      scratch: 'local',
      probes: [
        { sql: 'SELECT count(*) FROM users', expect: 'non-zero' },
        { sql: 'SELECT max(version) FROM schema_migrations', expect: '20240101' },
        { sql: 'SELECT true', expect: true },
      ],
    });
    assert.deepEqual(verifySettings(settings, 'other'), { scratch: 'local', probes: [{ sql: 'SELECT 1', expect: 'non-zero' }] });
  });

  it('config: a probe without SQL or with an unknown key is refused, naming the key', async () => {
    await assert.rejects(settingsWith('verify:\n  probes: [{ expect: 1 }]\n'), (error: unknown) => error instanceof PgkeepError && error.code === 'CONFIG_INVALID' && /verify\.probes\.0/.test(error.message));
    await assert.rejects(settingsWith('verify:\n  probe: []\n'), (error: unknown) => error instanceof PgkeepError && error.code === 'CONFIG_INVALID' && /verify/.test(error.message));
  });

  it('--scratch URL: the password comes from the URL or PGPASSWORD, never required in argv', async () => {
    const settings = await settingsWith('repo: ./r\n', { PGPASSWORD: 'from-env' });
    assert.deepEqual(scratchConnection(settings, 'postgresql://tester@test-db:6543/'), { host: 'test-db', port: 6543, user: 'tester', database: 'postgres', password: 'from-env' });
    assert.equal(scratchConnection(settings, 'postgresql://tester:inline@test-db/x').password, 'inline');
  });
});

describe('groupFindings', () => {
  it('joins a pg_amcheck heading with its indented detail lines, so no finding stops at its colon', () => {
    const lines = [
      'heap table "db.public.t", block 0, offset 3:',
      '    xmin 1234 precedes relation freeze threshold 0:5678',
      'btree index "db.public.t_pkey":',
      '    ERROR:  item order invariant violated for index "t_pkey"',
      '    DETAIL:  Lower index tid=(1,2) higher index tid=(1,3).',
    ];
    assert.deepEqual(groupFindings(lines), [
      'heap table "db.public.t", block 0, offset 3: xmin 1234 precedes relation freeze threshold 0:5678',
      'btree index "db.public.t_pkey": ERROR:  item order invariant violated for index "t_pkey" DETAIL:  Lower index tid=(1,2) higher index tid=(1,3).',
    ]);
  });
});
