import { Writable } from 'node:stream';
import { Command, CommanderError } from 'commander';
import { addSpecCommand } from '../../src/cli/spec-command.js';
import type { CommandContext, Progress } from '../../src/registry/command-context.js';
import { keySettings, loadSettings, type GlobalOptions, type KeySettings, type Settings } from '../../src/config/settings.js';
import { toPgkeepError, type PgkeepError } from '../../src/errors.js';
import type { AnyCommandSpec, CommandOutput } from '../../src/registry/command-spec.js';
import { COMMAND_NAMES, loadCommands, loadRegistry } from '../../src/registry/registry.js';
import { withRunSignal } from '../../src/run-signal.js';
import { CLI_ENTRY, cleanEnv, type CliResult } from './cli.js';

/**
 * Runs a pgkeep command IN THIS PROCESS, through its CommandSpec and a
 * CommandContext, the way the CLI does (src/cli/main.ts) but without a Node
 * start-up per call: the arguments are the CLI's (so a test reads like what a
 * user types), the context captures every line the command reports, and the
 * result is the command's typed result as well as its printed output.
 *
 * This file is the one place where the tests call into commands: the
 * registry (src/registry/registry.ts) finds the command, its parser types the
 * request, run() does the work, print() formats it. A change in how commands
 * are run changes here only.
 *
 * What stays a real process (test/support/cli.ts): argv edge cases, exit
 * codes of the program, terminal output, signals and kills.
 */
export interface CommandRun extends CliResult {
  /** What run() returned (undefined when it threw). */
  result: unknown;
  /** What run() threw, as the CLI sees it. */
  error: PgkeepError | undefined;
  /**
   * With `text: true` on a --json run: what the same result prints without
   * --json (print() is a function of the result and the request, so this is
   * the text a second run without --json would print for the same outcome).
   */
  text?: string;
  /** Every progress report, in order. */
  progress: Progress[];
}

export interface RunOptions {
  /** The environment settings are read from (cleaned like a CLI spawn's: the caller's PG* never leak in). */
  env?: Record<string, string | undefined>;
  cwd?: string;
  signal?: AbortSignal;
  /** What confirm() answers (the CLI: what the user typed); default: nobody to ask. */
  confirm?: boolean;
  /**
   * Also print the successful result as text (into `text`): a test that
   * checks both the JSON and the human output of a slow command (a restore
   * test) runs it once instead of twice.
   */
  text?: boolean;
}

/**
 * Variables read from the process's environment below the command layer, not
 * from the settings: the AWS SDK's credentials, region and endpoint, the S3
 * driver's timeouts and attempts, the zstd choice. A test
 * that passes them (a second S3 server, bad credentials) gets them set in this
 * process for the run, and the previous values back after it; tests of a file
 * run one at a time, so no other run sees them.
 */
const PROCESS_ENV = /^(AWS_|PGKEEP_S3_|PGKEEP_ZSTD$)/;

/** Program-wide options that take a value (as in src/cli/main.ts). */
const GLOBAL_VALUE_OPTIONS = new Set(['-c', '--config', '--repo', '--db', '--source', '--identity']);

/** The name of the command in argv: "backup", or two words for a group ("sources remove"). */
function commandName(argv: readonly string[]): string {
  const words: string[] = [];
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (GLOBAL_VALUE_OPTIONS.has(arg)) i++;
    else if (!arg.startsWith('-')) {
      words.push(arg);
      if (words.length === 2) break;
    } else if (words.length > 0) break;
  }
  const two = words.join(' ');
  if (COMMAND_NAMES.includes(two)) return two;
  if (words[0] && COMMAND_NAMES.includes(words[0])) return words[0];
  throw new Error(`runCommand: no command in ${JSON.stringify(argv)} (wal-push/wal-fetch and usage errors are CLI tests: use pgkeep())`);
}

