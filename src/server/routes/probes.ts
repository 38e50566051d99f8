import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { DaemonApi } from '../daemon-api.js';

/** /health (alive), /ready (config, repositories and sources reachable; 503 listing what failed), /metrics. */
export function probeRoutes(app: FastifyInstance, api: DaemonApi, guard: preHandlerAsyncHookHandler): void {
  app.get('/health', { preHandler: guard }, async () => ({ status: 'ok', version: api.version, uptimeSeconds: Math.round((Date.now() - api.startedAt.getTime()) / 1000) }));

  app.get('/ready', { preHandler: guard }, async (_request, reply) => {
    const checks = await api.ready();
    const failing = checks.filter((c) => !c.ok);
    return reply.code(failing.length === 0 ? 200 : 503).send({ ready: failing.length === 0, failing, checks });
  });

  app.get('/metrics', { preHandler: guard }, async (_request, reply) => {
    const { contentType, text } = await api.metrics();
    return reply.type(contentType).send(text);
  });
}
