#!/usr/bin/env node
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import type { CommandContext } from '../commands/command-context.js';
import { runBackup, type BackupRequest } from '../commands/backup.js';
import { runPhysicalBackup } from '../commands/backup-physical.js';
import { runPitr, type PitrRequest, type RecoveryTarget } from '../commands/pitr.js';
import { runTablePitr } from '../commands/pitr-table.js';
import { runCheck, type CheckReport } from '../commands/check.js';
import { runCopy } from '../commands/copy.js';
import { runInit } from '../commands/init.js';
import { runKeygen } from '../commands/keygen.js';
import { runList } from '../commands/list.js';
import { openRepositories, openRepository } from '../commands/open-repository.js';
import { runRestore, runRestoreFromRepositories } from '../commands/restore.js';
import { runShow } from '../commands/show.js';
import { runVerify, runVerifyWal } from '../commands/verify.js';
import type { WalReport } from '../verify/verify-wal.js';
import type { VerifyReport } from '../verify/verify-backup.js';
import { keySettings, loadSettings, readSecretFile, resolveConnection, resolveSource, type GlobalOptions, type Settings } from '../config/settings.js';
import { PgkeepError, toPgkeepError } from '../errors.js';
import { PGKEEP_VERSION } from '../version.js';
import { printWalVerify, printBackupDone, printCheck, printCopyDone, printList, printPitr, printRestoreDone, printShow, printTablePitr, printVerify } from './print.js';
import { ProgressBar } from './progress-bar.js';
import { confirmOnTerminal } from './prompt.js';
import { resolveWalTarget, runWal } from './wal-cli.js';

