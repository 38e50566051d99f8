#!/usr/bin/env node
import { Command, CommanderError, Option } from 'commander';
import type { CommandContext } from '../commands/command-context.js';
import { runBackup, type BackupRequest } from '../commands/backup.js';
import { runCopy } from '../commands/copy.js';
import { runInit } from '../commands/init.js';
import { runKeygen } from '../commands/keygen.js';
import { runList } from '../commands/list.js';
import { runPin, runUnpin } from '../commands/pin.js';
import { runPrune, type PruneResult } from '../commands/prune.js';
import { openRepositories, openRepository } from '../commands/open-repository.js';
import { runRestore, runRestoreFromRepositories } from '../commands/restore.js';
import { runShow } from '../commands/show.js';
import { runStatus } from '../commands/status.js';
import { runVerify } from '../commands/verify.js';
import { runVerifyCopies, verifiesSeveralCopies, type CopiesReport } from '../commands/verify-copies.js';
import type { VerifyResult } from '../commands/verify.js';
import { keySettings, loadSettings, readSecretFile, resolveSource, type GlobalOptions, type Settings } from '../config/settings.js';
import { ERROR_CODES, PgkeepError, toPgkeepError } from '../errors.js';
import type { RetentionFlags } from '../config/retention-settings.js';
import { validateTimeZone } from '../retention/calendar.js';
import { parseDuration } from '../retention/duration.js';
import { PGKEEP_VERSION } from '../version.js';
import { printBackupDone, printCopyDone, printList, printPin, printPrune, printRestoreDone, printShow, printStatus, printVerify, printVerifyCopies } from './print.js';
import { ProgressBar } from './progress-bar.js';
import { confirmOnTerminal } from './prompt.js';
import { parseListen, startDashboardServer } from '../server/dashboard/dashboard-server.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];
const positiveInt = (what: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new PgkeepError('USAGE', `${what} must be a whole number of at least 1 (got "${value}")`);
  return n;
};
const count = (what: string) => (value: string) => {
  const n = Number(value);
  if (!/^\d+$/.test(value) || !Number.isSafeInteger(n)) throw new PgkeepError('USAGE', `${what} must be a whole number, 0 to switch the rule off (got "${value}")`);
  return n;
};
const duration = (what: string) => (value: string) => parseDuration(value, what).text;
const labelPeriod = (value: string, previous: Record<string, string> = {}) => {
  const match = /^([A-Za-z0-9._-]{1,100})=(.+)$/.exec(value);
  if (!match) throw new PgkeepError('USAGE', `--keep-label takes LABEL=DURATION or LABEL=forever, e.g. before-migration=90d (got "${value}")`);
  return { ...previous, [match[1]!]: match[2] === 'forever' ? 'forever' : parseDuration(match[2]!, `--keep-label ${match[1]}`).text };
};

interface OutputOptions {
  json?: boolean;
  quiet?: boolean;
}

// A reader that stops early (pgkeep list | head) is not an error: stop writing quietly.
process.stdout.on('error', (error: NodeJS.ErrnoException) => {
  if (error.code === 'EPIPE') process.exit(process.exitCode ?? 0);
  throw error;
});

// The AWS SDK warns once on stderr about Node 20 support; pgkeep's stderr is for pgkeep's one-line messages.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';

