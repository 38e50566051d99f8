#!/usr/bin/env node
import { Command, CommanderError } from 'commander';
import type { CommandContext } from '../registry/command-context.js';
import { keySettings, loadSettings, type GlobalOptions, type KeySettings, type Settings } from '../config/settings.js';
import { PgkeepError, toPgkeepError } from '../errors.js';
import { armFaultPoint } from '../fault-points.js';
import { useZstdProgram } from '../pipeline/zstd.js';
import { setChunkCompressThreads } from '../pipeline/chunk-compress-pool.js';
import { setIndexMemory } from '../repository/content-store/content-index.js';
import type { AnyCommandSpec, CommandOutput } from '../registry/command-spec.js';
import { COMMAND_NAMES, loadCommands, loadRegistry } from '../registry/registry.js';
import { withRunSignal } from '../run-signal.js';
import { PGKEEP_VERSION } from '../version.js';
import { addCommandHelp } from './command-help.js';
import { addSpecCommand } from './spec-command.js';
import { ProgressBar } from './progress-bar.js';
import { confirmOnTerminal } from './prompt.js';
import { resolveWalTarget, runWal } from './wal-cli.js';

// A reader that stops early (pgkeep list | head) is not an error: stop writing quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

// The AWS SDK warns once on stderr about Node 20 support; pgkeep's stderr is for pgkeep's one-line messages.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

const STOP_DEADLINE_MS = 10_000;

/** Program-wide options that take a value: skipped when looking for the command's name in argv. */
const GLOBAL_VALUE_OPTIONS = new Set(['-c', '--config', '--repo', '--db', '--source', '--identity']);

/**
 * The commands this invocation may run: only the one named in argv (its
 * module alone is imported, see src/registry/registry.ts), or all of them for
 * the program's help, `help`, and a name that is no command (commander's
 * "did you mean").
 */
async function commandsFor(argv: readonly string[]): Promise<AnyCommandSpec[]> {
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (GLOBAL_VALUE_OPTIONS.has(arg)) i++;
    else if (arg === '-V' || arg === '--version') return [];
    else if (!arg.startsWith('-')) {
      if (arg === 'wal-push' || arg === 'wal-fetch') return [];
      return COMMAND_NAMES.some((name) => name.split(' ')[0] === arg) ? loadCommands([arg]) : loadCommands();
    }
  }
  return loadCommands();
}

