import { PgkeepError } from '../errors.js';

/** A span of time as the user wrote it ("14d") and in milliseconds. */
export interface Duration {
  readonly text: string;
  readonly ms: number;
}

const UNIT_MS: Record<string, number> = {
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 7 * 86_400_000,
};

/** "14d", "26h", "90m", "2w", "1d12h"; units s, m, h, d, w (months and years vary in length: use days). */
export const DURATION_PATTERN = /^(?:\d+(?:\.\d+)?[smhdw])+$/;

/**
 * Parses a duration; `what` names the flag or key for the error message.
 * "0" (or "0d") is a zero duration, which callers treat as "rule off".
 */
export function parseDuration(text: string, what: string): Duration {
  const trimmed = text.trim();
  if (trimmed === '0') return { text: '0', ms: 0 };
  if (!DURATION_PATTERN.test(trimmed)) {
    throw new PgkeepError('USAGE', `${what}: "${text}" is not a duration: write a number and a unit, e.g. 14d, 26h, 90m, 2w or 1d12h (s, m, h, d, w)`);
  }
  let ms = 0;
  for (const [, amount, unit] of trimmed.matchAll(/(\d+(?:\.\d+)?)([smhdw])/g)) ms += Number(amount) * UNIT_MS[unit!]!;
  return { text: trimmed, ms: Math.round(ms) };
}
