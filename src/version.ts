import { createRequire } from 'node:module';

/** pgkeep's own version, from package.json (one level above both src/ and dist/). */
export const PGKEEP_VERSION: string = (createRequire(import.meta.url)('../package.json') as { version: string }).version;
