import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { calendarBuckets, isoWeek, validateTimeZone } from '../../src/retention/calendar.js';
import { parseDuration } from '../../src/retention/duration.js';
import { evaluateRetention, hasRetentionRules, type RetentionBackup, type RetentionDecision, type RetentionPolicy } from '../../src/retention/retention-policy.js';

const HOUR = 3_600_000;
const DAY = 24 * HOUR;

/** A backup at `iso`; its id is the UTC timestamp, like real ids. */
function backup(iso: string, extra: Partial<RetentionBackup> = {}): RetentionBackup {
  const time = new Date(iso);
  const id = time.toISOString().replace(/[-:]/g, '').replace(/\.\d{3}Z$/, 'Z');
  return { id, time, labels: [], pinned: false, ...extra };
}

/** One backup a day at 02:00 UTC for `days` days ending at `last`. */
function daily(last: string, days: number): RetentionBackup[] {
  const end = Date.parse(last);
  return Array.from({ length: days }, (_, i) => backup(new Date(end - i * DAY).toISOString()));
}

const policy = (rules: Partial<RetentionPolicy>): RetentionPolicy => ({ timeZone: 'UTC', ...rules });
const kept = (decisions: RetentionDecision[]) => decisions.filter((d) => d.keep).map((d) => d.id);
const byId = (decisions: RetentionDecision[]) => new Map(decisions.map((d) => [d.id, d]));

describe('durations', () => {
  it('parses units and combinations', () => {
    assert.equal(parseDuration('14d', 'x').ms, 14 * DAY);
    assert.equal(parseDuration('26h', 'x').ms, 26 * HOUR);
    assert.equal(parseDuration('90m', 'x').ms, 90 * 60_000);
    assert.equal(parseDuration('2w', 'x').ms, 14 * DAY);
    assert.equal(parseDuration('1d12h', 'x').ms, 36 * HOUR);
    assert.equal(parseDuration('0', 'x').ms, 0);
    assert.equal(parseDuration('14d', 'x').text, '14d');
  });

  it('rejects what is not a duration, naming the flag', () => {
    for (const text of ['14', 'd', '14 days', '1y', '-1d', '']) {
      assert.throws(() => parseDuration(text, '--keep-within'), (e: unknown) => e instanceof PgkeepError && e.code === 'USAGE' && e.message.startsWith('--keep-within: '), text);
    }
  });
});

describe('calendar buckets', () => {
  it('ISO weeks at year edges', () => {
    assert.deepEqual(isoWeek(2026, 1, 1), [2026, 1]); // a Thursday
    assert.deepEqual(isoWeek(2027, 1, 1), [2026, 53]); // a Friday: last week of 2026
    assert.deepEqual(isoWeek(2024, 12, 30), [2025, 1]); // a Monday: first week of 2025
    assert.deepEqual(isoWeek(2026, 11, 16), [2026, 47]);
    assert.deepEqual(isoWeek(2026, 11, 15), [2026, 46]); // Sunday ends week 46
  });

  it('buckets are computed in the time zone', () => {
    const at = new Date('2026-11-20T23:30:00Z');
    assert.deepEqual(calendarBuckets(at, 'UTC'), { hour: '2026-11-20T23:00+00:00', day: '2026-11-20', week: '2026-W47', month: '2026-11', year: '2026' });
    // already Saturday the 21st in Berlin
    assert.equal(calendarBuckets(at, 'Europe/Berlin').day, '2026-11-21');
    // New Year in Tokyo while it is still December 31 in UTC
    const newYear = new Date('2026-12-31T15:30:00Z');
    assert.equal(calendarBuckets(newYear, 'UTC').year, '2026');
    assert.equal(calendarBuckets(newYear, 'Asia/Tokyo').year, '2027');
    assert.equal(calendarBuckets(newYear, 'Asia/Tokyo').month, '2027-01');
    // half-hour zones keep their local hour
    assert.equal(calendarBuckets(new Date('2026-06-01T00:45:00Z'), 'Asia/Kolkata').hour, '2026-06-01T06:00+05:30');
  });

  it('the repeated hour of a DST fall-back is two buckets; the missing hour of spring-forward is none', () => {
    // Europe/Berlin, 2026-10-25: 03:00 CEST becomes 02:00 CET (00:00-01:00Z is 02:xx CEST, 01:00-02:00Z is 02:xx CET)
    const first = calendarBuckets(new Date('2026-10-25T00:30:00Z'), 'Europe/Berlin');
    const second = calendarBuckets(new Date('2026-10-25T01:30:00Z'), 'Europe/Berlin');
    assert.equal(first.hour, '2026-10-25T02:00+02:00');
    assert.equal(second.hour, '2026-10-25T02:00+01:00');
    assert.equal(first.day, second.day);
    // 2026-03-29: 02:00 CET jumps to 03:00 CEST
    assert.equal(calendarBuckets(new Date('2026-03-29T00:59:59Z'), 'Europe/Berlin').hour, '2026-03-29T01:00+01:00');
    assert.equal(calendarBuckets(new Date('2026-03-29T01:00:00Z'), 'Europe/Berlin').hour, '2026-03-29T03:00+02:00');
  });

  it('unknown time zones are refused', () => {
    assert.equal(validateTimeZone('America/New_York', 'x'), 'America/New_York');
    assert.throws(() => validateTimeZone('Mars/Olympus', '--time-zone'), (e: unknown) => e instanceof PgkeepError && e.code === 'USAGE' && /--time-zone: "Mars\/Olympus" is not a time zone/.test(e.message));
  });
});

