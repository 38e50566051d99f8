import { PgkeepError } from '../errors.js';

/** Calendar buckets of one instant in one time zone, the keys of the grandfather-father-son rules. */
export interface CalendarBuckets {
  /** 2026-11-20T14:00+01:00: the offset keeps the two 01:00 hours of a DST fall-back apart. */
  hour: string;
  /** 2026-11-20 */
  day: string;
  /** 2026-W47 (ISO 8601 week: Monday to Sunday, week-year of its Thursday) */
  week: string;
  /** 2026-11 */
  month: string;
  /** 2026 */
  year: string;
}

const formatters = new Map<string, Intl.DateTimeFormat>();

function formatterFor(timeZone: string): Intl.DateTimeFormat {
  let formatter = formatters.get(timeZone);
  if (!formatter) {
    formatter = new Intl.DateTimeFormat('en-US', {
      timeZone,
      hourCycle: 'h23',
      year: 'numeric',
      month: '2-digit',
      day: '2-digit',
      hour: '2-digit',
      minute: '2-digit',
      second: '2-digit',
    });
    formatters.set(timeZone, formatter);
  }
  return formatter;
}

/** Checks an IANA time zone name ("Europe/Berlin", "UTC"); `what` names the key or flag. */
export function validateTimeZone(timeZone: string, what: string): string {
  try {
    formatterFor(timeZone);
    return timeZone;
  } catch (error) {
    throw new PgkeepError('USAGE', `${what}: "${timeZone}" is not a time zone: use an IANA name such as UTC, Europe/Berlin or America/New_York`, { cause: error });
  }
}

/** Wall-clock fields of `at` in `timeZone`. */
export function localTime(at: Date, timeZone: string): { year: number; month: number; day: number; hour: number; minute: number; second: number; offsetMinutes: number } {
  const fields: Record<string, number> = {};
  for (const part of formatterFor(timeZone).formatToParts(at)) {
    if (part.type !== 'literal') fields[part.type] = Number(part.value);
  }
  const { year, month, day, hour, minute, second } = fields as Record<'year' | 'month' | 'day' | 'hour' | 'minute' | 'second', number>;
  const wholeSeconds = Math.floor(at.getTime() / 1000) * 1000;
  const offsetMinutes = Math.round((Date.UTC(year, month - 1, day, hour, minute, second) - wholeSeconds) / 60_000);
  return { year, month, day, hour, minute, second, offsetMinutes };
}

const pad = (n: number, width = 2) => String(n).padStart(width, '0');

function formatOffset(minutes: number): string {
  const sign = minutes < 0 ? '-' : '+';
  const abs = Math.abs(minutes);
  return `${sign}${pad(Math.floor(abs / 60))}:${pad(abs % 60)}`;
}

/** The ISO 8601 week of a calendar date: [week-year, week]. */
export function isoWeek(year: number, month: number, day: number): [number, number] {
  const date = Date.UTC(year, month - 1, day);
  const weekday = (new Date(date).getUTCDay() + 6) % 7; // Monday 0 .. Sunday 6
  const thursday = date + (3 - weekday) * 86_400_000;
  const weekYear = new Date(thursday).getUTCFullYear();
  return [weekYear, 1 + Math.floor((thursday - Date.UTC(weekYear, 0, 1)) / (7 * 86_400_000))];
}

export function calendarBuckets(at: Date, timeZone: string): CalendarBuckets {
  const t = localTime(at, timeZone);
  const [weekYear, week] = isoWeek(t.year, t.month, t.day);
  const day = `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)}`;
  return {
    hour: `${day}T${pad(t.hour)}:00${formatOffset(t.offsetMinutes)}`,
    day,
    week: `${pad(weekYear, 4)}-W${pad(week)}`,
    month: `${pad(t.year, 4)}-${pad(t.month)}`,
    year: pad(t.year, 4),
  };
}

/** "2026-12-21 14:00" in `timeZone`: for messages about a moment. */
export function formatLocalMinute(at: Date, timeZone: string): string {
  const t = localTime(at, timeZone);
  return `${pad(t.year, 4)}-${pad(t.month)}-${pad(t.day)} ${pad(t.hour)}:${pad(t.minute)}`;
}
