import { copyFile, mkdir } from 'node:fs/promises';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { libpqEnv, type ConnectionInfo } from '../postgres/connection-info.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { startProcess } from '../postgres/run-process.js';
import { tocStagingSink } from '../pipeline/custom-toc.js';
import { inheritedEnv } from '../postgres/child-env.js';

/**
 * The whole-schema proof of a restore: the restored database's
 * `pg_dump --schema-only` (owners and privileges included) against the
 * schema the backup holds (`pg_restore --schema-only` of its table of
 * contents, or a plain dump without its data), compared object by object.
 *
 * The backup's side costs no extra read: while the restore streams the dump,
 * a SchemaCapture keeps the archive's header and TOC (a few KB) or, for a
 * plain dump, its statements outside the data blocks.
 */

/** Which parts both sides leave out: --no-owner, --no-acl. */
export interface SchemaOptions {
  noOwner: boolean;
  noAcl: boolean;
}

/** TOC entry types that are data, not schema (pg_restore --schema-only leaves them out). */
const DATA_TYPES = new Set(['TABLE DATA', 'SEQUENCE SET', 'BLOBS', 'BLOB', 'BLOB METADATA', 'LARGE OBJECT', 'MATERIALIZED VIEW DATA']);
const HEADER = /^-- (Data for )?Name: (.*); Type: (.*); Schema: (.*); Owner: ([^;]*)(?:; Tablespace: (.*))?$/;

/** One object of a schema dump: "TYPE schema.name" and its statements, normalised. */
export interface SchemaObject {
  key: string;
  text: string;
}

/**
 * Splits pg_dump/pg_restore text output into its objects (at the "-- Name: …;
 * Type: …" headers), dropping data blocks, session settings, comments,
 * psql meta-commands and blank lines; with noOwner/noAcl also ownership
 * statements and privileges, as pg_dump --no-owner/--no-privileges would.
 */
export function parseSchemaDump(text: string, options: SchemaOptions = { noOwner: false, noAcl: false }): SchemaObject[] {
  const objects: SchemaObject[] = [];
  let current: { key: string; lines: string[]; keep: boolean } | undefined;
  const flush = () => {
    if (current?.keep) objects.push({ key: current.key, text: current.lines.join('\n') });
  };
  for (const line of text.split(/\r?\n/)) {
    const header = HEADER.exec(line);
    if (header) {
      flush();
      const [, data, name, type, schema, , tablespace] = header;
      const keep = !data && !DATA_TYPES.has(type!) && !(/^(ACL|COMMENT|SECURITY LABEL)$/.test(type!) && name!.startsWith('LARGE OBJECT ')) && !(options.noAcl && (type === 'ACL' || type === 'DEFAULT ACL'));
      current = { key: `${type} ${schema === '-' ? '' : `${schema}.`}${name}${tablespace ? ` (tablespace ${tablespace})` : ''}`, lines: [], keep };
      continue;
    }
    if (!current || line.trim() === '' || line.startsWith('--') || /^\\/.test(line) || /^SET /.test(line) || line.startsWith("SELECT pg_catalog.set_config('search_path'")) continue;
    if (options.noOwner && /^ALTER .* OWNER TO .*;$/.test(line)) continue;
    current.lines.push(line);
  }
  flush();
  return objects;
}

export interface SchemaDifference {
  /** The object, "TABLE public.t". */
  object: string;
  /** What differs, one line. */
  message: string;
}

/**
 * Compares the schema in the backup (`expected`) with the restored one,
 * object by object (the order pg_dump writes them in may differ, object
 * identities do not); for an object present on both sides the first line
 * that differs is named.
 */
