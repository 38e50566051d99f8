import assert from 'node:assert/strict';
import type { ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { connect } from 'node:net';
import { networkInterfaces, tmpdir } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { after, before, describe, test } from 'node:test';
import { chromium } from 'playwright-core';
import { collect, startPgkeep, type CliResult } from '../support/cli.js';

// DNS rebinding: a page on evil.example rebinds its name to 127.0.0.1 and reads the dashboard from the
// operator's browser. The browser still sends `Host: evil.example:PORT`, so every route must refuse it.
// The real CLI processes (`pgkeep serve`, `pgkeep dashboard`) over real HTTP; no database is needed to
// answer these routes (the source's server is down: the dashboard shows it red, /ready answers 503).

const TOKEN = 'host-check-token-0123456789';

interface Server {
  child: ChildProcess;
  port: number;
  stderr: () => string;
  done: Promise<CliResult>;
}

let work: string;
const servers: Server[] = [];
let serve: Server;
let dashboard: Server;
/** A non-loopback IPv4 address of this machine (a pod IP, a LAN IP), if there is one. */
const LAN = Object.values(networkInterfaces())
  .flat()
  .find((i) => i && i.family === 'IPv4' && !i.internal)?.address;

/** Starts a pgkeep HTTP command and waits for its Host-check line, which follows listening. */
async function start(args: string[], env: Record<string, string> = {}): Promise<Server> {
  const child = startPgkeep(args, { cwd: work, env });
  const done = collect(child);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const deadline = Date.now() + 20_000;
  let match: RegExpExecArray | null = null;
  while (!((match = /(?:listening on|dashboard on) http:\/\/[^\s/]+:(\d+)/.exec(stderr)) && /Host check: /.test(stderr))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`pgkeep ${args[0]} did not start: ${stderr}`);
    }
    await sleep(20);
  }
  const server = { child, port: Number(match[1]), stderr: () => stderr, done };
  servers.push(server);
  return server;
}

interface Answer {
  status: number;
  type: string;
  body: string;
  location?: string | undefined;
}

/** One request with node:http to `connectTo` (127.0.0.1 by default), with exactly the headers given (Host included). */
function send(port: number, url: string, headers: Record<string, string>, options: { method?: string; connectTo?: string; body?: string } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: options.connectTo ?? '127.0.0.1', port, path: url, method: options.method ?? 'GET', headers, setHost: false }, (res) => {
      let body = '';
      res.setEncoding('utf8').on('data', (t: string) => (body += t));
      res.on('end', () => resolve({ status: res.statusCode!, type: String(res.headers['content-type'] ?? ''), body, location: res.headers.location }));
    });
    req.on('error', reject);
    req.end(options.body);
  });
}

/** A raw HTTP/1.0 request without any Host header (node:http always sends HTTP/1.1). */
function sendWithoutHost(port: number, url: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1', () => socket.end(`GET ${url} HTTP/1.0\r\n\r\n`));
    let text = '';
    socket.setEncoding('utf8').on('data', (t: string) => (text += t));
    socket.on('end', () => resolve(text));
    socket.on('error', reject);
  });
}

/** Every kind of route of `pgkeep serve`: dashboard pages, fragments and assets, the API, metrics, probes, a 404. */
const SERVE_ROUTES = [
  ['GET', '/'],
  ['GET', '/fragments/overview'],
  ['GET', '/sources/app'],
  ['GET', '/jobs'],
  ['GET', '/login'],
  ['GET', '/assets/dashboard.css'],
  ['GET', '/assets/htmx.min.js'],
  ['GET', '/api/sources'],
  ['GET', '/api/sources/app/backups'],
  ['GET', '/api/jobs'],
  ['POST', '/api/sources/app/backups'],
  ['GET', '/metrics'],
  ['GET', '/health'],
  ['GET', '/ready'],
  ['GET', '/no-such-route'],
] as const;

