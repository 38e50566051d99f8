#!/usr/bin/env node
/**
 * The `pgkeep` executable. WAL commands, which PostgreSQL runs once per
 * segment, take a lean path that skips loading the full command-line program;
 * everything else, and their --help, is the commander program in main.ts.
 *
 * The build bundles each into one CommonJS file (scripts/bundle-cli.mjs),
 * which Node loads in a fraction of the time of the ES modules it is made of,
 * and makes V8's code cache of each, which saves most of compiling it
 * (bundle-loader.ts); run from the sources, there is none, and the modules
 * are imported.
 *
 * PGKEEP_DEBUG_CODE_CACHE=1 prints on stderr what became of the bundle's code
 * cache (accepted, rejected, stale, damaged, missing, unsupported): the tests
 * read it, and it says why a start-up is slow.
 */
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { compileBundle, type CompiledBundle } from './bundle-loader.js';

const [command, ...rest] = process.argv.slice(2);
// Help is for a person: the full program's (global options, examples), as for every other command.
const wantsHelp = rest.includes('--help') || rest.includes('-h');
const bundled = (name: string): CompiledBundle | undefined => {
  // a path, not the URL's pathname: that one is percent-encoded (an install folder with a space)
  const file = fileURLToPath(new URL(`./${name}.cjs`, import.meta.url));
  if (!existsSync(file)) return undefined;
  const bundle = compileBundle(file);
  if (process.env.PGKEEP_DEBUG_CODE_CACHE) process.stderr.write(`pgkeep: code cache of ${name}.cjs: ${bundle.cache}\n`);
  return bundle;
};
if ((command === 'wal-push' || command === 'wal-fetch') && !wantsHelp) {
  const bundle = bundled('wal-cli');
  const { walMain } = (bundle ? bundle.run() : await import('./wal-cli.js')) as typeof import('./wal-cli.js');
  process.exitCode = await walMain(process.argv.slice(2));
} else {
  // compiled first: V8 refuses a code cache made under other flags, and a backup sets one
  const bundle = bundled('main');
  // A backup's young generation stays at its first size (see there): set before the program runs, which
  // grows it to 8 MiB already; set only when the deduplicating writer starts, the first backup of a 1.2 GB
  // database peaked at 165 MB, against 142 MB from here. Any argument `backup` (global options may come
  // first): a false match (a repository named so) changes only when V8 collects young garbage.
  if (process.argv.slice(2).includes('backup')) (await import('../pipeline/keep-young-generation-small.js')).keepYoungGenerationSmall();
  // main runs the program as it loads
  if (bundle) bundle.run();
  else await import('./main.js');
}
