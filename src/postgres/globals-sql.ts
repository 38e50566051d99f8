import { Transform, type TransformCallback } from 'node:stream';

/** What applying a globals dump did (or, for a plan, would do). */
export interface GlobalsReport {
  /** Roles the dump creates that did not exist. */
  created: string[];
  /** Roles of the dump that already existed: left exactly as they were. */
  existing: string[];
  /** Statements left out: tablespaces (their folders are per server) and per-database role settings. */
  skipped: string[];
}

/**
 * Filters the SQL of `pg_dumpall --globals-only` line by line, so that it
 * only adds to a server and never changes what is there:
 *
 * - CREATE ROLE of a role that exists is dropped, and so is everything else
 *   about that role (ALTER ROLE attributes and password, settings, comment,
 *   the memberships it is granted): an existing role keeps its password and
 *   rights;
 * - memberships are granted to the roles created here only;
 * - tablespaces are skipped (CREATE TABLESPACE needs a folder on that server),
 *   and so are ALTER ROLE … IN DATABASE settings (the database may not exist);
 * - everything else (SET, comments, psql's \restrict) passes.
 *
 * pg_dumpall writes each of these statements on one line. The output is
 * wrapped in BEGIN … COMMIT, the COMMIT written only at the end of the input:
 * a stream that is cut short (damage, interruption) leaves the transaction
 * open, and it is rolled back when psql disconnects. (psql --single-transaction
 * would commit whatever it had read at the end of its input.)
 */
export class GlobalsFilter extends Transform {
  readonly report: GlobalsReport = { created: [], existing: [], skipped: [] };
  private readonly createdSet = new Set<string>();
  private partial = '';
  private begun = false;

  constructor(private readonly existingRoles: ReadonlySet<string>) {
    super({ highWaterMark: 1 << 20 });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    const lines = (this.partial + chunk.toString('utf8')).split('\n');
    this.partial = lines.pop() ?? '';
    const kept = lines.filter((line) => this.keep(line));
    if (!this.begun) kept.unshift('BEGIN;');
    this.begun = true;
    callback(null, kept.length > 0 ? `${kept.join('\n')}\n` : undefined);
  }

  override _flush(callback: TransformCallback): void {
    const last = this.partial !== '' && this.keep(this.partial) ? `${this.partial}\n` : '';
    callback(null, `${this.begun ? '' : 'BEGIN;\n'}${last}COMMIT;\n`);
  }

  private keep(line: string): boolean {
    const role = (prefix: string) => (line.startsWith(prefix) ? readIdentifier(line, prefix.length) : undefined);
    if (/^(CREATE|ALTER|COMMENT ON|SECURITY LABEL .* ON) TABLESPACE /.test(line) || /^(GRANT|REVOKE) .* ON TABLESPACE /.test(line)) {
      this.report.skipped.push(line.replace(/ LOCATION .*/, ' …'));
      return false;
    }
    const created = role('CREATE ROLE ');
    if (created) {
      if (this.existingRoles.has(created.name)) {
        this.report.existing.push(created.name);
        return false;
      }
      this.createdSet.add(created.name);
      this.report.created.push(created.name);
      return true;
    }
    const altered = role('ALTER ROLE ') ?? role('COMMENT ON ROLE ');
    if (altered) {
      if (!this.createdSet.has(altered.name)) return false;
      if (/^ IN DATABASE /.test(line.slice(altered.end))) {
        this.report.skipped.push(line);
        return false;
      }
      return true;
    }
    if (line.startsWith('GRANT ')) {
      // GRANT role[, …] TO member [WITH …] [GRANTED BY grantor];
      const to = findTo(line);
      const member = to === undefined ? undefined : readIdentifier(line, to);
      return member !== undefined && this.createdSet.has(member.name);
    }
    return true;
  }
}

/** Reads a role name at `start`: "quoted ""name""" or a plain word. */
export function readIdentifier(text: string, start: number): { name: string; end: number } | undefined {
  if (text[start] === '"') {
    let name = '';
    for (let i = start + 1; i < text.length; i++) {
      if (text[i] === '"') {
        if (text[i + 1] === '"') {
          name += '"';
          i++;
          continue;
        }
        return { name, end: i + 1 };
      }
      name += text[i];
    }
    return undefined;
  }
  const match = /^[^\s;,"]+/.exec(text.slice(start));
  return match ? { name: match[0], end: start + match[0].length } : undefined;
}

/** Where the member name after " TO " starts, skipping quoted names before it. */
function findTo(line: string): number | undefined {
  let quoted = false;
  for (let i = 0; i < line.length; i++) {
    if (line[i] === '"') quoted = !quoted;
    else if (!quoted && line.startsWith(' TO ', i)) return i + 4;
  }
  return undefined;
}
