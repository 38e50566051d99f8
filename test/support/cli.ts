import assert from 'node:assert/strict';
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdtempSync, rmdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

// Each test file runs in its own process and gets its own TMPDIR, which the
// pgkeep processes it starts inherit. pgkeep removes (and reports) the temp
// folders of dead pgkeep processes that it finds in its temp dir, so with one
// shared /tmp a file that kills pgkeep on purpose would have its leftovers
// removed by another file's restore, and that restore would print lines its
// test does not expect. 1777 like /tmp: test clusters run as `postgres`.
// The system's temp dir before this file's own replaces it: what is shared
// between files and runs (the initdb template in pg-cluster.ts) lives there,
// or each directly run file would leave its own 23 MB copy behind.
process.env.PGKEEP_TEST_SYSTEM_TMPDIR ??= tmpdir();
const testTemp = mkdtempSync(path.join(tmpdir(), 'pgkeep-tests-'));
chmodSync(testTemp, 0o1777);
process.env.TMPDIR = testTemp;
process.on('exit', () => {
  try {
    rmdirSync(testTemp); // only when empty: what a test left is for a person to look at
  } catch {
    /* not empty, or already gone */
  }
});

/**
 * The built program's ES modules (npm test builds first): the commander program
 * itself, which the executable runs from its bundle. Tests run it only to
 * compare it with the bundle (bundled-cli.test.ts).
 */
export const CLI_MODULES = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../dist/cli/main.js');
/**
 * The `pgkeep` executable (package.json bin), as users run it: it loads the
 * program bundled into one CommonJS file (dist/cli/main.cjs), and WAL commands
 * take their lean path (wal-cli.cjs). Every spawned test runs this: it is
 * what ships, and it starts in about 0.2 s of CPU against 0.35 s for the ES
 * modules, which adds up over the suite's many hundred pgkeep processes.
 */
export const CLI_ENTRY = path.resolve(path.dirname(CLI_MODULES), 'pgkeep.js');
/** What tests spawn as `pgkeep`: the executable. */
export const CLI = CLI_ENTRY;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

export interface CliOptions {
  env?: Record<string, string | undefined>;
  /** Run the program's ES modules (CLI_MODULES) instead of the executable, which runs its bundle. */
  modules?: boolean;
  cwd?: string;
  input?: string;
}

/**
 * An environment with none of the caller's database or repository settings, so
 * a test sees only what it passes (the developer's own PGHOST must not leak in).
 */
export function cleanEnv(extra: Record<string, string | undefined> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const [key, value] of Object.entries(process.env)) {
    if (/^(PG|POSTGRES_|DATABASE_URL$|PGKEEP_|BACKUP_)/.test(key)) continue;
    env[key] = value;
  }
  for (const [key, value] of Object.entries(extra)) {
    if (value === undefined) delete env[key];
    else env[key] = value;
  }
  return env;
}

export function startPgkeep(args: string[], options: CliOptions = {}): ChildProcess {
  return spawn(process.execPath, [options.modules ? CLI_MODULES : CLI_ENTRY, ...args], {
    env: cleanEnv(options.env),
    cwd: options.cwd ?? process.cwd(),
    stdio: ['pipe', 'pipe', 'pipe'],
  });
}

export async function pgkeep(args: string[], options: CliOptions = {}): Promise<CliResult> {
  const child = startPgkeep(args, options);
  return collect(child, options.input);
}

export function collect(child: ChildProcess, input?: string): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  child.stdout!.setEncoding('utf8').on('data', (t: string) => (stdout += t));
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  child.stdin!.end(input ?? '');
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code, signal) => resolve({ code, signal, stdout, stderr }));
  });
}

/** A `pgkeep serve` started by startServe: its process, its URL, its stderr so far, and its end. */
export interface ServeDaemon {
  child: ChildProcess;
  base: string;
  stderr: () => string;
  done: Promise<CliResult>;
}

/**
 * Starts `pgkeep serve ARGS --listen 127.0.0.1:0` and waits for its "listening on" line (at most 20 s; a
 * daemon that exits or never listens is killed, and the error holds its stderr).
 */
export async function startServe(args: string[], options: CliOptions = {}): Promise<ServeDaemon> {
  const child = startPgkeep(['serve', ...args, '--listen', '127.0.0.1:0'], options);
  let stderr = '';
  child.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
  const done = collect(child);
  const deadline = Date.now() + 20_000;
  let match: RegExpExecArray | null;
  while (!(match = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr))) {
    if (Date.now() > deadline || child.exitCode !== null) {
      child.kill('SIGKILL');
      throw new Error(`serve did not start: ${stderr}`);
    }
    await sleep(20);
  }
  return { child, base: match[1]!, stderr: () => stderr, done };
}

/** Parses --json output, failing the test with the CLI's stderr when it is not JSON. */
export function json<T = any>(result: CliResult): T {
  try {
    return JSON.parse(result.stdout) as T;
  } catch {
    throw new Error(`expected JSON on stdout (exit ${result.code}); stderr: ${result.stderr}; stdout: ${result.stdout.slice(0, 500)}`);
  }
}

/** `pgkeep keygen --output file`: a new age identity at `file`, and its public key. */
export async function keygen(file: string): Promise<{ file: string; publicKey: string }> {
  const result = await pgkeep(['keygen', '--output', file, '--json']);
  assert.equal(result.code, 0, result.stderr);
  return { file, publicKey: json<{ publicKey: string }>(result).publicKey };
}
