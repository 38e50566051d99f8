import { createWriteStream } from 'node:fs';
import { truncate } from 'node:fs/promises';
import { finished, Writable } from 'node:stream';

/**
 * Finds where the table of contents of a pg_dump custom-format archive ends,
 * while the archive streams past, without holding it in memory.
 *
 * A custom archive is a header, the table of contents (every object's
 * definition), then the data blocks (table contents, large objects), each
 * starting with a block type byte and the dump id of its TOC entry. pg_restore
 * needs only the header and TOC for items that have no data, such as the
 * whole post-data section (indexes, constraints, triggers): so to run that
 * section in parallel from a file, only this prefix has to be staged.
 *
 * The layout follows ReadHead/ReadToc in PostgreSQL's pg_backup_archiver.c and
 * _ReadExtraToc in pg_backup_custom.c, for archive versions 1.12 (PostgreSQL
 * 9.0) to 1.16 (PostgreSQL 17 and 18). Anything else, or anything that does
 * not parse, makes the scanner give up, and the caller stages the whole
 * archive as before. A found end is only reported after the bytes that follow
 * it check out: the end of the stream, or a data block header naming one of
 * the TOC's own data entries.
 */

const MAGIC = Buffer.from('PGDMP');
const version = (major: number, minor: number, rev = 0) => (major * 256 + minor) * 256 + rev;
const K_VERS_1_12 = version(1, 12);
const K_VERS_1_14 = version(1, 14);
export const K_VERS_1_15 = version(1, 15);
const K_VERS_1_16 = version(1, 16);
const K_VERS_MAX = version(1, 16, 255);
const ARCHIVE_CUSTOM = 1;
/** A directory dump's toc.dat says 3 (the tar layout: a file name per entry), pg_dump's archDirectory is 5. */
const FILE_PER_ENTRY_FORMATS = new Set([3, 5]);
export const BLK_DATA = 1;
export const BLK_BLOBS = 3;
const K_OFFSET_POS_NOT_SET = 1;
const K_OFFSET_NO_DATA = 3;
/** Sanity bounds: no real TOC field comes near them. */
const MAX_STRING = 1 << 30;
const MAX_ENTRIES = 1 << 28;

/** What the parser asks for next: bytes to read (and be handed), or bytes to skip. */
type Need = { read: number } | { skip: number };
type Parser = Generator<Need, number, Buffer | undefined>;

class Unsupported extends Error {}

export type TocScan =
  /** Still reading the header and TOC. */
  | { state: 'scanning' }
  /** The TOC ends at byte `end`, and what follows it checked out. */
  | { state: 'found'; end: number }
  /** Not an archive this scanner understands; `reason` says why. */
  | { state: 'unsupported'; reason: string };

export class CustomTocScanner {
  private readonly parser: Parser;
  private need: Need;
  /** Bytes of a `read` request gathered so far (when it spans chunks). */
  private gathered: Buffer[] = [];
  private gatheredLength = 0;
  private consumed = 0;
  private result: TocScan = { state: 'scanning' };

  /** Where the TOC ends, once parsed (the check of what follows may still be pending). */
  private tocEnd: number | undefined;

  constructor() {
    this.parser = parseArchive(() => this.consumed, (end) => (this.tocEnd = end), undefined);
    this.need = this.step(() => this.parser.next());
  }

  get scan(): TocScan {
    return this.result;
  }

  /** Feeds the next bytes of the archive. Cheap once the scan is decided. */
  push(chunk: Buffer): void {
    let offset = 0;
    while (this.result.state === 'scanning' && offset < chunk.length) {
      const need = this.need;
      if ('skip' in need) {
        const n = Math.min(need.skip, chunk.length - offset);
        offset += n;
        this.consumed += n;
        need.skip -= n;
        if (need.skip === 0) this.advance(undefined);
        continue;
      }
      const wanted = need.read - this.gatheredLength;
      const n = Math.min(wanted, chunk.length - offset);
      this.gathered.push(chunk.subarray(offset, offset + n));
      this.gatheredLength += n;
      offset += n;
      this.consumed += n;
      if (this.gatheredLength === need.read) {
        const bytes = this.gathered.length === 1 ? this.gathered[0]! : Buffer.concat(this.gathered);
        this.gathered = [];
        this.gatheredLength = 0;
        this.advance(bytes);
      }
    }
  }

