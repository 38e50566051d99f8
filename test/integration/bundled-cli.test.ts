import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { copyFile, cp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { CLI, CLI_ENTRY, cleanEnv, collect, json, pgkeep, startPgkeep, type CliResult } from '../support/cli.js';
import { loadAwkwardFixture } from '../support/awkward-fixture.js';
import { diffSnapshots, snapshotDatabase } from '../support/db-compare.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { COMMAND_NAMES } from '../../src/registry/registry.js';

// The `pgkeep` executable loads the program bundled into one CommonJS file (dist/cli/main.cjs,
// scripts/bundle-cli.mjs) for its start-up. What a bundle can break: a lazily imported command
// missing, a file found relative to a module (package.json, htmx, pgkeep.js for wal-fetch), a
// package loaded as CommonJS instead of ESM. Each is exercised here through the executable (which
// every other test file spawns too: test/support/cli.ts).
const BUNDLE = path.join(path.dirname(CLI), 'main.cjs');

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('bundled-cli', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE awkward');
  loadAwkwardFixture(cluster, 'awkward');
});

test('the build made the bundle, and the executable runs it', () => {
  assert.ok(existsSync(BUNDLE), `${BUNDLE} is missing: npm run build makes it`);
});

test('--version is package.json version (found from the bundle)', async () => {
  const { version } = JSON.parse(readFileSync(path.resolve(path.dirname(CLI), '../../package.json'), 'utf8')) as { version: string };
  const result = await pgkeep(['--version']);
  assert.equal(result.code, 0, result.stderr);
  assert.equal(result.stdout.trim(), version);
});

test("the program's help loads every command from the bundle, as the ES modules do", async () => {
  const [bundled, modules] = await Promise.all([pgkeep(['--help']), pgkeep(['--help'], { modules: true })]);
  assert.equal(bundled.code, 0, bundled.stderr);
  assert.equal(bundled.stdout, modules.stdout);
  for (const name of COMMAND_NAMES) assert.ok(bundled.stdout.includes(`  ${name.split(' ')[0]}`), `${name} in the program's help`);
});

// wal-push and wal-fetch are not in the registry: the executable runs them on its lean path (wal-cli.cjs).
const HELP_COMMANDS = [...COMMAND_NAMES, 'wal-push', 'wal-fetch'];

// Each command's help is a process of its own here, so what a user reads in it is checked here too (first-hour.test.ts
// checks the program's help, and that every command it lists is one of these): one to three examples that are
// commands to type, and the global options (keygen takes none).
test("every command's --help runs from the bundle (each command's module alone), with examples and the global options", async () => {
  const queue = HELP_COMMANDS.map((name) => [...name.split(' '), '--help']);
  const failures: string[] = [];
  const helps = new Map<string, string>();
  // four at a time: a process each, on a machine with few cores
  await Promise.all(
    Array.from({ length: 4 }, async () => {
      for (let args = queue.shift(); args; args = queue.shift()) {
        const result = await pgkeep(args);
        if (result.code !== 0 || result.stderr !== '') failures.push(`pgkeep ${args.join(' ')}: exit ${result.code}, stderr ${result.stderr}`);
        else if (!result.stdout.startsWith(`Usage: pgkeep ${args.slice(0, -1).join(' ')} `)) failures.push(`pgkeep ${args.join(' ')}: no usage line: ${result.stdout.slice(0, 80)}`);
        else helps.set(args.slice(0, -1).join(' '), result.stdout);
      }
    }),
  );
  assert.ok(COMMAND_NAMES.length >= 20, `expected every command, got ${COMMAND_NAMES.length}`);
  assert.deepEqual(failures, []);
  for (const command of HELP_COMMANDS) {
    const help = helps.get(command)!;
    assert.match(help, /\nExamples?:\n(  .+\n){1,3}$/, `${command} --help shows one to three examples`);
    for (const line of help.split(/\nExamples?:\n/)[1]!.trim().split('\n')) assert.match(line.trim(), /^(pgkeep |[A-Z_]+=\S+ pgkeep |archive_command = 'pgkeep |restore_command = 'pgkeep )/, `${command}: ${line}`);
    if (command !== 'keygen') assert.match(help, /\nGlobal options \(before or after the command\):\n/, `${command} --help lists the global options`);
  }
});

