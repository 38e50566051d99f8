import { existsSync, readFileSync } from 'node:fs';
import * as path from 'node:path';
import { s3EnvOptions } from '../config/s3-env.js';
import type { GlobalOptions, KeySettings } from '../config/settings.js';
import type { WalContext } from '../registry/command-context.js';
import { PgkeepError, toPgkeepError } from '../errors.js';
import { useZstdProgram } from '../pipeline/zstd.js';
import { openStorage } from '../storage/open-storage.js';
import { withRunSignal } from '../run-signal.js';

/**
 * The lean path of `pgkeep wal-push` / `pgkeep wal-fetch`. PostgreSQL runs
 * them once per WAL segment, so start-up time is archiving throughput: this
 * module loads neither commander nor the config schema (zod, yaml) nor the
 * S3 SDK unless the repository is on S3. With --source and no config file
 * (and no .env) everything comes from flags and the environment; otherwise
 * the full settings loader runs, once.
 */

const USAGE = {
  'wal-push': 'pgkeep wal-push WAL_PATH --source NAME [--repo URL] [--config FILE]',
  'wal-fetch': 'pgkeep wal-fetch WAL_NAME DESTINATION --source NAME [--repo URL] [--config FILE] [--identity FILE]',
} as const;
export type WalCommand = keyof typeof USAGE;

export function isWalCommand(name: string | undefined): name is WalCommand {
  return name === 'wal-push' || name === 'wal-fetch';
}

interface Parsed {
  command: WalCommand;
  args: string[];
  options: GlobalOptions & { quiet?: boolean };
}

class HelpRequested extends Error {}

function parse(argv: string[]): Parsed {
  const [command, ...rest] = argv;
  if (!isWalCommand(command)) throw new PgkeepError('USAGE', `unknown command ${command}`);
  const options: Parsed['options'] = {};
  const args: string[] = [];
  const names: Record<string, keyof GlobalOptions> = { '--source': 'source', '--repo': 'repo', '--config': 'config', '-c': 'config', '--identity': 'identity', '--db': 'db' };
  for (let i = 0; i < rest.length; i++) {
    const arg = rest[i]!;
    const [flag, inline] = arg.startsWith('--') && arg.includes('=') ? [arg.slice(0, arg.indexOf('=')), arg.slice(arg.indexOf('=') + 1)] : [arg, undefined];
    if (flag === '-h' || flag === '--help') throw new HelpRequested(USAGE[command]);
    if (flag === '-q' || flag === '--quiet') options.quiet = true;
    else if (flag in names) {
      const value = inline ?? rest[++i];
      if (value === undefined) throw new PgkeepError('USAGE', `${flag} needs a value (usage: ${USAGE[command]})`);
      options[names[flag]!] = value;
    } else if (arg.startsWith('-') && arg !== '-') throw new PgkeepError('USAGE', `unknown option ${arg} (usage: ${USAGE[command]})`);
    else args.push(arg);
  }
  const wanted = command === 'wal-push' ? 1 : 2;
  if (args.length !== wanted) throw new PgkeepError('USAGE', `${command} takes ${wanted === 1 ? 'one argument' : 'two arguments'} (usage: ${USAGE[command]})`);
  return { command, args, options };
}

/** Where a WAL command archives to: the repository's storage, the source, and the keys. */
export async function resolveWalTarget(options: GlobalOptions, env: NodeJS.ProcessEnv, cwd: string): Promise<Omit<WalContext, 'signal'>> {
  const configFile = options.config ?? env.PGKEEP_CONFIG ?? ['pgkeep.yaml', 'pgkeep.yml', '.env'].find((f) => existsSync(path.join(cwd, f)));
  if (configFile === undefined && options.source !== undefined) {
    if (!/^[A-Za-z0-9._-]{1,100}$/.test(options.source) || options.source === '.' || options.source === '..') {
      throw new PgkeepError('INVALID_NAME', `invalid source name "${options.source}": use letters, digits, ".", "_" and "-" (at most 100 characters)`);
    }
    const url = options.repo ?? env.PGKEEP_REPO ?? env.BACKUP_DIR ?? 'backups';
    return { storage: openStorage(url, { posix: { baseDir: cwd }, s3: s3EnvOptions(env) }), source: options.source, keys: leanKeys(options, env, cwd) };
  }
  // A config file (or .env) is involved: resolve exactly as every other command does.
  const settingsModule = await import('../config/settings.js');
  const settings = settingsModule.loadSettings(options, { env, cwd });
  const source = settingsModule.selectedSourceName(settings);
  if (source === undefined) {
    throw new PgkeepError('SOURCE_UNKNOWN', `${path.basename(settings.configFile!)} has several sources: choose one with --source (${settingsModule.configuredSources(settings).join(', ')})`);
  }
  return { storage: openStorage(settingsModule.repositoryUrl(settings, source), settingsModule.storageOptions(settings, settingsModule.repositoryUrl(settings, source))), source, keys: settingsModule.keySettings(settings) };
}