  /** The archive ended: a complete TOC followed by nothing at all is fine too. */
  end(): TocScan {
    if (this.result.state === 'scanning') {
      this.result =
        this.tocEnd !== undefined && this.consumed === this.tocEnd
          ? { state: 'found', end: this.tocEnd }
          : { state: 'unsupported', reason: 'the archive ended inside its table of contents' };
    }
    return this.result;
  }

  private advance(bytes: Buffer | undefined): void {
    this.need = this.step(() => this.parser.next(bytes));
  }

  private step(run: () => IteratorResult<Need, number>): Need {
    try {
      const next = run();
      if (next.done) {
        this.result = { state: 'found', end: next.value };
        return { skip: 0 };
      }
      return next.value;
    } catch (error) {
      this.result = { state: 'unsupported', reason: error instanceof Unsupported ? error.message : `cannot parse the archive header (${(error as Error).message})` };
      return { skip: 0 };
    }
  }
}

/** One entry of an archive's table of contents (what `pg_restore --list` prints, unquoted names kept exact). */
export interface TocEntry {
  dumpId: number;
  /** e.g. "TABLE", "TABLE DATA", "INDEX", "FK CONSTRAINT", "SEQUENCE SET", "ACL". */
  desc: string;
  /** Schema, or null for objects outside schemas. */
  namespace: string | null;
  /** The object's name (for an INDEX the index's, for a COMMENT "TABLE t"). */
  tag: string;
  owner: string | null;
  /** 1 none, 2 pre-data, 3 data, 4 post-data (pg_backup_archiver.h teSection). */
  section: number;
  /** Whether the entry has a data block (TABLE DATA, SEQUENCE SET is inline, BLOBS). */
  hasData: boolean;
  /** Dump ids this entry depends on. */
  dependencies: number[];
  /** The entry's SQL, kept only for the database's own entries (DATABASE, DATABASE PROPERTIES, its COMMENT and ACL) and the session's (ENCODING, STDSTRINGS, SEARCHPATH). */
  defn?: string | undefined;
  /** A TABLE DATA entry's `COPY schema.table (columns) FROM stdin;`: its data block is that COPY's text. */
  copyStmt?: string | undefined;
}

/** The entries that set up a restore session (pg_restore runs them on every connection). */
export const SESSION_DESCS = new Set(['ENCODING', 'STDSTRINGS', 'SEARCHPATH']);

/** The entries pg_dump writes about the database itself (restored by pg_restore only with --create). */
export function isDatabaseEntry(desc: string, tag: string | null): boolean {
  return desc === 'DATABASE' || desc === 'DATABASE PROPERTIES' || ((desc === 'COMMENT' || desc === 'ACL' || desc === 'SECURITY LABEL') && (tag ?? '').startsWith('DATABASE '));
}

/**
 * The table of contents of a custom-format archive, or of a directory dump's
 * toc.dat (same layout, a file name instead of a data offset), read from its
 * first bytes (at least header and TOC, e.g. what tocStagingSink stages).
 */
export function readArchiveToc(bytes: Buffer): TocEntry[] {
  const entries: TocEntry[] = [];
  let ended = false;
  let offset = 0;
  const parser = parseArchive(() => offset, () => (ended = true), (entry) => entries.push(entry));
  let next = parser.next();
  while (!next.done && !ended) {
    const need = next.value;
    if ('skip' in need) {
      offset += need.skip;
      next = parser.next(undefined);
    } else {
      if (offset + need.read > bytes.length) throw new Error('the archive ends inside its table of contents');
      const chunk = bytes.subarray(offset, offset + need.read);
      offset += need.read;
      next = parser.next(chunk);
    }
    if (offset > bytes.length) throw new Error('the archive ends inside its table of contents');
  }
  return entries;
}

