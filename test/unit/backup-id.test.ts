import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { backupIdTime, isBackupId, makeBackupId, timestampPart, validateBackupId, validateBackupName } from '../../src/repository/backup-id.js';

function invalidName(error: unknown): true {
  assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${String(error)}`);
  assert.equal(error.code, 'INVALID_NAME');
  return true;
}

describe('backup ids', () => {
  const date = new Date('2026-11-21T02:00:09.987Z');

  it('timestampPart is the UTC time to the second, in basic ISO form', () => {
    assert.equal(timestampPart(date), '20261121T020009Z');
    assert.equal(timestampPart(new Date('1999-01-02T03:04:05.000Z')), '19990102T030405Z');
  });

  it('timestampPart does not depend on the local time zone', () => {
    // Date.toISOString is UTC; an offset in the input is normalized
    assert.equal(timestampPart(new Date('2026-11-21T23:30:00-05:00')), '20261122T043000Z');
  });

  it('makeBackupId is the timestamp, optionally followed by -name', () => {
    assert.equal(makeBackupId(date), '20261121T020009Z');
    assert.equal(makeBackupId(date, 'before-migration_2.1'), '20261121T020009Z-before-migration_2.1');
  });

  it('ids sort by time as text', () => {
    const times = ['2026-01-01T00:00:00Z', '2025-12-31T23:59:59Z', '2026-01-01T00:00:01Z', '2026-10-01T00:00:00Z', '2026-02-01T00:00:00Z'];
    const ids = times.map((t) => makeBackupId(new Date(t)));
    const byText = [...ids].sort();
    const byTime = [...times].sort((a, b) => Date.parse(a) - Date.parse(b)).map((t) => makeBackupId(new Date(t)));
    assert.deepEqual(byText, byTime);
  });

  it('makeBackupId rejects names that are unsafe as path segments', () => {
    for (const name of ['', '.', '..', 'a/b', 'a\\b', 'has space', 'ünïcode', 'x'.repeat(101), 'semi;colon']) {
      assert.throws(() => makeBackupId(date, name), invalidName, JSON.stringify(name));
    }
    assert.doesNotThrow(() => makeBackupId(date, 'x'.repeat(100)));
  });

  it('validateBackupName accepts letters, digits, ".", "_" and "-"', () => {
    assert.doesNotThrow(() => validateBackupName('Nightly.2026_11-21'));
    assert.throws(() => validateBackupName('../etc'), invalidName);
  });

  it('isBackupId recognises exactly the id forms', () => {
    for (const id of ['20261121T020000Z', '20261121T020000Z-name', '20261121T020000Z-a.b_c-d']) assert.equal(isBackupId(id), true, id);
    for (const id of [
      '',
      'latest',
      '20261121T020000',
      '20261121T020000Z-',
      '20261121T020000Z-a/b',
      '20261121T020000Z/../x',
      '2026-11-21T02:00:00Z',
      ' 20261121T020000Z',
      '20261121T020000Z ',
      '20261121t020000z',
      `20261121T020000Z-${'x'.repeat(101)}`,
    ]) {
      assert.equal(isBackupId(id), false, JSON.stringify(id));
    }
  });

  it('validateBackupId returns a valid id and rejects others with INVALID_NAME', () => {
    assert.equal(validateBackupId('20261121T020000Z-x'), '20261121T020000Z-x');
    assert.throws(() => validateBackupId('../../etc/passwd'), invalidName);
    assert.throws(() => validateBackupId('latest'), (error: unknown) => invalidName(error) && /latest/.test((error as Error).message));
  });

  it('backupIdTime reads the time back, to the second', () => {
    assert.equal(backupIdTime(makeBackupId(date)).toISOString(), '2026-11-21T02:00:09.000Z');
    assert.equal(backupIdTime(makeBackupId(date, 'named')).toISOString(), '2026-11-21T02:00:09.000Z');
    assert.throws(() => backupIdTime('not-an-id'), invalidName);
  });
});
