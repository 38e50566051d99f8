import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { relativeTime } from '../../src/server/dashboard/dashboard-views.js';
import type { Finding } from '../../src/status/health.js';
import { inStartupGrace, START_SLACK_MS, withStartupGrace } from '../../src/status/startup-grace.js';

const findings: Finding[] = [
  { source: 'db01', code: 'NO_BACKUP', message: 'no successful backup yet' },
  { source: 'db01', code: 'REPOSITORY_UNREADABLE', message: 'cannot read' },
];
const now = new Date('2026-12-04T22:00:00Z');
const soon = new Date('2026-12-04T22:00:15Z');

describe('start-up grace', () => {
  test('no "no backup" before the first scheduled run has come', () => {
    const kept = withStartupGrace(findings, { firstRunAt: soon, backupEnded: false, backupActive: false }, now);
    assert.deepEqual(kept.map((f) => f.code), ['REPOSITORY_UNREADABLE'], 'other findings stand');
  });
  test('while the first backup runs, still in grace; once it ended, over', () => {
    const later = new Date('2026-12-04T22:00:20Z');
    assert.equal(inStartupGrace({ firstRunAt: soon, backupEnded: false, backupActive: true }, later), true);
    assert.equal(inStartupGrace({ firstRunAt: soon, backupEnded: true, backupActive: false }, later), false);
    assert.equal(withStartupGrace(findings, { firstRunAt: soon, backupEnded: true, backupActive: false }, later).length, 2);
  });
  test('the first run\'s time came and its job is not there yet (the timer fires late): still in grace, for a minute', () => {
    assert.equal(inStartupGrace({ firstRunAt: soon, backupEnded: false, backupActive: false }, new Date('2026-12-04T22:00:16Z')), true);
    assert.equal(inStartupGrace({ firstRunAt: soon, backupEnded: false, backupActive: false }, new Date(soon.getTime() + START_SLACK_MS - 1)), true);
  });
  test('the first run came and nothing ran within a minute (skipped, serve busy): the grace is over', () => {
    assert.equal(inStartupGrace({ firstRunAt: soon, backupEnded: false, backupActive: false }, new Date(soon.getTime() + START_SLACK_MS)), false);
  });
  test('no backup schedule: no grace', () => {
    assert.equal(withStartupGrace(findings, { firstRunAt: undefined, backupEnded: false, backupActive: false }, now).length, 2);
  });
});

describe('relative times', () => {
  test('future times read "in 12s", past ones "12s ago"', () => {
    assert.equal(relativeTime('2026-12-04T22:00:12Z', now), 'in 12s');
    assert.equal(relativeTime('2026-12-04T21:59:48Z', now), '12s ago');
    assert.equal(relativeTime('2026-12-04T23:00:00Z', now), 'in 60m');
    assert.equal(relativeTime('2026-12-04T22:00:00Z', now), '0s ago');
  });
});