test('backup, verify, list and restore --jobs 2 through the bundle: the awkward fixture comes back identical', async () => {
  const env = { DATABASE_URL: cluster.url('awkward') };
  const repo = path.join(work, 'repo');
  const backup = await pgkeep(['backup', '--repo', repo, '--json'], { env });
  assert.equal(backup.code, 0, backup.stderr);
  const verify = await pgkeep(['verify', 'latest', '--repo', repo, '--json'], { env });
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(json(verify).tables.found, json(verify).tables.expected);
  const list = await pgkeep(['list', '--repo', repo, '--json']);
  assert.equal(list.code, 0, list.stderr);
  assert.equal(json<unknown[]>(list).length, 1);
  const restore = await pgkeep(['restore', 'latest', '--repo', repo, '--to', 'bundled_copy', '--jobs', '2', '--json'], { env });
  assert.equal(restore.code, 0, restore.stderr);
  assert.deepEqual(diffSnapshots(await snapshotDatabase(cluster, 'awkward'), await snapshotDatabase(cluster, 'bundled_copy')), []);
});

test('the dashboard serves its page and htmx (resolved from node_modules) from the bundle', async () => {
  const cwd = path.join(work, 'dashboard');
  await mkdir(cwd);
  await writeFile(path.join(cwd, 'pgkeep.yaml'), ['sources:', '  app:', `    db: ${JSON.stringify(cluster.url('awkward'))}`, `    repo: ${JSON.stringify(path.join(work, 'repo'))}`, ''].join('\n'));
  const child = startPgkeep(['dashboard', '--listen', '127.0.0.1:0'], { cwd });
  try {
    const exited = collect(child);
    let stderr = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr!.on('data', (text: string) => {
        stderr += text;
        const match = /dashboard on (http:\/\/[^/\s]+)\//.exec(stderr);
        if (match) resolve(match[1]!);
      });
      void exited.then((r) => reject(new Error(`pgkeep dashboard exited ${r.code}: ${r.stderr}`)));
    });
    const page = await fetch(`${url}/`);
    assert.equal(page.status, 200);
    assert.match(await page.text(), /data-source="app"/);
    const htmx = await fetch(`${url}/assets/htmx.min.js`);
    assert.equal(htmx.status, 200);
    assert.match(await htmx.text(), /htmx/);
  } finally {
    child.kill('SIGTERM');
  }
});

test('installed under a folder with a space in its name, the executable finds its bundle and package.json', async () => {
  const root = path.resolve(path.dirname(CLI), '../..');
  const installed = path.join(work, 'with space');
  await mkdir(installed);
  await cp(path.join(root, 'dist'), path.join(installed, 'dist'), { recursive: true });
  await copyFile(path.join(root, 'package.json'), path.join(installed, 'package.json'));
  await symlink(path.join(root, 'node_modules'), path.join(installed, 'node_modules'));
  const run = (args: string[]) => collect(spawn(process.execPath, [path.join(installed, 'dist', 'cli', 'pgkeep.js'), ...args], { stdio: ['pipe', 'pipe', 'pipe'] }));
  const version = await run(['--version']);
  assert.equal(version.code, 0, version.stderr);
  assert.equal(version.stdout.trim(), (JSON.parse(readFileSync(path.join(root, 'package.json'), 'utf8')) as { version: string }).version);
  const list = await run(['list', '--repo', path.join(work, 'repo'), '--json']);
  assert.equal(list.code, 0, list.stderr);
  assert.equal(json<unknown[]>(list).length, 1);
});

test('the executable falls back to the ES modules without a bundle (running from a build without it)', () => {
  // pgkeep.ts loads main.cjs only when it exists: the source of the check, so a rename breaks this test, not users.
  const entry = readFileSync(CLI_ENTRY, 'utf8');
  assert.match(entry, /main\.cjs|\$\{name\}\.cjs/);
  assert.match(entry, /import\('\.\/main\.js'\)/);
});

// The V8 code cache of each bundle (dist/cli/<name>.cjs.cache, made by the build: src/cli/bundle-loader.ts).
// PGKEEP_DEBUG_CODE_CACHE=1 makes the executable say on stderr what became of it.
const cacheState = (stderr: string, bundle: string): string | undefined => new RegExp(`^pgkeep: code cache of ${bundle}\\.cjs: (\\w+)$`, 'm').exec(stderr)?.[1];
const DEBUG_CACHE = { PGKEEP_DEBUG_CODE_CACHE: '1' };

test('the executable compiles its bundles with the code cache the build made, a backup too (its V8 flag is set after)', async () => {
  const missingSegment = path.join(work, '000000010000000000000001');
  const [version, backupHelp, walPush, quiet] = await Promise.all([
    pgkeep(['--version'], { env: DEBUG_CACHE }),
    pgkeep(['backup', '--help'], { env: DEBUG_CACHE }),
    pgkeep(['wal-push', missingSegment, '--repo', path.join(work, 'no-repo')], { env: DEBUG_CACHE }),
    pgkeep(['--version']),
  ]);
  assert.equal(version.code, 0, version.stderr);
  assert.equal(cacheState(version.stderr, 'main'), 'accepted', version.stderr);
  assert.equal(backupHelp.code, 0, backupHelp.stderr);
  assert.equal(cacheState(backupHelp.stderr, 'main'), 'accepted', backupHelp.stderr);
  assert.equal(cacheState(walPush.stderr, 'wal-cli'), 'accepted', walPush.stderr);
  assert.match(walPush.stderr, /cannot read .*000000010000000000000001 \(ENOENT\)/);
  // and without the variable, not a word of it
  assert.equal(quiet.stderr, '');
});