/** Runs `pgkeep ...argv` in process; never throws for a failure of the command (code and stderr say it, like the CLI's). */
export async function runCommand(argv: string[], options: RunOptions = {}): Promise<CommandRun> {
  const name = commandName(argv);
  const [spec] = (await loadCommands([name])).filter((s: AnyCommandSpec) => s.name === name);
  if (!spec) throw new Error(`runCommand: command "${name}" is not registered`);
  const env = cleanEnv(options.env);
  const cwd = options.cwd ?? process.cwd();
  const signal = options.signal ?? new AbortController().signal;

  let stdout = '';
  let stderr = '';
  let code = 0;
  let json = false;
  let jsonPrinted = false;
  let result: unknown;
  let text: string | undefined;
  let error: PgkeepError | undefined;
  const progress: Progress[] = [];
  const stdoutStream = new Writable({
    write(chunk: Buffer | string, _encoding, callback) {
      stdout += chunk.toString();
      callback();
    },
  });

  const program = new Command('pgkeep')
    .option('-c, --config <file>')
    .option('--repo <url>')
    .option('--db <url>')
    .option('--source <name>')
    .option('--identity <file>')
    .exitOverride()
    .configureOutput({ writeOut: (text) => void (stdout += text), writeErr: (text) => void (stderr += text) });

  addSpecCommand(program, spec, async (input) => {
    const cli = input.options as GlobalOptions & { json?: boolean; quiet?: boolean };
    json = spec.output !== false && Boolean(cli.json);
    const request = spec.parse(input);
    const quiet = spec.daemon ? Boolean(cli.quiet) : Boolean(cli.json || cli.quiet);
    let settings: Settings | undefined;
    let keys: KeySettings | undefined;
    const registry = spec.needsRegistry ? await loadRegistry() : undefined;
    const ctx: CommandContext = {
      get settings() {
        return (settings ??= loadSettings(cli, { env, cwd }));
      },
      get keys() {
        return (keys ??= keySettings(this.settings));
      },
      signal,
      info: (message) => {
        if (!quiet) stderr += `${message}\n`;
      },
      warn: (message) => void (stderr += `pgkeep: warning: ${message}\n`),
      progress: (p) => void progress.push(p),
      confirm: async () => options.confirm ?? false,
      stdout: stdoutStream,
      registry,
      // restore_command runs pgkeep as a program of its own: the built CLI
      // (this process runs the sources, which have no pgkeep.js to run).
      walFetchEntry: [process.execPath, CLI_ENTRY],
    };
    const out: CommandOutput = {
      json,
      quiet: Boolean(cli.quiet),
      line: (text) => void (stdout += `${text}\n`),
      document: (value) => void (stdout += `${JSON.stringify(value, null, 2)}\n`),
      note: (text) => void (stderr += `${text}\n`),
      exitWith: (exit) => void (code = exit),
    };
    try {
      result = await spec.run(ctx, request);
    } catch (thrown) {
      if (spec.printFailure) jsonPrinted = spec.printFailure(toPgkeepError(thrown), out, request) === true;
      throw thrown;
    }
    spec.print(result, out, request);
    if (options.text) {
      let printed = '';
      const asText: CommandOutput = {
        ...out,
        json: false,
        line: (line) => void (printed += `${line}\n`),
        document: (value) => void (printed += `${JSON.stringify(value, null, 2)}\n`),
        // notes and the exit code are the run's own, already recorded above
        note: () => undefined,
        exitWith: () => undefined,
      };
      spec.print(result, asText, request);
      text = printed;
    }
  });

  const saved = new Map<string, string | undefined>();
  for (const [key, value] of Object.entries(options.env ?? {})) {
    if (!PROCESS_ENV.test(key)) continue;
    saved.set(key, process.env[key]);
    if (value === undefined) delete process.env[key];
    else process.env[key] = value;
  }
  try {
    await withRunSignal(signal, () => program.parseAsync(argv, { from: 'user' }));
  } catch (thrown) {
    if (thrown instanceof CommanderError) {
      code = thrown.exitCode === 0 ? 0 : 2;
    } else {
      error = toPgkeepError(thrown);
      const details = error.code === 'BACKUP_PARTIAL' || error.details?.result !== undefined ? { details: error.details } : {};
      if (json && !jsonPrinted) stdout += `${JSON.stringify({ ok: false, error: { code: error.code, message: error.message, ...details } }, null, 2)}\n`;
      stderr += `pgkeep: ${error.code === 'INTERNAL' ? 'internal error: ' : ''}${error.message}\n`;
      if (error.code === 'INTERNAL' && thrown instanceof Error) stderr += `${thrown.stack}\n`;
      code = error.code === 'ABORTED' ? 130 : error.exitCode;
    }
  } finally {
    for (const [key, value] of saved) {
      if (value === undefined) delete process.env[key];
      else process.env[key] = value;
    }
  }
  await new Promise<void>((resolve) => stdoutStream.end(resolve));
  return { code, signal: null, stdout, stderr, result, error, progress, ...(text === undefined ? {} : { text }) };
}

/**
 * `pgkeep keygen --output file` in process (test/support/cli.ts keygen() runs
 * the program): a new age identity at `file`, and its public key. For tests
 * that need a key, not the keygen program's output.
 */
export async function keygenInProcess(file: string): Promise<{ file: string; publicKey: string }> {
  const result = await runCommand(['keygen', '--output', file, '--json']);
  if (result.code !== 0) throw new Error(`keygen failed: ${result.stderr}`);
  return { file, publicKey: (JSON.parse(result.stdout) as { publicKey: string }).publicKey };
}
