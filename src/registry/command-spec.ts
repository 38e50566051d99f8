import type { z } from 'zod';
import type { CommandContext } from './command-context.js';
import { PgkeepError } from '../errors.js';

export type { CommandContext, Progress } from './command-context.js';

/**
 * One command of pgkeep, as every entry point sees it: the CLI builds its
 * options and help from it, the scheduler runs it as a job, the dashboard
 * starts it as an action. Each command module exports one (see
 * docs/architecture.md, "Adding a command"); src/registry/registry.ts lists them.
 *
 * This file holds types and small helpers only: command modules import it, so
 * it must never import a command module.
 */
export interface CommandSpec<Request = unknown, Result = unknown> {
  /** The command's path on the command line: "backup", "sources remove". */
  readonly name: string;
  readonly description: string;
  /** Positional arguments, commander syntax: "<backup>" required, "[backup]" optional. */
  readonly arguments?: readonly ArgumentSpec[];
  readonly options: readonly OptionSpec[];
  /** Adds --json and -q/--quiet (default true). */
  readonly output?: boolean;
  /** The typed request of the command line's arguments and options (zod: see requestParser). */
  parse(input: CommandInput): Request;
  run(ctx: CommandContext, request: Request): Promise<Result>;
  /** The result for a terminal, or as one JSON document with out.json. */
  print(result: Result, out: CommandOutput, request: Request): void;
  /**
   * A failure that carries what was done before it (error.details): prints it.
   * Returns true when it printed the one JSON document of the run (the CLI then prints no error document).
   */
  printFailure?(error: PgkeepError, out: CommandOutput, request: Request): boolean | void;
  /** The kinds of scheduled or API-submitted jobs this command runs. */
  readonly jobs?: readonly JobSpec<Request, Result>[];
  /**
   * Runs until the signal (serve): no stop deadline after a signal, its log lines are its output (only
   * --quiet silences them), and the CLI exits soon after run() returns when exitAfterRun says so.
   */
  readonly daemon?: { exitAfterRun(request: Request): boolean };
  /** run() needs every command (ctx.registry): serve's jobs, the dashboard's actions. */
  readonly needsRegistry?: boolean;
  /** What --help adds after the options: the global options that apply, and examples. */
  readonly help?: CommandHelp;
}

/** The global options a command reads, by long name, and one to three examples, as a new user would type them. */
export interface CommandHelp {
  readonly globals: readonly ('config' | 'repo' | 'db' | 'source' | 'identity')[];
  readonly examples: readonly string[];
}

/** A command whose request and result types are not known to the caller (the registry's lists). */
export type AnyCommandSpec = CommandSpec<any, any>;

export interface ArgumentSpec {
  readonly name: string;
  readonly description?: string;
}

export interface OptionSpec {
  /** commander flags: "--jobs <n>", "-q, --quiet", "--no-owner". */
  readonly flags: string;
  readonly description: string;
  /** Turns the text into the value; a repeatable option gets its previous value. Throws USAGE for bad input. */
  readonly parse?: (value: string, previous: any) => unknown;
  readonly choices?: readonly string[];
  readonly default?: unknown;
  /** A mandatory option (commander's requiredOption). */
  readonly required?: boolean;
}

/** What the command line gave a command, before its parser types it. */
export interface CommandInput {
  /** The positional arguments, in the order of `arguments`. */
  readonly args: readonly (string | undefined)[];
  /** The command's options by camel-case name (as commander names them), defaults included. */
  readonly options: Readonly<Record<string, unknown>>;
  /** Names of the options given on the command line (not defaults). */
  readonly given: readonly string[];
}

/** Where a command's result goes: stdout as text lines, or one JSON document. */
export interface CommandOutput {
  /** --json: print one JSON document. */
  readonly json: boolean;
  /** --quiet. */
  readonly quiet: boolean;
  /** One line of text on stdout. */
  line(text: string): void;
  /** The JSON document, pretty-printed, on stdout. */
  document(value: unknown): void;
  /** One line on stderr: a summary when stdout carries the data itself (extract without --output). */
  note(text: string): void;
  /** Ends the run with this exit code although the command succeeded (status --check with problems). */
  exitWith(code: number): void;
}

/** What a job of the daemon reports when it succeeded (a failure throws). */
export interface JobResult {
  backupId?: string | undefined;
  bytes?: number | undefined;
  detail: string;
}

/** A job the daemon runs through a command (src/commands/serve-jobs.ts). */
export interface JobSpec<Request, Result> {
  /** The job kind: the key of sources.<name>.schedule in pgkeep.yaml, the kind in the job history and the API. */
  readonly kind: string;
  /** Whether pgkeep.yaml may schedule it (false: submitted by the API only, e.g. verify of one backup). */
  readonly scheduled: boolean;
  /** A backup job: serve.pruneAfterBackup prunes the source after it, and it ends the start-up grace of "no backup" alerts. */
  readonly backup?: boolean;
  /** The request of a run for one source; target is a backup id ("latest" when unset) for jobs about one backup. */
  request(job: { source: string; target?: string | undefined }): Request;
  /** What the job history records; throws when the result is a failure (an unhealthy check). */
  outcome(result: Result): JobResult;
}

/**
 * A request parser: maps the command line's input to a plain object, then
 * checks and types it with a zod schema. A schema failure is a USAGE error of
 * one line, like every other bad input.
 */
export function requestParser<S extends z.ZodType>(schema: S, map: (input: CommandInput) => unknown): (input: CommandInput) => z.output<S> {
  return (input) => {
    const result = schema.safeParse(map(input));
    if (result.success) return result.data;
    const issue = result.error.issues[0]!;
    const where = issue.path.length > 0 ? `${issue.path.map(String).join('.')}: ` : '';
    throw new PgkeepError('USAGE', `${where}${issue.message}`);
  };
}

/** A list option with no entries is not given at all. */
export function listOf(value: unknown): string[] | undefined {
  return Array.isArray(value) && value.length > 0 ? (value as string[]) : undefined;
}
