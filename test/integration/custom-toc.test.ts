import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { readFile, stat, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { fileURLToPath } from 'node:url';
import { describe, test } from 'node:test';
import { CustomTocScanner, tocStagingSink } from '../../src/pipeline/custom-toc.js';
import { DumpRowCounter, tableKey } from '../../src/pipeline/dump-row-counter.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

/**
 * restore --jobs stages only the header and table of contents of a custom
 * dump for its parallel post-data pg_restore. These tests hold the scanner
 * that finds the TOC's end against real pg_dump output (of the awkward
 * fixture: large objects, matviews, comments, triggers, constraints) and
 * against pg_restore's own reading of the result.
 */

const FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../support/fixtures/awkward.sql');

let cluster: PgCluster;
let work: string;
const env = () => ({ ...process.env, PGPASSWORD: cluster.password });
const conn = (db: string) => ['-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', db];

useClusterAndWorkFolder('custom-toc', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE awkward');
  const load = spawnSync(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', ...conn('awkward'), '-f', FIXTURE], { env: env(), encoding: 'utf8' });
  assert.equal(load.status, 0, load.stderr);
});

/** pg_dump -Fc -Z0 to a pipe, as pgkeep runs it (so the TOC carries no data offsets). */
async function dump(extra: string[] = []): Promise<Buffer> {
  const child = spawn(path.join(cluster.binDir, 'pg_dump'), ['--format=custom', '--compress=0', ...extra, ...conn('awkward')], { env: env(), stdio: ['ignore', 'pipe', 'inherit'] });
  const chunks: Buffer[] = [];
  for await (const chunk of child.stdout) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

/**
 * The whole dump (no options) of the fixture, made once for the file: the database does not change, and the tests
 * only read it (a test that alters bytes alters a copy).
 */
let wholeDump: Promise<Buffer> | undefined;
const dumpWhole = (): Promise<Buffer> => (wholeDump ??= dump());

function scan(archive: Buffer, chunkSize: number) {
  const scanner = new CustomTocScanner();
  for (let i = 0; i < archive.length; i += chunkSize) scanner.push(archive.subarray(i, i + chunkSize));
  return scanner.end();
}

function pgRestoreList(file: string): { status: number | null; stdout: string; stderr: string } {
  const result = spawnSync(path.join(cluster.binDir, 'pg_restore'), ['--list', file], { encoding: 'utf8' });
  // The listing's header names the file it read; compare the entries.
  return { status: result.status, stdout: result.stdout.split('\n').filter((l) => !l.startsWith(';')).join('\n'), stderr: result.stderr };
}

describe('finding the end of a custom archive\'s table of contents', () => {
  test('on a real dump, in chunks of any size: the prefix is exactly what pg_restore needs for the TOC', async () => {
    const archive = await dumpWhole();
    let end: number | undefined;
    for (const size of [1, 5, 7, 64, 4096, 65536, archive.length]) {
      const result = scan(archive, size);
      assert.equal(result.state, 'found', `chunk size ${size}: ${JSON.stringify(result)}`);
      if (result.state === 'found') end ??= result.end;
      assert.deepEqual(result, { state: 'found', end }, `chunk size ${size}`);
    }
    assert.ok(end! > 100 && end! < archive.length, `TOC end ${end} of ${archive.length}`);
    const full = path.join(work, 'full.dump');
    const prefix = path.join(work, 'prefix.dump');
    const short = path.join(work, 'short.dump');
    await writeFile(full, archive);
    await writeFile(prefix, archive.subarray(0, end));
    await writeFile(short, archive.subarray(0, end! - 1));
    const expected = pgRestoreList(full);
    assert.equal(expected.status, 0, expected.stderr);
    assert.ok(expected.stdout.includes('BLOBS') || expected.stdout.includes('BLOB'), 'the fixture has large objects');
    assert.deepEqual(pgRestoreList(prefix), expected, 'pg_restore reads the same TOC from the prefix alone');
    assert.notEqual(pgRestoreList(short).status, 0, 'one byte less and pg_restore cannot read the TOC');
  });

  test('a dump without data (schema only) ends with its TOC', async () => {
    const archive = await dump(['--schema-only']);
    assert.deepEqual(scan(archive, 4096), { state: 'found', end: archive.length });
  });

  test('tocStagingSink writes just the header and TOC of a dump, and the whole of anything else', async () => {
    const archive = await dumpWhole();
    const expectedEnd = (scan(archive, 65536) as { end: number }).end;
    const file = path.join(work, 'staged.dump');
    const sink = tocStagingSink(file);
    await pipeline(Readable.from(Array.from({ length: Math.ceil(archive.length / 8192) }, (_, i) => archive.subarray(i * 8192, (i + 1) * 8192))), sink);
    assert.equal(sink.staged, 'toc');
    assert.equal((await stat(file)).size, expectedEnd);
    assert.ok((await readFile(file)).equals(archive.subarray(0, expectedEnd)));

    // Not an archive it knows (here: a plain SQL dump): everything is staged.
    const other = Buffer.from('-- PostgreSQL database dump\nSELECT 1;\n'.repeat(1000));
    const otherFile = path.join(work, 'other.dump');
    const otherSink = tocStagingSink(otherFile);
    await pipeline(Readable.from([other]), otherSink);
    assert.equal(otherSink.staged, 'all');
    assert.ok((await readFile(otherFile)).equals(other));
  });

  test('tocStagingSink keeps its own copy of what it holds: a feed that reuses one buffer for every piece still stages the exact TOC', async () => {
    const archive = await dumpWhole();
    const expectedEnd = (scan(archive, 65536) as { end: number }).end;
    const file = path.join(work, 'reused.dump');
    const sink = tocStagingSink(file);
    // one buffer for every piece, overwritten right after each write (as a restore reuses a run once pg_restore took it)
    const reused = Buffer.alloc(1024);
    for (let at = 0; at < archive.length; at += reused.length) {
      const n = archive.copy(reused, 0, at, at + reused.length);
      const ok = sink.write(reused.subarray(0, n));
      reused.fill(0xa5);
      if (!ok) await new Promise((resolve) => sink.once('drain', resolve));
    }
    await new Promise<void>((resolve, reject) => sink.end((error?: Error | null) => (error ? reject(error) : resolve())));
    assert.equal(sink.staged, 'toc');
    assert.ok((await readFile(file)).equals(archive.subarray(0, expectedEnd)));
  });

  test('damaged archives are not trusted: the scanner gives up rather than guess', async () => {
    const archive = await dumpWhole();
    const end = (scan(archive, 65536) as { end: number }).end;
    // cut inside the TOC
    assert.equal(scan(archive.subarray(0, Math.floor(end / 2)), 4096).state, 'unsupported');
    // the byte after the TOC is not a data block
    const badBlock = Buffer.from(archive);
    badBlock[end] = 0x07;
    assert.equal(scan(badBlock, 4096).state, 'unsupported');
    // a data block naming an entry the TOC does not have
    const badId = Buffer.from(archive);
    badId.writeUInt32LE(0x7fffff00, end + 2);
    assert.equal(scan(badId, 4096).state, 'unsupported');
    // an archive version from the future
    const future = Buffer.from(archive);
    future[6] = 99;
    assert.deepEqual(scan(future, 4096).state, 'unsupported');
  });
});

describe('counting rows from a custom archive as it streams (DumpRowCounter)', () => {
  /** count(*) of every table pg_dump writes data for (not extension members, not partitioned parents). */
  async function countStar(): Promise<Map<string, number>> {
    const tables = await cluster.query<{ schema: string; name: string; q: string }>(
      `SELECT n.nspname AS schema, c.relname AS name, format('%I.%I', n.nspname, c.relname) AS q
         FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND NOT EXISTS (SELECT 1 FROM pg_catalog.pg_depend d WHERE d.classid = 'pg_catalog.pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')`,
      [],
      'awkward',
    );
    const counts = new Map<string, number>();
    for (const t of tables) counts.set(tableKey(t.schema, t.name), (await cluster.query<{ n: number }>(`SELECT count(*)::int AS n FROM ONLY ${t.q}`, [], 'awkward'))[0]!.n);
    return counts;
  }

  function count(archive: Buffer, chunkSize: number) {
    const counter = new DumpRowCounter();
    for (let i = 0; i < archive.length; i += chunkSize) counter.push(archive.subarray(i, i + chunkSize));
    return counter.end();
  }

  test('on the awkward dump (escaped text, unicode names, large objects), in chunks of any size: exactly count(*) of every table', async () => {
    const archive = await dumpWhole();
    const expected = await countStar();
    assert.ok(expected.size >= 5 && [...expected.values()].some((n) => n > 10), `the fixture has tables with rows: ${JSON.stringify([...expected])}`);
    for (const size of [1, 3, 7, 4096, 65536, archive.length]) {
      const result = count(archive, size);
      assert.equal(result.state, 'counted', `chunk size ${size}: ${JSON.stringify(result)}`);
      assert.deepEqual(result.state === 'counted' ? new Map([...result.tables].sort()) : undefined, new Map([...expected].sort()), `chunk size ${size}`);
    }
  });

  test('reports where each data block starts, the same whatever the chunk sizes (a content store cuts there)', async () => {
    const archive = await dumpWhole();
    const starts = (size: number) => {
      const counter = new DumpRowCounter();
      const found: number[] = [];
      for (let i = 0; i < archive.length; i += size) {
        counter.push(archive.subarray(i, i + size));
        found.push(...counter.takeBlockStarts());
      }
      return found;
    };
    const whole = starts(archive.length);
    // one block per entry with data: every TABLE DATA entry, and the large objects
    assert.ok(whole.length >= (await countStar()).size, `${whole.length} blocks`);
    for (const at of whole) assert.ok(archive[at] === 1 || archive[at] === 3, `a block type byte at ${at}: ${archive[at]}`);
    for (const size of [1, 7, 4096]) assert.deepEqual(starts(size), whole, `chunk size ${size}`);
  });

  test('gives up, rather than guess, on a compressed, cut-short or damaged archive', async () => {
    const compressed = await (async () => {
      const child = spawn(path.join(cluster.binDir, 'pg_dump'), ['--format=custom', ...conn('awkward')], { env: env(), stdio: ['ignore', 'pipe', 'inherit'] });
      const chunks: Buffer[] = [];
      for await (const chunk of child.stdout) chunks.push(chunk as Buffer);
      return Buffer.concat(chunks);
    })();
    assert.deepEqual(count(compressed, 65536), { state: 'unsupported', reason: 'the archive is compressed' });

    const archive = await dumpWhole();
    const short = count(archive.subarray(0, archive.length - 3), 65536);
    assert.equal(short.state, 'unsupported');
    assert.match(short.state === 'unsupported' ? short.reason : '', /ended before its last data block/);

    // The last table's COPY trailer (\. and two blank lines) with one byte changed: its newlines could not be told from rows.
    const damaged = Buffer.from(archive);
    const trailer = damaged.lastIndexOf(Buffer.from('\\.\n\n\n'));
    assert.ok(trailer > 0);
    damaged[trailer + 3] = 0x58;
    const result = count(damaged, 65536);
    assert.equal(result.state, 'unsupported');
    assert.match(result.state === 'unsupported' ? result.reason : '', /does not end with the COPY trailer/);
  });
});

describe('the row counter walks table data in WebAssembly with the counts of the JavaScript walk it replaced', () => {
  /**
   * Rows of every length from 1 to 300 bytes and a few over 64 KiB (a row
   * is one chunk: its length's bytes include 10, a newline, and 5, the
   * trailer's length, with other bytes), text with escaped newlines and
   * backslashes, an empty table, and one of a single column (short rows).
   */
  async function rowsDump(): Promise<Buffer> {
    await cluster.query('DROP DATABASE IF EXISTS rowwalk');
    await cluster.query('CREATE DATABASE rowwalk');
    for (const sql of [
      `CREATE TABLE lengths (t text)`,
      `INSERT INTO lengths SELECT repeat('x', n) FROM generate_series(0, 299) n, generate_series(1, 3)`,
      `INSERT INTO lengths SELECT repeat(md5(n::text), 2100 + n) FROM generate_series(1, 4) n`,
      `CREATE TABLE escaped (id int, t text)`,
      `INSERT INTO escaped SELECT n, E'line\\none\\\\two\\tand \\.' || repeat(E'\\n', n % 7) FROM generate_series(1, 2000) n`,
      `CREATE TABLE short (n int)`,
      `INSERT INTO short SELECT n FROM generate_series(1, 5000) n`,
      `CREATE TABLE empty (n int)`,
    ]) {
      await cluster.query(sql, [], 'rowwalk');
    }
    const child = spawn(path.join(cluster.binDir, 'pg_dump'), ['--format=custom', '--compress=0', ...conn('rowwalk')], { env: env(), stdio: ['ignore', 'pipe', 'inherit'] });
    const chunks: Buffer[] = [];
    for await (const chunk of child.stdout) chunks.push(chunk as Buffer);
    return Buffer.concat(chunks);
  }

  /** A seeded xorshift32 stream. */
  function prng(seed: number): () => number {
    let x = seed | 0 || 1;
    return () => {
      x ^= x << 13;
      x ^= x >>> 17;
      x ^= x << 5;
      return x >>> 0;
    };
  }

  /** Result and block starts of a counter fed `archive` in pieces of sizes from `size()`. */
  function run(counter: DumpRowCounter, archive: Buffer, size: () => number) {
    const starts: number[] = [];
    for (let at = 0; at < archive.length; ) {
      const n = size();
      counter.push(archive.subarray(at, at + n));
      starts.push(...counter.takeBlockStarts());
      at += n;
    }
    const result = counter.end();
    return { result: result.state === 'counted' ? { state: result.state, tables: [...result.tables].sort() } : result, starts };
  }

  test('whole archives in pieces of any size, and damaged ones: the same counts, block starts and reasons', async () => {
    const archives = [await rowsDump(), await dump()];
    let damagedCounted = 0;
    let gaveUp = 0;
    for (const [a, archive] of archives.entries()) {
      const random = prng(1234 + a);
      const sizers: (() => number)[] = [() => archive.length, () => 1, () => 65536, () => 1 + (random() % 13), () => 1 + (random() % 300_000)];
      for (const size of sizers) {
        const expected = run(new DumpRowCounter({ walk: 'javascript' }), archive, size);
        assert.equal(expected.result.state, 'counted');
        assert.deepEqual(run(new DumpRowCounter(), archive, size), expected);
      }
      const firstBlock = run(new DumpRowCounter({ walk: 'javascript' }), archive, () => archive.length).starts[0]!;
      for (let trial = 0; trial < 150; trial++) {
        // a byte changed somewhere in the data, or the archive cut short
        const damaged = Buffer.from(archive);
        const at = firstBlock + (random() % (archive.length - firstBlock));
        const bytes = trial % 5 === 4 ? damaged.subarray(0, at) : damaged;
        if (trial % 5 !== 4) damaged[at] = [0, 5, 10, 0xff, random() & 0xff][trial % 5]!;
        const pieces = 1 + (random() % 70_000);
        const expected = run(new DumpRowCounter({ walk: 'javascript' }), bytes, () => pieces);
        assert.deepEqual(run(new DumpRowCounter(), bytes, () => pieces), expected, `trial ${trial}: byte ${at}`);
        if (expected.result.state === 'counted') damagedCounted++;
        else gaveUp++;
      }
    }
    assert.ok(damagedCounted > 10 && gaveUp > 10, `both outcomes compared: ${damagedCounted} counted, ${gaveUp} given up`);
  });
});
