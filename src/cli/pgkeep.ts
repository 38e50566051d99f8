#!/usr/bin/env node
/**
 * The `pgkeep` executable. WAL commands, which PostgreSQL runs once per
 * segment, take a lean path that skips loading the full command-line program;
 * everything else, and their --help, is the commander program in main.ts.
 *
 * The build bundles each into one CommonJS file (scripts/bundle-cli.mjs),
 * which Node loads in a fraction of the time of the ES modules it is made of;
 * run from the sources, there is none, and the modules are imported.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';

const [command, ...rest] = process.argv.slice(2);
// Help is for a person: the full program's (global options, examples), as for every other command.
const wantsHelp = rest.includes('--help') || rest.includes('-h');
const bundled = (name: string): string | undefined => {
  // a path, not the URL's pathname: that one is percent-encoded (an install folder with a space)
  const file = fileURLToPath(new URL(`./${name}.cjs`, import.meta.url));
  return existsSync(file) ? file : undefined;
};
if ((command === 'wal-push' || command === 'wal-fetch') && !wantsHelp) {
  const bundle = bundled('wal-cli');
  const { walMain } = (bundle ? createRequire(import.meta.url)(bundle) : await import('./wal-cli.js')) as typeof import('./wal-cli.js');
  process.exitCode = await walMain(process.argv.slice(2));
} else {
  // main runs the program as it loads
  const bundle = bundled('main');
  if (bundle) createRequire(import.meta.url)(bundle);
  else await import('./main.js');
}
