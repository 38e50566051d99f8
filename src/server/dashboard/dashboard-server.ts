import Fastify from 'fastify';
import type { Settings } from '../../config/settings.js';
import type { CommandRegistry } from '../../registry/command-registry.js';
import { PgkeepError } from '../../errors.js';
import { HostAllowlist, registerHostCheck } from '../host-allowlist.js';
import { isLoopback } from '../http-server.js';
import { commandDashboardDeps } from './command-dashboard-deps.js';
import { registerDashboard, type DashboardOptions } from './register-dashboard.js';

export interface DashboardServer {
  /** http://host:port of the dashboard. */
  url: string;
  /** Which Host values it answers, for the start-up log. */
  hosts: string;
  /** Stops accepting requests, cancels running jobs and waits for them. */
  close(): Promise<void>;
}

export interface DashboardServerOptions extends DashboardOptions {
  /** Host names answered besides loopback and the listen address (serve.allowedHosts, --allowed-host). */
  allowedHosts?: readonly string[] | undefined;
  /** Proxies whose X-Forwarded-Host is read and checked (serve.trustProxy, --trust-proxy). */
  trustProxy?: readonly string[] | undefined;
  /** Where refused requests are reported (a few, not a flood). */
  log?: ((line: string) => void) | undefined;
}

/**
 * A standalone dashboard server (`pgkeep dashboard`, tests): the dashboard on
 * the CLI's commands with an in-memory job list. Refuses a non-loopback
 * address without a token, like `pgkeep serve`, and answers only the Host
 * names of its allowlist (DNS rebinding protection, see host-allowlist.ts).
 */
export async function startDashboardServer(settings: Settings, registry: CommandRegistry, listen: { host: string; port: number }, options: DashboardServerOptions = {}): Promise<DashboardServer> {
  if (!options.token && !isLoopback(listen.host)) {
    throw new PgkeepError('USAGE', `refusing to serve the dashboard on ${listen.host} without an API token: set PGKEEP_API_TOKEN (or --token-file), or listen on 127.0.0.1`);
  }
  const allowlist = new HostAllowlist({ listen, allowedHosts: options.allowedHosts, trustProxy: options.trustProxy, configHint: 'serve.allowedHosts or --allowed-host' });
  const { allowedHosts: _hosts, trustProxy: _proxies, log, ...dashboard } = options;
  const deps = commandDashboardDeps(settings, registry);
  const app = Fastify({ logger: false, trustProxy: allowlist.fastifyTrustProxy });
  // first: before the dashboard's own hooks and routes
  registerHostCheck(app, allowlist, log);
  await registerDashboard(app, deps, dashboard);
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
    hosts: allowlist.describe(port),
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
