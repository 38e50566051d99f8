/**
 * Makes the V8 code cache of one bundle: node scripts/warm-code-cache.mjs dist/cli/main.cjs
 * (run by scripts/bundle-cli.mjs, in a child of its own: the cache carries the V8 flags of the
 * process that made it, and the bundle runs here as it would in pgkeep).
 *
 * The bundle is compiled and run as dist/cli/pgkeep.js runs it (src/cli/bundle-loader.ts), on
 * harmless commands that read nothing but an empty temporary folder: V8 compiles a function only
 * when it is first called, and createCachedData() after the runs holds every function compiled so
 * far, so a command's start-up finds in the cache what it would otherwise compile.
 *   - main.cjs: --help (every command module's top level), then --version, a command's --help and
 *     `list` of a folder that is no repository (settings, storage, the error path).
 *   - wal-cli.cjs: wal-push of a missing file and wal-fetch from a folder that is no repository.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { codeCacheFile, compileBundle, encodeCodeCache } from '../dist/cli/bundle-loader.js';

const file = path.resolve(process.argv[2]);
const name = path.basename(file, '.cjs');
const work = mkdtempSync(path.join(tmpdir(), 'pgkeep-code-cache-'));
const repo = path.join(work, 'no-repository');
process.chdir(work); // no pgkeep.yaml, no .env

const bundle = compileBundle(file, { useCache: false });
// main.cjs runs the program as it loads: with the argv of `pgkeep --help`
const entry = path.join(path.dirname(file), 'pgkeep.js');
process.argv = [process.argv[0], entry, '--help'];
const captured = [];
const quiet = (stream) => {
  stream.write = (chunk, ...rest) => {
    captured.push(String(chunk));
    const callback = rest.find((arg) => typeof arg === 'function');
    if (callback) callback();
    return true;
  };
};
quiet(process.stdout);
quiet(process.stderr);

const exports = bundle.run();
/** Resolves when the run that main.cjs started as it loaded has set its exit code (it must succeed: a bundle whose --help fails is broken). */
const started = Date.now();
const loaded = async () => {
  while (process.exitCode === undefined) {
    if (Date.now() - started > 60_000) throw new Error(`${file}: --help did not finish within 60 s:\n${captured.join('')}`);
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
  if (process.exitCode !== 0) throw new Error(`${file}: --help exited ${process.exitCode}:\n${captured.join('')}`);
};
const runs =
  name === 'main'
    ? [['--version'], ['backup', '--help'], ['list', '--repo', repo]]
    : [['wal-push', path.join(work, '000000010000000000000001'), '--repo', repo], ['wal-fetch', '000000010000000000000001', path.join(work, 'restored'), '--repo', repo]];
const run = name === 'main' ? exports.main : exports.walMain;
if (typeof run !== 'function') throw new Error(`${file} exports no ${name === 'main' ? 'main' : 'walMain'}`);
if (name === 'main') await loaded();
for (const args of runs) await run(args);

rmSync(work, { recursive: true, force: true });
writeFileSync(codeCacheFile(file), encodeCodeCache(file, bundle.bytes, bundle.script.createCachedData()));
process.exitCode = 0;
