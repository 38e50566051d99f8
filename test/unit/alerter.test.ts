import assert from 'node:assert/strict';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, describe, test } from 'node:test';
import { Alerter, problemsFromFindings, problemsFromJob, type Problem } from '../../src/notify/alerter.js';
import type { Alert, AlertChannel } from '../../src/notify/alert.js';
import { ManualClock } from '../../src/scheduler/clock.js';
import { isLoopback, assertSafeBind } from '../../src/server/http-server.js';
import { tokenMatches } from '../../src/server/auth.js';
import { isPgkeepError } from '../../src/errors.js';

const dir = mkdtempSync(path.join(tmpdir(), 'pgkeep-alerter-'));
after(() => rmSync(dir, { recursive: true, force: true }));

function setup(reminderMs = 24 * 3600_000, stateFile?: string) {
  const clock = new ManualClock('2026-11-21T00:00:00Z');
  const sent: Alert[] = [];
  const channel: AlertChannel = { name: 'memory', send: async (alert) => void sent.push(alert) };
  const alerter = new Alerter([channel], { reminderMs, clock, log: () => undefined, stateFile });
  return { clock, sent, alerter };
}

const stale: Problem = { key: 'health:app:BACKUP_TOO_OLD', event: 'backup_stale', source: 'app', severity: 'critical', title: 'app: backup too old', message: 'no backup within 26h' };

describe('alerter', () => {
  test('one alert per problem until it clears, a reminder after the interval, one recovery', async () => {
    const { clock, sent, alerter } = setup();
    await alerter.update('health:app', [stale]);
    for (let i = 0; i < 10; i++) {
      await clock.advance(3600_000);
      await alerter.update('health:app', [{ ...stale, message: `no backup for ${27 + i}h` }]);
    }
    assert.deepEqual(sent.map((a) => a.event), ['backup_stale'], 'no storm: the problem goes out once');
    await clock.advance(14 * 3600_000);
    await alerter.update('health:app', [stale]);
    assert.deepEqual(sent.map((a) => a.event), ['backup_stale', 'reminder']);
    assert.equal(sent[1]!.problem, 'backup_stale');
    assert.equal(sent[1]!.since, '2026-11-21T00:00:00.000Z');
    await alerter.update('health:app', []);
    await alerter.update('health:app', []);
    assert.deepEqual(sent.map((a) => a.event), ['backup_stale', 'reminder', 'recovered']);
  });

  test('scopes are independent; a job failure and the same health finding make one alert', async () => {
    const { sent, alerter } = setup();
    const job = { id: 'j1', source: 'app', kind: 'logical' as const, trigger: 'schedule' as const, state: 'failed' as const, queuedAt: '', bytes: 0, error: { code: 'DB_UNREACHABLE', message: 'down' } };
    await alerter.update('job:app:logical', problemsFromJob(job)!);
    await alerter.update('health:app', problemsFromFindings([{ source: 'app', code: 'LAST_BACKUP_FAILED', message: 'the last backup failed' }]));
    assert.equal(sent.length, 1);
    // the other source's health does not clear it
    await alerter.update('health:other', []);
    assert.equal(alerter.problems().length, 1);
    // the next successful backup does
    await alerter.update('job:app:logical', problemsFromJob({ ...job, state: 'succeeded', error: undefined })!);
    assert.deepEqual(sent.map((a) => a.event), ['backup_failed', 'recovered']);
    assert.equal(problemsFromJob({ ...job, state: 'skipped' }), undefined, 'a skipped job changes nothing');
    assert.equal(problemsFromJob({ ...job, error: { code: 'JOB_STUCK', message: 'no progress' } })![0]!.event, 'job_stuck');
  });

  test('open problems survive a restart: no second alert for what was sent', async () => {
    const file = path.join(dir, 'alerts.json');
    const first = setup(0, file);
    await first.alerter.update('health:app', [stale]);
    const second = setup(0, file);
    await second.alerter.update('health:app', [stale]);
    assert.equal(second.sent.length, 0);
    await second.alerter.update('health:app', []);
    assert.deepEqual(second.sent.map((a) => a.event), ['recovered']);
  });

  test('a problem no channel could deliver is tried again at the next update', async () => {
    const clock = new ManualClock('2026-11-21T00:00:00Z');
    let up = false;
    const sent: Alert[] = [];
    const alerter = new Alerter([{ name: 'flaky', send: async (a) => (up ? void sent.push(a) : Promise.reject(new Error('down'))) }], { reminderMs: 0, clock, log: () => undefined });
    await alerter.update('health:app', [stale]);
    assert.equal(alerter.problems().length, 0);
    up = true;
    await alerter.update('health:app', [stale]);
    await alerter.update('health:app', [stale]);
    assert.deepEqual(sent.map((a) => a.event), ['backup_stale']);
  });

  test('a channel that fails does not stop the others', async () => {
    const clock = new ManualClock('2026-11-21T00:00:00Z');
    const sent: Alert[] = [];
    const logs: string[] = [];
    const alerter = new Alerter(
      [
        { name: 'down', send: async () => Promise.reject(new Error('refused')) },
        { name: 'up', send: async (a) => void sent.push(a) },
      ],
      { reminderMs: 0, clock, log: (_l, m) => logs.push(m) },
    );
    await alerter.update('health:app', [stale]);
    assert.equal(sent.length, 1);
    assert.ok(logs.some((l) => l.includes('not delivered: refused')));
  });
});

describe('API guards', () => {
  test('tokens compare by content, whatever their length', () => {
    assert.equal(tokenMatches('secret-token', 'secret-token'), true);
    assert.equal(tokenMatches('secret-tokem', 'secret-token'), false);
    assert.equal(tokenMatches('s', 'secret-token'), false);
    assert.equal(tokenMatches('', 'secret-token'), false);
  });

  test('loopback addresses; anything else needs a token', () => {
    for (const host of ['127.0.0.1', '127.1.2.3', '::1', '[::1]', 'localhost']) assert.equal(isLoopback(host), true, host);
    for (const host of ['0.0.0.0', '::', '10.0.0.5', 'db.example.com']) assert.equal(isLoopback(host), false, host);
    assert.throws(() => assertSafeBind('0.0.0.0', undefined), (e: unknown) => isPgkeepError(e, 'SERVE_INSECURE'));
    assert.doesNotThrow(() => assertSafeBind('0.0.0.0', 'token'));
  });
});
