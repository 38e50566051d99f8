import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { parseListen } from '../../src/server/dashboard/dashboard-server.js';
import { parseCookies, SessionStore, tokenMatches } from '../../src/server/dashboard/dashboard-sessions.js';
import type { BackupRow } from '../../src/server/dashboard/dashboard-deps.js';
import { applyFilters, backupChart, restoreCommand, timeAxisLabels, verdictOf } from '../../src/server/dashboard/dashboard-views.js';
import { html } from '../../src/server/dashboard/html.js';
import type { Finding } from '../../src/status/health.js';

const finding = (code: Finding['code']): Finding => ({ source: 'app', code, message: code });
const row = (id: string, extra: Partial<BackupRow> = {}): BackupRow => ({
  id,
  kind: 'logical',
  name: null,
  labels: [],
  startedAt: '2026-11-20T02:00:00.000Z',
  finishedAt: '2026-11-20T02:00:05.000Z',
  durationMs: 5000,
  rawBytes: 1000,
  storedBytes: 300,
  database: 'app',
  repositories: ['/srv/backups'],
  pinned: false,
  ...extra,
});

describe('dashboard pure logic', () => {
  test('html escapes every interpolated value, arrays joined, nothing for null/false', () => {
    const evil = '<script>alert("x")</script>&\'';
    assert.equal(html`<p title="${evil}">${evil}</p>`.text, '<p title="&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;">&lt;script&gt;alert(&quot;x&quot;)&lt;/script&gt;&amp;&#39;</p>');
    assert.equal(html`<ul>${['a<', 'b'].map((x) => html`<li>${x}</li>`)}</ul>${null}${false}${undefined}`.text, '<ul><li>a&lt;</li><li>b</li></ul>');
  });

  test('verdict: green without findings, amber for warnings only, red when recovery is at risk', () => {
    assert.equal(verdictOf([]), 'green');
    assert.equal(verdictOf([finding('SIZE_DROP'), finding('ARCHIVE_LAG'), finding('RESTORE_TEST_TOO_OLD')]), 'amber');
    assert.equal(verdictOf([finding('SIZE_DROP'), finding('NO_BACKUP')]), 'red');
    for (const code of ['REPOSITORY_UNREADABLE', 'BACKUP_TOO_OLD', 'LAST_BACKUP_FAILED', 'VERIFY_FAILED', 'RESTORE_TEST_FAILED'] as const) assert.equal(verdictOf([finding(code)]), 'red', code);
  });

  test('filters combine: kind, label, verification, pinned, id or name', () => {
    const rows = [
      row('20261118T020000Z', { labels: ['nightly'], verification: { kind: 'integrity', ok: true, finishedAt: '2026-11-18T03:00:00Z' } }),
      row('20261119T020000Z-pre', { name: 'pre', pinned: true, verification: { kind: 'restore-test', ok: false, finishedAt: '2026-11-19T03:00:00Z' } }),
      row('20261120T020000Z', { labels: ['nightly'] }),
    ];
    const ids = (f: Parameters<typeof applyFilters>[1]) => applyFilters(rows, f).map((r) => r.id);
    assert.deepEqual(ids({}), rows.map((r) => r.id));
    assert.deepEqual(ids({ label: 'nightly' }), ['20261118T020000Z', '20261120T020000Z']);
    assert.deepEqual(ids({ verification: 'ok' }), ['20261118T020000Z']);
    assert.deepEqual(ids({ verification: 'failed' }), ['20261119T020000Z-pre']);
    assert.deepEqual(ids({ verification: 'never' }), ['20261120T020000Z']);
    assert.deepEqual(ids({ pinned: true }), ['20261119T020000Z-pre']);
    assert.deepEqual(ids({ q: 'pre' }), ['20261119T020000Z-pre']);
    assert.deepEqual(ids({ kind: 'physical' }), []);
    assert.deepEqual(ids({ label: 'nightly', verification: 'never' }), ['20261120T020000Z']);
  });

  test('the chart puts a shrunk dump lower than its neighbours, and says what it plots', () => {
    const rows = [row('a', { rawBytes: 1000 }), row('b', { rawBytes: 200, finishedAt: '2026-11-21T02:00:05.000Z' }), row('c', { rawBytes: 1000, finishedAt: '2026-11-22T02:00:05.000Z' })];
    const svg = backupChart(rows).text;
    const cy = [...svg.matchAll(/<circle cx="[\d.]+" cy="([\d.]+)" r="3.5" class="size">/g)].map((m) => Number(m[1]));
    assert.equal(cy.length, 3);
    assert.ok(cy[1]! > cy[0]! && cy[1]! > cy[2]!, `the small dump is lower (larger y): ${cy}`);
    assert.match(svg, /aria-label="Dumped size of the 3 listed backups, from 200 B to 1000 B"/);
    assert.equal(backupChart([]).text, '');
  });

  test('the time axis shows dates over days, times within a day, and one label for one moment', () => {
    assert.deepEqual(timeAxisLabels('2026-11-24T12:00:00.000Z', '2026-12-04T23:08:00.000Z'), ['2026-11-24', '2026-12-04']);
    assert.deepEqual(timeAxisLabels('2026-12-04T09:15:00.000Z', '2026-12-04T17:40:00.000Z'), ['2026-12-04 09:15', '17:40 UTC']);
    assert.deepEqual(timeAxisLabels('2026-12-03T22:00:00.000Z', '2026-12-04T02:30:00.000Z'), ['2026-12-03 22:00', '2026-12-04 02:30 UTC']);
    assert.deepEqual(timeAxisLabels('2026-12-04T09:15:02.000Z', '2026-12-04T09:17:40.000Z'), ['2026-12-04 09:15:02', '09:17:40 UTC']);
    assert.deepEqual(timeAxisLabels('2026-12-04T09:15:02.000Z', '2026-12-04T09:15:02.000Z'), ['2026-12-04 09:15:02 UTC']);
    const sameDay = backupChart([row('a', { finishedAt: '2026-12-04T09:15:00.000Z' }), row('b', { finishedAt: '2026-12-04T17:40:00.000Z' })]).text;
    assert.match(sameDay, /<text [^>]*class="tick">2026-12-04 09:15<\/text>/);
    assert.match(sameDay, /<text [^>]*class="tick">17:40 UTC<\/text>/);
  });

  test('restore command names the source, backup and a new database', () => {
    assert.equal(restoreCommand('app', { id: '20261120T020000Z', database: 'shop' }), 'pgkeep --source app restore 20261120T020000Z --to shop_restore');
  });

  test('tokens compare whatever their length; sessions expire and are random', () => {
    assert.equal(tokenMatches('secret', 'secret'), true);
    assert.equal(tokenMatches('secre', 'secret'), false);
    assert.equal(tokenMatches('', 'secret'), false);
    const store = new SessionStore(1000);
    const a = store.create(0);
    const b = store.create(0);
    assert.notEqual(a.id, b.id);
    assert.notEqual(a.csrf, a.id);
    assert.equal(store.get(a.id, 999), a);
    assert.equal(store.get(a.id, 1000), undefined, 'expired');
    store.delete(b.id);
    assert.equal(store.get(b.id, 0), undefined);
    assert.equal(store.get(undefined), undefined);
  });

  test('cookies: first value wins, malformed values are skipped', () => {
    const cookies = parseCookies('a=1; pgkeep_session=abc%2Fd; a=2; bad=%E0%A4%A; =x; novalue');
    assert.equal(cookies.get('a'), '1');
    assert.equal(cookies.get('pgkeep_session'), 'abc/d');
    assert.equal(cookies.has('bad'), false);
    assert.equal(parseCookies(undefined).size, 0);
  });

  test('--listen takes HOST:PORT, [v6]:PORT or PORT', () => {
    assert.deepEqual(parseListen('0.0.0.0:9188'), { host: '0.0.0.0', port: 9188 });
    assert.deepEqual(parseListen('9000'), { host: '127.0.0.1', port: 9000 });
    assert.deepEqual(parseListen('[::1]:9188'), { host: '::1', port: 9188 });
    assert.throws(() => parseListen('localhost'), { code: 'USAGE' });
    assert.throws(() => parseListen('1.2.3.4:70000'), { code: 'USAGE' });
  });
});
