import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { pgTime, proveTarget, type PitrDrillReport } from '../../src/verify/run-physical-restore-test.js';
import type { Problem } from '../../src/verify/restore-checks.js';
import { compareTableEstimates } from '../../src/verify/compare-table-estimates.js';

const window: Omit<PitrDrillReport, 'lastReplayedAt' | 'stopRecordAt' | 'reached'> = {
  window: { from: '2026-12-05T13:00:00.000Z', to: '2026-12-05T13:30:00.000Z' },
  target: '2026-12-05T13:10:00.000Z',
  chosen: 'random',
  recoverableTo: { at: '2026-12-05T13:30:00.000Z', basis: 'commit', segment: '000000010000000000000009' },
  rpoMs: 60_000,
};
const target = { kind: 'time' as const, value: '2026-12-05T13:10:00.000Z' };

describe('PITR drill proof', () => {
  it('reads the server log times (UTC or an offset, microseconds)', () => {
    assert.equal(pgTime('2026-12-05 13:50:01.123456+00'), '2026-12-05T13:50:01.123Z');
    assert.equal(pgTime('recovery stopping before commit of transaction 740, time 2026-12-05 15:50:01+02'), '2026-12-05T13:50:01.000Z');
    assert.equal(pgTime('2026-12-05 13:50:01 UTC'), '2026-12-05T13:50:01.000Z');
    assert.equal(pgTime(undefined), undefined);
  });

  it('reached: nothing after the target replayed, stopped before the first transaction after it', () => {
    const problems: Problem[] = [];
    const proof = proveTarget(window, target, '2026-12-05T13:09:59.500Z', 'recovery stopping before commit of transaction 741, time 2026-12-05 13:10:00.2+00', problems);
    assert.deepEqual(problems, []);
    assert.equal(proof.reached, true);
    assert.equal(proof.stopRecordAt, '2026-12-05T13:10:00.200Z');
  });

  it('not reached: recovery ran past the target, or never stopped at a transaction', () => {
    const late: Problem[] = [];
    assert.equal(proveTarget(window, target, '2026-12-05T13:10:05.000Z', 'recovery stopping before commit of transaction 741, time 2026-12-05 13:09:00+00', late).reached, false);
    assert.deepEqual(late.map((p) => p.message), [
      'recovery stopped before a transaction of 2026-12-05T13:09:00.000Z, on the wrong side of the target 2026-12-05T13:10:00.000Z',
      'recovery replayed a transaction of 2026-12-05T13:10:05.000Z, after the target 2026-12-05T13:10:00.000Z',
    ]);
    const never: Problem[] = [];
    assert.equal(proveTarget(window, target, undefined, undefined, never).reached, false);
    assert.match(never[0]!.message, /^recovery did not stop at the target/);
  });

  it('to the end of the archive: the newest archived transaction was replayed', () => {
    const short: Problem[] = [];
    assert.equal(proveTarget(window, { kind: 'latest' }, '2026-12-05T13:29:00.000Z', undefined, short).reached, false);
    assert.equal(proveTarget(window, { kind: 'latest' }, '2026-12-05T13:30:00.000Z', undefined, []).reached, true);
  });

  it('facts: a table missing, an estimate far off, a database gone; small drift and never-analyzed tables pass', () => {
    const recorded = [
      { name: 'app', tables: [{ schema: 'public', name: 'orders', reltuples: 100_000 }, { schema: 'public', name: 'gone', reltuples: 5 }, { schema: 'public', name: 'fresh', reltuples: -1 }, { schema: 'public', name: 'drift', reltuples: 500 }] },
      { name: 'old', tables: [{ schema: 'public', name: 't', reltuples: 1 }] },
    ];
    const recovered = new Map([['app', [{ schema: 'public', name: 'orders', reltuples: 40_000 }, { schema: 'public', name: 'fresh', reltuples: 7 }, { schema: 'public', name: 'drift', reltuples: 1400 }]]]);
    assert.deepEqual(compareTableEstimates(recorded, recovered), {
      recorded: 5,
      matched: 2,
      missing: ['app: public.gone', 'old: public.t'],
      differing: [{ table: 'app: public.orders', recorded: 100_000, recovered: 40_000 }],
      missingDatabases: ['old'],
    });
  });
});
