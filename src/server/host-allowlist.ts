import type { FastifyInstance } from 'fastify';
import { BlockList, isIP } from 'node:net';
import { PgkeepError } from '../errors.js';

/**
 * The `Host` check of pgkeep's HTTP servers, against DNS rebinding: a web page
 * the operator opens can point its own name at 127.0.0.1 and then read a
 * loopback-only server from inside the browser. The browser still sends the
 * attacker's name as `Host`, so a server that answers only the names it knows
 * closes that door. Only a DNS name can be rebound: an IP literal (or
 * `localhost`) in `Host` means the page's own origin is that address, which no
 * other site can script.
 *
 * Allowed without configuration:
 *  - `localhost`, 127.0.0.0/8 and [::1], on the listening port or without a
 *    port (a browser omits only :80/:443, i.e. a proxy of this machine in front);
 *  - the listen address as given (`0.0.0.0:9187`, `10.0.0.5:9187`, a name);
 *  - the IP address the request arrived on, on the listening port or without
 *    one: the pod IP of a Kubernetes probe, the LAN IP of a 0.0.0.0 bind.
 * Plus the configured patterns (`serve.allowedHosts`, `--allowed-host`).
 */

/** A parsed `Host` (or one `X-Forwarded-Host` value): lower-case name or canonical IP, optional port. */
export interface HostValue {
  /** A DNS name without its trailing dot, or an IP address (IPv6 without brackets). */
  name: string;
  /** 4 or 6 for an IP literal, 0 for a name. */
  ip: 0 | 4 | 6;
  port: number | undefined;
}

/** One entry of `serve.allowedHosts`. */
export type HostPattern =
  | { kind: 'any' }
  | { kind: 'name'; name: string; port: number | undefined }
  | { kind: 'suffix'; suffix: string; port: number | undefined }
  | { kind: 'ip'; list: BlockList; port: number | undefined };

const LABEL = /^[a-z0-9_](?:[a-z0-9_-]*[a-z0-9_])?$/;

function parsePort(text: string | undefined): number | undefined | null {
  if (text === undefined) return undefined;
  const port = Number(text);
  return /^\d{1,5}$/.test(text) && port >= 1 && port <= 65535 ? port : null;
}

function validName(name: string): boolean {
  return name.length > 0 && name.length <= 253 && name.split('.').every((label) => LABEL.test(label));
}

/** IPv6 in one spelling (`0:0::1` and `::1` are the same address); a zone id is dropped. */
function canonicalIPv6(address: string): string {
  return new URL(`http://[${address.replace(/%.*$/, '')}]/`).hostname.slice(1, -1);
}

/** `::ffff:10.0.0.5` (an IPv4 client of a dual-stack socket) is 10.0.0.5. */
function plainAddress(address: string): { name: string; ip: 4 | 6 } | undefined {
  const bare = address.replace(/%.*$/, '');
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(bare);
  if (mapped && isIP(mapped[1]!) === 4) return { name: mapped[1]!, ip: 4 };
  const ip = isIP(bare);
  if (ip === 4) return { name: bare, ip: 4 };
  if (ip === 6) return { name: canonicalIPv6(bare), ip: 6 };
  return undefined;
}

/**
 * Parses a `Host` header value: `name`, `name:port`, `1.2.3.4:port`, `[v6]`,
 * `[v6]:port`. Undefined when malformed (a bare IPv6 address is: it must be
 * bracketed in a URL).
 */
export function parseHostValue(value: string): HostValue | undefined {
  const text = value.trim().toLowerCase();
  const v6 = /^\[([0-9a-f:.]+)\](?::([^:]*))?$/.exec(text);
  if (v6) {
    const port = parsePort(v6[2]);
    if (port === null || isIP(v6[1]!) !== 6) return undefined;
    return { name: canonicalIPv6(v6[1]!), ip: 6, port };
  }
  const match = /^([a-z0-9_.-]+)(?::([^:]*))?$/.exec(text);
  if (!match) return undefined;
  const port = parsePort(match[2]);
  if (port === null) return undefined;
  const name = match[1]!.replace(/\.$/, '');
  if (isIP(name) === 4) return { name, ip: 4, port };
  return validName(name) ? { name, ip: 0, port } : undefined;
}

