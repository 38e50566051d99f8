import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import type { DaemonApi } from '../daemon-api.js';

/** The JSON API under /api: reads need the token when one is configured; starting jobs always needs it. */
export function apiRoutes(app: FastifyInstance, api: DaemonApi, guards: { read: preHandlerAsyncHookHandler; write: preHandlerAsyncHookHandler }): void {
  const { read, write } = guards;
  app.get('/api/sources', { preHandler: read }, async () => ({ sources: await api.sources() }));
  app.get<{ Params: { name: string } }>('/api/sources/:name/backups', { preHandler: read }, async (request) => ({ backups: await api.backups(request.params.name) }));
  app.get<{ Params: { id: string } }>('/api/backups/:id', { preHandler: read }, async (request) => ({ backup: await api.backup(request.params.id) }));
  // ?source=&kind=&state= filter, ?limit= (default 100, newest first)
  app.get<{ Querystring: { source?: string; kind?: string; state?: string; limit?: string } }>('/api/jobs', { preHandler: read }, async (request, reply) => {
    const { source, kind, state, limit } = request.query;
    const max = limit === undefined ? 100 : Number(limit);
    if (!Number.isInteger(max) || max < 1) return reply.code(400).send({ error: { code: 'USAGE', message: `limit must be a whole number of at least 1 (got "${limit}")` } });
    const jobs = api.jobs().filter((j) => (source === undefined || j.source === source) && (kind === undefined || j.kind === kind) && (state === undefined || j.state === state));
    return { jobs: jobs.slice(0, max), total: jobs.length };
  });
  app.get<{ Params: { id: string } }>('/api/jobs/:id', { preHandler: read }, async (request, reply) => {
    const job = api.job(request.params.id);
    if (!job) return reply.code(404).send({ error: { code: 'JOB_NOT_FOUND', message: `no job ${request.params.id}: see GET /api/jobs` } });
    return { job };
  });
  app.post<{ Params: { name: string } }>('/api/sources/:name/backups', { preHandler: write }, async (request, reply) => {
    const job = api.startBackup(request.params.name);
    return reply.code(job.state === 'skipped' ? 409 : 202).send({ job });
  });
  app.post<{ Params: { id: string } }>('/api/backups/:id/verify', { preHandler: write }, async (request, reply) => {
    const job = await api.startVerify(request.params.id);
    return reply.code(job.state === 'skipped' ? 409 : 202).send({ job });
  });
}
