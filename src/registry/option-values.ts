import { PgkeepError } from '../errors.js';
import { parseDuration } from '../retention/duration.js';

/** Parsers of option values shared by the commands' specs; each bad value is one USAGE line naming the option. */

/** A repeatable option: every value, in order. */
export const collect = (value: string, previous: string[] = []): string[] => [...previous, value];

export const positiveInt =
  (what: string) =>
  (value: string): number => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < 1) throw new PgkeepError('USAGE', `${what} must be a whole number of at least 1 (got "${value}")`);
    return n;
  };

/** A retention count: 0 switches the rule off. */
export const count =
  (what: string) =>
  (value: string): number => {
    const n = Number(value);
    if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new PgkeepError('USAGE', `${what} must be a whole number, 0 to switch the rule off (got "${value}")`);
    return n;
  };

export const duration =
  (what: string) =>
  (value: string): string =>
    parseDuration(value, what).text;

/** --keep-label LABEL=DURATION or LABEL=forever (repeatable). */
export const labelPeriod = (value: string, previous: Record<string, string> = {}): Record<string, string> => {
  const match = /^([A-Za-z0-9._-]{1,100})=(.+)$/.exec(value);
  if (!match) throw new PgkeepError('USAGE', `--keep-label takes LABEL=DURATION or LABEL=forever, e.g. before-migration=90d (got "${value}")`);
  return { ...previous, [match[1]!]: match[2] === 'forever' ? 'forever' : parseDuration(match[2]!, `--keep-label ${match[1]}`).text };
};