/**
 * Parses one `serve.allowedHosts` entry: `backup.example.com` (any port),
 * `backup.example.com:8443` (that port only), `*.example.com` (its
 * subdomains), an IP address (`10.0.0.5`, `[fd00::5]:9187`, `fd00::5`), a CIDR
 * range (`10.0.0.0/8`, `fd00::/8`), or `*` (any Host: the check is off).
 * Returns the reason as a string when the entry is not one of these.
 */
export function parseHostPattern(entry: string): HostPattern | string {
  const text = entry.trim().toLowerCase();
  const expected = `"${entry}" is not a host name, name:port, *.domain, IP address or CIDR range`;
  if (text === '*') return { kind: 'any' };
  const cidr = /^\[?([0-9a-f:.]+?)\]?\/(\d{1,3})$/.exec(text);
  if (cidr) {
    const ip = isIP(cidr[1]!);
    const bits = Number(cidr[2]);
    if (ip === 0 || bits > (ip === 4 ? 32 : 128)) return expected;
    const list = new BlockList();
    list.addSubnet(cidr[1]!, bits, ip === 4 ? 'ipv4' : 'ipv6');
    return { kind: 'ip', list, port: undefined };
  }
  // a bare IPv6 address cannot carry a port, so it needs no brackets here
  const host = isIP(text) === 6 ? { name: canonicalIPv6(text), ip: 6 as const, port: undefined } : text.startsWith('*.') ? undefined : parseHostValue(text);
  if (host && host.ip !== 0) {
    const list = new BlockList();
    list.addAddress(host.name, host.ip === 4 ? 'ipv4' : 'ipv6');
    return { kind: 'ip', list, port: host.port };
  }
  if (host) return { kind: 'name', name: host.name, port: host.port };
  if (text.startsWith('*.')) {
    const suffix = parseHostValue(text.slice(2));
    if (!suffix || suffix.ip !== 0) return expected;
    return { kind: 'suffix', suffix: suffix.name, port: suffix.port };
  }
  return expected;
}

/**
 * Parses one `serve.trustProxy` entry: an IP address or CIDR range of a
 * reverse proxy whose `X-Forwarded-Host` is read. Returns the reason as a
 * string when it is not one.
 */
export function parseProxyAddress(entry: string): BlockList | string {
  const text = entry.trim().toLowerCase();
  const cidr = /^\[?([0-9a-f:.]+?)\]?(?:\/(\d{1,3}))?$/.exec(text);
  const ip = cidr ? isIP(cidr[1]!) : 0;
  const bits = cidr?.[2] === undefined ? undefined : Number(cidr[2]);
  if (ip === 0 || (bits !== undefined && bits > (ip === 4 ? 32 : 128))) return `"${entry}" is not an IP address or CIDR range (a proxy is trusted by its address)`;
  const list = new BlockList();
  if (bits === undefined) list.addAddress(cidr![1]!, ip === 4 ? 'ipv4' : 'ipv6');
  else list.addSubnet(cidr![1]!, bits, ip === 4 ? 'ipv4' : 'ipv6');
  return list;
}

function patternMatches(pattern: HostPattern, host: HostValue): boolean {
  const portOk = (port: number | undefined) => port === undefined || port === host.port;
  switch (pattern.kind) {
    case 'any':
      return true;
    case 'name':
      return host.ip === 0 && host.name === pattern.name && portOk(pattern.port);
    case 'suffix':
      return host.ip === 0 && host.name.endsWith(`.${pattern.suffix}`) && portOk(pattern.port);
    case 'ip':
      return host.ip !== 0 && pattern.list.check(host.name, host.ip === 4 ? 'ipv4' : 'ipv6') && portOk(pattern.port);
  }
}

const LOOPBACK = new BlockList();
LOOPBACK.addSubnet('127.0.0.0', 8, 'ipv4');
LOOPBACK.addAddress('::1', 'ipv6');

/** What the server knows about the connection a request came on. */
export interface RequestOrigin {
  /** The `Host` header (undefined when absent). */
  host: string | undefined;
  /** The `X-Forwarded-Host` header, as sent (several values may be comma-separated). */
  forwardedHost: string | undefined;
  /** The server's own address and port of this connection. */
  localAddress: string | undefined;
  localPort: number | undefined;
  /** The peer (a proxy, or the client itself). */
  remoteAddress: string | undefined;
}

export type HostVerdict = { ok: true } | { ok: false; status: 400 | 421; reason: string };

