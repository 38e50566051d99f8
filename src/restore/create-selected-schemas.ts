import type { ConnectionInfo } from '../postgres/connection-info.js';
import { quoteIdent, withClient } from '../postgres/pg-client.js';
import { type LogicalManifest as Manifest } from '../repository/manifest.js';

/**
 * pg_dump --table dumps the tables but not the schemas they live in, so such a
 * dump cannot be restored into a new database as it is. Create those schemas first.
 */
export async function createSelectedSchemas(manifest: Manifest, target: ConnectionInfo, selected?: readonly string[]): Promise<void> {
  if (manifest.options.tables.length === 0 && selected === undefined) return;
  const schemas = selected ?? [...new Set(manifest.tables.map((t) => t.schema))];
  await withClient(target, async (client) => {
    for (const schema of schemas) await client.query(`CREATE SCHEMA IF NOT EXISTS ${quoteIdent(schema)}`);
  });
}
