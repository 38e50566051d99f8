/**
 * The table a `COPY … FROM stdin;` statement of pg_dump's writes into, as
 * [schema, name] with pg_dump's quoting undone; undefined when it names no
 * schema or is not laid out as pg_dump writes it (fmtQualifiedId: an
 * identifier is bare when it is lower case letters, digits and underscores,
 * else double-quoted with `"` doubled).
 *
 * The restore's row check takes the server's own count of a COPY (its
 * command tag) as the table's count only where the COPY named that table
 * itself: with --load-via-partition-root the statement names the root, and
 * the rows land in whichever partition the server routes them to.
 */
export function copyStatementTable(copyStmt: string): [schema: string, name: string] | undefined {
  const match = /^COPY ("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)\.("(?:[^"]|"")+"|[a-z_][a-z0-9_$]*)[ (]/.exec(copyStmt);
  if (!match) return undefined;
  return [unquote(match[1]!), unquote(match[2]!)];
}

function unquote(identifier: string): string {
  return identifier.startsWith('"') ? identifier.slice(1, -1).replaceAll('""', '"') : identifier;
}