export interface HostAllowlistOptions {
  /** The listen address as configured (`127.0.0.1`, `0.0.0.0`, a name) and its port (0: any free one). */
  listen: { host: string; port: number };
  /** `serve.allowedHosts` and `--allowed-host`. */
  allowedHosts?: readonly string[] | undefined;
  /** `serve.trustProxy` and `--trust-proxy`: peers whose X-Forwarded-Host is read (and checked). */
  trustProxy?: readonly string[] | undefined;
  /** Where to find the options in a message ("serve.allowedHosts or --allowed-host"). */
  configHint?: string | undefined;
}

/** Shown `Host` values are cut: the refusal is one line, whatever a client sends. */
const shown = (value: string) => JSON.stringify(value.length > 100 ? `${value.slice(0, 100)}…` : value);

/** The allowlist of one server: built-in loopback names, its own addresses, the configured patterns. */
export class HostAllowlist {
  readonly #listen: { host: HostValue | undefined; port: number };
  readonly #patterns: HostPattern[];
  readonly #proxies: BlockList[];
  readonly #hint: string;
  readonly allowsAny: boolean;

  constructor(readonly options: HostAllowlistOptions) {
    const bind = parseHostValue(options.listen.host.includes(':') && !options.listen.host.startsWith('[') ? `[${options.listen.host}]` : options.listen.host);
    this.#listen = { host: bind, port: options.listen.port };
    this.#hint = options.configHint ?? 'serve.allowedHosts';
    this.#patterns = (options.allowedHosts ?? []).map((entry) => {
      const pattern = parseHostPattern(entry);
      if (typeof pattern === 'string') throw new TypeError(pattern);
      return pattern;
    });
    this.#proxies = (options.trustProxy ?? []).map((entry) => {
      const list = parseProxyAddress(entry);
      if (typeof list === 'string') throw new TypeError(list);
      return list;
    });
    this.allowsAny = this.#patterns.some((p) => p.kind === 'any');
  }

  /** Whether a Host (or forwarded host) value names this server, for a connection on `local`. */
  allows(host: HostValue, local: { address: string | undefined; port: number | undefined }): boolean {
    const port = local.port ?? this.#listen.port;
    const ownPort = host.port === undefined || host.port === port;
    if (ownPort && host.ip === 0 && host.name === 'localhost') return true;
    if (ownPort && host.ip !== 0 && LOOPBACK.check(host.name, host.ip === 4 ? 'ipv4' : 'ipv6')) return true;
    const bind = this.#listen.host;
    if (bind && host.port === port && host.name === bind.name && host.ip === bind.ip) return true;
    const arrived = local.address === undefined ? undefined : plainAddress(local.address);
    if (ownPort && arrived && host.ip === arrived.ip && host.name === arrived.name) return true;
    return this.#patterns.some((pattern) => patternMatches(pattern, host));
  }

  /**
   * Fastify's `trustProxy` option: with trusted proxies, `request.host` is
   * their X-Forwarded-Host (which this check has allowed), so the dashboard
   * compares a form's Origin with the name the browser used.
   */
  get fastifyTrustProxy(): false | ((address: string) => boolean) {
    return this.#proxies.length === 0 ? false : (address: string) => this.trusts(address);
  }

  /** Whether `X-Forwarded-Host` from this peer is read. */
  trusts(remoteAddress: string | undefined): boolean {
    const peer = remoteAddress === undefined ? undefined : plainAddress(remoteAddress);
    return peer !== undefined && this.#proxies.some((list) => list.check(peer.name, peer.ip === 4 ? 'ipv4' : 'ipv6'));
  }

  /** The verdict on one request: the Host first; then, from a trusted proxy, every X-Forwarded-Host value. */
  check(request: RequestOrigin): HostVerdict {
    const local = { address: request.localAddress, port: request.localPort };
    if (request.host === undefined || request.host.trim() === '') return { ok: false, status: 400, reason: 'the request has no Host header' };
    const host = parseHostValue(request.host);
    if (!host) return { ok: false, status: 400, reason: `malformed Host header ${shown(request.host)}` };
    if (!this.allows(host, local)) {
      const port = local.port ?? this.#listen.port;
      if (this.allows({ ...host, port }, local)) return { ok: false, status: 421, reason: `Host ${shown(request.host)} names port ${host.port}, but this server listens on ${port}` };
      return { ok: false, status: 421, reason: `Host ${shown(request.host)} is not a name of this server (DNS rebinding protection); if it is yours, add it to ${this.#hint}` };
    }
    if (request.forwardedHost !== undefined && this.trusts(request.remoteAddress)) {
      for (const value of request.forwardedHost.split(',')) {
        const forwarded = parseHostValue(value);
        if (!forwarded) return { ok: false, status: 400, reason: `malformed X-Forwarded-Host ${shown(value.trim())}` };
        if (!this.allows(forwarded, local)) {
          return { ok: false, status: 421, reason: `X-Forwarded-Host ${shown(value.trim())} is not a name of this server (DNS rebinding protection); if it is yours, add it to ${this.#hint}` };
        }
      }
    }
    return { ok: true };
  }

  /** One line for the start-up log: which Host values are answered. */
  describe(port: number): string {
    if (this.allowsAny) return `Host check off: ${this.#hint} holds "*", so any Host is answered (no DNS rebinding protection)`;
    const bind = this.#listen.host;
    const loopbackBind = bind !== undefined && (bind.name === 'localhost' || (bind.ip !== 0 && LOOPBACK.check(bind.name, bind.ip === 4 ? 'ipv4' : 'ipv6')));
    const parts = [`localhost, 127.0.0.0/8 and [::1] on port ${port} (or without a port)`];
    if (!loopbackBind && bind) parts.push(`${bind.ip === 6 ? `[${bind.name}]` : bind.name}:${port} and the IP address a request arrives on`);
    const configured = this.options.allowedHosts ?? [];
    if (configured.length > 0) parts.push(`the configured ${configured.join(', ')}`);
    const proxies = this.options.trustProxy ?? [];
    const forwarded = proxies.length > 0 ? `X-Forwarded-Host is checked too from ${proxies.join(', ')} and ignored from anyone else` : 'X-Forwarded-Host is ignored (no trusted proxy)';
    return `Host check: answering ${parts.join('; ')}; ${forwarded}`;
  }
}

