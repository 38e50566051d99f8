/**
 * The environment a child program (pg_dump, psql, pg_ctl, zstd) inherits.
 *
 * This is the one file below the commands that touches process.env, and it
 * reads no setting from it: it copies the process's environment for a child,
 * without PG* variables, so a child connects exactly where pgkeep resolved
 * and a scratch server takes nothing from the caller's PGDATA or PGPORT.
 * Settings (PG_BIN, PGKEEP_*, DATABASE_URL, ...) are read once by the CLI's
 * settings and passed down; the linter allows process.env here and nowhere
 * else below src/commands/.
 */
export function inheritedEnv(): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) if (!key.startsWith('PG')) env[key] = value;
  return env;
}

/** The folders of PATH, where a child program is found when no PostgreSQL bin folder is configured. */
export function searchPath(): string {
  return process.env.PATH ?? '';
}