export function compareSchemaDumps(expected: readonly SchemaObject[], actual: readonly SchemaObject[]): { objects: number; differences: SchemaDifference[] } {
  const group = (list: readonly SchemaObject[]) => {
    const map = new Map<string, string[]>();
    for (const o of list) map.set(o.key, [...(map.get(o.key) ?? []), o.text]);
    for (const texts of map.values()) texts.sort();
    return map;
  };
  const want = group(expected);
  const got = group(actual);
  const differences: SchemaDifference[] = [];
  for (const [key, texts] of want) {
    const have = got.get(key);
    if (!have) {
      differences.push({ object: key, message: `${key} is missing from the restored database` });
      continue;
    }
    if (JSON.stringify(texts) === JSON.stringify(have)) continue;
    const a = texts.join('\n').split('\n').filter((line) => line !== '');
    const b = have.join('\n').split('\n').filter((line) => line !== '');
    const onlyA = a.find((line) => !b.includes(line));
    const onlyB = b.find((line) => !a.includes(line));
    const detail = onlyA !== undefined ? `the backup has "${clip(onlyA)}"${onlyB !== undefined ? `, the restored database "${clip(onlyB)}"` : ''}` : onlyB !== undefined ? `the restored database has "${clip(onlyB)}"` : 'the same lines in another order';
    differences.push({ object: key, message: `${key} differs: ${detail}` });
  }
  for (const key of got.keys()) if (!want.has(key)) differences.push({ object: key, message: `${key} is in the restored database but not in the backup` });
  return { objects: expected.length, differences };
}

function clip(line: string): string {
  const trimmed = line.trim();
  return trimmed.length > 120 ? `${trimmed.slice(0, 117)}…` : trimmed;
}

/** Statements of a plain dump outside its data blocks, collected while the dump streams past (memory: the schema's size). */
class PlainSchemaCollector extends Writable {
  private partial = '';
  private inData = false;
  private inCopy = false;
  readonly lines: string[] = [];

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: () => void): void {
    const lines = (this.partial + chunk.toString('utf8')).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.take(line);
    callback();
  }

  override _final(callback: () => void): void {
    if (this.partial) this.take(this.partial);
    callback();
  }

  private take(line: string): void {
    // COPY rows can hold anything, even header-like text: skip to their \. first.
    if (this.inCopy) {
      if (line === '\\.') this.inCopy = false;
      return;
    }
    const header = HEADER.exec(line);
    if (header) this.inData = Boolean(header[1]) || DATA_TYPES.has(header[3]!);
    if (!header && this.inData) {
      if (/^COPY .* FROM stdin;$/.test(line)) this.inCopy = true;
      return;
    }
    this.lines.push(line);
  }
}

/** Where the backup's schema is kept while a restore streams the dump. */
export class SchemaCapture {
  private plain: PlainSchemaCollector | undefined;
  private archive: string | undefined;

  constructor(private readonly dir: string) {}

  /** A sink for a plain dump's SQL. */
  plainSink(): Writable {
    this.plain = new PlainSchemaCollector();
    return this.plain;
  }

  /** A sink for a custom archive: keeps its header and TOC. */
  customSink(): Writable {
    this.archive = path.join(this.dir, 'toc.dump');
    return tocStagingSink(this.archive);
  }

  /** A custom archive's header and TOC already staged by the restore. */
  async keepCustom(file: string): Promise<void> {
    this.archive = path.join(this.dir, 'toc.dump');
    await copyFile(file, this.archive);
  }

  /** A directory dump's toc.dat (pg_restore --schema-only reads nothing else). */
  async keepDirectoryToc(tocDat: string): Promise<void> {
    this.archive = path.join(this.dir, 'dump.d');
    await mkdir(this.archive, { mode: 0o700 });
    await copyFile(tocDat, path.join(this.archive, 'toc.dat'));
  }

  /** Whether the restore captured anything. */
  get captured(): boolean {
    return this.plain !== undefined || this.archive !== undefined;
  }

  /** The backup's schema as text: pg_restore --schema-only of the kept TOC, or the plain dump's statements. */
  async text(pgRestore: string, options: SchemaOptions, signal: AbortSignal): Promise<string> {
    if (this.plain) return this.plain.lines.join('\n');
    if (!this.archive) throw new Error('no schema was captured');
    const args = ['--schema-only', '--file=-', ...ownerArgs(options), this.archive];
    const env = inheritedEnv();
    return collectStdout(pgRestore, args, env, signal);
  }
}

