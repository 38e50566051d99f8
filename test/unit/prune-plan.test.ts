import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { parseConfig } from '../../src/config/load-config.js';
import { parseSize, resolveHealthThresholds } from '../../src/config/health-settings.js';
import { describePolicy, resolveRetention } from '../../src/config/retention-settings.js';
import type { Settings } from '../../src/config/settings.js';
import { PgkeepError } from '../../src/errors.js';
import { FAILURE_RECORD_MAX_AGE_MS, LEFTOVER_MIN_AGE_MS, NO_PITR, pitrRetention, planPrune, planWalRemoval, type PitrRetention, type PruneBackup } from '../../src/retention/plan-prune.js';
import type { RetentionPolicy } from '../../src/retention/retention-policy.js';

const now = new Date('2026-11-21T12:00:00Z');
const at = (msAgo: number) => new Date(now.getTime() - msAgo);
const DAY = 86_400_000;

function b(id: string, kind: string, daysAgo: number): PruneBackup {
  return { id, kind, time: at(daysAgo * DAY), labels: [], pinned: false, storedBytes: 100 };
}

const keepLast = (n: number): RetentionPolicy => ({ keepLast: n, timeZone: 'UTC' });

function settingsFrom(yaml: string, env: Record<string, string> = {}): Settings {
  return { cwd: '/tmp', configFile: '/tmp/pgkeep.yaml', config: parseConfig(yaml, 'pgkeep.yaml', env), env, options: {} };
}

describe('planPrune', () => {
  it('each kind is governed by its own policy and keeps its own newest backup', () => {
    const backups = [b('L1', 'logical', 1), b('L2', 'logical', 2), b('L3', 'logical', 3), b('P1', 'physical', 1.5), b('P2', 'physical', 4)];
    const plan = planPrune({ backups, leftovers: [], failureRecords: [] }, { logical: keepLast(2), physical: keepLast(1) }, now);
    assert.deepEqual(plan.backups.map((p) => [p.id, p.keep]), [['L1', true], ['P1', true], ['L2', true], ['L3', false], ['P2', false]]);
    // without a physical policy, physical backups use the logical one
    const shared = planPrune({ backups, leftovers: [], failureRecords: [] }, { logical: keepLast(2) }, now);
    assert.deepEqual(shared.backups.filter((p) => p.kind === 'physical').map((p) => p.keep), [true, true]);
  });

  it('the PITR seam: its keep hook applies to physical backups only, and WAL planning sees the retained ones', () => {
    const backups = [b('L1', 'logical', 1), b('L9', 'logical', 9), b('P1', 'physical', 1), b('P9', 'physical', 9)];
    let seen: string[] = [];
    const pitr: PitrRetention = {
      keep: (candidates) => new Map(candidates.filter((c) => c.id.endsWith('9')).map((c) => [c.id, 'needed by PITR window'])),
      wal: (retained) => {
        seen = retained.map((r) => r.id);
        return { remove: ['wal/x'], summary: 'WAL before P9 is needed by no retained backup' };
      },
    };
    const plan = planPrune({ backups, leftovers: [], failureRecords: [] }, { logical: keepLast(1) }, now, pitr);
    assert.deepEqual(plan.backups.map((p) => [p.id, p.keep, p.reasons.join(', ')]), [
      // the same time: ordered by id, descending
      ['P1', true, 'newest successful backup, last 1'],
      ['L1', true, 'newest successful backup, last 1'],
      ['P9', true, 'needed by PITR window'],
      ['L9', false, 'no rule keeps it'],
    ]);
    assert.deepEqual(seen, ['P1', 'P9']);
    assert.equal(plan.wal.summary, 'WAL before P9 is needed by no retained backup');
    // the default seam changes nothing
    const plain = planPrune({ backups, leftovers: [], failureRecords: [] }, { logical: keepLast(1) }, now);
    assert.deepEqual(plain.wal, { remove: [], summary: undefined });
    assert.equal(plain.backups.find((p) => p.id === 'P9')!.keep, false);
  });

  it('leftovers are removed only when idle for more than an hour', () => {
    const leftovers = [
      { id: 'old', lastActivity: at(LEFTOVER_MIN_AGE_MS + 1) },
      { id: 'edge', lastActivity: at(LEFTOVER_MIN_AGE_MS) },
      { id: 'young', lastActivity: at(60_000) },
      { id: 'future', lastActivity: at(-60_000) },
    ];
    const plan = planPrune({ backups: [], leftovers, failureRecords: [] }, { logical: keepLast(1) }, now);
    assert.deepEqual(plan.leftovers.map((l) => [l.id, l.remove]), [['old', true], ['edge', false], ['young', false], ['future', false]]);
    assert.equal(plan.leftovers[0]!.reason, 'leftover of an interrupted backup');
    assert.match(plan.leftovers[2]!.reason, /a backup may still be running/);
  });

  it('failure records older than 30 days go', () => {
    const records = [
      { key: 'a', failedAt: at(FAILURE_RECORD_MAX_AGE_MS + 1000).toISOString() },
      { key: 'b', failedAt: at(DAY).toISOString() },
    ];
    assert.deepEqual(planPrune({ backups: [], leftovers: [], failureRecords: records }, { logical: keepLast(1) }, now).failureRecords, ['a']);
  });
});

