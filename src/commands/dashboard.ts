import { z } from 'zod';
import { readSecretFile } from '../config/settings.js';
import { requestParser, type CommandSpec } from '../registry/command-spec.js';
import { allowedHostOption, trustedProxyOption } from '../server/host-allowlist.js';

const DashboardCommandRequest = z.object({
  listen: z.string(),
  tokenFile: z.string().optional(),
  requireLogin: z.boolean(),
  allowedHosts: z.array(z.string()).optional(),
  trustProxy: z.array(z.string()).optional(),
});

/**
 * `pgkeep dashboard`: the web dashboard alone, on the commands of the registry
 * (ctx.registry) with an in-memory job list, until the signal; an interrupt is
 * its normal stop, not an error.
 */
export const dashboardCommand: CommandSpec<z.output<typeof DashboardCommandRequest>, void> = {
  name: 'dashboard',
  description: 'serve the web dashboard alone (pgkeep serve mounts the same dashboard), until Ctrl+C',
  output: false,
  options: [
    { flags: '--listen <host:port>', description: 'address to listen on', default: '127.0.0.1:9188' },
    { flags: '--token-file <file>', description: 'file holding the API token that unlocks actions (or set PGKEEP_API_TOKEN); without one the dashboard is read-only' },
    { flags: '--require-login', description: 'with a token: every page needs logging in, not only actions' },
    { flags: '--allowed-host <host>', description: 'a Host name to answer besides loopback and the listen address (repeatable; name, name:port, *.domain, IP, CIDR; added to serve.allowedHosts)', parse: allowedHostOption },
    { flags: '--trust-proxy <address>', description: 'IP or CIDR of a reverse proxy whose X-Forwarded-Host is read and checked (repeatable; added to serve.trustProxy)', parse: trustedProxyOption },
  ],
  help: { globals: ['config', 'repo'], examples: ['pgkeep dashboard --repo /srv/backups', 'pgkeep dashboard --listen 0.0.0.0:9188 --token-file /etc/pgkeep/api-token'] },
  needsRegistry: true,
  parse: requestParser(DashboardCommandRequest, ({ options }) => ({
    listen: options.listen,
    tokenFile: options.tokenFile,
    requireLogin: Boolean(options.requireLogin),
    allowedHosts: options.allowedHost,
    trustProxy: options.trustProxy,
  })),
  async run(ctx, request) {
    const { settings } = ctx;
    const token = request.tokenFile ? readSecretFile(request.tokenFile, '--token-file') : settings.env.PGKEEP_API_TOKEN || undefined;
    const { parseListen, startDashboardServer } = await import('../server/dashboard/dashboard-server.js');
    // the same Host allowlist as pgkeep serve: serve.allowedHosts and serve.trustProxy of the config, plus the flags
    const hosts = {
      allowedHosts: [...(settings.config.serve?.allowedHosts ?? []), ...(request.allowedHosts ?? [])],
      trustProxy: [...(settings.config.serve?.trustProxy ?? []), ...(request.trustProxy ?? [])],
    };
    const log = (line: string) => ctx.info(`pgkeep: ${line}`);
    const server = await startDashboardServer(settings, ctx.registry!, parseListen(request.listen), { token, requireLoginToView: request.requireLogin, ...hosts, log });
    log(`dashboard on ${server.url}/ (${token ? 'actions need the API token' : 'read-only: no API token configured'}); Ctrl+C stops it`);
    log(server.hosts);
    // runs until interrupted
    await new Promise<void>((resolve) => {
      if (ctx.signal.aborted) resolve();
      else ctx.signal.addEventListener('abort', () => resolve(), { once: true });
    });
    await server.close();
  },
  print: () => undefined,
};