/** At most this many distinct refusals are logged: a scanner must not flood the log. */
const LOGGED_REFUSALS = 20;

/**
 * Registers the Host check as an onRequest hook. Register it first, on the
 * root instance: it then runs before every other hook, every route (the
 * dashboard, its assets, the API, the probes) and the not-found handler, and
 * before any body is read. A refusal is one line of plain text (400 without a
 * usable Host, 421 Misdirected Request for a foreign one); nothing else runs.
 */
export function registerHostCheck(app: FastifyInstance, allowlist: HostAllowlist, onRefuse?: (line: string) => void): void {
  const logged = new Set<string>();
  app.addHook('onRequest', async (request, reply) => {
    const socket = request.raw.socket as { localAddress?: string; localPort?: number; remoteAddress?: string } | undefined;
    const forwarded = request.headers['x-forwarded-host'];
    const verdict = allowlist.check({
      host: request.headers.host,
      forwardedHost: Array.isArray(forwarded) ? forwarded.join(',') : forwarded,
      localAddress: socket?.localAddress,
      localPort: socket?.localPort,
      remoteAddress: socket?.remoteAddress,
    });
    if (verdict.ok) return;
    if (onRefuse && logged.size < LOGGED_REFUSALS && !logged.has(verdict.reason)) {
      logged.add(verdict.reason);
      const last = logged.size === LOGGED_REFUSALS ? ' (further refusals are not logged)' : '';
      onRefuse(`refused a request from ${socket?.remoteAddress ?? 'an unknown peer'}: ${verdict.reason}${last}`);
    }
    return reply
      .code(verdict.status)
      .headers({ 'content-type': 'text/plain; charset=utf-8', 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' })
      .send(`pgkeep: refused: ${verdict.reason}\n`);
  });
}

/** --allowed-host (repeatable), checked as serve.allowedHosts entries are. */
export function allowedHostOption(value: string, previous: string[] = []): string[] {
  const parsed = parseHostPattern(value);
  if (typeof parsed === 'string') throw new PgkeepError('USAGE', `--allowed-host: ${parsed}`);
  return [...previous, value];
}

/** --trust-proxy (repeatable), checked as serve.trustProxy entries are. */
export function trustedProxyOption(value: string, previous: string[] = []): string[] {
  const parsed = parseProxyAddress(value);
  if (typeof parsed === 'string') throw new PgkeepError('USAGE', `--trust-proxy: ${parsed}`);
  return [...previous, value];
}
