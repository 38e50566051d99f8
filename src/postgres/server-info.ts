import type pg from 'pg';

export interface ServerInfo {
  version: string;
  versionNum: number;
  systemIdentifier: string | null;
}

export interface DatabaseInfo {
  name: string;
  encoding: string;
  collate: string;
  ctype: string;
  sizeBytes: number;
}

export async function readServerInfo(client: pg.Client): Promise<ServerInfo> {
  const version = await client.query<{ num: string; text: string }>(
    "SELECT current_setting('server_version_num') AS num, current_setting('server_version') AS text",
  );
  let systemIdentifier: string | null = null;
  try {
    // pg_control_system() may be restricted to privileged roles; the identifier is informative here.
    const sys = await client.query<{ id: string }>('SELECT system_identifier::text AS id FROM pg_catalog.pg_control_system()');
    systemIdentifier = sys.rows[0]?.id ?? null;
  } catch {
    systemIdentifier = null;
  }
  return { version: version.rows[0]!.text.split(' ')[0]!, versionNum: Number(version.rows[0]!.num), systemIdentifier };
}

export async function readDatabaseInfo(client: pg.Client): Promise<DatabaseInfo> {
  const result = await client.query<{ name: string; encoding: string; collate: string; ctype: string; size: string }>(`
    SELECT d.datname AS name, pg_catalog.pg_encoding_to_char(d.encoding) AS encoding,
           d.datcollate AS collate, d.datctype AS ctype, pg_catalog.pg_database_size(d.oid)::text AS size
      FROM pg_catalog.pg_database d WHERE d.datname = current_database()`);
  const row = result.rows[0]!;
  return { name: row.name, encoding: row.encoding, collate: row.collate, ctype: row.ctype, sizeBytes: Number(row.size) };
}

export async function databaseExists(client: pg.Client, name: string): Promise<boolean> {
  const result = await client.query('SELECT 1 FROM pg_catalog.pg_database WHERE datname = $1', [name]);
  return result.rowCount === 1;
}