describe('retention settings', () => {
  const yaml = [
    'retention:',
    '  keepDaily: 7',
    '  maxAge: 90d',
    '  timeZone: Europe/Berlin',
    '  keepLabels: { before-migration: 30d }',
    '  physical:',
    '    keepLast: 2',
    'sources:',
    '  app:',
    '    retention:',
    '      keepDaily: 3',
    '      keepWeekly: 4',
    '      physical:',
    '        keepWithin: 7d',
    '  other: {}',
  ].join('\n');

  it('merges key by key: top level < source < BACKUP_RETENTION_DAYS < flags; physical overrides on top', () => {
    const settings = settingsFrom(yaml);
    const app = resolveRetention(settings, 'app');
    assert.equal(describePolicy(app.logical), 'keep-daily 3, keep-weekly 4, max-age 90d, keep-labels before-migration=30d, time zone Europe/Berlin');
    assert.equal(describePolicy(app.physical), 'keep-last 2, keep-daily 3, keep-weekly 4, keep-within 7d, max-age 90d, keep-labels before-migration=30d, time zone Europe/Berlin');
    assert.equal(describePolicy(resolveRetention(settings, 'other').logical), 'keep-daily 7, max-age 90d, keep-labels before-migration=30d, time zone Europe/Berlin');

    const env = resolveRetention(settingsFrom(yaml, { BACKUP_RETENTION_DAYS: '14' }), 'app');
    assert.equal(env.logical.maxAge?.text, '14d');
    assert.equal(env.physical.maxAge?.text, '14d');
    const flags = resolveRetention(settingsFrom(yaml, { BACKUP_RETENTION_DAYS: '14' }), 'app', { maxAge: '5d', keepDaily: 0, timeZone: 'UTC' });
    assert.equal(describePolicy(flags.logical), 'keep-weekly 4, max-age 5d, keep-labels before-migration=30d, time zone UTC');
  });

  it('no config at all: only the environment', () => {
    const none = resolveRetention(settingsFrom('', { BACKUP_RETENTION_DAYS: '7' }), undefined);
    assert.equal(describePolicy(none.logical).replace(/time zone .*/, 'time zone'), 'max-age 7d, time zone');
  });

  it('bad retention config is refused naming the key', () => {
    for (const [text, message] of [
      ['retention:\n  keepDaily: -1\n', /retention\.keepDaily: expected 0 \(off\) or more/],
      ['retention:\n  keepWithin: 2 weeks\n', /retention\.keepWithin: expected a duration such as 14d/],
      ['retention:\n  keepDialy: 3\n', /retention: unknown key "keepDialy"/],
      ['sources:\n  app:\n    health:\n      sizeDropMax: 2\n', /sources\.app\.health\.sizeDropMax/],
      ['health:\n  minSize: lots\n', /health\.minSize: /],
    ] as const) {
      assert.throws(() => parseConfig(text, 'pgkeep.yaml', {}), (e: unknown) => e instanceof PgkeepError && e.code === 'CONFIG_INVALID' && message.test(e.message), text);
    }
    assert.throws(() => resolveRetention(settingsFrom('retention:\n  timeZone: Nowhere/Land\n'), undefined), /retention\.timeZone: "Nowhere\/Land" is not a time zone/);
    assert.throws(() => resolveRetention(settingsFrom('', { BACKUP_RETENTION_DAYS: '7d' }), undefined), /BACKUP_RETENTION_DAYS must be a whole number of days \(got "7d"\)/);
  });

  it('health thresholds: defaults, top level, then the source', () => {
    const defaults = resolveHealthThresholds(settingsFrom(''), 'app');
    assert.equal(defaults.backupMaxAge.text, '26h');
    assert.equal(defaults.sizeDropMax, 0.5);
    assert.equal(defaults.minSizeBytes, 0);
    assert.equal(defaults.restoreTestMaxAge, undefined);
    const merged = resolveHealthThresholds(settingsFrom('health:\n  backupMaxAge: 8d\n  minSize: 1MiB\nsources:\n  app:\n    health:\n      backupMaxAge: 2h\n      restoreTestMaxAge: 7d\n'), 'app');
    assert.equal(merged.backupMaxAge.ms, 2 * 3_600_000);
    assert.equal(merged.minSizeBytes, 1024 * 1024);
    assert.equal(merged.restoreTestMaxAge?.text, '7d');
  });

  it('sizes', () => {
    assert.equal(parseSize('500KiB', 'x'), 500 * 1024);
    assert.equal(parseSize('10MB', 'x'), 10_000_000);
    assert.equal(parseSize('2 GiB', 'x'), 2 * 1024 ** 3);
    assert.equal(parseSize(1234, 'x'), 1234);
    assert.throws(() => parseSize('ten', 'health.minSize'), /health\.minSize: "ten" is not a size/);
  });
});

