import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import { copyFile, cp, mkdir, symlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { CLI, CLI_ENTRY, collect, json, pgkeep, startPgkeep } from '../support/cli.js';
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
