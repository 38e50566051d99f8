import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { chromium, type Browser, type Page } from 'playwright-core';
import { loadSettings } from '../../src/config/settings.js';
import { openRepository } from '../../src/repository/open-repository.js';
import { listPins } from '../../src/repository/pins.js';
import { collect, startPgkeep } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { cloneBackupAt, daysAgoAtNoon } from '../support/synthetic-backups.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

// End to end: the built CLI's `pgkeep dashboard` against a real cluster and repository, driven by a real headless Chromium.
// Screenshots of each view: into docs/images with UPDATE_SCREENSHOTS=1 (the README shows them). Otherwise none are
// taken: they went into the work folder, which the file removes at its end, and encoding a full-page PNG costs
// Chromium CPU on every run.
const DOC_IMAGES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../docs/images');
const UPDATE_SCREENSHOTS = process.env.UPDATE_SCREENSHOTS === '1';
const TOKEN = randomBytes(24).toString('base64url');

let cluster: PgCluster;
let cwd: string;
let repo: string;
let browser: Browser;
const servers: { child: ChildProcess; url: string }[] = [];

useClusterAndWorkFolder('dashboard', async (c, work) => {
  cluster = c;
  await cluster.query('CREATE DATABASE app');
  await cluster.query(`CREATE TABLE notes AS SELECT g AS id, repeat(md5(g::text), 4) AS body FROM generate_series(1, 5000) g`, [], 'app');
  if (UPDATE_SCREENSHOTS) await mkdir(DOC_IMAGES, { recursive: true });
  cwd = path.join(work, 'cfg');
  repo = path.join(cwd, 'repo');
  await mkdir(cwd);
  await writeFile(path.join(cwd, 'pgkeep.yaml'), ['sources:', '  app:', `    db: ${JSON.stringify(cluster.url('app'))}`, `    repo: ${JSON.stringify(repo)}`, ''].join('\n'));
  // a deduplicating repository: the views show logical sizes, bytes added and the ratio
  const init = await runCommand(['init', '--repo', repo, '--dedup'], { cwd });
  assert.equal(init.code, 0, init.stderr);
});

/**
 * Starts `pgkeep dashboard` on a free port; the token (if any) goes by environment, never argv. Its jobs view polls
 * every 200 ms, not 2 s (PGKEEP_TEST_DASHBOARD_POLL_MS): the tests wait for four jobs to show as ended, and still
 * see each end arrive by htmx polling, without a reload.
 */
async function startDashboard(env: Record<string, string | undefined>, args: string[] = []): Promise<string> {
  const child = startPgkeep(['dashboard', '--listen', '127.0.0.1:0', ...args], { cwd, env: { PGKEEP_TEST_DASHBOARD_POLL_MS: '200', ...env } });
  child.stdin!.end();
  let stderr = '';
  const url = await new Promise<string>((resolve, reject) => {
    child.stderr!.setEncoding('utf8').on('data', (text: string) => {
      stderr += text;
      const match = /dashboard on (http:\/\/[^/\s]+)\//.exec(stderr);
      if (match) resolve(match[1]!);
    });
    child.on('exit', (code) => reject(new Error(`pgkeep dashboard exited ${code}: ${stderr}`)));
  });
  servers.push({ child, url });
  return url;
}

before(async () => {
  browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
});

after(async () => {
  await browser?.close();
  for (const { child } of servers) {
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGTERM');
    await exited;
  }
});

/** A screenshot of the page into docs/images, when they are being updated (UPDATE_SCREENSHOTS=1). */
async function screenshot(page: Page, name: string, fullPage = true): Promise<void> {
  if (UPDATE_SCREENSHOTS) await page.screenshot({ path: path.join(DOC_IMAGES, name), fullPage });
}

async function newPage(viewport = { width: 1280, height: 900 }): Promise<Page> {
  const context = await browser.newContext({ viewport });
  const page = await context.newPage();
  // every asset must come from the dashboard itself: fail on any other host
  await page.route(/.*/, (route) => (new URL(route.request().url()).hostname === '127.0.0.1' ? route.continue() : route.abort()));
  page.on('requestfailed', (request) => {
    // a poll of a fragment still in flight when the page navigates away or closes is aborted by Chromium, not failed
    // by the dashboard (the jobs view polls every 200 ms here: see startDashboard)
    if (request.failure()?.errorText === 'net::ERR_ABORTED' && new URL(request.url()).pathname.startsWith('/fragments/')) return;
    assert.fail(`request failed: ${request.url()} (${request.failure()?.errorText})`);
  });
  page.on('pageerror', (error) => assert.fail(`script error: ${error.message}`));
  return page;
}

