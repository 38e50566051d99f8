import { Writable } from 'node:stream';

export interface TableRef {
  schema: string;
  name: string;
}

/**
 * Tables whose data a `pg_restore --list` TOC contains. Entry lines read
 * "<dumpId>; <tableoid> <oid> TABLE DATA <schema> <name> <owner>"; names are
 * printed unquoted, so a name with spaces is matched against the manifest's
 * names rather than split on spaces.
 */
export function tocHasTableData(tocListing: string, table: TableRef): boolean {
  const wanted = `${table.schema} ${table.name}`;
  return tableDataEntries(tocListing).some((rest) => rest === wanted || rest.startsWith(`${wanted} `));
}

export function tableDataEntries(tocListing: string): string[] {
  const entries: string[] = [];
  for (const line of tocListing.split('\n')) {
    const match = /^\d+; \d+ \d+ TABLE DATA (.*)$/.exec(line);
    if (match) entries.push(match[1]!);
  }
  return entries;
}

/**
 * Scans a plain-format dump as it streams and records the tables of its COPY
 * statements. COPY data blocks are skipped up to their "\." terminator, so row
 * text that happens to start with "COPY " is not mistaken for a statement.
 */
export class PlainDumpScanner extends Writable {
  readonly tables: TableRef[] = [];
  private partial = '';
  private inCopy = false;

  constructor() {
    super({ highWaterMark: 1 << 20 });
  }

  override _write(chunk: Buffer, _encoding: BufferEncoding, callback: (error?: Error | null) => void): void {
    const lines = (this.partial + chunk.toString('utf8')).split('\n');
    this.partial = lines.pop() ?? '';
    for (const line of lines) this.line(line);
    callback();
  }

  override _final(callback: (error?: Error | null) => void): void {
    if (this.partial) this.line(this.partial);
    callback();
  }

  private line(line: string): void {
    if (this.inCopy) {
      if (line === '\\.') this.inCopy = false;
      return;
    }
    if (line.startsWith('COPY ') && line.endsWith('FROM stdin;')) {
      const ref = parseQualifiedName(line.slice(5));
      if (ref) this.tables.push(ref);
      this.inCopy = true;
    }
  }
}

/** Parses `schema.table` (each part plain or double-quoted) at the start of `text`. */
export function parseQualifiedName(text: string): TableRef | undefined {
  const parts: string[] = [];
  let i = 0;
  while (parts.length < 2) {
    let name = '';
    if (text[i] === '"') {
      i++;
      while (i < text.length) {
        if (text[i] === '"') {
          if (text[i + 1] === '"') {
            name += '"';
            i += 2;
            continue;
          }
          i++;
          break;
        }
        name += text[i++];
      }
    } else {
      const match = /^[^\s."(]+/.exec(text.slice(i));
      if (!match) return undefined;
      name = match[0];
      i += name.length;
    }
    parts.push(name);
    if (text[i] === '.' && parts.length < 2) i++;
    else break;
  }
  return parts.length === 2 ? { schema: parts[0]!, name: parts[1]! } : undefined;
}
