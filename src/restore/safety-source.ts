import type { ResolvedSource } from '../config/settings.js';
import { sourceNameForDatabase } from '../config/settings.js';
import { withDatabase } from '../postgres/connection-info.js';

/** The safety backup goes to the source whose database it is, else to a source named after the database. */
export function safetySource(source: ResolvedSource, database: string): ResolvedSource {
  const name = database === source.connection.database ? source.name : sourceNameForDatabase(database);
  return { ...source, name, connection: withDatabase(source.connection, database), backup: {} };
}
