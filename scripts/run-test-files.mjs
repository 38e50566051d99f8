// Runs test files with node:test's run() in exactly the order given, each in
// its own process, `concurrency` at a time; scripts/run-tests.mjs starts it
// on the compiled files (compile-tests.mjs), with --enable-source-maps, which
// run() hands on to every file's process.
//
// Why not `node --test file...`: Node 20's command line sorts the files by
// name before starting them, so the longest files, which run-tests.mjs puts
// first, started wherever the alphabet put them (network-faults and pitr late
// in the run, where they ended it alone). run() keeps the order.
//
// Usage: node --enable-source-maps run-test-files.mjs CONCURRENCY SKIPS_FILE DURATIONS_FILE FILE...
// Reporters: spec on stdout, skip-reporter.mjs and duration-reporter.mjs into
// their files. Exit code 1 when a test failed (or no file ran), as node --test.
import { createWriteStream } from 'node:fs';
import * as path from 'node:path';
import { run } from 'node:test';
import { spec } from 'node:test/reporters';
import { finished } from 'node:stream/promises';
import durationReporter from './duration-reporter.mjs';
import skipReporter from './skip-reporter.mjs';

const [concurrency, skipsFile, durationsFile, ...files] = process.argv.slice(2);
const stream = run({ files: files.map((file) => path.resolve(file)), concurrency: Number(concurrency) });
// three reporters and the waits below each listen for the end: more than the default 10 listeners, no leak
stream.setMaxListeners(20);

let failed = false;
let passed = false;
stream.on('test:fail', () => (failed = true));
stream.on('test:pass', () => (passed = true));

const outputs = [
  stream.compose(new spec()).pipe(process.stdout, { end: false }),
  stream.compose(skipReporter).pipe(createWriteStream(skipsFile)),
  stream.compose(durationReporter).pipe(createWriteStream(durationsFile)),
];
await Promise.all(outputs.slice(1).map((output) => finished(output)));
await finished(stream);
if (failed || !passed) process.exitCode = 1;