const collect = (value: string, previous: string[] = []) => [...previous, value];
const positiveInt = (what: string) => (value: string) => {
  const n = Number(value);
  if (!Number.isInteger(n) || n < 1) throw new PgkeepError('USAGE', `${what} must be a whole number of at least 1 (got "${value}")`);
  return n;
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
    .description('take a logical backup with pg_dump (or, with --physical, of the whole cluster with pg_basebackup)')
    .option('--physical', 'physical backup of the whole cluster for point-in-time recovery (needs WAL archiving to pgkeep wal-push)')
    .option('--wal-timeout <seconds>', 'physical: how long to wait for the backup\'s WAL to reach the archive (default 120)', positiveInt('--wal-timeout'))
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
    .action(async (options: Record<string, unknown> & OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const source = resolveSource(settings);
      const ctx = context(settings, options);
      if (options.physical) {
        const logicalOnly = ['format', 'schemaOnly', 'dataOnly', 'table', 'excludeTable', 'schema', 'excludeSchema', 'jobs', 'owner', 'acl'].filter((k) => command.getOptionValueSource(k) === 'cli');
        if (logicalOnly.length > 0) {
          throw new PgkeepError('USAGE', `--physical backs up the whole cluster: --${logicalOnly[0]!.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`).replace(/^(owner|acl)$/, 'no-$1')} applies to logical backups only`);
        }
        // The WAL archive is in the source's first repository (where wal-push writes): so is the base backup.
        const repository = await openRepository(settings, { source: source.name, createIfEmpty: true });
        const manifest = await runPhysicalBackup(ctx, repository, source, {
          name: options.name as string | undefined,
          labels: Array.isArray(options.label) ? (options.label as string[]) : undefined,
          compressLevel: options.compressLevel as number | undefined,
          walTimeoutMs: options.walTimeout === undefined ? undefined : (options.walTimeout as number) * 1000,
        });
        bar.clear();
        printBackupDone(manifest, repository.location, json);
        return;
      }
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
      };
      const manifest = await runBackup(ctx, repositories, source, request);
      bar.clear();
      printBackupDone(manifest, repositories.map((r) => r.location).join(', '), json);
    });

  withOutput(program.command('list'))
    .description('list the backups in the repository')
    .action(async (options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const { location, backups, repositories } = await runList(settingsOf(command));
      for (const { location: where, message } of repositories?.unavailable ?? []) process.stderr.write(`pgkeep: warning: cannot read ${where}: ${message}\n`);
      printList(backups, location, json, repositories);
    });

  withOutput(program.command('show'))
    .description('show one backup: id or "latest"')
    .argument('<backup>', 'backup id, or latest')
    .action(async (ref: string, options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      printShow(await runShow(settingsOf(command), ref), json);
    });

  withOutput(program.command('verify'))
    .description('check a backup: checksums, decompression, table of contents against the manifest (--wal: the WAL archive and each physical backup\'s PITR window)')
    .argument('[backup]', 'backup id, or latest')
    .option('--wal', 'verify the source\'s WAL archive: every file\'s checksums, gaps, and the recovery window of each physical backup')
    .action(async (ref: string | undefined, options: OutputOptions & { wal?: boolean }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      if (options.wal) {
        const source = resolveSource(settings);
        const repository = await openRepository(settings, { source: source.name });
        try {
          printWalVerify(await runVerifyWal(context(settings, options), repository, source.name), json);
        } catch (error) {
          const report = (error as PgkeepError).details?.report;
          if (report) printWalVerify(report as WalReport, json);
          throw error;
        }
        return;
      }
      if (ref === undefined) throw new PgkeepError('USAGE', 'verify needs a backup id or latest (or --wal for the WAL archive)');
      try {
        const report = await runVerify(context(settings, options), ref);
        bar.clear();
        printVerify(report, json);
      } catch (error) {
        bar.clear();
        const report = (error as PgkeepError).details?.report;
        if (report) printVerify(report as VerifyReport, json);
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

  withOutput(program.command('pitr'))
    .description('point-in-time recovery: restore the newest physical backup before the target into a new data directory, set up recovery through pgkeep wal-fetch, and (--start) run it')
    .option('--pgdata <dir>', 'data directory to recover into (created 0700; must be empty unless --force)')
    .option('--extract-table <table>', 'table-level PITR: recover a throwaway cluster, dump this table (repeatable) to --output, remove the cluster', collect)
    .addOption(new Option('--format <format>', 'with --extract-table: sql (pg_dump) or csv').choices(['sql', 'csv']).default('sql'))
    .option('--output <file>', 'with --extract-table: the file to write')
    .option('--into-db <url>', 'with --extract-table: load the table into this database (postgresql://…) instead of a file')
    .option('--as <name>', 'with --into-db: the new table\'s name (never an existing one)')
    .option('--target-time <time>', 'recover up to this time (e.g. "2026-11-21 14:05:00+00")')
    .option('--target-lsn <lsn>', 'recover up to this WAL location (e.g. 0/3000060)')
    .option('--target-xid <xid>', 'recover up to this transaction id')
    .option('--target-name <name>', 'recover up to this restore point (pg_create_restore_point)')
    .option('--latest', 'recover to the end of the archived WAL')
    .addOption(new Option('--target-action <action>', 'what the server does at the target').choices(['promote', 'pause', 'shutdown']).default('promote'))
    .option('--backup <id>', 'start from this physical backup instead of the newest one before the target')
    .option('--start', 'start the server and wait until recovery reaches the target')
    .option('--port <n>', 'port of the recovered server (written to postgresql.auto.conf)', positiveInt('--port'))
    .addOption(new Option('--archive-mode <mode>', 'preserve: the recovered server archives its new timeline like the original; off: it does not').choices(['preserve', 'off']).default('preserve'))
    .option('--timeout <seconds>', 'with --start: how long to wait for recovery (default 600)', positiveInt('--timeout'))
    .option('--dry-run', 'print the plan (backup, WAL needed and available) and change nothing')
    .option('--force', 'replace the contents of a non-empty --pgdata (never a running server\'s)')
    .option('--delta', 'same as --force for now: the data directory is restored in full')
    .action(async (options: Record<string, unknown> & OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const source = resolveSource(settings);
      const targets = (['targetTime', 'targetLsn', 'targetXid', 'targetName', 'latest'] as const).filter((k) => options[k] !== undefined);
      if (targets.length !== 1) throw new PgkeepError('USAGE', 'pitr needs exactly one of --target-time, --target-lsn, --target-xid, --target-name or --latest');
      const key = targets[0]!;
      const target: RecoveryTarget =
        key === 'latest' ? { kind: 'latest' } : { kind: ({ targetTime: 'time', targetLsn: 'lsn', targetXid: 'xid', targetName: 'name' } as const)[key], value: String(options[key]) };
      if (target.kind === 'time' && Number.isNaN(new Date(target.value).getTime())) throw new PgkeepError('USAGE', `--target-time "${target.value}" is not a time: use e.g. "2026-11-21 14:05:00+00" or 2026-11-21T14:05:00Z`);
      if (target.kind === 'lsn' && !/^[0-9A-Fa-f]{1,8}\/[0-9A-Fa-f]{1,8}$/.test(target.value)) throw new PgkeepError('USAGE', `--target-lsn "${target.value}" is not an LSN: expected the form 0/3000060`);
      if (target.kind === 'xid' && !/^\d+$/.test(target.value)) throw new PgkeepError('USAGE', `--target-xid "${target.value}" is not a transaction id (a whole number)`);
      const repository = await openRepository(settings, { source: source.name });
      const ctx = context(settings, options);
      // restore_command runs this same pgkeep, as the server's user, with the same repository and keys.
      const shellQuote = (text: string) => (/^[A-Za-z0-9_./:@=+-]+$/.test(text) ? text : `'${text.replace(/'/g, `'\\''`)}'`);
      const fetch = [process.execPath, fileURLToPath(new URL('./pgkeep.js', import.meta.url)), 'wal-fetch', '%f', '%p', '--source', source.name, '--repo', source.repo];
      if (settings.configFile) fetch.push('--config', settings.configFile);
      if (ctx.keys.identityFile) fetch.push('--identity', ctx.keys.identityFile);
      else if (repository.info.encryption) throw new PgkeepError('USAGE', 'the repository is encrypted: pitr needs --identity FILE (readable by the server\'s OS user), which restore_command passes to pgkeep wal-fetch');
      const restoreCommand = fetch.map((part) => (part === '%f' || part === '%p' ? part : shellQuote(part))).join(' ');
      const timeoutMs = options.timeout === undefined ? undefined : (options.timeout as number) * 1000;
      if (options.extractTable) {
        if (options.pgdata || options.start || options.dryRun) throw new PgkeepError('USAGE', '--extract-table recovers into a throwaway cluster of its own: leave out --pgdata, --start and --dry-run');
        if (!options.output && !options.intoDb) throw new PgkeepError('USAGE', '--extract-table needs --output FILE, or --into-db URL --as NAME');
        const extracted = await runTablePitr(ctx, repository, source, {
          target,
          backup: options.backup as string | undefined,
          tables: options.extractTable as string[],
          format: options.format as 'sql' | 'csv',
          output: options.output === undefined ? undefined : path.resolve(String(options.output)),
          intoDb: options.intoDb === undefined ? undefined : resolveConnection(loadSettings({ ...(command.optsWithGlobals() as GlobalOptions), db: String(options.intoDb) }), undefined),
          as: options.as as string | undefined,
          restoreCommand,
          timeoutMs,
        });
        bar.clear();
        printTablePitr(extracted, json);
        return;
      }
      if (!options.pgdata) throw new PgkeepError('USAGE', 'pitr needs --pgdata DIR (or --extract-table T --output FILE)');
      const result = await runPitr(ctx, repository, source, {
        pgdata: path.resolve(String(options.pgdata)),
        target,
        targetAction: options.targetAction as PitrRequest['targetAction'],
        backup: options.backup as string | undefined,
        start: Boolean(options.start),
        port: options.port as number | undefined,
        dryRun: Boolean(options.dryRun),
        force: Boolean(options.force || options.delta),
        archiveMode: options.archiveMode as PitrRequest['archiveMode'],
        restoreCommand,
        timeoutMs,
      });
      bar.clear();
      printPitr(result, json);
    });

  withOutput(program.command('check'))
    .description('pre-flight of a source: server, client programs, repository, key, and WAL archiving (forces a WAL switch and waits for it in the repository)')
    .option('--wal-timeout <seconds>', 'how long to wait for the switched WAL segment (default 60)', positiveInt('--wal-timeout'))
    .action(async (options: OutputOptions & { walTimeout?: number }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const source = resolveSource(settings);
      const repository = await openRepository(settings, { source: source.name });
      try {
        printCheck(await runCheck(context(settings, options), repository, source, { walTimeoutMs: options.walTimeout === undefined ? undefined : options.walTimeout * 1000 }), json);
      } catch (error) {
        const report = (error as PgkeepError).details?.report;
        if (report) printCheck(report as CheckReport, json);
        throw error;
      }
    });

  // WAL archiving (the `pgkeep` executable runs these on a lean path; here for --help and global options before the command)
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

  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
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
    const details = failure.code === 'BACKUP_PARTIAL' ? { details: failure.details } : {};
    if (json) console.log(JSON.stringify({ ok: false, error: { code: failure.code, message: failure.message, ...details } }, null, 2));
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
