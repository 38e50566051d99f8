import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import Fastify from 'fastify';
import { parseDuration } from '../../src/retention/duration.js';
import { assessHealth } from '../../src/status/health.js';
import type { DashboardDeps } from '../../src/server/dashboard/dashboard-deps.js';
import { registerDashboard } from '../../src/server/dashboard/register-dashboard.js';

// Routing and access rules of the plugin when mounted under a prefix beside other routes, as `pgkeep serve` will.
// The deps are a plain in-memory object: this is about the HTTP layer; the e2e test uses the real ones.
function recordingDeps(calls: string[]): DashboardDeps {
  const thresholds = { backupMaxAge: parseDuration('26h', 'test'), sizeDropMax: 0.5, minSizeBytes: 0, restoreTestMaxAge: undefined, archiveLagMax: undefined };
  return {
    sources: async () => [{ status: assessHealth('app', [], thresholds, new Date()), nextRunAt: '2026-11-22T02:00:00.000Z' }],
    backups: async () => [],
    jobs: async () => [],
    startBackup: async (source) => (calls.push(`backup ${source}`), 'job-1'),
    startRestoreTest: async (source, id) => (calls.push(`restore-test ${source} ${id}`), 'job-2'),
    pin: async (source, id) => (calls.push(`pin ${source} ${id}`), 'job-3'),
    unpin: async (source, id) => (calls.push(`unpin ${source} ${id}`), 'job-4'),
  };
}

describe('dashboard routes under a prefix', () => {
  test('links, assets, login cookie and actions all live under the prefix; other routes are untouched', async () => {
    const calls: string[] = [];
    const app = Fastify();
    app.get('/api/sources', async () => ({ own: true }));
    await registerDashboard(app, recordingDeps(calls), { token: 's3cret-token', basePath: '/ui/' });

    const overview = await app.inject({ url: '/ui/' });
    assert.equal(overview.statusCode, 200);
    assert.match(overview.body, /<script src="\/ui\/assets\/htmx\.min\.js" defer>/);
    assert.match(overview.body, /href="\/ui\/sources\/app"/);
    assert.match(overview.body, /Next run<\/dt><dd><time datetime="2026-11-22T02:00:00.000Z"/);
    assert.match(overview.headers['content-security-policy'] as string, /script-src 'self'/);
    assert.equal((await app.inject({ url: '/ui/assets/htmx.min.js' })).statusCode, 200);
    assert.deepEqual((await app.inject({ url: '/api/sources' })).json(), { own: true });
    assert.equal((await app.inject({ url: '/' })).statusCode, 404, 'nothing mounted at the root');

    const refused = await app.inject({ method: 'POST', url: '/ui/actions/backup', payload: 'source=app', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(refused.statusCode, 403);

    const login = await app.inject({ method: 'POST', url: '/ui/login', payload: 'token=s3cret-token', headers: { 'content-type': 'application/x-www-form-urlencoded' } });
    assert.equal(login.statusCode, 303);
    assert.equal(login.headers.location, '/ui/');
    const setCookie = String(login.headers['set-cookie']);
    assert.match(setCookie, /^pgkeep_session=[\w-]{43}; Path=\/ui; HttpOnly; SameSite=Strict; Max-Age=\d+$/);
    assert.ok(!setCookie.includes('s3cret-token'));
    const cookie = setCookie.split(';')[0]!;

    const page = await app.inject({ url: '/ui/confirm?action=pin&source=app&backup=20261120T020000Z', headers: { cookie } });
    const csrf = /name="csrf" value="([^"]+)"/.exec(page.body)![1]!;
    const form = (fields: Record<string, string>) => new URLSearchParams(fields).toString();
    const post = (payload: string, extra: Record<string, string> = {}) =>
      app.inject({ method: 'POST', url: '/ui/actions/pin', payload, headers: { 'content-type': 'application/x-www-form-urlencoded', cookie, ...extra } });
    assert.equal((await post(form({ source: 'app', backup: '20261120T020000Z' }))).statusCode, 403, 'no CSRF token');
    assert.equal((await post(form({ source: 'app', backup: '20261120T020000Z', csrf }), { origin: 'http://evil.example', host: 'localhost:80' })).statusCode, 403, 'another origin');
    assert.deepEqual(calls, []);
    const ok = await post(form({ source: 'app', backup: '20261120T020000Z', csrf }));
    assert.equal(ok.statusCode, 303);
    assert.equal(ok.headers.location, '/ui/jobs?started=job-3');
    assert.deepEqual(calls, ['pin app 20261120T020000Z']);

    const logout = await app.inject({ method: 'POST', url: '/ui/logout', payload: form({ csrf }), headers: { 'content-type': 'application/x-www-form-urlencoded', cookie } });
    assert.equal(logout.statusCode, 303);
    assert.equal((await post(form({ source: 'app', backup: '20261120T020000Z', csrf }))).statusCode, 403, 'the session ended');
    await app.close();
  });
});