function* parseArchive(position: () => number, onTocEnd: (end: number) => void, onEntry: ((entry: TocEntry) => void) | undefined): Parser {
  const magic = yield* read(5);
  if (!magic.equals(MAGIC)) throw new Unsupported('not a custom-format archive (no PGDMP signature)');
  const [vmaj, vmin, vrev] = yield* read(3);
  const archiveVersion = version(vmaj!, vmin!, vrev!);
  if (archiveVersion < K_VERS_1_12 || archiveVersion > K_VERS_MAX) {
    throw new Unsupported(`archive version ${vmaj}.${vmin}.${vrev} is not one this scanner knows`);
  }
  const [intSize, offSize, format] = yield* read(3);
  if (intSize! < 1 || intSize! > 8 || offSize! < 1 || offSize! > 8) throw new Unsupported(`unexpected integer sizes ${intSize}/${offSize}`);
  // A directory dump's toc.dat has the same layout; only an entry reader asks for it.
  if (format !== ARCHIVE_CUSTOM && !(FILE_PER_ENTRY_FORMATS.has(format!) && onEntry)) throw new Unsupported(`archive format ${format} is not custom`);

  const readInt = function* (): Generator<Need, number, Buffer | undefined> {
    const bytes = yield* read(1 + intSize!);
    let value = 0;
    for (let i = intSize!; i >= 1; i--) value = value * 256 + bytes[i]!;
    if (!Number.isSafeInteger(value)) throw new Unsupported('integer out of range');
    return bytes[0] ? -value : value;
  };
  /** Skips a string; returns its length, or -1 for NULL. */
  const skipStr = function* (): Generator<Need, number, Buffer | undefined> {
    const length = yield* readInt();
    if (length > MAX_STRING) throw new Unsupported('string length out of range');
    if (length > 0) yield { skip: length };
    return length;
  };
  const readStr = function* (): Generator<Need, string | null, Buffer | undefined> {
    const length = yield* readInt();
    if (length < 0) return null;
    if (length > MAX_STRING) throw new Unsupported('string length out of range');
    return length === 0 ? '' : (yield* read(length)).toString('utf8');
  };

  // header: compression, creation time (7 ints), database name, server and pg_dump versions
  if (archiveVersion >= K_VERS_1_15) yield* read(1);
  else yield* readInt();
  for (let i = 0; i < 7; i++) yield* readInt();
  for (let i = 0; i < 3; i++) yield* skipStr();

  // TOC
  const count = yield* readInt();
  if (count < 0 || count > MAX_ENTRIES) throw new Unsupported(`TOC entry count ${count} out of range`);
  const withData = new Set<number>();
  for (let i = 0; i < count; i++) {
    const dumpId = yield* readInt();
    if (dumpId <= 0) throw new Unsupported(`TOC entry id ${dumpId} out of range`);
    const hadDumper = yield* readInt();
    yield* skipStr(); // table oid
    yield* skipStr(); // oid
    const tag = onEntry ? yield* readStr() : (yield* skipStr(), null); // tag
    const desc = yield* readStr();
    if (desc === null) throw new Unsupported('TOC entry without a description');
    const section = yield* readInt(); // section
    const defn = onEntry && (isDatabaseEntry(desc, tag) || SESSION_DESCS.has(desc)) ? yield* readStr() : (yield* skipStr(), null); // defn
    yield* skipStr(); // dropStmt
    const copyStmt = onEntry && desc === 'TABLE DATA' ? yield* readStr() : (yield* skipStr(), null); // copyStmt
    const namespace = onEntry ? yield* readStr() : (yield* skipStr(), null); // namespace
    yield* skipStr(); // tablespace
    if (archiveVersion >= K_VERS_1_14) yield* skipStr(); // tableam
    if (archiveVersion >= K_VERS_1_16) yield* readInt(); // relkind
    const owner = onEntry ? yield* readStr() : (yield* skipStr(), null); // owner
    yield* skipStr(); // "false" (WITH OIDS)
    const dependencies: number[] = [];
    let skippedDeps = 0;
    for (;;) {
      const dep = onEntry ? yield* readStr() : (yield* skipStr()) >= 0 ? '' : null;
      if (dep === null) break;
      if (onEntry) dependencies.push(Number(dep));
      if (dependencies.length > MAX_ENTRIES || (!onEntry && ++skippedDeps > MAX_ENTRIES)) throw new Unsupported('dependency list out of range');
    }
    if (FILE_PER_ENTRY_FORMATS.has(format!)) {
      yield* skipStr(); // the data file's name
    } else {
      // custom format: the data offset, a flag byte and offSize bytes
      const [flag] = yield* read(1 + offSize!);
      if (flag! < K_OFFSET_POS_NOT_SET || flag! > K_OFFSET_NO_DATA) throw new Unsupported(`unexpected data offset flag ${flag}`);
    }
    onEntry?.({ dumpId, desc, namespace, tag: tag ?? '', owner, section, hasData: hadDumper !== 0, dependencies, ...(defn !== null ? { defn } : {}), ...(copyStmt ? { copyStmt } : {}) });
    if (hadDumper) withData.add(dumpId);
  }

  // What follows must be the end of the archive, or a data block of one of these entries.
  const end = position();
  onTocEnd(end);
  const [blockType] = yield* read(1);
  if (blockType !== BLK_DATA && blockType !== BLK_BLOBS) throw new Unsupported(`unexpected block type ${blockType} after the TOC`);
  const id = yield* readInt();
  if (!withData.has(id)) throw new Unsupported(`the first data block names entry ${id}, which has no data in the TOC`);
  return end;
}