test('the bundles are ASCII, and their caches say so (V8 gets a one-byte string: a non-ASCII character made compiling ~10 ms slower)', () => {
  for (const name of ['main', 'wal-cli']) {
    const bundle = readFileSync(path.join(path.dirname(CLI), `${name}.cjs`));
    const at = bundle.findIndex((byte) => byte > 0x7f);
    // a tagged template's text is written to the bundle as in the source: write such characters as \u escapes there
    assert.equal(at, -1, `${name}.cjs: a non-ASCII character near ${JSON.stringify(bundle.subarray(Math.max(0, at - 60), at + 10).toString())}`);
    assert.equal(readFileSync(path.join(path.dirname(CLI), `${name}.cjs.cache`)).readUInt32BE(28) & 1, 1, `${name}.cjs.cache: ASCII_ONLY`);
  }
});

/** A copy of dist/ (package.json, node_modules linked) whose bundles and caches a test may spoil; `warm`: with main.cjs's code cache made for it. */
async function installedCopy(name: string, warm = false): Promise<{ cli: string; run: (args: string[], env?: Record<string, string>, nodeArgs?: string[]) => Promise<CliResult> }> {
  const root = path.resolve(path.dirname(CLI), '../..');
  const installed = path.join(work, name);
  await mkdir(installed);
  await cp(path.join(root, 'dist'), path.join(installed, 'dist'), { recursive: true });
  await copyFile(path.join(root, 'package.json'), path.join(installed, 'package.json'));
  await symlink(path.join(root, 'node_modules'), path.join(installed, 'node_modules'));
  const cli = path.join(installed, 'dist', 'cli');
  if (warm) {
    const made = await collect(spawn(process.execPath, [path.join(root, 'scripts', 'warm-code-cache.mjs'), path.join(cli, 'main.cjs')], { cwd: root, stdio: ['pipe', 'pipe', 'pipe'] }));
    assert.equal(made.code, 0, made.stderr);
  }
  const run = (args: string[], env: Record<string, string> = {}, nodeArgs: string[] = []) =>
    collect(spawn(process.execPath, [...nodeArgs, path.join(cli, 'pgkeep.js'), ...args], { env: cleanEnv({ ...DEBUG_CACHE, ...env }), cwd: work, stdio: ['pipe', 'pipe', 'pipe'] }));
  return { cli, run };
}