describe('evaluateRetention', () => {
  const now = new Date('2026-11-21T12:00:00Z');

  it('an empty repository gives an empty plan', () => {
    assert.deepEqual(evaluateRetention([], policy({ keepLast: 3 }), now), []);
  });

  it('keep-last keeps the N newest, and says so', () => {
    const backups = daily('2026-11-21T02:00:00Z', 5);
    const result = evaluateRetention(backups, policy({ keepLast: 3 }), now);
    assert.deepEqual(kept(result), backups.slice(0, 3).map((b) => b.id));
    assert.deepEqual(result[0]!.reasons, ['newest successful backup', 'last 3']);
    assert.deepEqual(result[1]!.reasons, ['last 3']);
    assert.deepEqual(result[3]!.reasons, ['no rule keeps it']);
    assert.equal(result[4]!.keep, false);
  });

  it('the result does not depend on the input order, and is newest first', () => {
    const backups = daily('2026-11-21T02:00:00Z', 40);
    const rules = policy({ keepDaily: 7, keepWeekly: 4, keepMonthly: 2 });
    const shuffled = [...backups].sort((a, b) => (a.id.charCodeAt(10) * 7 + a.id.charCodeAt(7)) % 13 - (b.id.charCodeAt(10) * 7 + b.id.charCodeAt(7)) % 13);
    assert.deepEqual(evaluateRetention(shuffled, rules, now), evaluateRetention(backups, rules, now));
    assert.deepEqual(evaluateRetention(backups, rules, now).map((d) => d.id), backups.map((b) => b.id));
  });

  it('keep-daily keeps the newest backup of each of the N newest days that have backups', () => {
    const backups = [
      backup('2026-11-21T10:00:00Z'),
      backup('2026-11-21T02:00:00Z'),
      backup('2026-11-20T23:59:59Z'),
      backup('2026-11-20T00:00:00Z'),
      // a gap: no backups on the 19th and 18th
      backup('2026-11-17T05:00:00Z'),
      backup('2026-11-16T05:00:00Z'),
    ];
    const result = byId(evaluateRetention(backups, policy({ keepDaily: 3 }), now));
    assert.deepEqual(result.get(backups[0]!.id)!.reasons, ['newest successful backup', 'daily 2026-11-21']);
    assert.equal(result.get(backups[1]!.id)!.keep, false, 'the older of two on the same day');
    assert.deepEqual(result.get(backups[2]!.id)!.reasons, ['daily 2026-11-20'], 'the newest second of the day is that day');
    assert.equal(result.get(backups[3]!.id)!.keep, false);
    assert.deepEqual(result.get(backups[4]!.id)!.reasons, ['daily 2026-11-17'], 'empty days do not count');
    assert.equal(result.get(backups[5]!.id)!.keep, false);
  });

  it('the day edge follows the time zone', () => {
    // 23:30 UTC on the 20th is the 21st in Berlin, the same day as the 10:00 UTC backup
    const backups = [backup('2026-11-21T10:00:00Z'), backup('2026-11-20T23:30:00Z'), backup('2026-11-20T12:00:00Z')];
    const utc = byId(evaluateRetention(backups, policy({ keepDaily: 2 }), now));
    assert.deepEqual([...utc.values()].map((d) => d.keep), [true, true, false]);
    assert.deepEqual(utc.get(backups[1]!.id)!.reasons, ['daily 2026-11-20']);
    const berlin = byId(evaluateRetention(backups, policy({ keepDaily: 2, timeZone: 'Europe/Berlin' }), now));
    assert.deepEqual([...berlin.values()].map((d) => d.keep), [true, false, true]);
    assert.deepEqual(berlin.get(backups[2]!.id)!.reasons, ['daily 2026-11-20']);
  });

  it('hourly buckets across a DST fall-back keep one backup per real hour', () => {
    // every 20 minutes from 23:00Z to 03:00Z on 2026-10-25 (Berlin: 01:00 CEST .. 04:00 CET, 02:xx twice)
    const start = Date.parse('2026-10-24T23:00:00Z');
    const backups = Array.from({ length: 12 }, (_, i) => backup(new Date(start + i * 20 * 60_000).toISOString()));
    const result = evaluateRetention(backups, policy({ keepHourly: 24, timeZone: 'Europe/Berlin' }), new Date('2026-10-25T04:00:00Z'));
    const hours = result.filter((d) => d.keep).map((d) => d.reasons.find((r) => r.startsWith('hourly'))!);
    assert.deepEqual(hours, [
      'hourly 2026-10-25T03:00+01:00',
      'hourly 2026-10-25T02:00+01:00',
      'hourly 2026-10-25T02:00+02:00',
      'hourly 2026-10-25T01:00+02:00',
    ]);
    assert.equal(kept(result).length, 4);
  });

  it('a DST spring-forward day is one daily bucket of 23 hours', () => {
    const backups = [backup('2026-03-29T21:00:00Z'), backup('2026-03-29T01:30:00Z'), backup('2026-03-28T22:59:00Z'), backup('2026-03-28T23:00:00Z')];
    const result = byId(evaluateRetention(backups, policy({ keepDaily: 5, timeZone: 'Europe/Berlin' }), new Date('2026-03-30T00:00:00Z')));
    // 22:59Z on the 28th is 23:59 CET on the 28th; 23:00Z is 00:00 on the 29th
    assert.deepEqual(result.get(backups[0]!.id)!.reasons, ['newest successful backup', 'daily 2026-03-29']);
    assert.equal(result.get(backups[1]!.id)!.keep, false);
    assert.equal(result.get(backups[3]!.id)!.keep, false);
    assert.deepEqual(result.get(backups[2]!.id)!.reasons, ['daily 2026-03-28']);
  });

  it('weekly buckets are ISO weeks (Monday to Sunday), also across New Year', () => {
    const backups = [
      backup('2027-01-04T02:00:00Z'), // Monday, 2027-W01
      backup('2027-01-03T02:00:00Z'), // Sunday, 2026-W53
      backup('2026-12-28T02:00:00Z'), // Monday, 2026-W53
      backup('2026-12-27T02:00:00Z'), // Sunday, 2026-W52
    ];
    const result = evaluateRetention(backups, policy({ keepWeekly: 3 }), new Date('2027-01-05T00:00:00Z'));
    assert.deepEqual(result.map((d) => d.reasons.filter((r) => r.startsWith('weekly'))), [['weekly 2027-W01'], ['weekly 2026-W53'], [], ['weekly 2026-W52']]);
  });

  it('grandfather-father-son over three years of daily backups', () => {
    const end = '2026-11-21T02:00:00Z';
    const backups = daily(end, 3 * 366);
    const rules = policy({ keepDaily: 7, keepWeekly: 4, keepMonthly: 12, keepYearly: 3 });
    const result = evaluateRetention(backups, rules, new Date('2026-11-21T03:00:00Z'));
    const keptIds = new Set(kept(result));
    const reasonsOf = (prefix: string) => result.flatMap((d) => d.reasons.filter((r) => r.startsWith(prefix)));
    assert.equal(reasonsOf('daily').length, 7);
    assert.equal(reasonsOf('weekly').length, 4);
    assert.equal(reasonsOf('monthly').length, 12);
    assert.equal(reasonsOf('yearly').length, 3);
    assert.deepEqual(reasonsOf('yearly'), ['yearly 2026', 'yearly 2025', 'yearly 2024']);
    assert.deepEqual(reasonsOf('monthly').slice(0, 3), ['monthly 2026-11', 'monthly 2026-10', 'monthly 2026-09']);
    // the monthly keeper of October is its last day
    const october = result.find((d) => d.reasons.includes('monthly 2026-10'))!;
    assert.equal(october.id, '20261031T020000Z');
    // weekly: Sundays (the newest day of each ISO week), the current week from its newest backup (Saturday the 21st)
    assert.deepEqual(result.filter((d) => d.reasons.some((r) => r.startsWith('weekly'))).map((d) => d.id), ['20261121T020000Z', '20261115T020000Z', '20261108T020000Z', '20261101T020000Z']);
    // yearly 2024 is the last backup of 2024; the oldest backups go
    assert.ok(keptIds.has('20241231T020000Z'));
    assert.equal(result.at(-1)!.keep, false);
    // every kept backup says why, every deleted one too
    for (const d of result) assert.ok(d.reasons.length > 0);
    // overlaps collapse: no more than 7 + 4 + 12 + 3 kept
    assert.ok(keptIds.size <= 26 && keptIds.size >= 20, String(keptIds.size));
  });

  it('keep-within keeps everything younger, the edge included', () => {
    const backups = [backup('2026-11-21T11:00:00Z'), backup('2026-11-07T12:00:00Z'), backup('2026-11-07T11:59:59Z')];
    const result = evaluateRetention(backups, policy({ keepWithin: parseDuration('14d', 'x') }), now);
    assert.deepEqual(result.map((d) => d.reasons), [['newest successful backup', 'within 14d'], ['within 14d'], ['no rule keeps it']]);
  });

  it('max-age alone (BACKUP_RETENTION_DAYS) keeps what is younger and deletes what is older', () => {
    const backups = daily('2026-11-21T02:00:00Z', 10);
    const result = evaluateRetention(backups, policy({ maxAge: parseDuration('7d', 'x') }), now);
    // ages 0.4d .. 6.4d are within; 7.4d is not
    assert.deepEqual(result.map((d) => d.keep), [true, true, true, true, true, true, true, false, false, false]);
    assert.deepEqual(result[1]!.reasons, ['within max-age 7d']);
    assert.deepEqual(result[7]!.reasons, ['older than max-age 7d']);
  });

  it('max-age caps the other rules', () => {
    const backups = daily('2026-11-21T02:00:00Z', 60);
    const result = evaluateRetention(backups, policy({ keepMonthly: 3, keepLast: 2, maxAge: parseDuration('30d', 'x') }), now);
    assert.deepEqual(kept(result), ['20261121T020000Z', '20261120T020000Z', '20261031T020000Z']);
    const september = result.find((d) => d.id === '20260930T020000Z')!;
    assert.deepEqual(september.reasons, ['older than max-age 30d']);
  });

  it('all backups old: only the newest is kept', () => {
    const backups = daily('2024-01-10T02:00:00Z', 10);
    const result = evaluateRetention(backups, policy({ keepWithin: parseDuration('14d', 'x'), maxAge: parseDuration('30d', 'x') }), now);
    assert.deepEqual(kept(result), ['20240110T020000Z']);
    assert.deepEqual(result[0]!.reasons, ['newest successful backup']);
    assert.deepEqual(result[1]!.reasons, ['older than max-age 30d']);
  });

  it('pinned backups are kept whatever their age, max-age included', () => {
    const backups = daily('2026-11-21T02:00:00Z', 100).map((b, i) => (i === 90 ? { ...b, pinned: true } : b));
    const result = evaluateRetention(backups, policy({ keepLast: 1, maxAge: parseDuration('30d', 'x') }), now);
    assert.deepEqual(kept(result), [backups[0]!.id, backups[90]!.id]);
    assert.deepEqual(result[90]!.reasons, ['pinned']);
  });

  it('keep-labels keeps labelled backups until their period ends, and forever labels always', () => {
    const backups = [
      backup('2026-11-21T02:00:00Z'),
      backup('2026-10-01T02:00:00Z', { labels: ['before-migration'] }),
      backup('2026-06-01T02:00:00Z', { labels: ['before-migration'] }),
      backup('2025-01-01T02:00:00Z', { labels: ['release', 'x'] }),
      backup('2026-11-20T02:00:00Z', { labels: ['pre-restore'] }),
    ];
    const rules = policy({ keepLast: 1, maxAge: parseDuration('7d', 'x'), keepLabels: { 'before-migration': parseDuration('90d', 'x'), release: 'forever', 'pre-restore': parseDuration('0', 'x') } });
    const result = byId(evaluateRetention(backups, rules, now));
    assert.deepEqual(result.get(backups[1]!.id)!.reasons, ['label before-migration (until 2026-12-30 02:00)']);
    assert.deepEqual(result.get(backups[2]!.id)!.reasons, ['older than max-age 7d']);
    assert.deepEqual(result.get(backups[3]!.id)!.reasons, ['label release (forever)']);
    assert.deepEqual(result.get(backups[4]!.id)!.reasons, ['no rule keeps it'], 'a zero period keeps nothing');
    // the until-time is shown in the policy's zone
    const tokyo = byId(evaluateRetention(backups, { ...rules, timeZone: 'Asia/Tokyo' }, now));
    assert.deepEqual(tokyo.get(backups[1]!.id)!.reasons, ['label before-migration (until 2026-12-30 11:00)']);
  });

  it('backups with the same timestamp: one bucket keeper, chosen by id, whatever the order', () => {
    const a = backup('2026-11-20T02:00:00Z');
    const b = { ...backup('2026-11-20T02:00:00Z'), id: `${a.id}-manual` };
    const c = backup('2026-11-19T02:00:00Z');
    for (const input of [[a, b, c], [c, b, a]]) {
      const result = evaluateRetention(input, policy({ keepDaily: 2 }), now);
      assert.deepEqual(result.map((d) => [d.id, d.keep]), [[b.id, true], [a.id, false], [c.id, true]]);
    }
    const last = evaluateRetention([a, b], policy({ keepLast: 1 }), now);
    assert.deepEqual(kept(last), [b.id]);
  });

  it('backups from the future (clock skew) are within every period', () => {
    const future = backup('2026-11-22T12:00:00Z');
    const result = evaluateRetention([future, backup('2026-11-21T11:00:00Z')], policy({ keepWithin: parseDuration('1h', 'x') }), now);
    assert.deepEqual(result.map((d) => d.keep), [true, true]);
  });

  it('hooks add reasons to keep (the PITR seam)', () => {
    const backups = daily('2026-11-21T02:00:00Z', 5);
    const hook = () => new Map([[backups[3]!.id, 'needed by PITR window']]);
    const result = evaluateRetention(backups, policy({ keepLast: 1 }), now, [hook]);
    assert.deepEqual(kept(result), [backups[0]!.id, backups[3]!.id]);
    assert.deepEqual(result[3]!.reasons, ['needed by PITR window']);
  });

  it('hasRetentionRules: labels alone or zeros are not a policy', () => {
    assert.equal(hasRetentionRules(policy({})), false);
    assert.equal(hasRetentionRules(policy({ keepLast: 0, keepWithin: parseDuration('0', 'x'), keepLabels: { a: 'forever' } })), false);
    assert.equal(hasRetentionRules(policy({ keepYearly: 1 })), true);
    assert.equal(hasRetentionRules(policy({ maxAge: parseDuration('7d', 'x') })), true);
  });

  it('years of hourly backups stay fast', () => {
    const start = Date.parse('2024-01-01T00:00:00Z');
    const backups = Array.from({ length: 3 * 365 * 24 }, (_, i) => backup(new Date(start + i * HOUR).toISOString()));
    const began = performance.now();
    const result = evaluateRetention(backups, policy({ keepHourly: 48, keepDaily: 30, keepWeekly: 12, keepMonthly: 24, keepYearly: 5, timeZone: 'America/New_York' }), new Date(start + 3 * 365 * DAY));
    assert.ok(performance.now() - began < 5000);
    assert.equal(result.length, backups.length);
    assert.equal(result.filter((d) => d.reasons.some((r) => r.startsWith('hourly'))).length, 48);
    // the first backups (00:00Z on 2024-01-01) are still 2023 in New York: four years have backups
    assert.deepEqual(result.flatMap((d) => d.reasons.filter((r) => r.startsWith('yearly'))), ['yearly 2026', 'yearly 2025', 'yearly 2024', 'yearly 2023']);
  });
});
