#!/usr/bin/env node
// Runs the test files given (npm test passes them) with Node's test runner,
// then lists every skipped test with its reason. Under CI (the CI environment
// variable, which .ci/run and CI services set) a skipped test fails the run:
// there every capability must be tested.
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';

const files = process.argv.slice(2);
// Test files run side by side, each in its own process; 2 is what the suite
// is measured with on 2 cores. PGKEEP_TEST_CONCURRENCY tries another number.
const concurrency = Number.parseInt(process.env.PGKEEP_TEST_CONCURRENCY ?? '', 10) || 2;
const folder = mkdtempSync(path.join(tmpdir(), 'pgkeep-test-run-'));
const skipsFile = path.join(folder, 'skips.jsonl');
const run = spawnSync(
  process.execPath,
  [
    '--import', 'tsx', '--test', `--test-concurrency=${concurrency}`,
    '--test-reporter=spec', '--test-reporter-destination=stdout',
    `--test-reporter=${new URL('./skip-reporter.mjs', import.meta.url).href}`, `--test-reporter-destination=${skipsFile}`,
    ...files,
  ],
  { stdio: 'inherit' },
);
let skips = [];
try {
  skips = readFileSync(skipsFile, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
} catch {
  // no file: the runner stopped before reporting anything; its exit code says so
}
rmSync(folder, { recursive: true, force: true });

const ci = Boolean(process.env.CI) && process.env.CI !== 'false';
if (skips.length > 0) {
  console.log(`\nskipped ${skips.length} test(s)${ci ? ' (not allowed under CI: every capability must be tested here)' : ''}:`);
  for (const s of skips) console.log(`  ${s.file ? `${path.relative(process.cwd(), s.file)}: ` : ''}${s.name}: ${s.reason}`);
}
if (run.status !== 0) process.exitCode = run.status ?? 1;
else if (ci && skips.length > 0) process.exitCode = 1;