/** Runs one CLI invocation; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  // Test-only: the fault-injection suite kills pgkeep at named points (src/fault-points.ts).
  armFaultPoint(process.env.PGKEEP_FAULT);
  // PGKEEP_ZSTD=cli: the zstd program instead of the native binding (read here: the pipeline reads no environment).
  useZstdProgram(process.env.PGKEEP_ZSTD === 'cli');
  // Test-only: a tiny cap on the chunk index's entries in memory, so the tests make it spill to disk (content-index.ts).
  if (process.env.PGKEEP_INDEX_MEMORY_ENTRIES) setIndexMemory({ memoryEntries: Number(process.env.PGKEEP_INDEX_MEMORY_ENTRIES) });
  // Test-only (and benchmarks): how many threads compress a deduplicating backup's new chunks, 0 on the main thread (chunk-compress-pool.ts).
  if (process.env.PGKEEP_CHUNK_THREADS) setChunkCompressThreads(Number(process.env.PGKEEP_CHUNK_THREADS));
  // Test-only: the dashboard's jobs view polls this often (ms) instead of every 2 s; its module is loaded only when set.
  if (process.env.PGKEEP_TEST_DASHBOARD_POLL_MS) (await import('../server/dashboard/dashboard-views.js')).setDashboardPolling(Number(process.env.PGKEEP_TEST_DASHBOARD_POLL_MS));
  const controller = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  /** How long a command may take to unwind after a signal (children get SIGTERM, then SIGKILL after 5 s); serve has its own grace period. */
  let stopDeadlineMs: number | undefined = STOP_DEADLINE_MS;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(signal === 'SIGINT' ? 130 : 143); // second signal: stop now
    signalled = signal;
    controller.abort(new PgkeepError('ABORTED', `interrupted by ${signal}: stopped, nothing was left half-written`));
    // A last resort: a step that does not listen to the abort (a filesystem call that never returns)
    // must not keep the process alive; the next run cleans what it left.
    if (stopDeadlineMs !== undefined) {
      setTimeout(() => {
        process.stderr.write(`pgkeep: interrupted by ${signal}, and did not finish stopping within ${stopDeadlineMs! / 1000} s: exiting now\n`);
        process.exit(signal === 'SIGINT' ? 130 : 143);
      }, stopDeadlineMs).unref();
    }
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const bar = new ProgressBar();
  let json = false;
  // set by a command that succeeded but must still exit non-zero (status --check found problems)
  let exitCode = 0;
  /** Set when a command already printed its --json result for a failure. */
  let jsonPrinted = false;

  /** The context of one run; settings are read from the config and environment when the command first needs them. */
  const context = (globals: GlobalOptions, quiet: boolean, registry?: CommandContext['registry']): CommandContext => {
    let settings: Settings | undefined;
    let keys: KeySettings | undefined;
    return {
      get settings() {
        return (settings ??= loadSettings(globals, { env: process.env, cwd: process.cwd() }));
      },
      get keys() {
        return (keys ??= keySettings(this.settings));
      },
      signal: controller.signal,
      info: (message) => {
        if (quiet) return;
        bar.clear();
        process.stderr.write(`${message}\n`);
      },
      warn: (message) => {
        bar.clear();
        process.stderr.write(`pgkeep: warning: ${message}\n`);
      },
      progress: (p) => {
        if (!quiet) bar.update(p);
      },
      confirm: async (question, expected) => {
        bar.clear();
        return confirmOnTerminal(question, expected);
      },
      stdout: process.stdout,
      registry,
    };
  };
  const output = (options: { json?: boolean; quiet?: boolean }): CommandOutput => ({
    json: Boolean(options.json),
    quiet: Boolean(options.quiet),
    line: (text) => void process.stdout.write(`${text}\n`),
    document: (value) => void process.stdout.write(`${JSON.stringify(value, null, 2)}\n`),
    note: (text) => void process.stderr.write(`${text}\n`),
    exitWith: (code) => void (exitCode = code),
  });

  const program = new Command('pgkeep')
    .description('PostgreSQL backups that are consistent, checksummed, compressed, and proven to restore')
    .version(PGKEEP_VERSION)
    .option('-c, --config <file>', 'configuration file (default: ./pgkeep.yaml, or PGKEEP_CONFIG)')
    .option('--repo <url>', "one repository: a local path or s3://bucket/prefix (default: PGKEEP_REPO, BACKUP_DIR, the config's repos/repo, ./backups)")
    .option('--db <url>', 'database URL postgresql://user@host:port/db (default: DATABASE_URL, POSTGRES_*, PG*)')
    .option('--source <name>', 'which source of the configuration (default: the only one, or the database name)')
    .option('--identity <file>', 'age identity file to decrypt an encrypted repository (default: PGKEEP_AGE_IDENTITY_FILE)')
    .exitOverride()
    // commander's own usage errors, as one line like every other pgkeep error
    .configureOutput({
      outputError: (text, write) => {
        // commander puts "(Did you mean …?)" on a second line: pgkeep's failures are one line
        const message = text.trim().replace(/^error: /, '').replace(/\s*\n\s*\(Did you mean (.*)\)$/, ' (did you mean $1)').replace(/\s*\n\s*/g, ' ');
        write(`pgkeep: ${message} (see pgkeep --help)\n`);
      },
    });

  // One commander command per spec of the registry: its arguments, options and help, then parse → run → print.
  const specs = await commandsFor(argv);
  // WAL archiving (the `pgkeep` executable runs these on a lean path, src/cli/pgkeep.ts; here for --help and global options
  // before the command); listed before dashboard in the help, where they always were
  const addWalCommands = () => {
    const walOptions = (command: Command) => command.optsWithGlobals() as GlobalOptions & { quiet?: boolean };
    for (const [name, args, description] of [
      ['wal-push', ['<wal-path>'], "archive one WAL file (archive_command = 'pgkeep wal-push %p --source NAME')"],
      ['wal-fetch', ['<wal-name>', '<destination>'], "restore one WAL file from the archive (restore_command = 'pgkeep wal-fetch %f %p --source NAME'); exit 1 when it is not archived"],
    ] as const) {
      const walCommand = program.command(name).description(description).option('-q, --quiet', 'print nothing on success');
      for (const arg of args) walCommand.argument(arg);
      walCommand.action(async (...received: unknown[]) => {
        const command = received.at(-1) as Command;
        const options = walOptions(command);
        const target = await resolveWalTarget(options, process.env, process.cwd());
        const note = await runWal(name, received.slice(0, args.length) as string[], target, controller.signal, process.cwd());
        if (note && !options.quiet) process.stderr.write(`pgkeep: ${note}\n`);
      });
    }
  };

  let walAdded = false;
  for (const spec of specs) {
    if (spec.name === 'dashboard') {
      addWalCommands();
      walAdded = true;
    }
    addSpecCommand(program, spec, async (input) => {
      const { options } = input;
      json = spec.output !== false && Boolean(options.json);
      const request = spec.parse(input);
      if (spec.daemon) stopDeadlineMs = undefined; // running jobs get the daemon's own grace period
      const registry = spec.needsRegistry ? await loadRegistry() : undefined;
      // a daemon's log lines are its output: --json does not silence them
      const ctx = context(options as GlobalOptions, spec.daemon ? Boolean(options.quiet) : Boolean(options.json || options.quiet), registry);
      const out = output(options);
      let result: unknown;
      try {
        result = await spec.run(ctx, request);
      } catch (error) {
        bar.clear();
        if (spec.printFailure) jsonPrinted = spec.printFailure(toPgkeepError(error), out, request) === true;
        throw error;
      }
      bar.clear();
      spec.print(result, out, request);
      // a daemon promised to stop within its grace period: a socket or child left over must not hold the process
      if (spec.daemon?.exitAfterRun(request)) setTimeout(() => process.exit(process.exitCode ?? 0), 1000).unref();
    });
  }

  if (!walAdded) addWalCommands();
  addCommandHelp(program, specs);

  try {
    // every storage request of the command honours the signal: SIGINT/SIGTERM abort a stalled one at once
    await withRunSignal(controller.signal, () => program.parseAsync(argv, { from: 'user' }));
    return exitCode;
  } catch (error) {
    bar.clear();
    if (error instanceof CommanderError) {
      // commander already printed its message (help and --version exit 0)
      return error.exitCode === 0 ? 0 : 2;
    }
    const failure = toPgkeepError(error);
    if (signalled && failure.code !== 'ABORTED' && controller.signal.aborted) {
      process.stderr.write(`pgkeep: interrupted by ${signalled}\n`);
      return signalled === 'SIGINT' ? 130 : 143;
    }
    // BACKUP_PARTIAL says where the backup is; prune's and --all-databases' result say what was done before the failure
    const details = failure.code === 'BACKUP_PARTIAL' || failure.details?.result !== undefined ? { details: failure.details } : {};
    if (json && !jsonPrinted) console.log(JSON.stringify({ ok: false, error: { code: failure.code, message: failure.message, ...details } }, null, 2));
    process.stderr.write(`pgkeep: ${failure.code === 'INTERNAL' ? 'internal error: ' : ''}${failure.message}\n`);
    if (process.env.PGKEEP_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    if (failure.code === 'ABORTED') return signalled === 'SIGTERM' ? 143 : 130;
    return failure.exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`pgkeep: internal error: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
