#!/usr/bin/env node
// Runs the test files given (npm test passes them) with Node's test runner,
// then lists every skipped test with its reason. Under CI (the CI environment
// variable, which .ci/run and CI services set) a skipped test fails the run:
// there every capability must be tested.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { compileTests } from './compile-tests.mjs';

const folder = mkdtempSync(path.join(os.tmpdir(), 'pgkeep-test-run-'));
// The test files and what they import run compiled, without a loader in each
// process (compile-tests.mjs says why and how). Reports name the .ts files.
const compiled = await compileTests(path.join(folder, 'tree'));
const sourceOf = new Map();

// The unit test files run in one process, one after the other: a process per
// file cost a Node and tsx start-up each (about 40% of the unit tests' CPU
// time, when they ran under tsx), and still costs a Node start-up and the
// loading of the modules they share. Files that measure their own process's memory keep a process of
// their own, where nothing else has grown the heap. A file that fails to load
// is a failed test named after it; the others still run.
const OWN_PROCESS = /(^|\/)(decompress-memory|age)\.test\.[cm]?[jt]s$/;
const isUnit = (file) => /(^|\/)test\/unit\//.test(file);
const given = process.argv.slice(2).map((file) => {
  const js = compiled(file);
  sourceOf.set(js, path.resolve(file));
  return js;
});
const shared = given.filter((file) => isUnit(file) && !OWN_PROCESS.test(file));
let inputs = given;
if (shared.length > 1) {
  const entry = path.join(folder, 'unit-tests.test.mjs');
  const lines = ["import { test } from 'node:test';"];
  for (const file of shared) {
    const url = JSON.stringify(pathToFileURL(path.resolve(file)).href);
    const name = path.relative(process.cwd(), sourceOf.get(file));
    lines.push(`try { await import(${url}); } catch (error) { test(${JSON.stringify(`loading ${name}`)}, () => { throw error; }); }`);
  }
  writeFileSync(entry, `${lines.join('\n')}\n`);
  inputs = [entry, ...given.filter((file) => !shared.includes(file))];
}