function* read(n: number): Generator<Need, Buffer, Buffer | undefined> {
  const bytes = yield { read: n };
  if (!bytes || bytes.length !== n) throw new Error(`expected ${n} bytes`);
  return bytes;
}

/**
 * A sink that stages a custom-format archive in `file` for a later
 * `pg_restore --section=post-data`: it writes the stream until the end of the
 * table of contents is found (and checked), then discards the rest; at its
 * end the file is cut back to exactly the header and TOC. When the scanner
 * gives up, the whole archive is written, as any pg_restore can use it.
 * `staged` tells which happened, once the sink has finished.
 */
export function tocStagingSink(file: string): Writable & { readonly staged: 'toc' | 'all' } {
  const scanner = new CustomTocScanner();
  const out = createWriteStream(file, { mode: 0o600, highWaterMark: 1 << 20 });
  let writing = true;
  let staged: 'toc' | 'all' = 'all';
  const sink = new Writable({
    highWaterMark: 1 << 20,
    write(chunk: Buffer, _encoding, callback) {
      if (scanner.scan.state === 'scanning') scanner.push(chunk);
      if (!writing) return callback();
      // The chunk that completes the scan is still written whole; the end is cut back below.
      if (scanner.scan.state === 'found') writing = false;
      if (out.write(chunk)) callback();
      else out.once('drain', () => callback());
    },
    final(callback) {
      const scan = scanner.end();
      finished(out, (error) => {
        if (error) return callback(error);
        if (scan.state !== 'found') return callback();
        staged = 'toc';
        truncate(file, scan.end).then(() => callback(), callback);
      });
      out.end();
    },
    destroy(error, callback) {
      if (!out.destroyed && (error || !out.writableFinished)) out.destroy(error ?? undefined);
      callback(error);
    },
  });
  out.on('error', (error) => sink.destroy(error));
  // What it may still read or write (the head, up to the TOC's end: a few KB, rarely more) it copies as it is handed
  // over, before its own buffering: a restore reuses the buffer of a piece once the other sink of its tee (pg_restore's
  // stdin) has written it, while this sink may not have got to it yet. Once the scan is done and written, no copies.
  const write = sink.write.bind(sink) as (chunk: Buffer, ...rest: unknown[]) => boolean;
  sink.write = ((chunk: Buffer, ...rest: unknown[]) => write(writing || scanner.scan.state === 'scanning' ? Buffer.from(chunk) : chunk, ...rest)) as typeof sink.write;
  return Object.defineProperty(sink, 'staged', { get: () => staged }) as Writable & { readonly staged: 'toc' | 'all' };
}