function ownerArgs(options: SchemaOptions): string[] {
  return [...(options.noOwner ? ['--no-owner'] : []), ...(options.noAcl ? ['--no-privileges'] : [])];
}

/** The restored database's schema: pg_dump --schema-only, with the backup's own selection options. */
export async function restoredSchemaText(pgDump: string, target: ConnectionInfo, options: SchemaOptions & { selection: string[] }, signal: AbortSignal): Promise<string> {
  return collectStdout(pgDump, ['--schema-only', '--no-password', ...ownerArgs(options), ...options.selection], libpqEnv(target), signal);
}

async function collectStdout(program: string, args: string[], env: NodeJS.ProcessEnv, signal: AbortSignal): Promise<string> {
  const run = startProcess(program, args, { env, signal, stdout: 'pipe', isErrorLine: (line) => /error|ERROR|FATAL/.test(line) });
  const chunks: Buffer[] = [];
  run.stdout!.on('data', (chunk: Buffer) => chunks.push(chunk));
  await run.done;
  return Buffer.concat(chunks).toString('utf8');
}

export interface SchemaCheck {
  /** False when the comparison could not be fair (versions differ): `note` says why. */
  compared: boolean;
  note?: string | undefined;
  /** Objects of the backup's schema. */
  objects: number;
  differences: SchemaDifference[];
  ms: number;
}

/**
 * The restored database's schema against the captured one. Skipped (with a
 * note) when pg_dump's major version differs from the one that made the
 * backup, or the server's from the backup's server: their output differs
 * by design, and a proof must not report differences it did not find.
 */
export async function checkRestoredSchema(
  capture: SchemaCapture,
  target: ConnectionInfo,
  options: SchemaOptions & { selection: string[]; backupPgDump: string; backupServerVersionNum: number; serverVersionNum: number; pgBin?: string | undefined },
  signal: AbortSignal,
): Promise<SchemaCheck> {
  const started = Date.now();
  const skipped = (note: string): SchemaCheck => ({ compared: false, note, objects: 0, differences: [], ms: Date.now() - started });
  if (!capture.captured) return skipped('the schema was not captured during the restore');
  const [pgDump, pgRestore] = await Promise.all([toolInfo('pg_dump', options.pgBin), toolInfo('pg_restore', options.pgBin)]);
  const backupMajor = Number(options.backupPgDump.split('.')[0]);
  if (pgDump.major !== backupMajor) return skipped(`schema not compared: pg_dump ${pgDump.version} here, ${options.backupPgDump} made the backup (their output differs by version)`);
  if (Math.floor(options.serverVersionNum / 10000) !== Math.floor(options.backupServerVersionNum / 10000)) {
    return skipped(`schema not compared: the restored database is on PostgreSQL ${Math.floor(options.serverVersionNum / 10000)}, the backup's server was ${Math.floor(options.backupServerVersionNum / 10000)} (definitions are printed differently)`);
  }
  const [expected, actual] = await Promise.all([capture.text(pgRestore.path, options, signal), restoredSchemaText(pgDump.path, target, options, signal)]);
  const { objects, differences } = compareSchemaDumps(parseSchemaDump(expected, options), parseSchemaDump(actual, options));
  return { compared: true, objects, differences, ms: Date.now() - started };
}

/** pg_dump's selection options of a backup, so the restored database is dumped as the backup was. */
export function selectionArgs(options: { tables: readonly string[]; excludeTables: readonly string[]; schemas: readonly string[]; excludeSchemas: readonly string[] }): string[] {
  return [
    ...options.tables.map((t) => `--table=${t}`),
    ...options.excludeTables.map((t) => `--exclude-table=${t}`),
    ...options.schemas.map((s) => `--schema=${s}`),
    ...options.excludeSchemas.map((s) => `--exclude-schema=${s}`),
  ];
}

/** One line for the first differences: "TABLE public.t differs: …; …(and 3 more)". */
export function describeSchemaDifferences(differences: readonly SchemaDifference[], shown = 3): string {
  const head = differences.slice(0, shown).map((d) => d.message).join('; ');
  return differences.length > shown ? `${head} (and ${differences.length - shown} more)` : head;
}