describe('pitrRetention', () => {
  it('keeps the newest physical backup at or before the start of the window', () => {
    const backups = [b('P1', 'physical', 1), b('P5', 'physical', 5), b('P8', 'physical', 8), b('P12', 'physical', 12), b('L8', 'logical', 8)];
    const plan = planPrune({ backups, leftovers: [], failureRecords: [] }, { logical: keepLast(1) }, now, pitrRetention({ ms: 7 * DAY, text: '7d' }));
    assert.deepEqual(plan.backups.filter((p) => p.keep).map((p) => [p.id, p.reasons.join(', ')]), [
      ['P1', 'newest successful backup, last 1'],
      ['P8', 'needed by PITR window 7d'],
      ['L8', 'newest successful backup, last 1'],
    ]);
    // no backup old enough: nothing extra; no window: the NO_PITR seam
    const young = planPrune({ backups: backups.slice(0, 2), leftovers: [], failureRecords: [] }, { logical: keepLast(1) }, now, pitrRetention({ ms: 7 * DAY, text: '7d' }));
    assert.deepEqual(young.backups.filter((p) => p.keep).map((p) => p.id), ['P1']);
    assert.equal(pitrRetention(undefined), NO_PITR);
  });

  it('is configured as retention.physical.pitrWindow', () => {
    const settings = settingsFrom('retention:\n  keepLast: 3\n  physical:\n    pitrWindow: 7d\n');
    assert.equal(resolveRetention(settings, undefined).pitrWindow?.ms, 7 * DAY);
  });
});

describe('planWalRemoval: WAL no retained physical backup needs', () => {
  const physical = (id: string, walStart: string | undefined): PruneBackup => ({ id, kind: 'physical', time: new Date(0), labels: [], pinned: false, storedBytes: 1, walStart });
  const archived = [
    '000000010000000000000001',
    '000000010000000000000002',
    '000000010000000000000002.00000028.backup',
    '000000010000000000000003',
    '00000002.history',
    '000000010000000000000004.partial',
    '000000020000000000000004',
    '000000020000000000000005',
  ];

  it('removes segments, .backup and .partial files before the oldest retained backup\'s first segment, on every timeline; keeps history files', () => {
    const plan = planWalRemoval(archived, [physical('new', '000000020000000000000005'), physical('old', '000000010000000000000003')]);
    assert.deepEqual(plan.remove, ['000000010000000000000001', '000000010000000000000002', '000000010000000000000002.00000028.backup']);
    assert.match(plan.summary!, /3 file\(s\) before 000000010000000000000003 .*; 5 kept$/);
  });

  it('a newer oldest backup frees more, across the timeline switch', () => {
    const plan = planWalRemoval(archived, [physical('new', '000000020000000000000005')]);
    assert.deepEqual(plan.remove, ['000000010000000000000001', '000000010000000000000002', '000000010000000000000002.00000028.backup', '000000010000000000000003', '000000010000000000000004.partial', '000000020000000000000004']);
    assert.ok(!plan.remove.includes('00000002.history'));
  });

  it('with no retained physical backup (or none with a WAL start) nothing is removed', () => {
    assert.deepEqual(planWalRemoval(archived, []).remove, []);
    assert.deepEqual(planWalRemoval(archived, [physical('x', undefined)]).remove, []);
    assert.deepEqual(planWalRemoval([], [physical('x', '000000010000000000000003')]).remove, []);
  });

  it('planPrune hands the retained physical backups (after the policy) to the WAL planner', () => {
    const now = new Date('2026-11-21T12:00:00Z');
    const backups: PruneBackup[] = [
      { ...physical('20261121T000000Z', '000000010000000000000005'), time: new Date('2026-11-21T00:00:00Z') },
      { ...physical('20261120T000000Z', '000000010000000000000003'), time: new Date('2026-11-20T00:00:00Z') },
    ];
    const plan = planPrune({ backups, leftovers: [], failureRecords: [] }, { logical: keepLast(1), physical: keepLast(1) }, now, pitrRetention(undefined, archived));
    assert.deepEqual(plan.backups.map((b) => [b.id, b.keep]), [['20261121T000000Z', true], ['20261120T000000Z', false]]);
    assert.ok(plan.wal.remove.includes('000000010000000000000003'), 'the deleted backup\'s WAL goes too');
    assert.ok(!plan.wal.remove.includes('000000010000000000000005'));
  });
});
