import { createHash, randomBytes, timingSafeEqual } from 'node:crypto';

/** Compares a presented token with the configured one in constant time (hashing first makes the lengths equal). */
export function tokenMatches(presented: string, expected: string): boolean {
  const a = createHash('sha256').update(presented, 'utf8').digest();
  const b = createHash('sha256').update(expected, 'utf8').digest();
  return timingSafeEqual(a, b);
}

export interface Session {
  id: string;
  /** Sent back with every POST (hidden field or header): a cross-site form cannot know it. */
  csrf: string;
  expiresAt: number;
}

/**
 * Logged-in sessions, in memory: the cookie holds a random id, never the
 * token. Sessions end on logout, after `ttlMs`, or when the process restarts.
 */
export class SessionStore {
  private readonly sessions = new Map<string, Session>();

  constructor(private readonly ttlMs = 12 * 3600_000) {}

  create(now = Date.now()): Session {
    this.sweep(now);
    const session = { id: randomBytes(32).toString('base64url'), csrf: randomBytes(32).toString('base64url'), expiresAt: now + this.ttlMs };
    this.sessions.set(session.id, session);
    return session;
  }

  get(id: string | undefined, now = Date.now()): Session | undefined {
    if (!id) return undefined;
    const session = this.sessions.get(id);
    if (!session || session.expiresAt <= now) return undefined;
    return session;
  }

  delete(id: string | undefined): void {
    if (id) this.sessions.delete(id);
  }

  private sweep(now: number): void {
    for (const [id, s] of this.sessions) if (s.expiresAt <= now) this.sessions.delete(id);
  }
}

/** A Cookie header's values by name (first wins; values are not decoded beyond %XX). */
export function parseCookies(header: string | undefined): Map<string, string> {
  const cookies = new Map<string, string>();
  for (const part of (header ?? '').split(';')) {
    const eq = part.indexOf('=');
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    if (!name || cookies.has(name)) continue;
    try {
      cookies.set(name, decodeURIComponent(part.slice(eq + 1).trim()));
    } catch {
      // a malformed value is no session
    }
  }
  return cookies;
}