function leanKeys(options: GlobalOptions, env: NodeJS.ProcessEnv, cwd: string): KeySettings {
  const identity = options.identity ?? env.PGKEEP_AGE_IDENTITY_FILE;
  return {
    identityFile: identity ? path.resolve(cwd, identity) : undefined,
    passphrase: () => {
      if (env.PGKEEP_PASSPHRASE) return env.PGKEEP_PASSPHRASE;
      if (!env.PGKEEP_PASSPHRASE_FILE) return undefined;
      try {
        return readFileSync(path.resolve(cwd, env.PGKEEP_PASSPHRASE_FILE), 'utf8').replace(/\r?\n$/, '');
      } catch (error) {
        throw new PgkeepError('CONFIG_INVALID', `PGKEEP_PASSPHRASE_FILE: cannot read ${env.PGKEEP_PASSPHRASE_FILE} (${(error as NodeJS.ErrnoException).code ?? 'error'})`, { cause: error });
      }
    },
  };
}

/** Runs one WAL command with an already resolved target; resolves to a line worth printing, if any. */
export async function runWal(command: WalCommand, args: string[], target: Omit<WalContext, 'signal'>, signal: AbortSignal, cwd: string): Promise<string | undefined> {
  if (command === 'wal-push') {
    const { runWalPush } = await import('../commands/wal-push.js');
    const result = await runWalPush({ ...target, signal }, path.resolve(cwd, args[0]!));
    return result.outcome === 'identical' ? `${result.name} was already archived with identical content` : undefined;
  }
  const { runWalFetch } = await import('../commands/wal-fetch.js');
  await runWalFetch({ ...target, signal }, args[0]!, path.resolve(cwd, args[1]!));
  return undefined;
}

/** The whole lean CLI: parse, resolve, run, report; resolves to the exit code. */
export async function walMain(argv: string[]): Promise<number> {
  // The AWS SDK (loaded only for s3:// repositories) warns once on stderr about Node 20 support; stderr is for pgkeep's one-line messages.
  process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
  const controller = new AbortController();
  const onSignal = (signal: NodeJS.Signals) => controller.abort(new PgkeepError('ABORTED', `interrupted by ${signal}: stopped, nothing was left half-written`));
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { command, args, options } = parse(argv);
    // The environment is read here, at the entry, and handed down (the pipeline reads none).
    useZstdProgram(process.env.PGKEEP_ZSTD === 'cli');
    const target = await resolveWalTarget(options, process.env, process.cwd());
    const note = await withRunSignal(controller.signal, () => runWal(command, args, target, controller.signal, process.cwd()));
    if (note && !options.quiet) process.stderr.write(`pgkeep: ${note}\n`);
    return 0;
  } catch (error) {
    if (error instanceof HelpRequested) {
      process.stdout.write(`usage: ${error.message}\n  (exit 0 when done; wal-fetch exits 1 when the file is not archived)\n`);
      return 0;
    }
    const failure = toPgkeepError(error);
    process.stderr.write(`pgkeep: ${failure.code === 'INTERNAL' ? 'internal error: ' : ''}${failure.message}\n`);
    if (process.env.PGKEEP_DEBUG && error instanceof Error) process.stderr.write(`${error.stack}\n`);
    return failure.code === 'ABORTED' ? 130 : failure.exitCode;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
}
