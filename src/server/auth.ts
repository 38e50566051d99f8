import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';

/**
 * Compares a presented token with the configured one in constant time: both
 * are hashed first, so neither their contents nor their lengths leak through
 * timing.
 */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented).digest();
  const b = createHash('sha256').update(expected).digest();
  return timingSafeEqual(a, b);
}

/** The token of an `Authorization: Bearer <token>` header, if any. */
export function bearerToken(request: FastifyRequest): string | undefined {
  const header = request.headers.authorization;
  const match = header ? /^Bearer\s+(\S+)\s*$/i.exec(header) : null;
  return match?.[1];
}

/**
 * Route guards. `read`: needs the token when one is configured (without one
 * the server only listens on loopback). `write`: needs the token, and is
 * disabled (403) when none is configured: never open.
 */
export function guards(token: string | undefined) {
  const deny = (reply: FastifyReply) =>
    reply.code(401).header('www-authenticate', 'Bearer realm="pgkeep"').send({ error: { code: 'UNAUTHORIZED', message: 'missing or wrong bearer token: send Authorization: Bearer <token> (serve.token or PGKEEP_API_TOKEN)' } });
  const read = async (request: FastifyRequest, reply: FastifyReply) => {
    if (token === undefined) return;
    const presented = bearerToken(request);
    if (presented === undefined || !tokenMatches(presented, token)) return deny(reply);
  };
  const write = async (request: FastifyRequest, reply: FastifyReply) => {
    if (token === undefined) {
      return reply.code(403).send({ error: { code: 'API_DISABLED', message: 'state-changing endpoints are disabled: no API token is configured (set serve.token, serve.tokenFile or PGKEEP_API_TOKEN)' } });
    }
    return read(request, reply);
  };
  return { read, write, open: async () => undefined };
}