// The files start in this order, as slots free up. Started last, a
// long file ends the run alone while the other slots idle, so the longest
// start first (this list, longest first: update it when a file grows past its
// neighbours), then the other integration files, then the short unit files,
// which fill the gaps at the end. From a CI run of 2026-12-06, session 14
// (PGKEEP_TEST_DURATIONS_OUT; seconds of each file's tests): dedup-copy 28.5,
// the unit tests' one process ~27, faults 25.9, network-faults 24.9,
// restore-test 24.8, pitr 22.3, selective-restore 21.3, dedup 20.8,
// content-store 20.3, server-matrix 19.9, dashboard 19.5, roundtrip 19.0.
const LONGEST_FIRST = [
  'dedup-copy', 'unit-tests', 'faults', 'network-faults', 'restore-test', 'pitr', 'selective-restore', 'dedup', 'content-store',
  'server-matrix', 'dashboard', 'roundtrip', 'bundled-cli', 'database-fidelity', 'physical-restore-test', 'serve-fleet', 'runbook',
  'dedup-copy-physical', 'parallel-copy-loader', 'first-hour', 'prune', 'multi-repo', 'wal-archive', 'content-index-spill', 'partitions',
  'encrypted-s3', 'extract', 'restore-file', 'verify-restore', 'age-interop', 's3-storage', 'errors', 'serve', 'copy', 'interrupted-init',
  'interrupt', 'custom-toc', 'globals', 'terminal', 'host-check', 'serve-catalog', 'network-faults-storage', 'status', 'backup-writer',
  'harness', 'restore-damaged-content', 'posix-storage',
];
const rank = (file) => {
  const known = LONGEST_FIRST.indexOf(path.basename(file).replace(/\.test\.[cm]?[jt]s$/, ''));
  if (known >= 0 && !isUnit(file)) return known;
  return LONGEST_FIRST.length + (isUnit(file) ? 1 : 0);
};
const files = inputs.map((file, i) => ({ file, i })).sort((a, b) => rank(a.file) - rank(b.file) || a.i - b.i).map((f) => f.file);
// Test files run side by side, each in its own process, one more than the
// cores: many files wait (on PostgreSQL, timers, s3rver, Chromium, killed
// processes), and with one per core the machine sat 22% idle. On 2 cores, 3
// at a time took the suite from 243-246 s to 229.5 s in one hour on one clone,
// and from 257.8 to 240.1 s back to back later (session 13; process accounting
// of a run 2 at a time: 384 CPU-s). PGKEEP_TEST_CONCURRENCY tries another number.
const concurrency = Number.parseInt(process.env.PGKEEP_TEST_CONCURRENCY ?? '', 10) || Math.max(2, os.availableParallelism() + 1);
const skipsFile = path.join(folder, 'skips.jsonl');
const durationsFile = path.join(folder, 'durations.jsonl');
// test/support/pg-cluster.ts copies every cluster from one initdb per server
// version: each run makes its own here and leaves none. Open to traversal, as
// the server's OS user (postgres, when we are root) builds and reads it.
const templates = mkdtempSync(path.join(os.tmpdir(), 'pgkeep-initdb-templates-'));
chmodSync(templates, 0o755);
// Not `node --test`: it starts the files sorted by name, not in this order (run-test-files.mjs says more).
// run() gives each file's process this process's flags: source maps, so stack traces name the .ts lines.
const run = spawnSync(
  process.execPath,
  ['--enable-source-maps', fileURLToPath(new URL('./run-test-files.mjs', import.meta.url)), String(concurrency), skipsFile, durationsFile, ...files],
  { stdio: 'inherit', env: { ...process.env, PGKEEP_TEST_INITDB_TEMPLATES: templates } },
);
let skips = [];
try {
  skips = readFileSync(skipsFile, 'utf8').split('\n').filter(Boolean).map((line) => JSON.parse(line));
} catch {
  // no file: the runner stopped before reporting anything; its exit code says so
}
// The slowest files, to keep LONGEST_FIRST in the order they take.
const perFile = new Map();
try {
  for (const line of readFileSync(durationsFile, 'utf8').split('\n').filter(Boolean)) {
    const { file, ms } = JSON.parse(line);
    const name = file ? path.basename(file) : '(unknown)';
    perFile.set(name, (perFile.get(name) ?? 0) + ms);
  }
} catch {
  // no file: nothing ran
}
// Every file's time, for reordering LONGEST_FIRST, where PGKEEP_TEST_DURATIONS_OUT names a file.
if (process.env.PGKEEP_TEST_DURATIONS_OUT && perFile.size > 0) {
  const all = Object.fromEntries([...perFile].sort((a, b) => b[1] - a[1]).map(([name, ms]) => [name, Math.round(ms)]));
  writeFileSync(process.env.PGKEEP_TEST_DURATIONS_OUT, `${JSON.stringify(all, null, 2)}\n`);
}
if (perFile.size > 1) {
  const slowest = [...perFile].sort((a, b) => b[1] - a[1]).slice(0, 15);
  console.log(`\nslowest files (their tests' time, start-up hooks not included): ${slowest.map(([name, ms]) => `${name.replace(/\.test\.[cm]?[jt]s$/, '')} ${(ms / 1000).toFixed(1)}s`).join(', ')}`);
}
rmSync(folder, { recursive: true, force: true });
rmSync(templates, { recursive: true, force: true });

const ci = Boolean(process.env.CI) && process.env.CI !== 'false';
if (skips.length > 0) {
  console.log(`\nskipped ${skips.length} test(s)${ci ? ' (not allowed under CI: every capability must be tested here)' : ''}:`);
  for (const s of skips) console.log(`  ${s.file ? `${path.relative(process.cwd(), sourceOf.get(s.file) ?? s.file)}: ` : ''}${s.name}: ${s.reason}`);
}
if (run.status !== 0) process.exitCode = run.status ?? 1;
else if (ci && skips.length > 0) process.exitCode = 1;
