import Fastify from 'fastify';
import type { Settings } from '../../config/settings.js';
import { PgkeepError } from '../../errors.js';
import { commandDashboardDeps } from './command-dashboard-deps.js';
import { registerDashboard, type DashboardOptions } from './register-dashboard.js';

export interface DashboardServer {
  /** http://host:port of the dashboard. */
  url: string;
  /** Stops accepting requests, cancels running jobs and waits for them. */
  close(): Promise<void>;
}

const isLoopback = (host: string) => host === 'localhost' || host === '::1' || /^127\./.test(host);

/**
 * A standalone dashboard server (`pgkeep dashboard`, tests): the dashboard on
 * the CLI's commands with an in-memory job list. Refuses a non-loopback
 * address without a token, like `pgkeep serve`.
 */
export async function startDashboardServer(settings: Settings, listen: { host: string; port: number }, options: DashboardOptions = {}): Promise<DashboardServer> {
  if (!options.token && !isLoopback(listen.host)) {
    throw new PgkeepError('USAGE', `refusing to serve the dashboard on ${listen.host} without an API token: set PGKEEP_API_TOKEN (or --token-file), or listen on 127.0.0.1`);
  }
  const deps = commandDashboardDeps(settings);
  const app = Fastify({ logger: false });
  await registerDashboard(app, deps, options);
  try {
    await app.listen({ host: listen.host, port: listen.port });
  } catch (error) {
    await app.close();
    throw new PgkeepError('USAGE', `cannot listen on ${listen.host}:${listen.port}: ${(error as Error).message}`, { cause: error });
  }
  const address = app.server.address();
  const port = typeof address === 'object' && address ? address.port : listen.port;
  return {
    url: `http://${listen.host.includes(':') ? `[${listen.host}]` : listen.host}:${port}`,
    async close() {
      await app.close();
      await deps.jobList.close();
    },
  };
}

/** Parses --listen HOST:PORT (or just PORT). */
export function parseListen(value: string): { host: string; port: number } {
  const match = /^(?:\[?([^\]]*?)\]?:)?(\d{1,5})$/.exec(value);
  const port = Number(match?.[2]);
  if (!match || port > 65535) throw new PgkeepError('USAGE', `--listen takes HOST:PORT or PORT, e.g. 127.0.0.1:9188 (got "${value}")`);
  return { host: match[1] || '127.0.0.1', port };
}