test('a code cache that is not exactly the bundle\'s is not used: the same output, exit codes and stack traces without it', async () => {
  const { cli, run } = await installedCopy('spoiled caches', true);
  const cacheFile = path.join(cli, 'main.cjs.cache');
  const good = await readFile(cacheFile);
  const bundleFile = path.join(cli, 'main.cjs');
  const noRepo = ['list', '--repo', path.join(work, 'no-repo')];
  const expected = await Promise.all([run(['--help']), run(noRepo, { PGKEEP_DEBUG: '1' })]);
  assert.equal(cacheState(expected[0].stderr, 'main'), 'accepted');
  assert.equal(expected[1].code, 5, expected[1].stderr);
  // a stack trace names the bundle's own lines: the first frame is where the error was made
  const frame = /\((.*main\.cjs):(\d+):(\d+)\)/.exec(expected[1].stderr);
  assert.ok(frame, expected[1].stderr);
  const line = readFileSync(frame[1]!, 'utf8').split('\n')[Number(frame[2]) - 1]!;
  assert.match(line.slice(Number(frame[3]) - 1), /^new PgkeepError\("REPO_MISSING"/);

  const spoilt = async (how: string, expectedState: string, bytes: Uint8Array | undefined, nodeArgs: string[] = []) => {
    if (bytes) await writeFile(cacheFile, bytes);
    else await rm(cacheFile, { force: true });
    const [help, failure] = await Promise.all([run(['--help'], {}, nodeArgs), run(noRepo, { PGKEEP_DEBUG: '1' }, nodeArgs)]);
    assert.equal(cacheState(help.stderr, 'main'), expectedState, `${how}: ${help.stderr}`);
    assert.equal(help.code, 0, `${how}: ${help.stderr}`);
    assert.equal(help.stdout, expected[0].stdout, how);
    assert.equal(failure.code, 5, `${how}: ${failure.stderr}`);
    assert.equal(failure.stderr.replace(/^pgkeep: code cache.*\n/m, ''), expected[1].stderr.replace(/^pgkeep: code cache.*\n/m, ''), how);
  };
  const flipped = Buffer.from(good);
  flipped[flipped.length >> 1]! ^= 0xff;
  await spoilt('one byte of V8\'s data changed', 'damaged', flipped);
  await spoilt('cut short', 'damaged', good.subarray(0, good.length >> 1));
  await spoilt('empty', 'damaged', Buffer.alloc(0));
  await spoilt('no cache file', 'missing', undefined);
  // the cache of dist/ itself: V8 would keep its path as the script's name (stack traces naming another folder)
  await spoilt('made for the bundle at another path', 'moved', await readFile(path.join(path.dirname(CLI), 'main.cjs.cache')));
  // the header is right, the data is not V8's: V8 itself refuses it
  const { encodeCodeCache } = (await import(path.join(cli, 'bundle-loader.js'))) as typeof import('../../src/cli/bundle-loader.js');
  await spoilt('garbage with a right header', 'rejected', encodeCodeCache(bundleFile, await readFile(bundleFile), Buffer.alloc(good.length, 7)));
  // made under other V8 flags than this run's (as after a Node upgrade: V8 checks its version and flags)
  await spoilt('other V8 flags', 'rejected', good, ['--no-flush-bytecode']);
  await spoilt('the good one again', 'accepted', good);

  // Another build of the bundle with the same length: V8 compares only the source's length, so its cache
  // would run the old build's code (here: the old help text). The header's checksum of the bundle refuses it.
  const source = await readFile(bundleFile, 'utf8');
  assert.ok(source.includes('take a logical backup'));
  await writeFile(bundleFile, source.replace('take a logical backup', 'TAKE A LOGICAL BACKUP'));
  const rebuilt = await run(['--help']);
  assert.equal(cacheState(rebuilt.stderr, 'main'), 'stale', rebuilt.stderr);
  assert.match(rebuilt.stdout, /TAKE A LOGICAL BACKUP/);
});

test("a bundle run with its code cache sees Node's CommonJS wrapper: exports, require, module, __filename, __dirname, this", async () => {
  const { cli } = await installedCopy('wrapper');
  // the probe runs with a cache made for it, as a bundle does

  const probe = path.join(cli, 'probe.cjs');
  await writeFile(
    probe,
    [
      '#!/usr/bin/env node',
      'module.exports = {',
      '  filename: __filename, dirname: __dirname, id: module.id, moduleFilename: module.filename, paths: module.paths,',
      '  exportsAreModuleExports: exports === module.exports, thisIsExports: this === exports, loaded: module.loaded,',
      "  inRequireCache: require.cache[__filename] === module, resolved: require.resolve('commander'), relative: require.resolve('./bundle-loader.js'),",
      "  requireMain: require.main === undefined ? 'undefined' : typeof require.main, extensions: Object.keys(require.extensions),",
      "  packageLoads: typeof require('commander').Command, strict: (function () { return this === undefined; })(),",
      '};',
      '',
    ].join('\n'),
  );
  // each in a child of its own, loaded from an ES module as pgkeep.js loads a bundle: by Node's loader, and by
  // bundle-loader.ts with a code cache made for the probe (as the build makes one: after a run)
  const loader = JSON.stringify(path.join(cli, 'bundle-loader.js'));
  const child = (script: string) => collect(spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: work, stdio: ['pipe', 'pipe', 'pipe'] }));
  const made = await child(
    `import { writeFileSync } from 'node:fs'; import { codeCacheFile, compileBundle, encodeCodeCache } from ${loader}; const file = ${JSON.stringify(probe)};` +
      'const bundle = compileBundle(file, { useCache: false }); bundle.run(); writeFileSync(codeCacheFile(file), encodeCodeCache(file, bundle.bytes, bundle.script.createCachedData()));',
  );
  assert.equal(made.code, 0, made.stderr);
  const [node, ours] = await Promise.all([
    child(`import { createRequire } from 'node:module'; process.stdout.write(JSON.stringify(createRequire(import.meta.url)(${JSON.stringify(probe)})));`),
    child(`import { compileBundle } from ${loader}; const bundle = compileBundle(${JSON.stringify(probe)}); process.stderr.write(bundle.cache); process.stdout.write(JSON.stringify(bundle.run()));`),
  ]);
  assert.equal(node.code, 0, node.stderr);
  assert.equal(ours.code, 0, ours.stderr);
  assert.equal(ours.stderr, 'accepted');
  assert.deepEqual(JSON.parse(ours.stdout), JSON.parse(node.stdout));
  assert.equal((JSON.parse(ours.stdout) as { filename: string }).filename, probe);
});
