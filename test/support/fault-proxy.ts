/**
 * A TCP proxy that puts a bad network between pgkeep and a server (s3rver), for
 * tests. Plain node:net: it forwards bytes both ways and, as its mode says,
 *
 * - delayMs: holds every chunk this long before forwarding it (order kept);
 * - stallAfterBytes: once this many bytes went through (both ways, all
 *   connections together), forwards nothing more and keeps every socket open,
 *   as a stalled link or a hung middlebox does;
 * - resetProbability: each new connection is, with this probability, reset
 *   (TCP RST to the client) after a random number of bytes below
 *   resetWithinBytes (both ways counted);
 * - closeProbability: the same, but closed cleanly (FIN) mid-response, after a
 *   random number of response bytes below closeWithinBytes.
 *
 * The mode can change at any time (set); it applies to new connections (and
 * to the stall, at once). Randomness is seeded, so a failing run repeats.
 */
import * as net from 'node:net';

export interface FaultMode {
  delayMs?: number;
  stallAfterBytes?: number;
  resetProbability?: number;
  resetWithinBytes?: number;
  closeProbability?: number;
  closeWithinBytes?: number;
}

export interface FaultStats {
  connections: number;
  resets: number;
  closes: number;
  /** Bytes forwarded, both ways. */
  bytes: number;
  /** True once the stall swallowed a byte. */
  stalled: boolean;
}

export interface FaultProxy {
  /** http://127.0.0.1:PORT */
  endpoint: string;
  port: number;
  set(mode: FaultMode): void;
  stats(): FaultStats;
  resetStats(): void;
  /** Destroys every open connection (both sides). */
  dropAll(): void;
  close(): Promise<void>;
}

/** mulberry32: a small seeded generator, so a run's faults can be repeated. */
function seeded(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export async function startFaultProxy(target: { host: string; port: number }, initial: FaultMode = {}, seed = 22): Promise<FaultProxy> {
  let mode: FaultMode = { ...initial };
  const random = seeded(seed);
  const stats: FaultStats = { connections: 0, resets: 0, closes: 0, bytes: 0, stalled: false };
  const open = new Set<net.Socket>();

  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    stats.connections++;
    const upstream = net.connect(target.port, target.host);
    open.add(client);
    open.add(upstream);
    const forget = () => {
      open.delete(client);
      open.delete(upstream);
    };
    client.on('close', forget);
    upstream.on('close', forget);
    const m = mode;
    const resetAt = m.resetProbability && random() < m.resetProbability ? Math.floor(random() * (m.resetWithinBytes ?? 1 << 20)) : undefined;
    const closeAt = resetAt === undefined && m.closeProbability && random() < m.closeProbability ? Math.floor(random() * (m.closeWithinBytes ?? 1 << 20)) : undefined;
    let seen = 0;
    let responseBytes = 0;
    let cut = false;

    const cutOff = (how: 'reset' | 'close') => {
      if (cut) return;
      cut = true;
      if (how === 'reset') {
        stats.resets++;
        client.resetAndDestroy();
      } else {
        stats.closes++;
        client.end();
      }
      upstream.destroy();
    };

    const pipe = (from: net.Socket, to: net.Socket, response: boolean) => {
      let chain = Promise.resolve();
      from.on('data', (chunk: Buffer) => {
        if (cut) return;
        const stallAt = mode.stallAfterBytes;
        if (stallAt !== undefined && stats.bytes + chunk.length > stallAt) {
          // forward what fits below the limit, swallow the rest, keep the sockets open
          const fits = Math.max(0, stallAt - stats.bytes);
          if (fits < chunk.length) stats.stalled = true;
          chunk = chunk.subarray(0, fits);
          if (chunk.length === 0) return;
        }
        seen += chunk.length;
        if (response) responseBytes += chunk.length;
        if (resetAt !== undefined && seen >= resetAt) {
          const keep = chunk.length - (seen - resetAt);
          if (keep > 0) to.write(chunk.subarray(0, keep));
          return cutOff('reset');
        }
        if (closeAt !== undefined && response && responseBytes >= closeAt) {
          const keep = chunk.length - (responseBytes - closeAt);
          if (keep > 0) to.write(chunk.subarray(0, keep));
          return cutOff('close');
        }
        stats.bytes += chunk.length;
        const delay = mode.delayMs;
        if (delay) {
          chain = chain.then(() => new Promise((resolve) => setTimeout(resolve, delay))).then(() => {
            if (!cut && !to.destroyed) to.write(chunk);
          });
        } else if (!to.destroyed) {
          to.write(chunk);
        }
      });
      from.on('end', () => {
        if (cut || (mode.stallAfterBytes !== undefined && stats.bytes >= mode.stallAfterBytes)) return;
        void chain.then(() => to.end());
      });
      from.on('error', () => to.destroy());
      from.on('close', () => {
        if (!cut && !stats.stalled) to.destroy();
      });
    };
    upstream.once('connect', () => {
      pipe(client, upstream, false);
      pipe(upstream, client, true);
      client.resume();
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    endpoint: `http://127.0.0.1:${port}`,
    port,
    set(next) {
      mode = { ...next };
    },
    stats: () => ({ ...stats }),
    resetStats() {
      Object.assign(stats, { connections: 0, resets: 0, closes: 0, bytes: 0, stalled: false });
    },
    dropAll() {
      for (const socket of open) socket.destroy();
      open.clear();
    },
    async close() {
      for (const socket of open) socket.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