/** What each route shows when it answers: none of it may appear in a refusal. */
const CONTENT: Record<string, RegExp> = {
  '/': /Are we safe\?[\s\S]*data-source="app"/,
  '/fragments/overview': /data-source="app"/,
  '/sources/app': /Backups of app/,
  '/jobs': /<h1>Jobs<\/h1>/,
  '/login': /<html/,
  '/assets/dashboard.css': /\{/,
  '/assets/htmx.min.js': /htmx/,
  '/api/sources': /"name":"app"/,
  '/api/sources/app/backups': /"backups":\[\]/,
  '/api/jobs': /"jobs":\[\]/,
  '/api/sources/app/backups POST': /API_DISABLED/,
  '/metrics': /pgkeep_backups_total/,
  '/health': /"status":"ok"/,
  '/ready': /"checks"/,
  '/no-such-route': /NOT_FOUND/,
};
const expectedStatus = (method: string, url: string) => (url === '/ready' ? 503 : url === '/no-such-route' ? 404 : method === 'POST' ? 403 : 200);

function assertRefused(answer: Answer, status: number, reason: RegExp, what: string): void {
  assert.equal(answer.status, status, `${what}: ${answer.body.slice(0, 200)}`);
  assert.equal(answer.type, 'text/plain; charset=utf-8', what);
  assert.match(answer.body, /^pgkeep: refused: [^\n]+\n$/, `${what}: one line`);
  assert.match(answer.body, reason, what);
  for (const content of Object.values(CONTENT).slice(0, 3)) assert.doesNotMatch(answer.body, content, `${what}: nothing of the page`);
  assert.doesNotMatch(answer.body, /<html|"name":"app"|pgkeep_|127\.0\.0\.1:1\b/, `${what}: nothing of the page`);
}

before(async () => {
  work = await mkdtemp(path.join(tmpdir(), 'pgkeep-host-check-'));
  // the source's database is down (port 1): nothing here needs it
  const source = { host: '127.0.0.1', port: 1, user: 'x', database: 'x', repo: path.join(work, 'repo') };
  await writeFile(
    path.join(work, 'pgkeep.yaml'),
    JSON.stringify({
      sources: { app: source },
      serve: {
        stateDir: path.join(work, 'state'),
        allowedHosts: ['backup.example.com', 'pgkeep.internal:8443', '*.svc.cluster.local'],
        // a trusted proxy exists, but the test's requests come from 127.0.0.1, which is not it
        trustProxy: ['10.0.0.0/8'],
      },
    }),
  );
  // both at once: each start waits for the program to come up
  [serve, dashboard] = await Promise.all([
    start(['serve', '--listen', '127.0.0.1:0']),
    // a token, so it may listen on 0.0.0.0; 127.0.0.1 (the test's own address) is a trusted proxy here
    start(['dashboard', '--listen', '0.0.0.0:0', '--allowed-host', 'dash.example.org', '--trust-proxy', '127.0.0.1'], { PGKEEP_API_TOKEN: TOKEN }),
  ]);
});

after(async () => {
  for (const server of servers) server.child.kill('SIGTERM');
  await Promise.all(servers.map((s) => s.done));
  await rm(work, { recursive: true, force: true });
});

describe('Host check (DNS rebinding)', () => {
  test('pgkeep serve: a foreign Host gets 421 with one plain-text line on every route, and the route does not run', async () => {
    for (const [method, url] of SERVE_ROUTES) {
      const answer = await send(serve.port, url, { host: `evil.example:${serve.port}` }, { method });
      assertRefused(answer, 421, new RegExp(`^pgkeep: refused: Host "evil\\.example:${serve.port}" is not a name of this server \\(DNS rebinding protection\\); if it is yours, add it to serve\\.allowedHosts or --allowed-host\\n$`), `${method} ${url}`);
    }
    // the refused POST started no job
    const jobs = await send(serve.port, '/api/jobs', { host: `127.0.0.1:${serve.port}` });
    assert.deepEqual(JSON.parse(jobs.body).jobs, []);
    // the same Host on another port, and a configured name on the wrong port
    assertRefused(await send(serve.port, '/', { host: 'localhost:1' }), 421, new RegExp(`names port 1, but this server listens on ${serve.port}`), 'localhost:1');
    assertRefused(await send(serve.port, '/', { host: 'pgkeep.internal:9999' }), 421, /not a name of this server/, 'pgkeep.internal:9999');
    assertRefused(await send(serve.port, '/', { host: 'svc.cluster.local' }), 421, /not a name of this server/, '*.svc.cluster.local is only the subdomains');
    assertRefused(await send(serve.port, '/', { host: 'backup.example.com.evil.example' }), 421, /not a name of this server/, 'a name that only begins like an allowed one');
    assertRefused(await send(serve.port, '/', { host: 'a b' }), 400, /^pgkeep: refused: malformed Host header "a b"\n$/, 'malformed');
  });

  test('pgkeep serve: loopback names on its port (or none), and the configured names, are answered on every route', async () => {
    const names = [
      `localhost:${serve.port}`,
      `127.0.0.1:${serve.port}`,
      `127.0.0.2:${serve.port}`,
      `127.255.255.254:${serve.port}`,
      `[::1]:${serve.port}`,
      `LOCALHOST.:${serve.port}`,
      'localhost', // a proxy of this machine on :80
      'backup.example.com', // serve.allowedHosts, any port
      'backup.example.com:443',
      'pgkeep.internal:8443', // that port only
      'pgkeep.backups.svc.cluster.local:9187', // *.svc.cluster.local
    ];
    for (const host of names) {
      for (const [method, url] of SERVE_ROUTES) {
        const answer = await send(serve.port, url, { host }, { method });
        assert.equal(answer.status, expectedStatus(method, url), `${host} ${method} ${url}: ${answer.body.slice(0, 200)}`);
        assert.match(answer.body, CONTENT[method === 'POST' ? `${url} POST` : url]!, `${host} ${method} ${url}`);
      }
    }
  });

  test('X-Forwarded-Host neither bypasses the check nor is read from a peer that is not a trusted proxy', async () => {
    // serve trusts 10.0.0.0/8 only; the test connects from 127.0.0.1
    for (const url of ['/', '/api/sources', '/metrics', '/health']) {
      const bypass = await send(serve.port, url, { host: `evil.example:${serve.port}`, 'x-forwarded-host': `localhost:${serve.port}` });
      assertRefused(bypass, 421, /Host "evil\.example:\d+" is not a name/, `${url} with X-Forwarded-Host: localhost`);
      const ignored = await send(serve.port, url, { host: `localhost:${serve.port}`, 'x-forwarded-host': 'evil.example' });
      assert.equal(ignored.status, 200, `${url}: an untrusted peer's X-Forwarded-Host is not read`);
    }
  });

  test('pgkeep dashboard behind a trusted proxy: the forwarded host must be allowed too', async () => {
    const port = dashboard.port;
    // the proxy forwards the browser's Host in X-Forwarded-Host; its own Host names the upstream
    const proxied = await send(port, '/', { host: `127.0.0.1:${port}`, 'x-forwarded-host': 'dash.example.org' });
    assert.equal(proxied.status, 200);
    assert.match(proxied.body, /Are we safe\?[\s\S]*data-source="app"/);
    assert.equal((await send(port, '/assets/dashboard.css', { host: 'dash.example.org', 'x-forwarded-host': 'dash.example.org:443' })).status, 200);
    // a rebinding attack through the proxy: the browser's Host (evil) arrives as X-Forwarded-Host
    for (const url of ['/', '/fragments/overview', '/jobs', '/assets/dashboard.js']) {
      const answer = await send(port, url, { host: `127.0.0.1:${port}`, 'x-forwarded-host': 'evil.example' });
      assertRefused(answer, 421, /^pgkeep: refused: X-Forwarded-Host "evil\.example" is not a name of this server .*add it to serve\.allowedHosts or --allowed-host\n$/, url);
    }
    // every value of a list must be allowed; the Host itself still must be
    assertRefused(await send(port, '/', { host: `127.0.0.1:${port}`, 'x-forwarded-host': 'dash.example.org, evil.example' }), 421, /X-Forwarded-Host "evil\.example"/, 'a list with a foreign name');
    assertRefused(await send(port, '/', { host: 'evil.example', 'x-forwarded-host': 'dash.example.org' }), 421, /Host "evil\.example" is not a name/, 'a foreign Host');
    assertRefused(await send(port, '/', { host: `127.0.0.1:${port}`, 'x-forwarded-host': 'a b' }), 400, /malformed X-Forwarded-Host "a b"/, 'malformed');

    // logging in through the proxy: the form's Origin is the browser's name, which the proxy forwards
    const login = (headers: Record<string, string>) =>
      send(port, '/login', { 'content-type': 'application/x-www-form-urlencoded', origin: 'https://dash.example.org', ...headers }, { method: 'POST', body: `token=${TOKEN}` });
    const proxiedLogin = await login({ host: `127.0.0.1:${port}`, 'x-forwarded-host': 'dash.example.org' });
    assert.equal(proxiedLogin.status, 303, proxiedLogin.body.slice(0, 300));
    assert.equal(proxiedLogin.location, '/');
    assert.equal((await login({ host: `127.0.0.1:${port}` })).status, 401, 'without the forwarded name the Origin is another site');
  });

  test('pgkeep dashboard on 0.0.0.0: loopback, the listen address and the address a request arrives on are answered, other names are not', async () => {
    const port = dashboard.port;
    for (const host of [`localhost:${port}`, `127.0.0.1:${port}`, `[::1]:${port}`, `0.0.0.0:${port}`, 'dash.example.org', `dash.example.org:${port}`]) {
      const answer = await send(port, '/', { host });
      assert.equal(answer.status, 200, host);
      assert.match(answer.body, /Are we safe\?/, host);
    }
    for (const host of [`evil.example:${port}`, `10.11.12.13:${port}`, `0.0.0.0:1`]) {
      assertRefused(await send(port, '/', { host }), 421, /^pgkeep: refused: Host /, host);
    }
  });

  test('a Kubernetes probe: Host is the pod IP and port, on a connection that arrives on that IP', { skip: LAN === undefined ? 'no non-loopback IPv4 address on this machine' : false }, async () => {
    const port = dashboard.port;
    const probe = await send(port, '/', { host: `${LAN}:${port}` }, { connectTo: LAN });
    assert.equal(probe.status, 200, `Host ${LAN}:${port} on a connection to ${LAN}`);
    assert.match(probe.body, /Are we safe\?/);
    assert.equal((await send(port, '/', { host: LAN! }, { connectTo: LAN })).status, 200, 'without a port');
    // the same Host on a connection that arrived on 127.0.0.1 is not that request's own address
    assertRefused(await send(port, '/', { host: `${LAN}:${port}` }), 421, /not a name of this server/, `Host ${LAN} via 127.0.0.1`);
    assertRefused(await send(port, '/', { host: `evil.example:${port}` }, { connectTo: LAN }), 421, /not a name of this server/, `evil.example via ${LAN}`);
  });

  test('a request without a Host header is refused', async () => {
    for (const server of [serve, dashboard]) {
      const raw = await sendWithoutHost(server.port, '/');
      assert.match(raw, /^HTTP\/1\.1 400 /);
      assert.match(raw, /\r\n\r\npgkeep: refused: the request has no Host header\n$/);
      // HTTP/1.1 without Host: Node's own parser refuses it, before pgkeep
      const answer = await send(server.port, '/', {});
      assert.equal(answer.status, 400);
      assert.doesNotMatch(answer.body, /Are we safe/);
    }
  });

  test('the log says which hosts are answered (the dashboard reads serve.allowedHosts and serve.trustProxy too, plus its flags), and reports refusals', () => {
    assert.match(serve.stderr(), new RegExp(`info Host check: answering localhost, 127\\.0\\.0\\.0/8 and \\[::1\\] on port ${serve.port} \\(or without a port\\); the configured backup\\.example\\.com, pgkeep\\.internal:8443, \\*\\.svc\\.cluster\\.local; X-Forwarded-Host is checked too from 10\\.0\\.0\\.0/8 and ignored from anyone else`));
    assert.match(serve.stderr(), /warn refused a request from 127\.0\.0\.1: Host "evil\.example:\d+" is not a name of this server/);
    assert.equal(serve.stderr().match(/refused a request from 127\.0\.0\.1: Host "evil\.example:\d+"/g)?.length, 1, 'the same refusal is logged once');
    assert.match(dashboard.stderr(), new RegExp(`pgkeep: Host check: answering localhost, 127\\.0\\.0\\.0/8 and \\[::1\\] on port ${dashboard.port} \\(or without a port\\); 0\\.0\\.0\\.0:${dashboard.port} and the IP address a request arrives on; the configured backup\\.example\\.com, pgkeep\\.internal:8443, \\*\\.svc\\.cluster\\.local, dash\\.example\\.org; X-Forwarded-Host is checked too from 10\\.0\\.0\\.0/8, 127\\.0\\.0\\.1 and ignored from anyone else\\n`));
    assert.match(dashboard.stderr(), /pgkeep: refused a request from 127\.0\.0\.1: X-Forwarded-Host "evil\.example" is not a name of this server/);
  });

  test('in a real browser, a page of a rebound name gets the refusal, not the dashboard', { skip: existsSync('/usr/bin/chromium') ? false : 'Debian chromium (/usr/bin/chromium) is not installed' }, async () => {
    // --host-resolver-rules plays the attacker's DNS: evil.example and backup.example.com both resolve to 127.0.0.1
    const browser = await chromium.launch({
      executablePath: '/usr/bin/chromium',
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--no-first-run', '--disable-background-networking', '--host-resolver-rules=MAP evil.example 127.0.0.1, MAP backup.example.com 127.0.0.1'],
    });
    try {
      const page = await browser.newPage();
      const attacked = await page.goto(`http://evil.example:${serve.port}/`);
      assert.equal(attacked?.status(), 421);
      assert.match(await page.locator('body').innerText(), /^pgkeep: refused: Host "evil\.example:\d+" is not a name of this server/);
      // the attacker's script reading its "own" origin gets the same line, never the API
      const read = await page.evaluate(async () => (await fetch('/api/sources')).text());
      assert.match(read, /^pgkeep: refused: /);
      assert.doesNotMatch(read, /"name":"app"/);
      const allowed = await page.goto(`http://backup.example.com:${serve.port}/`);
      assert.equal(allowed?.status(), 200);
      assert.equal(await page.locator('article[data-source="app"]').count(), 1);
    } finally {
      await browser.close();
    }
  });
});
