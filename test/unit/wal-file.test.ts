import assert from 'node:assert/strict';
import { test } from 'node:test';
import { isPgkeepError } from '../../src/errors.js';
import { formatLsn, parseLsn, parseSegmentHeader, segmentName, segmentNumber, segmentRange, walFileKind, walTimeline } from '../../src/postgres/wal-file.js';

test('WAL file names: kinds PostgreSQL archives, and nothing else', () => {
  assert.equal(walFileKind('000000010000000000000001'), 'segment');
  assert.equal(walFileKind('00000002000000000000000A.partial'), 'partial');
  assert.equal(walFileKind('00000002.history'), 'history');
  assert.equal(walFileKind('000000010000000000000002.00000028.backup'), 'backup');
  for (const bad of ['00000001000000000000001', '000000010000000000000001.tmp', '../000000010000000000000001', '0000000g0000000000000001', 'RECOVERYXLOG']) {
    assert.equal(walFileKind(bad), undefined, bad);
  }
  assert.equal(walTimeline('0000000A0000000000000001'), 10);
});

test('LSNs and segment names agree with pg_walfile_name', () => {
  assert.equal(parseLsn('0/3000028'), 0x3000028n);
  assert.equal(parseLsn('1/A0'), (1n << 32n) | 0xa0n);
  assert.equal(formatLsn(parseLsn('16/B374D848')), '16/B374D848');
  assert.throws(() => parseLsn('3000028'), (e) => isPgkeepError(e, 'USAGE'));
  // pg_walfile_name('0/3000028') on timeline 1 = 000000010000000000000003
  assert.equal(segmentName(1, parseLsn('0/3000028')), '000000010000000000000003');
  // the segment numbering wraps into the middle part every 4 GB (256 segments of 16 MB)
  assert.equal(segmentName(2, parseLsn('1/FF000000')), '0000000200000001000000FF');
  assert.equal(segmentName(1, parseLsn('0/3000028'), 64 * 1024 * 1024), '000000010000000000000000');
  assert.equal(segmentNumber('0000000200000001000000FF'), 256n + 255n);
  assert.deepEqual(segmentRange('0000000100000000000000FE', '000000010000000100000001'), [
    '0000000100000000000000FE',
    '0000000100000000000000FF',
    '000000010000000100000000',
    '000000010000000100000001',
  ]);
});

test('segment header: system identifier, timeline and sizes from the long page header', () => {
  const page = Buffer.alloc(8192);
  page.writeUInt16LE(0xd110, 0);
  page.writeUInt16LE(0x0002, 2); // XLP_LONG_HEADER
  page.writeUInt32LE(3, 4);
  page.writeBigUInt64LE(7310000000000000001n, 24);
  page.writeUInt32LE(16 * 1024 * 1024, 32);
  page.writeUInt32LE(8192, 36);
  assert.deepEqual(parseSegmentHeader(page, 'x'), { systemIdentifier: '7310000000000000001', timeline: 3, segmentSize: 16 * 1024 * 1024, blockSize: 8192 });
  const short = Buffer.from(page);
  short.writeUInt16LE(0, 2);
  assert.throws(() => parseSegmentHeader(short, 'x'), (e) => isPgkeepError(e, 'WAL_INVALID') && /no long header/.test(e.message));
  assert.throws(() => parseSegmentHeader(Buffer.alloc(10), 'x'), (e) => isPgkeepError(e, 'WAL_INVALID'));
  const odd = Buffer.from(page);
  odd.writeUInt32LE(1000, 32);
  assert.throws(() => parseSegmentHeader(odd, 'x'), (e) => isPgkeepError(e, 'WAL_INVALID'));
});