/** The dashboard most tests use (with a token, no --require-login). */
let mainUrl: string;

async function logIn(page: Page): Promise<void> {
  await page.goto(`${mainUrl}/login`);
  await page.getByLabel('API token').fill(TOKEN);
  await page.getByRole('button', { name: 'Log in' }).click();
  await page.waitForURL(`${mainUrl}/`);
}

const verdictOf = (page: Page) => page.locator('article[data-source="app"]').getAttribute('data-verdict');

describe('pgkeep dashboard', () => {
  let url: string;
  let readOnly: string;
  let locked: string;
  let backupId: string;

  before(async () => {
    // the three dashboards the tests use start together (each start waits for the program to come up); the
    // read-only and the --require-login ones only read the repository, when a test asks them
    [url, readOnly, locked] = await Promise.all([
      startDashboard({ PGKEEP_API_TOKEN: TOKEN }),
      startDashboard({}),
      startDashboard({ PGKEEP_API_TOKEN: TOKEN }, ['--require-login']),
    ]);
    mainUrl = url;
  });

  test('a visitor without the token sees the red source but no action, and a forged POST is refused', async () => {
    const page = await newPage();
    await page.goto(`${url}/`);
    assert.equal(await verdictOf(page), 'red');
    assert.match(await page.locator('article[data-source="app"] .reasons').innerText(), /no successful backup yet/);
    assert.equal(await page.getByRole('link', { name: 'Backup now' }).count(), 0, 'no action for a visitor');
    assert.equal(await page.getByRole('link', { name: 'Log in' }).count(), 1);
    // htmx is served locally and loaded
    assert.equal(await page.evaluate(() => typeof (globalThis as { htmx?: unknown }).htmx), 'object');

    // forged POSTs: no session; a made-up session cookie; the confirmation page
    const forged = await page.request.post(`${url}/actions/backup`, { form: { source: 'app', csrf: 'guess' }, maxRedirects: 0 });
    assert.equal(forged.status(), 403);
    const withCookie = await page.request.post(`${url}/actions/backup`, { form: { source: 'app', csrf: 'guess' }, headers: { cookie: `pgkeep_session=${TOKEN}` }, maxRedirects: 0 });
    assert.equal(withCookie.status(), 403, 'the token is not a session id');
    const confirm = await page.request.get(`${url}/confirm?action=backup&source=app`, { maxRedirects: 0 });
    assert.equal(confirm.status(), 303);
    const jobs = await (await page.request.get(`${url}/fragments/jobs`)).text();
    assert.match(jobs, /No job is running/);
    assert.match(jobs, /No finished job yet/);
    assert.match(jobs, /hx-trigger="every 200ms"/, 'the test-only poll interval reached the jobs view');
    await screenshot(page, 'dashboard-overview-red.png');
    // no backup yet: the backups view is empty, not an error
    await page.goto(`${url}/sources/app`);
    assert.equal(await page.getByRole('heading', { name: '0 of 0 backups' }).count(), 1);
    await page.context().close();
  });

  test('a read-only dashboard (no token configured) has no login and refuses every action', async () => {
    const page = await newPage();
    await page.goto(`${readOnly}/`);
    assert.equal(await verdictOf(page), 'red');
    assert.equal(await page.getByText('read-only').count(), 1);
    assert.equal(await page.getByRole('link', { name: /Backup now|Log in/ }).count(), 0);
    const login = await page.request.post(`${readOnly}/login`, { form: { token: '' }, maxRedirects: 0 });
    assert.equal(login.status(), 403);
    const action = await page.request.post(`${readOnly}/actions/backup`, { form: { source: 'app' }, maxRedirects: 0 });
    assert.equal(action.status(), 403);
    await page.context().close();
  });

  test('after logging in, "Backup now" (confirmed) turns the source from red to green and the backups table lists the backup', async () => {
    const page = await newPage();
    await page.goto(`${url}/login`);
    await page.getByLabel('API token').fill('not-the-token');
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.getByRole('alert').filter({ hasText: 'not the configured API token' }).waitFor();

    await page.getByLabel('API token').fill(TOKEN);
    await page.getByRole('button', { name: 'Log in' }).click();
    await page.waitForURL(`${url}/`);
    const [session] = (await page.context().cookies()).filter((c) => c.name === 'pgkeep_session');
    assert.ok(session, 'a session cookie');
    assert.equal(session.httpOnly, true);
    assert.equal(session.sameSite, 'Strict');
    assert.ok(!session.value.includes(TOKEN), 'the cookie does not hold the token');

    // a POST without the form's CSRF token is refused even with the session
    const noCsrf = await page.request.post(`${url}/actions/backup`, { form: { source: 'app' }, maxRedirects: 0 });
    assert.equal(noCsrf.status(), 403);
    // with the right CSRF token but from another site's page (its Origin), still refused
    const csrf = await page.locator('input[name="csrf"]').first().inputValue();
    const crossSite = await page.request.post(`${url}/actions/backup`, { form: { source: 'app', csrf }, headers: { origin: 'http://evil.example' }, maxRedirects: 0 });
    assert.equal(crossSite.status(), 403);

    assert.equal(await verdictOf(page), 'red');
    // the dialog opens over the overview; Cancel (or Escape) closes it and starts nothing
    await page.getByRole('link', { name: 'Backup now' }).click();
    await page.evaluate('window.loadedOnce = true');
    await page.getByRole('dialog').getByRole('link', { name: 'Cancel' }).click();
    await page.getByRole('dialog').waitFor({ state: 'detached' });
    await page.getByRole('link', { name: 'Backup now' }).click();
    await page.getByRole('dialog').waitFor();
    await page.keyboard.press('Escape');
    await page.getByRole('dialog').waitFor({ state: 'detached' });
    assert.equal(await page.evaluate('window.loadedOnce'), true, 'the dialog opened and closed without leaving the page');
    assert.match(await (await page.request.get(`${url}/fragments/jobs`)).text(), /No finished job yet/);
    assert.equal(await page.locator('tr[data-job]').count(), 0);

    await page.getByRole('link', { name: 'Backup now' }).click();
    const dialog = page.getByRole('dialog');
    await dialog.waitFor();
    assert.match(await dialog.innerText(), /Take a backup of app now\?/);
    // Not page.waitForFunction: once its first check fails it polls with eval inside the page, which the
    // dashboard's CSP (script-src 'self') forbids; page.evaluate is not subject to it.
    for (const started = Date.now(); !(await page.evaluate('document.activeElement?.textContent === "Confirm"')); ) {
      if (Date.now() - started > 10_000) assert.fail('the dialog did not move the focus to its Confirm button within 10 s');
      await new Promise((resolve) => setTimeout(resolve, 50));
    }
    await screenshot(page, 'dashboard-confirm.png', false);
    // hold a lock pg_dump must wait for, so the job is seen running; the jobs view then updates by itself
    const blocker = new pg.Client({ connectionString: cluster.url('app') });
    await blocker.connect();
    try {
      await blocker.query('BEGIN');
      await blocker.query('LOCK TABLE notes IN ACCESS EXCLUSIVE MODE');
      await dialog.getByRole('button', { name: 'Confirm' }).click();
      await page.waitForURL(/\/jobs\?started=/);
      await page.locator('tr[data-state="running"]').filter({ hasText: 'backup' }).waitFor();
      await screenshot(page, 'dashboard-jobs-running.png');
      await blocker.query('COMMIT');
    } finally {
      await blocker.end();
    }
    await page.evaluate('window.loadedOnce = true');
    // no reload: htmx polling swaps the running row for the finished one
    const done = page.locator('tr[data-state="succeeded"]').first();
    await done.waitFor({ timeout: 60_000 });
    assert.equal(await page.evaluate('window.loadedOnce'), true, 'the page was not reloaded');
    assert.equal(await page.locator('tr[data-state="running"]').count(), 0);
    backupId = (await done.locator('td').nth(3).innerText()).trim();
    assert.match(backupId, /^\d{8}T\d{6}Z/);
    await screenshot(page, 'dashboard-jobs.png');

    await page.getByRole('link', { name: 'Overview' }).click();
    await page.locator('article[data-source="app"][data-verdict="green"]').waitFor();
    assert.match(await page.locator('article[data-source="app"]').innerText(), new RegExp(`Last success[\\s\\S]*${backupId}`));

    await page.getByRole('link', { name: 'Backups' }).click();
    const row = page.locator(`tr[data-backup="${backupId}"]`);
    await row.waitFor();
    assert.match(await row.innerText(), /logical/);
    assert.match(await row.innerText(), new RegExp(repo.replace(/[/\\^$.*+?()[\]{}|]/g, '\\$&')));
    // deduplicated: the backup's logical size and what it added; the source page, the repository's ratio
    assert.match(await row.locator('td[data-label="Stored"]').innerText(), /^\+[\d.]+ (B|kB|KiB|MB|MiB) added$/);
    assert.match(await page.locator('#deduplication').innerText(), /in 1 backup \(all sources\) stored in [\d.]+ \S+, ratio \d+\.\d×/);
    assert.ok(Number(await page.locator('#deduplication [data-ratio]').getAttribute('data-ratio')) > 1, 'a compressed backup already takes less than its logical size');
    assert.equal(await page.locator('svg[role="img"] circle.size').count(), 1, 'the chart plots the backup');
    await row.getByText('Command').click();
    assert.equal(await row.locator('code').innerText(), `pgkeep --source app restore ${backupId} --to app_restore`);
    await page.context().grantPermissions(['clipboard-read', 'clipboard-write']);
    await row.getByRole('button', { name: `Copy the restore command of ${backupId}` }).click();
    await row.getByRole('button', { name: /Copy the restore command/ }).filter({ hasText: 'Copied' }).waitFor();
    assert.equal(await page.evaluate('navigator.clipboard.readText()'), `pgkeep --source app restore ${backupId} --to app_restore`);
    await page.context().close();
  });

  test('pin from the backups view writes a pin to the repository; restore test now records a measured restore time', async () => {
    const page = await newPage();
    await logIn(page);

    await page.goto(`${url}/sources/app`);
    await page.locator(`tr[data-backup="${backupId}"]`).getByRole('link', { name: 'Pin' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.locator('tr[data-state="succeeded"][data-job]').filter({ hasText: 'pin' }).first().waitFor();
    const repository = await openRepository(loadSettings({ config: path.join(cwd, 'pgkeep.yaml') }, { cwd, env: {} }), { source: 'app' });
    assert.deepEqual([...(await listPins(repository, 'app')).keys()], [backupId]);

    await page.goto(`${url}/`);
    await page.getByRole('link', { name: 'Restore test now' }).click();
    await page.getByRole('dialog').getByRole('button', { name: 'Confirm' }).click();
    await page.locator('tr[data-job]').filter({ hasText: 'restoreTest' }).and(page.locator('[data-state="succeeded"], [data-state="failed"]')).first().waitFor({ timeout: 120_000 });
    const result = await page.locator('tr[data-job]').filter({ hasText: 'restoreTest' }).first().innerText();
    assert.match(result, /succeeded/, result);

    // a job that fails shows its error in the jobs view
    const csrf = await page.locator('input[name="csrf"]').first().inputValue();
    const failing = await page.request.post(`${url}/actions/restore-test`, { form: { source: 'app', backup: '20200101T000000Z', csrf }, maxRedirects: 0 });
    assert.equal(failing.status(), 303);
    const jobId = new URL(failing.headers().location!, url).searchParams.get('started');
    await page.goto(`${url}/jobs`);
    const failed = page.locator(`tr[data-job="${jobId}"][data-state="failed"]`);
    await failed.waitFor();
    assert.match(await failed.innerText(), /failed: BACKUP_NOT_FOUND: .*20200101T000000Z/);

    await page.goto(`${url}/`);
    assert.match(await page.locator('article[data-source="app"]').innerText(), /Restore test\s+passed .* on \S+, restored in [\d.]+ (ms|s)/);
    await screenshot(page, 'dashboard-overview.png');

    await page.goto(`${url}/sources/app?at=2026-11-21T08:00:00`);
    assert.match(await page.locator('#pitr-command').innerText(), /^pgkeep --source app pitr --pgdata \S+ --target-time '2026-11-21 08:00:00\+00'$/);
    await page.context().close();
  });

  test('with a history, the chart plots every backup (a shrunk dump stands out) and the filters narrow the table', async () => {
    const repository = await openRepository(loadSettings({ config: path.join(cwd, 'pgkeep.yaml') }, { cwd, env: {} }), { source: 'app' });
    const original = await repository.readManifest('app', backupId);
    // ten earlier nights, one of which dumped a third of the usual: real objects, only times and recorded sizes differ
    for (let day = 10; day >= 1; day--) {
      const factor = day === 4 ? 0.33 : 0.9 + (day % 3) * 0.05;
      await cloneBackupAt(repository, original, daysAgoAtNoon(day), {
        labels: day % 2 === 0 ? ['nightly'] : [],
        durationMs: Math.round(original.durationMs * (0.8 + (day % 4) * 0.15)),
        totals: { ...original.totals, rawBytes: Math.round(original.totals.rawBytes * factor) },
      });
    }
    const page = await newPage();
    await logIn(page);
    await page.goto(`${url}/sources/app`);
    assert.equal(await page.locator('#backups tbody tr').count(), 11);
    assert.equal(await page.locator('svg circle.size').count(), 11);
    assert.equal(await page.locator('svg circle.duration').count(), 11);
    await page.getByLabel('Label').selectOption('nightly');
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/label=nightly/);
    assert.equal(await page.locator('#backups tbody tr').count(), 5);
    assert.match(await page.getByRole('heading', { name: /backups$/ }).innerText(), /^5 of 11 backups$/);
    await page.getByLabel('Label').selectOption('');
    await page.getByLabel('Pinned only').check();
    await page.getByRole('button', { name: 'Filter' }).click();
    await page.waitForURL(/pinned=1/);
    assert.deepEqual(await page.locator('#backups tbody tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-backup'))), [backupId]);
    await page.goto(`${url}/sources/app?at=2026-11-21T08:00:00`);
    await screenshot(page, 'dashboard-backups.png');
    await page.context().close();
  });

  test('--require-login: every page but the login and assets needs the token; unknown sources are a clear 404', async () => {
    const page = await newPage();
    await page.goto(`${locked}/sources/app`);
    assert.equal(new URL(page.url()).pathname, '/login');
    assert.equal((await page.request.get(`${locked}/assets/dashboard.css`)).status(), 200);
    assert.equal((await page.request.get(`${locked}/fragments/overview`, { maxRedirects: 0 })).status(), 303);
    const missing = await page.request.get(`${url}/sources/nope`);
    assert.equal(missing.status(), 404);
    assert.match(await missing.text(), /no source &quot;nope&quot;: the sources are app/);
    await page.context().close();
  });

  test('pgkeep dashboard refuses a non-loopback address without a token', async () => {
    const child = startPgkeep(['dashboard', '--listen', '0.0.0.0:0'], { cwd });
    const result = await collect(child);
    assert.equal(result.code, 2);
    assert.equal(result.stderr, 'pgkeep: refusing to serve the dashboard on 0.0.0.0 without an API token: set PGKEEP_API_TOKEN (or --token-file), or listen on 127.0.0.1\n');
  });

  test('usable on a phone: no horizontal scrolling of the page', async () => {
    const page = await newPage({ width: 375, height: 740 });
    await page.goto(`${url}/`);
    assert.equal(await verdictOf(page), 'green');
    assert.ok(await page.evaluate('document.documentElement.scrollWidth <= 375'));
    await screenshot(page, 'dashboard-phone.png');
    await page.context().close();
  });

  test('the backups view on a phone: no sideways scrolling, every backup readable, times on a one-day chart axis', async () => {
    const repository = await openRepository(loadSettings({ config: path.join(cwd, 'pgkeep.yaml') }, { cwd, env: {} }), { source: 'app' });
    const original = await repository.readManifest('app', backupId);
    // two more backups an hour apart, labelled so a filter shows only them: a range of one hour
    const started = Date.parse(original.startedAt);
    for (const hoursBefore of [2, 1]) await cloneBackupAt(repository, original, new Date(started - hoursBefore * 3_600_000), { labels: ['same-day'] });
    const page = await newPage({ width: 375, height: 740 });
    await page.goto(`${url}/sources/app?label=same-day`);
    assert.equal(await page.locator('#backups tbody tr').count(), 2);
    assert.ok(await page.evaluate('document.documentElement.scrollWidth <= 375'), 'the page does not scroll sideways');
    const wrap = await page.locator('.table-wrap').first().evaluate((el) => ({ scroll: el.scrollWidth, client: el.clientWidth }));
    assert.ok(wrap.scroll <= wrap.client, `the backups table does not scroll sideways: ${wrap.scroll} > ${wrap.client}`);
    // each cell is labelled with its column and fits the screen
    for (const label of ['Kind', 'Dumped', 'Stored', 'Duration', 'Verification', 'Restore']) {
      const cell = page.locator(`#backups tbody tr:first-child td[data-label="${label}"]`);
      const box = (await cell.boundingBox())!;
      assert.ok(box.x >= 0 && box.x + box.width <= 375, `${label}: ${JSON.stringify(box)}`);
      assert.equal(await cell.evaluate((el) => (globalThis as unknown as { getComputedStyle(e: unknown, pseudo: string): { content: string } }).getComputedStyle(el, '::before').content), `"${label}"`);
    }
    const ticks = await page.locator('figure.chart').first().locator('text.tick').allTextContents();
    assert.equal(ticks.length, 2);
    assert.notEqual(ticks[0], ticks[1], `the axis ends differ: ${ticks}`);
    for (const tick of ticks) assert.match(tick, /\d{2}:\d{2}/, `times on a one-hour axis: ${ticks}`);
    await screenshot(page, 'dashboard-backups-phone.png');
    await page.context().close();
  });
});