/** Runs one CLI invocation; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  const controller = new AbortController();
  let signalled: NodeJS.Signals | undefined;
  const onSignal = (signal: NodeJS.Signals) => {
    if (signalled) process.exit(signal === 'SIGINT' ? 130 : 143); // second signal: stop now
    signalled = signal;
    controller.abort(new PgkeepError('ABORTED', `interrupted by ${signal}: stopped, nothing was left half-written`));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  const bar = new ProgressBar();
  let json = false;
  // set by a command that succeeded but must still exit non-zero (status --check found problems)
  let exitCode = 0;
  /** Set when a command already printed its --json result for a failure. */
  let jsonPrinted = false;

  const context = (settings: Settings, output: OutputOptions): CommandContext => {
    const quiet = Boolean(output.json || output.quiet);
    return {
      settings,
      keys: keySettings(settings),
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
    };
  };

  const program = new Command('pgkeep')
    .description('PostgreSQL backups that are consistent, checksummed, compressed, and proven to restore')
    .version(PGKEEP_VERSION)
    .option('-c, --config <file>', 'configuration file (default: ./pgkeep.yaml, or PGKEEP_CONFIG)')
    .option('--repo <url>', 'one repository: a local path or s3://bucket/prefix (default: PGKEEP_REPO, BACKUP_DIR, the config\'s repos/repo, ./backups)')
    .option('--db <url>', 'database URL postgresql://user@host:port/db (default: DATABASE_URL, POSTGRES_*, PG*)')
    .option('--source <name>', 'which source of the configuration (default: the only one, or the database name)')
    .option('--identity <file>', 'age identity file to decrypt an encrypted repository (default: PGKEEP_AGE_IDENTITY_FILE)')
    .exitOverride()
    // commander's own usage errors, as one line like every other pgkeep error
    .configureOutput({ outputError: (text, write) => write(`pgkeep: ${text.trim().replace(/^error: /, '')} (see pgkeep --help)\n`) });

  const settingsOf = (command: Command): Settings => loadSettings(command.optsWithGlobals() as GlobalOptions);
  const withOutput = (command: Command) => command.option('--json', 'print JSON').option('-q, --quiet', 'print only the result');

  withOutput(program.command('init'))
    .description('create a repository (a backup to an empty location creates an unencrypted one too)')
    .option('--encrypt', 'encrypt every object with age (needs --recipient or --passphrase-file)')
    .option('--recipient <age1…>', 'age public key to encrypt to (repeatable; see pgkeep keygen)', collect)
    .option('--passphrase-file <file>', 'encrypt with the passphrase in this file (or set PGKEEP_PASSPHRASE)')
    .action(async (options: OutputOptions & { encrypt?: boolean; recipient?: string[]; passphraseFile?: string }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const passphrase = options.passphraseFile
        ? readSecretFile(options.passphraseFile, '--passphrase-file')
        : options.encrypt && !options.recipient?.length
          ? keySettings(settings).passphrase()
          : undefined;
      const result = await runInit(settings, { encrypt: options.encrypt, recipients: options.recipient, passphrase });
      if (json) return void console.log(JSON.stringify(result, null, 2));
      const how = result.encryption
        ? result.encryption.passphrase
          ? ', encrypted with a passphrase'
          : `, encrypted to ${result.encryption.recipients.length} recipient(s)`
        : '';
      console.log(result.created ? `created a pgkeep repository at ${result.location}${how}` : `${result.location} is already a pgkeep repository${how} (nothing changed)`);
    });

  withOutput(program.command('keygen'))
    .description('write a new age identity (private key) file and print its public key')
    .requiredOption('--output <file>', 'where to write the identity (mode 0600; never overwritten)')
    .action(async (options: OutputOptions & { output: string }) => {
      json = Boolean(options.json);
      const result = await runKeygen(options.output);
      if (json) return void console.log(JSON.stringify(result, null, 2));
      console.log(`wrote ${result.output}; keep it safe and off the backup machine`);
      console.log(`public key (pgkeep init --encrypt --recipient …): ${result.publicKey}`);
    });

  withOutput(program.command('backup'))
    .description('take a logical backup with pg_dump')
    .option('--name <name>', 'name appended to the backup id, e.g. before-migration')
    .addOption(new Option('--format <format>', 'pg_dump format').choices(['custom', 'directory', 'plain']))
    .option('--schema-only', 'only the schema, no data')
    .option('--data-only', 'only the data, no schema')
    .option('--table <pattern>', 'only tables matching (repeatable; pg_dump patterns)', collect)
    .option('--exclude-table <pattern>', 'leave out tables matching (repeatable)', collect)
    .option('--schema <pattern>', 'only schemas matching (repeatable)', collect)
    .option('--exclude-schema <pattern>', 'leave out schemas matching (repeatable)', collect)
    .option('--no-owner', 'do not record object ownership')
    .option('--no-acl', 'do not record privileges (GRANT/REVOKE)')
    .option('--jobs <n>', 'parallel pg_dump workers (directory format)', positiveInt('--jobs'))
    .option('--label <label>', 'label to attach (repeatable)', collect)
    .option('--compress-level <n>', 'zstd level 1-19 (default 3)', positiveInt('--compress-level'))
    .option('--checksums', 'also record a content hash of every table, for verify --deep (one md5 per row)')
    .action(async (options: Record<string, unknown> & OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const source = resolveSource(settings);
      const ctx = context(settings, options);
      // Several repositories (repos: in pgkeep.yaml): one pg_dump, written to all of them.
      const repositories = await openRepositories(settings, { source: source.name, createIfEmpty: true });
      const fromCli = (name: string) => command.getOptionValueSource(name) === 'cli';
      const list = (value: unknown) => (Array.isArray(value) && value.length > 0 ? (value as string[]) : undefined);
      const request: BackupRequest = {
        name: options.name as string | undefined,
        format: options.format as BackupRequest['format'],
        schemaOnly: options.schemaOnly as boolean | undefined,
        dataOnly: options.dataOnly as boolean | undefined,
        tables: list(options.table),
        excludeTables: list(options.excludeTable),
        schemas: list(options.schema),
        excludeSchemas: list(options.excludeSchema),
        noOwner: fromCli('owner') ? true : undefined,
        noAcl: fromCli('acl') ? true : undefined,
        jobs: options.jobs as number | undefined,
        labels: list(options.label),
        compressLevel: options.compressLevel as number | undefined,
        checksums: options.checksums as boolean | undefined,
      };
      const manifest = await runBackup(ctx, repositories, source, request);
      bar.clear();
      printBackupDone(manifest, repositories.map((r) => r.location).join(', '), json);
    });

  withOutput(program.command('list'))
    .description('list the backups in the repository')
    .action(async (options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const { location, backups, repositories, pinned, verifications } = await runList(settingsOf(command));
      for (const { location: where, message } of repositories?.unavailable ?? []) process.stderr.write(`pgkeep: warning: cannot read ${where}: ${message}\n`);
      printList(backups, location, json, repositories, pinned, verifications);
    });

  withOutput(program.command('show'))
    .description('show one backup: id or "latest"')
    .argument('<backup>', 'backup id, or latest')
    .action(async (ref: string, options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      printShow(await runShow(settingsOf(command), ref), json);
    });

  withOutput(program.command('verify'))
    .description('check a backup: checksums, decompression, table of contents against the manifest; --restore-test also restores it into a scratch database and proves it')
    .argument('<backup>', 'backup id, or latest')
    .option('--restore-test', 'restore into a scratch database, compare row counts, schema, migrations, run probes; then drop it')
    .option('--scratch <where>', 'where to restore-test: same-server (database pgkeep_verify_<id>), local (a throwaway cluster), or a postgresql:// URL')
    .option('--deep', 'with a restore test: compare table content hashes (backup --checksums) and run pg_amcheck')
    .option('--jobs <n>', 'parallel pg_restore workers for the restore test', positiveInt('--jobs'))
    .action(async (ref: string, options: OutputOptions & { restoreTest?: boolean; scratch?: string; deep?: boolean; jobs?: number }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      // A source with several repositories: every copy is verified (--repo picks one).
      const several = verifiesSeveralCopies(settings);
      try {
        const request = { restoreTest: options.restoreTest, scratch: options.scratch, deep: options.deep, jobs: options.jobs };
        if (several) {
          const result = await runVerifyCopies(context(settings, options), ref, request);
          bar.clear();
          printVerifyCopies(result, json);
        } else {
          const report = await runVerify(context(settings, options), ref, request);
          bar.clear();
          printVerify(report, json);
        }
      } catch (error) {
        bar.clear();
        const details = (error as PgkeepError).details;
        const failure = toPgkeepError(error);
        if (details?.copies) {
          // one JSON document: the reports of every copy, with the error beside them
          printVerifyCopies(json ? { ...(details.copies as CopiesReport), error: { code: failure.code, message: failure.message } } : (details.copies as CopiesReport), json);
          jsonPrinted = json;
        } else if (details?.report) {
          const report = details.report as VerifyResult;
          printVerify(json ? { ...report, error: { code: failure.code, message: failure.message } } : report, json);
          jsonPrinted = json;
        }
        throw error;
      }
    });

  withOutput(program.command('restore'))
    .description('restore a backup into a new database (or --to NAME)')
    .argument('<backup>', 'backup id, or latest')
    .option('--to <database>', 'target database (default: <db>_restore_<timestamp>)')
    .option('--overwrite', 'replace the target database if it exists (asks to confirm; a safety backup is taken first)')
    .option('--force', 'confirm --overwrite without asking (for scripts)')
    .option('--jobs <n>', 'parallel pg_restore workers (stages the dump in a temp file)', positiveInt('--jobs'))
    .option('--no-owner', 'do not restore object ownership')
    .action(async (ref: string, options: Record<string, unknown> & OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const source = resolveSource(settings);
      const request = {
        backup: ref,
        to: options.to as string | undefined,
        overwrite: Boolean(options.overwrite),
        force: Boolean(options.force),
        jobs: options.jobs as number | undefined,
        noOwner: command.getOptionValueSource('owner') === 'cli',
      };
      // Several repositories: the first that holds the backup, falling back on a checksum failure; --repo picks one.
      const result =
        source.repos.length > 1
          ? await runRestoreFromRepositories(context(settings, options), source, request)
          : await runRestore(context(settings, options), await openRepository(settings, { source: source.name }), source, request);
      bar.clear();
      printRestoreDone(result, json);
    });

  withOutput(program.command('copy'))
    .description('copy one backup to another repository (e.g. off-site to S3), then verify it there')
    .argument('<backup>', 'backup id, or latest')
    .requiredOption('--from <url>', 'repository to copy from: a local path or s3://bucket/prefix')
    .requiredOption('--to <url>', 'repository to copy to (an empty location is created with the same encryption)')
    .action(async (ref: string, options: OutputOptions & { from: string; to: string }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const result = await runCopy(context(settings, options), { backup: ref, from: options.from, to: options.to, source: settings.options.source });
      bar.clear();
      printCopyDone(result, json);
    });

  withOutput(program.command('prune'))
    .description('apply the retention policy: print every backup with keep or delete and why, then delete')
    .option('--dry-run', 'print the plan only; change nothing')
    .option('--keep-last <n>', 'keep the N newest backups', count('--keep-last'))
    .option('--keep-hourly <n>', 'keep the newest backup of each of the N newest hours with backups', count('--keep-hourly'))
    .option('--keep-daily <n>', 'the same per day', count('--keep-daily'))
    .option('--keep-weekly <n>', 'the same per ISO week', count('--keep-weekly'))
    .option('--keep-monthly <n>', 'the same per month', count('--keep-monthly'))
    .option('--keep-yearly <n>', 'the same per year', count('--keep-yearly'))
    .option('--keep-within <duration>', 'keep every backup younger than this, e.g. 14d', duration('--keep-within'))
    .option('--max-age <duration>', 'keep nothing older than this (pins, labels and the newest backup excepted), e.g. 30d', duration('--max-age'))
    .option('--keep-label <label=duration>', 'keep backups with this label or name for a duration or forever (repeatable)', labelPeriod)
    .option('--time-zone <zone>', 'IANA time zone of the calendar rules (default: the config\'s, else this machine\'s)')
    .action(async (options: OutputOptions & RetentionFlags & { dryRun?: boolean; keepLabel?: Record<string, string> }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      if (options.timeZone !== undefined) validateTimeZone(options.timeZone, '--time-zone');
      const flags: RetentionFlags = {
        keepLast: options.keepLast,
        keepHourly: options.keepHourly,
        keepDaily: options.keepDaily,
        keepWeekly: options.keepWeekly,
        keepMonthly: options.keepMonthly,
        keepYearly: options.keepYearly,
        keepWithin: options.keepWithin,
        maxAge: options.maxAge,
        keepLabels: options.keepLabel,
        timeZone: options.timeZone,
      };
      try {
        printPrune(await runPrune(context(settings, options), { dryRun: Boolean(options.dryRun), flags }), json);
      } catch (error) {
        const result = (error as PgkeepError).details?.result;
        if (result && !json) printPrune(result as PruneResult, false);
        throw error;
      }
    });

  withOutput(program.command('pin'))
    .description('keep a backup forever: prune never deletes a pinned backup')
    .argument('<backup>', 'backup id, or latest')
    .option('--reason <text>', 'why it is pinned (kept in the pin record)')
    .action(async (ref: string, options: OutputOptions & { reason?: string }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      printPin(await runPin(context(settings, options), ref, { reason: options.reason }), json);
    });

  withOutput(program.command('unpin'))
    .description('let the retention policy apply to a pinned backup again')
    .argument('<backup>', 'backup id, or latest')
    .action(async (ref: string, options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      printPin(await runUnpin(context(settings, options), ref), json);
    });

  withOutput(program.command('status'))
    .description('per source: last backup, last failure, verification, restore test, repositories, PITR, and a health verdict')
    .option('--check', `exit ${ERROR_CODES.UNHEALTHY.exit} with one line per problem (for cron, Nagios, Kubernetes probes)`)
    .action(async (options: OutputOptions & { check?: boolean }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const result = await runStatus(context(settings, options));
      if (!(options.quiet && options.check)) printStatus(result, json, Boolean(options.check));
      if (options.check && !result.healthy) exitCode = ERROR_CODES.UNHEALTHY.exit;
    });

  program
    .command('dashboard')
    .description('serve the web dashboard alone (pgkeep serve mounts the same dashboard), until Ctrl+C')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:9188')
    .option('--token-file <file>', 'file holding the API token that unlocks actions (or set PGKEEP_API_TOKEN); without one the dashboard is read-only')
    .option('--require-login', 'with a token: every page needs logging in, not only actions')
    .action(async (options: { listen: string; tokenFile?: string; requireLogin?: boolean }, command: Command) => {
      const settings = settingsOf(command);
      const token = options.tokenFile ? readSecretFile(options.tokenFile, '--token-file') : settings.env.PGKEEP_API_TOKEN || undefined;
      const server = await startDashboardServer(settings, parseListen(options.listen), { token, requireLoginToView: options.requireLogin });
      process.stderr.write(`pgkeep: dashboard on ${server.url}/ (${token ? 'actions need the API token' : 'read-only: no API token configured'}); Ctrl+C stops it\n`);
      // runs until interrupted; an interrupt is a normal stop here, not an error
      await new Promise<void>((resolve) => controller.signal.addEventListener('abort', () => resolve(), { once: true }));
      await server.close();
      exitCode = 0;
    });

  try {
    await program.parseAsync(argv, { from: 'user' });
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
    // BACKUP_PARTIAL says where the backup is; prune's result says what was done before the failure
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
