#!/usr/bin/env node
/**
 * The `pgkeep` executable. WAL commands, which PostgreSQL runs once per
 * segment, take a lean path that skips loading the full command-line program;
 * everything else is the commander program in main.ts.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';

const [command] = process.argv.slice(2);
if (command === 'wal-push' || command === 'wal-fetch') {
  // The build bundles the lean path into one CommonJS file, which loads in half the time
  // of its ES modules (scripts/bundle-wal-cli.mjs); run from the sources, there is none.
  const bundle = new URL('./wal-cli.cjs', import.meta.url);
  const { walMain } = (existsSync(bundle) ? createRequire(import.meta.url)(bundle.pathname) : await import('./wal-cli.js')) as typeof import('./wal-cli.js');
  process.exitCode = await walMain(process.argv.slice(2));
} else {
  await import('./main.js');
}
