#!/usr/bin/env node
/**
 * The `pgkeep` executable. WAL commands, which PostgreSQL runs once per
 * segment, take a lean path that skips loading the full command-line program;
 * everything else is the commander program in main.ts.
 */
const [command] = process.argv.slice(2);
if (command === 'wal-push' || command === 'wal-fetch') {
  const { walMain } = await import('./wal-cli.js');
  process.exitCode = await walMain(process.argv.slice(2));
} else {
  await import('./main.js');
}
export {};
