import Fastify, { type FastifyInstance } from 'fastify';
import { isIP } from 'node:net';
import { PgkeepError, toPgkeepError, type ErrorCode } from '../errors.js';
import { guards } from './auth.js';
import type { DaemonApi } from './daemon-api.js';
import { registerHostCheck, type HostAllowlist } from './host-allowlist.js';
import { apiRoutes } from './routes/api.js';
import { probeRoutes } from './routes/probes.js';

export interface HttpServerOptions {
  token: string | undefined;
  /** Require the token on /health, /ready and /metrics too. */
  protectProbes: boolean;
  /** The Host names answered (DNS rebinding protection); checked before anything else. */
  hosts: HostAllowlist;
  /** Where refused requests are reported (a few, not a flood). */
  onRefuse?: ((line: string) => void) | undefined;
}

const HTTP_STATUS: Partial<Record<ErrorCode, number>> = {
  SOURCE_UNKNOWN: 404,
  BACKUP_NOT_FOUND: 404,
  INVALID_NAME: 400,
  USAGE: 400,
  BACKUP_AMBIGUOUS: 409,
};

/**
 * The daemon's HTTP server: probes, metrics and the JSON API, each area in
 * its own routes module (a dashboard, issue 8, is one more beside them).
 * Errors answer `{ error: { code, message } }` with the pgkeep error code.
 * The Host check is the first hook: it guards every route, the dashboard's too.
 */
export function buildHttpServer(api: DaemonApi, options: HttpServerOptions): FastifyInstance {
  const app = Fastify({ logger: false, trustProxy: options.hosts.fastifyTrustProxy, forceCloseConnections: true });
  registerHostCheck(app, options.hosts, options.onRefuse);
  const guard = guards(options.token);
  // `curl -X POST -H 'content-type: application/json'` with no body is a fine way to start a job
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (_request, body, done) => {
    if (typeof body !== 'string' || body.trim() === '') return done(null, undefined);
    try {
      done(null, JSON.parse(body));
    } catch (error) {
      done(Object.assign(new PgkeepError('USAGE', `the request body is not JSON: ${(error as Error).message}`), { statusCode: 400 }), undefined);
    }
  });
  app.setErrorHandler((error, _request, reply) => {
    const failure = toPgkeepError(error);
    const status = (error as { statusCode?: number }).statusCode ?? HTTP_STATUS[failure.code] ?? 500;
    return reply.code(status).send({ error: { code: failure.code, message: failure.message } });
  });
  app.setNotFoundHandler((request, reply) => reply.code(404).send({ error: { code: 'NOT_FOUND', message: `no route ${request.method} ${request.url}` } }));
  probeRoutes(app, api, options.protectProbes ? guard.read : guard.open);
  apiRoutes(app, api, guard);
  return app;
}

/** Loopback addresses and names: anything else is reachable from other machines. */
export function isLoopback(host: string): boolean {
  if (host === 'localhost') return true;
  const bare = host.replace(/^\[|\]$/g, '');
  if (isIP(bare) === 4) return bare.startsWith('127.');
  if (isIP(bare) === 6) return bare === '::1';
  return false;
}

/** Refuses a non-loopback address without a token (the API would reveal backups to the network). */
export function assertSafeBind(host: string, token: string | undefined): void {
  if (token === undefined && !isLoopback(host)) {
    throw new PgkeepError('SERVE_INSECURE', `refusing to listen on ${host} without an API token: set serve.token, serve.tokenFile or PGKEEP_API_TOKEN, or listen on 127.0.0.1`);
  }
}
