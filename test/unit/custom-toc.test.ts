import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { CustomTocScanner } from '../../src/pipeline/custom-toc.js';

/**
 * Synthetic custom-format archives of every version the scanner knows, written
 * the way pg_dump's WriteHead/WriteToc/_WriteExtraToc write them (real pg_dump
 * output is tested in test/integration/custom-toc.test.ts, with the installed
 * pg_dump's version only).
 */

type Version = [number, number];

class Writer {
  private parts: Buffer[] = [];
  constructor(private readonly intSize = 4) {}
  byte(b: number) {
    this.parts.push(Buffer.from([b]));
  }
  int(i: number) {
    const b = Buffer.alloc(1 + this.intSize);
    b[0] = i < 0 ? 1 : 0;
    let v = Math.abs(i);
    for (let k = 1; k <= this.intSize; k++) {
      b[k] = v & 0xff;
      v = Math.floor(v / 256);
    }
    this.parts.push(b);
  }
  str(s: string | null) {
    if (s === null) return this.int(-1);
    const bytes = Buffer.from(s, 'utf8');
    this.int(bytes.length);
    this.parts.push(bytes);
  }
  raw(b: Buffer) {
    this.parts.push(b);
  }
  get length() {
    return this.parts.reduce((n, p) => n + p.length, 0);
  }
  buffer() {
    return Buffer.concat(this.parts);
  }
}

interface Entry {
  id: number;
  desc: string;
  hasData: boolean;
  deps: number[];
}

function archive([major, minor]: Version, entries: Entry[], withData = true): { bytes: Buffer; tocEnd: number } {
  const v = (a: number, b: number) => major * 256 + minor >= a * 256 + b;
  const w = new Writer();
  w.raw(Buffer.from('PGDMP'));
  w.byte(major);
  w.byte(minor);
  w.byte(0);
  w.byte(4); // intSize
  w.byte(8); // offSize
  w.byte(1); // custom
  if (v(1, 15)) w.byte(0);
  else w.int(0);
  for (const x of [12, 34, 5, 21, 10, 126, 0]) w.int(x);
  w.str('db with ünïcødé');
  w.str('15.18');
  w.str('15.18');
  w.int(entries.length);
  for (const e of entries) {
    w.int(e.id);
    w.int(e.hasData ? 1 : 0);
    w.str('1259');
    w.str(String(16384 + e.id));
    w.str(`tag ${e.id}`);
    w.str(e.desc);
    w.int(e.desc === 'INDEX' ? 3 : e.hasData ? 2 : 1);
    w.str(e.desc === 'TABLE DATA' ? '' : `CREATE something ${'x'.repeat(e.id * 37)};\n`);
    w.str(`DROP something ${e.id};\n`);
    w.str(e.hasData ? 'COPY t (a) FROM stdin;\n' : null);
    w.str('public');
    w.str('');
    if (v(1, 14)) w.str(e.desc === 'TABLE' ? 'heap' : null);
    if (v(1, 16)) w.int(e.desc === 'TABLE' ? 'r'.charCodeAt(0) : 0);
    w.str('owner');
    w.str('false');
    for (const d of e.deps) w.str(String(d));
    w.str(null);
    w.byte(e.hasData ? 1 : 3); // K_OFFSET_POS_NOT_SET / K_OFFSET_NO_DATA
    w.raw(Buffer.alloc(8));
  }
  const tocEnd = w.length;
  if (withData) {
    for (const e of entries.filter((x) => x.hasData)) {
      w.byte(1); // BLK_DATA
      w.int(e.id);
      w.int(5);
      w.raw(Buffer.from('1\t2\n\n'));
      w.int(0);
    }
  }
  return { bytes: w.buffer(), tocEnd };
}

const entries: Entry[] = [
  { id: 1, desc: 'ENCODING', hasData: false, deps: [] },
  { id: 200, desc: 'TABLE', hasData: false, deps: [] },
  { id: 201, desc: 'TABLE DATA', hasData: true, deps: [200] },
  { id: 202, desc: 'INDEX', hasData: false, deps: [200, 201] },
];

function scan(bytes: Buffer, chunk: number) {
  const scanner = new CustomTocScanner();
  for (let i = 0; i < bytes.length; i += chunk) scanner.push(bytes.subarray(i, i + chunk));
  return scanner.end();
}

describe('CustomTocScanner on synthetic archives', () => {
  for (const version of [
    [1, 12],
    [1, 13],
    [1, 14],
    [1, 15],
    [1, 16],
  ] as Version[]) {
    it(`archive version ${version.join('.')}: finds the TOC's end, in any chunking`, () => {
      const { bytes, tocEnd } = archive(version, entries);
      for (const chunk of [1, 3, 16, 1000, bytes.length]) assert.deepEqual(scan(bytes, chunk), { state: 'found', end: tocEnd }, `chunk ${chunk}`);
      const schemaOnly = archive(version, entries, false);
      assert.deepEqual(scan(schemaOnly.bytes, 7), { state: 'found', end: schemaOnly.tocEnd });
    });
  }

  it('older and newer versions are not guessed at', () => {
    for (const version of [[1, 11], [1, 17], [2, 0]] as Version[]) {
      assert.equal(scan(archive(version, entries).bytes, 64).state, 'unsupported', version.join('.'));
    }
  });

  it('a version-1.14 archive relabelled 1.15 is rejected, not misread', () => {
    // A 1.14 archive relabelled 1.15 has a 5-byte compression int where a 1-byte one is expected: rejected, not misread.
    const { bytes } = archive([1, 14], entries);
    const relabelled = Buffer.from(bytes);
    relabelled[6] = 15;
    assert.equal(scan(relabelled, 64).state, 'unsupported');
  });

  it('is decided as soon as the first data block header has been seen', () => {
    const { bytes, tocEnd } = archive([1, 14], entries);
    const scanner = new CustomTocScanner();
    scanner.push(bytes.subarray(0, tocEnd + 5));
    assert.equal(scanner.scan.state, 'scanning');
    scanner.push(bytes.subarray(tocEnd + 5, tocEnd + 6));
    assert.deepEqual(scanner.scan, { state: 'found', end: tocEnd });
  });
});
