import { timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { isPgkeepError, PgkeepError, toPgkeepError } from '../../errors.js';
import { DASHBOARD_CSS, DASHBOARD_JS, htmxScript } from './dashboard-assets.js';
import type { DashboardDeps } from './dashboard-deps.js';
import { parseCookies, SessionStore, tokenMatches, type Session } from './dashboard-sessions.js';
import {
  backupsPage,
  confirmPage,
  isAction,
  jobsFragment,
  loginPage,
  messagePage,
  overviewFragment,
  page,
  type BackupFilters,
  type FleetFilters,
  type Viewer,
} from './dashboard-views.js';
import { html, SafeHtml } from './html.js';
import { runbookBody } from '../../status/runbook.js';

export interface DashboardOptions {
  /** The API token that unlocks actions; without one the dashboard is read-only (actions disabled, not open). */
  token?: string | undefined;
  /** Where the dashboard is mounted, e.g. "/ui"; default "/" (`pgkeep serve` mounts it at the root beside /api). */
  basePath?: string | undefined;
  /** Mark the session cookie Secure (when served over HTTPS, e.g. behind a TLS proxy). */
  secureCookie?: boolean | undefined;
  /** With a token: every page needs logging in, not only actions. Default false (views are read-only without login). */
  requireLoginToView?: boolean | undefined;
}

const COOKIE = 'pgkeep_session';

// No inline script or style, no third party: everything comes from the dashboard itself.
const SECURITY_HEADERS = {
  'content-security-policy': "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
  'x-content-type-options': 'nosniff',
  'referrer-policy': 'same-origin',
  'x-frame-options': 'DENY',
};

/**
 * Mounts the web dashboard (overview, backups, jobs, actions, login) on a
 * fastify server, as an encapsulated plugin under `basePath`. Everything it
 * reads or starts goes through `deps`. Actions need a session made by
 * logging in with the token, and a CSRF token from the session in the form.
 */
export async function registerDashboard(app: FastifyInstance, deps: DashboardDeps, options: DashboardOptions = {}): Promise<void> {
  const base = (options.basePath ?? '/').replace(/\/+$/, '');
  await app.register(async (scope) => dashboardRoutes(scope, deps, options, base), { prefix: base || '/' });
}

async function dashboardRoutes(app: FastifyInstance, deps: DashboardDeps, options: DashboardOptions, base: string): Promise<void> {
  const token = options.token || undefined;
  const sessions = new SessionStore();

  if (!app.hasContentTypeParser('application/x-www-form-urlencoded')) {
    app.addContentTypeParser('application/x-www-form-urlencoded', { parseAs: 'string', bodyLimit: 64 * 1024 }, (_request, body, done) => {
      done(null, Object.fromEntries(new URLSearchParams(body as string)));
    });
  }

  const sessionOf = (request: FastifyRequest): Session | undefined => (token ? sessions.get(parseCookies(request.headers.cookie).get(COOKIE)) : undefined);
  const viewerOf = (request: FastifyRequest): Viewer => {
    const session = sessionOf(request);
    return { canLogin: Boolean(token), loggedIn: Boolean(session), csrf: session?.csrf, base, now: new Date() };
  };
  const send = (reply: FastifyReply, body: SafeHtml, status = 200) => reply.code(status).headers(SECURITY_HEADERS).type('text/html; charset=utf-8').send(body.text);
  const full = (request: FastifyRequest, reply: FastifyReply, title: string, body: SafeHtml, active: Parameters<typeof page>[3], status = 200) =>
    send(reply, page(viewerOf(request), title, body, active), status);
  const path = (p: string) => `${base}${p}`;

  // Views need a login only when asked to; assets and the login page never do.
  app.addHook('onRequest', async (request, reply) => {
    if (!token || !options.requireLoginToView || sessionOf(request)) return;
    const own = request.url.slice(base.length).split('?')[0]!;
    if (own.startsWith('/assets/') || own === '/login') return;
    if (request.method === 'GET') return reply.redirect(path('/login'), 303);
  });

  app.setErrorHandler(async (error, request, reply) => {
    const failure = isPgkeepError(error) ? error : (error as { statusCode?: number }).statusCode ? new PgkeepError('USAGE', (error as Error).message) : toPgkeepError(error);
    const status = failure.code === 'SOURCE_UNKNOWN' || failure.code === 'BACKUP_NOT_FOUND' ? 404 : failure.code === 'LOCK_HELD' ? 409 : failure.code === 'USAGE' ? 400 : 500;
    if (status === 500) request.log.error({ err: error }, 'dashboard request failed');
    return full(request, reply, 'Error', messagePage(status === 500 ? 'Something went wrong' : 'Cannot do that', failure.message, path('/')), 'overview', status);
  });

  // assets
  app.get('/assets/htmx.min.js', async (_r, reply) => reply.headers(SECURITY_HEADERS).header('cache-control', 'public, max-age=86400').type('text/javascript').send(htmxScript()));
  app.get('/assets/dashboard.js', async (_r, reply) => reply.headers(SECURITY_HEADERS).type('text/javascript').send(DASHBOARD_JS));
  app.get('/assets/dashboard.css', async (_r, reply) => reply.headers(SECURITY_HEADERS).type('text/css').send(DASHBOARD_CSS));

  // views
  const fleetFilters = (q: Record<string, string | undefined>): FleetFilters => ({
    q: q.q?.slice(0, 200) || undefined,
    label: q.label?.slice(0, 200) || undefined,
    verdict: q.verdict === 'red' || q.verdict === 'amber' || q.verdict === 'green' ? q.verdict : undefined,
  });
  app.get<{ Querystring: Record<string, string | undefined> }>('/', async (request, reply) => {
    const viewer = viewerOf(request);
    return full(request, reply, 'Overview', html`<h1>Are we safe?</h1>${overviewFragment(viewer, await deps.sources(), fleetFilters(request.query))}`, 'overview');
  });
  app.get<{ Querystring: Record<string, string | undefined> }>('/fragments/overview', async (request, reply) =>
    send(reply, overviewFragment(viewerOf(request), await deps.sources(), fleetFilters(request.query))),
  );

  app.get<{ Params: { name: string }; Querystring: Record<string, string | undefined> }>('/sources/:name', async (request, reply) => {
    const source = request.params.name;
    const q = request.query;
    const filters: BackupFilters = {
      kind: q.kind || undefined,
      label: q.label || undefined,
      verification: q.verification === 'ok' || q.verification === 'failed' || q.verification === 'never' ? q.verification : undefined,
      pinned: q.pinned === '1',
      q: q.q || undefined,
    };
    const at = q.at && /^\d{4}-\d\d-\d\dT\d\d:\d\d(:\d\d)?$/.test(q.at) ? q.at : undefined;
    const backups = await deps.backups(source);
    // this source alone: a page of one source costs the same with 1 or 500 configured
    const overview = deps.source ? await deps.source(source) : (await deps.sources()).find((s) => s.status.source === source);
    return full(request, reply, `Backups of ${source}`, backupsPage(viewerOf(request), source, overview, backups, filters, at), 'backups');
  });

  app.get<{ Params: { name: string } }>('/sources/:name/runbook', async (request, reply) => {
    const source = request.params.name;
    if (!deps.runbook) return full(request, reply, 'Runbook', html`<h1>Runbook</h1><p>Not available here: run <code>pgkeep runbook</code>.</p>`, 'backups', 404);
    // the runbook's text is escaped piece by piece (runbookBody): repository data never becomes markup
    // \u2190 (a left arrow) as an escape: the bundle stays ASCII (see dashboard-views.ts)
    return full(request, reply, `Runbook of ${source}`, html`<p><a href="${viewerOf(request).base}/sources/${encodeURIComponent(source)}">\u2190 backups of ${source}</a></p>${new SafeHtml(runbookBody(await deps.runbook(source)))}`, 'backups');
  });

  app.get<{ Querystring: { started?: string } }>('/jobs', async (request, reply) => {
    const viewer = viewerOf(request);
    const started = request.query.started && /^[\w-]{1,64}$/.test(request.query.started) ? request.query.started : undefined;
    return full(request, reply, 'Jobs', html`<h1>Jobs</h1>${started ? html`<p role="status" class="pass">Started job ${started}.</p>` : ''}${jobsFragment(viewer, await deps.jobs())}`, 'jobs');
  });
  app.get('/fragments/jobs', async (request, reply) => send(reply, jobsFragment(viewerOf(request), await deps.jobs())));

  // login
  app.get('/login', async (request, reply) => full(request, reply, 'Log in', loginPage(viewerOf(request), undefined), 'login'));
  app.post<{ Body: { token?: string } | undefined }>('/login', async (request, reply) => {
    if (!token) return full(request, reply, 'Read-only', loginPage(viewerOf(request), undefined), 'login', 403);
    if (!sameOrigin(request) || !tokenMatches(String(request.body?.token ?? ''), token)) {
      // a wrong token costs a second: guessing stays slow even from a script
      await new Promise((resolve) => setTimeout(resolve, 1000));
      return full(request, reply, 'Log in', loginPage(viewerOf(request), 'That token is not the configured API token.'), 'login', 401);
    }
    sessions.delete(parseCookies(request.headers.cookie).get(COOKIE));
    const session = sessions.create();
    reply.header('set-cookie', cookie(session.id, Math.floor((session.expiresAt - Date.now()) / 1000)));
    return reply.redirect(path('/'), 303);
  });
  app.post<{ Body: { csrf?: string } | undefined }>('/logout', async (request, reply) => {
    const session = sessionOf(request);
    if (session && csrfMatches(request.body?.csrf, session.csrf)) sessions.delete(session.id);
    reply.header('set-cookie', cookie('', 0));
    return reply.redirect(path('/'), 303);
  });

  // actions: a confirmation dialog (GET), then the POST that starts the job
  app.get<{ Querystring: { action?: string; source?: string; backup?: string } }>('/confirm', async (request, reply) => {
    const { action = '', source = '', backup } = request.query;
    if (!token) return full(request, reply, 'Read-only', messagePage('Read-only', 'Actions are disabled: no API token is configured.', path('/')), 'overview', 403);
    if (!sessionOf(request)) return reply.redirect(path('/login'), 303);
    if (!isAction(action) || !source) throw new PgkeepError('USAGE', 'unknown action: use the buttons of the overview or the backups page');
    if (action !== 'backup' && !backup) throw new PgkeepError('USAGE', `${action} needs a backup`);
    const back = action === 'backup' ? path('/') : path(`/sources/${encodeURIComponent(source)}`);
    // htmx asks for the dialog alone, to show it over the page
    if (request.headers['hx-request'] === 'true') return send(reply, confirmPage(viewerOf(request), action, source, backup, back, true));
    return full(request, reply, 'Confirm', confirmPage(viewerOf(request), action, source, backup, back), 'overview');
  });

  app.post<{ Params: { action: string }; Body: Record<string, string | undefined> | undefined }>('/actions/:action', async (request, reply) => {
    if (!token) return full(request, reply, 'Read-only', messagePage('Read-only', 'Actions are disabled: no API token is configured.', path('/')), 'overview', 403);
    const session = sessionOf(request);
    if (!session) return full(request, reply, 'Log in', messagePage('Not logged in', 'Log in with the API token to run actions.', path('/login')), 'login', 403);
    const body = request.body ?? {};
    if (!sameOrigin(request) || !csrfMatches(body.csrf, session.csrf)) {
      return full(request, reply, 'Refused', messagePage('Refused', 'This form is stale or came from another site: reload the page and try again.', path('/')), 'overview', 403);
    }
    const source = body.source ?? '';
    const backup = body.backup || 'latest';
    const action = request.params.action;
    const jobId =
      action === 'backup'
        ? await deps.startBackup(source)
        : action === 'restore-test'
          ? await deps.startRestoreTest(source, backup)
          : action === 'pin'
            ? await deps.pin(source, backup)
            : action === 'unpin'
              ? await deps.unpin(source, backup)
              : undefined;
    if (jobId === undefined) throw new PgkeepError('USAGE', `unknown action "${action}"`);
    return reply.redirect(path(`/jobs?started=${encodeURIComponent(jobId)}`), 303);
  });

  function cookie(value: string, maxAge: number): string {
    return `${COOKIE}=${value}; Path=${base || '/'}; HttpOnly; SameSite=Strict; Max-Age=${maxAge}${options.secureCookie ? '; Secure' : ''}`;
  }
}

function csrfMatches(presented: string | undefined, expected: string): boolean {
  const a = Buffer.from(presented ?? '');
  const b = Buffer.from(expected);
  return a.length === b.length && timingSafeEqual(a, b);
}

/** A browser's POST from another site carries its Origin: refuse it (SameSite=Strict already keeps the cookie away). */
function sameOrigin(request: FastifyRequest): boolean {
  const origin = request.headers.origin;
  if (!origin || origin === 'null') return origin !== 'null';
  try {
    // request.host: the Host, or a trusted proxy's X-Forwarded-Host (the name the browser used)
    return new URL(origin).host === request.host;
  } catch {
    return false;
  }
}
