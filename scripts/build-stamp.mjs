#!/usr/bin/env node
/**
 * Whether dist/ is the build of this checkout, so that `npm test` builds only
 * when something the build reads has changed.
 *
 *   node scripts/build-stamp.mjs --write   (the end of `npm run build`)
 *   node scripts/build-stamp.mjs --fresh   (exit 0: dist/ is this build; 1: build)
 *
 * Why: a fresh clone is built by `npm ci` (its prepare script runs the build),
 * and `npm test` built it again right after: tsc type-checks the whole of src/
 * (~14 CPU-s), the bundles and their code caches another ~2.5, about 15 s of
 * the test command on two cores for the same files (session 14).
 *
 * The stamp (dist/.build-stamp) is a SHA-256 of everything the build reads:
 * every file under src/, the build's scripts, the TypeScript configurations,
 * package.json and package-lock.json (the compiler's and esbuild's versions),
 * and the Node version and architecture (the code caches are V8's, for one
 * version). dist/ is fresh only when the stamp matches and the files the tests
 * run are there; anything else (no stamp, another digest, a file missing) builds.
 */
import { createHash } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const STAMP = path.join(ROOT, 'dist', '.build-stamp');
const INPUT_FILES = ['scripts/bundle-cli.mjs', 'scripts/warm-code-cache.mjs', 'scripts/build-stamp.mjs', 'tsconfig.json', 'tsconfig.build.json', 'package.json', 'package-lock.json'];
/** What the tests run from dist/: the executable, its bundles and their caches. */
const OUTPUTS = ['dist/cli/pgkeep.js', 'dist/cli/main.js', 'dist/cli/main.cjs', 'dist/cli/wal-cli.cjs', 'dist/cli/main.cjs.cache', 'dist/cli/wal-cli.cjs.cache'];

function digest() {
  const hash = createHash('sha256').update(`${process.version} ${process.arch}\n`);
  const sources = readdirSync(path.join(ROOT, 'src'), { recursive: true, withFileTypes: true })
    .filter((entry) => entry.isFile())
    .map((entry) => path.relative(ROOT, path.join(entry.parentPath ?? entry.path, entry.name)))
    .sort();
  for (const file of [...sources, ...INPUT_FILES]) {
    const bytes = existsSync(path.join(ROOT, file)) ? readFileSync(path.join(ROOT, file)) : Buffer.alloc(0);
    hash.update(`${file} ${bytes.length}\n`).update(bytes);
  }
  return hash.digest('hex');
}

const [mode] = process.argv.slice(2);
if (mode === '--write') {
  writeFileSync(STAMP, `${digest()}\n`);
} else if (mode === '--fresh') {
  let stamp = '';
  try {
    stamp = readFileSync(STAMP, 'utf8').trim();
  } catch {
    // never built here
  }
  const fresh = stamp === digest() && OUTPUTS.every((file) => existsSync(path.join(ROOT, file)));
  if (fresh) console.log('dist/ is the build of these sources (dist/.build-stamp): not built again');
  process.exitCode = fresh ? 0 : 1;
} else {
  console.error('usage: node scripts/build-stamp.mjs --write | --fresh');
  process.exitCode = 2;
}
