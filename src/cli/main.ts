#!/usr/bin/env node
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError, Option } from 'commander';
import type { CommandContext } from '../commands/command-context.js';
import type { BackupRequest } from '../commands/backup.js';
import type { AllDatabasesResult } from '../commands/backup-all.js';
import type { PitrRequest, RecoveryTarget } from '../commands/pitr.js';
import type { CheckAllReport, CheckReport, CheckScope } from '../commands/check.js';
import type { PruneResult } from '../commands/prune.js';
import { openRepositories, openRepository, repositoriesWithBackup } from '../commands/open-repository.js';
import type { RestoreRequest } from '../commands/restore.js';
import type { NotifyTestResult } from '../commands/notify-test.js';
import type { WalReport } from '../verify/verify-wal.js';
import type { CopiesReport } from '../commands/verify-copies.js';
import type { VerifyAllEntry, VerifyResult } from '../commands/verify.js';
import { configuredSources, keySettings, loadSettings, readSecretFile, resolveConnection, resolveSource, type GlobalOptions, type Settings } from '../config/settings.js';
import { ERROR_CODES, PgkeepError, toPgkeepError } from '../errors.js';
import { withRunSignal } from '../storage/run-signal.js';
import type { RetentionFlags } from '../config/retention-settings.js';
import { validateTimeZone } from '../retention/calendar.js';
import { parseDuration } from '../retention/duration.js';
import { parseHostPattern, parseProxyAddress } from '../server/host-allowlist.js';
import { PGKEEP_VERSION } from '../version.js';
import {
  printAllDatabasesDone,
  printBackupDone,
  printCheck,
  printCheckAll,
  printCopyDone,
  printExtractDone,
  printFileRestoreDone,
  printFileRestorePlan,
  printList,
  printPitr,
  printPin,
  printPrune,
  printRestoreDone,
  printRestorePlan,
  printShow,
  printSourceRemoved,
  printSources,
  printStatus,
  printTablePitr,
  printVerify,
  printVerifyCopies,
  printWalVerify,
} from './print.js';
import { addCommandHelp } from './command-help.js';
import { ProgressBar } from './progress-bar.js';
import { confirmOnTerminal } from './prompt.js';
import { resolveWalTarget, runWal } from './wal-cli.js';
import { armFaultPoint } from '../fault-points.js';

// Each command's module is imported when that command runs (`await import(...)` in its action): one
// process runs one command, and imported up front they cost every command about 0.3 s of start-up
// (serve's and the dashboard's fastify, prom-client and nodemailer alone 0.25 s).
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
/** --allowed-host (repeatable), checked as serve.allowedHosts entries are. */
const allowedHost = (value: string, previous: string[] = []) => {
  const parsed = parseHostPattern(value);
  if (typeof parsed === 'string') throw new PgkeepError('USAGE', `--allowed-host: ${parsed}`);
  return [...previous, value];
};
/** --trust-proxy (repeatable), checked as serve.trustProxy entries are. */
const trustedProxy = (value: string, previous: string[] = []) => {
  const parsed = parseProxyAddress(value);
  if (typeof parsed === 'string') throw new PgkeepError('USAGE', `--trust-proxy: ${parsed}`);
  return [...previous, value];
};
const duration = (what: string) => (value: string) => parseDuration(value, what).text;
const labelPeriod = (value: string, previous: Record<string, string> = {}) => {
  const match = /^([A-Za-z0-9._-]{1,100})=(.+)$/.exec(value);
  if (!match) throw new PgkeepError('USAGE', `--keep-label takes LABEL=DURATION or LABEL=forever, e.g. before-migration=90d (got "${value}")`);
  return { ...previous, [match[1]!]: match[2] === 'forever' ? 'forever' : parseDuration(match[2]!, `--keep-label ${match[1]}`).text };
};

/** --listen 0.0.0.0:9187, [::1]:9187, or :9187 (host from the config). */
function parseListen(value: string): { host?: string; port: number } {
  const match = /^(?:\[([^\]]+)\]|([^:]*)):(\d{1,5})$/.exec(value);
  const port = Number(match?.[3]);
  if (!match || port > 65535) throw new PgkeepError('USAGE', `--listen takes HOST:PORT, e.g. 127.0.0.1:9187 (got "${value}")`);
  const host = match[1] ?? match[2];
  return { ...(host ? { host } : {}), port };
}

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

const STOP_DEADLINE_MS = 10_000;

/** Runs one CLI invocation; resolves to the process exit code. */
export async function main(argv: string[]): Promise<number> {
  // Test-only: the fault-injection suite kills pgkeep at named points (src/fault-points.ts).
  armFaultPoint(process.env.PGKEEP_FAULT);
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
    .configureOutput({
      outputError: (text, write) => {
        // commander puts "(Did you mean …?)" on a second line: pgkeep's failures are one line
        const message = text.trim().replace(/^error: /, '').replace(/\s*\n\s*\(Did you mean (.*)\)$/, ' (did you mean $1)').replace(/\s*\n\s*/g, ' ');
        write(`pgkeep: ${message} (see pgkeep --help)\n`);
      },
    });

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
      const result = await (await import('../commands/init.js')).runInit(settings, { encrypt: options.encrypt, recipients: options.recipient, passphrase });
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
      const result = await (await import('../commands/keygen.js')).runKeygen(options.output);
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
    .option('--checksums', 'also record a content hash of every table, for verify --deep (one md5 per row)')
    .option('--globals', 'fail the backup when roles and tablespaces (pg_dumpall --globals-only) cannot be read; by default they are stored beside the dump when readable, with a warning otherwise')
    .option('--no-globals', 'do not store roles and tablespaces')
    .option('--all-databases', "every database of the server, each as its own backup (source named after the database), sharing one globals dump")
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
        await (await import('../postgres/pg-tools.js')).refuseOlderClient('pg_basebackup', source.connection, source.pgBin, ctx.signal);
        // The WAL archive is in the source's first repository (where wal-push writes): so is the base backup.
        const repository = await openRepository(settings, { source: source.name, createIfEmpty: true });
        const manifest = await (await import('../commands/backup-physical.js')).runPhysicalBackup(ctx, repository, source, {
          name: options.name as string | undefined,
          labels: Array.isArray(options.label) ? (options.label as string[]) : undefined,
          compressLevel: options.compressLevel as number | undefined,
          walTimeoutMs: options.walTimeout === undefined ? undefined : (options.walTimeout as number) * 1000,
        });
        bar.clear();
        printBackupDone(manifest, repository.location, json);
        return;
      }
      // Before any repository is created: a pg_dump older than the server is refused with nothing left behind.
      await (await import('../postgres/pg-tools.js')).refuseOlderClient('pg_dump', source.connection, source.pgBin, ctx.signal);
      // Several repositories (repos: in pgkeep.yaml): one pg_dump, written to all of them.
      const repositories = options.allDatabases ? [] : await openRepositories(settings, { source: source.name, createIfEmpty: true });
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
        globals: options.globals as boolean | undefined,
      };
      if (options.allDatabases) {
        try {
          const result = await (await import('../commands/backup-all.js')).runBackupAllDatabases(ctx, source, request);
          bar.clear();
          return printAllDatabasesDone(result, json);
        } catch (error) {
          bar.clear();
          const partial = (error as PgkeepError).details?.result;
          if (partial && !json) printAllDatabasesDone(partial as AllDatabasesResult, json);
          throw error;
        }
      }
      const manifest = await (await import('../commands/backup.js')).runBackup(ctx, repositories, source, request);
      bar.clear();
      printBackupDone(manifest, repositories.map((r) => r.location).join(', '), json);
    });

  withOutput(program.command('list'))
    .description('list the backups in the repository')
    .action(async (options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const { location, backups, repositories, pinned, verifications, damaged } = await (await import('../commands/list.js')).runList(settingsOf(command));
      for (const { location: where, message } of repositories?.unavailable ?? []) process.stderr.write(`pgkeep: warning: cannot read ${where}: ${message}\n`);
      printList(backups, location, json, repositories, pinned, verifications, damaged);
    });

  withOutput(program.command('show'))
    .description('show one backup: id or "latest"')
    .argument('<backup>', 'backup id, or latest')
    .action(async (ref: string, options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      printShow(await (await import('../commands/show.js')).runShow(settingsOf(command), ref), json);
    });

  withOutput(program.command('verify'))
    .description('check a backup: checksums, decompression, table of contents against the manifest; --restore-test also restores it into a scratch database and proves it (--wal: the WAL archive and each physical backup\'s PITR window)')
    .argument('[backup]', 'backup id, latest, or all (the integrity of every backup, naming the broken ones)')
    .option('--restore-test', 'restore into a scratch database, compare row counts, schema, migrations, run probes; then drop it')
    .option('--scratch <where>', 'where to restore-test: same-server (database pgkeep_verify_<id>), local (a throwaway cluster), or a postgresql:// URL')
    .option('--deep', 'with a restore test: compare table content hashes (backup --checksums) and run pg_amcheck')
    .option('--jobs <n>', 'parallel pg_restore workers for the restore test', positiveInt('--jobs'))
    .option('--target-time <time>', 'with --restore-test of a physical backup: a PITR drill, recovering to this time instead of the end of the backup')
    .option('--latest', 'with --restore-test of a physical backup: a PITR drill to the end of the archived WAL')
    .option('--wal', 'verify the source\'s WAL archive: every file\'s checksums, gaps, and the recovery window of each physical backup')
    .action(async (ref: string | undefined, options: OutputOptions & { restoreTest?: boolean; scratch?: string; deep?: boolean; jobs?: number; wal?: boolean; targetTime?: string; latest?: boolean }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      if (options.wal) {
        const source = resolveSource(settings);
        const repository = await openRepository(settings, { source: source.name });
        try {
          printWalVerify(await (await import('../commands/verify.js')).runVerifyWal(context(settings, options), repository, source.name), json);
        } catch (error) {
          const report = (error as PgkeepError).details?.report;
          if (report) printWalVerify(report as WalReport, json);
          throw error;
        }
        return;
      }
      if (ref === undefined) throw new PgkeepError('USAGE', 'verify needs a backup id, latest or all (or --wal for the WAL archive)');
      if (ref === 'all') {
        // every backup's integrity, naming each broken one (one repository: --repo or the source's first)
        if (options.restoreTest || options.scratch !== undefined || options.deep) throw new PgkeepError('USAGE', 'verify all checks integrity only: restore-test one backup at a time (verify ID --restore-test)');
        const print = (entries: VerifyAllEntry[]) => {
          if (json) return void console.log(JSON.stringify(entries, null, 2));
          for (const e of entries) console.log(`${e.state === 'ok' ? 'ok     ' : e.state === 'failed' ? 'FAILED ' : 'DAMAGED'}  ${e.source}/${e.id}  ${e.detail}`);
        };
        try {
          print(await (await import('../commands/verify.js')).runVerifyAll(context(settings, options)));
        } catch (error) {
          bar.clear();
          const result = (error as PgkeepError).details?.result;
          if (result && !json) print(result as VerifyAllEntry[]);
          throw error;
        }
        return;
      }
      // A source with several repositories: every copy is verified (--repo picks one).
      const several = (await import('../commands/verify-copies.js')).verifiesSeveralCopies(settings);
      try {
        if (options.targetTime !== undefined && options.latest) throw new PgkeepError('USAGE', 'give --target-time or --latest, not both');
        if (options.targetTime !== undefined && Number.isNaN(new Date(options.targetTime).getTime())) throw new PgkeepError('USAGE', `--target-time "${options.targetTime}" is not a time: use e.g. 2026-11-21T14:05:00Z`);
        const target: RecoveryTarget | undefined = options.latest ? { kind: 'latest' } : options.targetTime !== undefined ? { kind: 'time', value: options.targetTime } : undefined;
        const request = { restoreTest: options.restoreTest || target !== undefined, scratch: options.scratch, deep: options.deep, jobs: options.jobs, target };
        if (several) {
          const result = await (await import('../commands/verify-copies.js')).runVerifyCopies(context(settings, options), ref, request);
          bar.clear();
          printVerifyCopies(result, json);
        } else {
          const report = await (await import('../commands/verify.js')).runVerify(context(settings, options), ref, request);
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
    .description('restore a backup into a new database (or --to NAME); or a dump file made outside pgkeep (--file)')
    .argument('[backup]', 'backup id, or latest')
    .option('--file <path>', 'restore this dump instead: pg_dump custom (.dump), directory, tar or .sql, optionally .gz/.zst (detected from its content)')
    .option('--to <database>', 'target database (default: <db>_restore_<timestamp>)')
    .option('--overwrite', 'replace the target database if it exists (asks to confirm; a safety backup is taken first)')
    .option('--force', 'confirm --overwrite without asking (for scripts)')
    .option('--jobs <n>', 'parallel pg_restore workers (stages the dump in a temp file)', positiveInt('--jobs'))
    .option('--no-owner', 'do not restore object ownership (nor the database owner: the restoring role owns it)')
    .option('--no-acl', 'do not restore privileges (GRANT/REVOKE), on objects nor on the database')
    .option('--table <pattern>', 'only tables matching, with their indexes, constraints, triggers (repeatable; pg_dump patterns)', collect)
    .option('--schema <pattern>', 'only objects of schemas matching (repeatable)', collect)
    .option('--schema-only', 'only the definitions, no rows')
    .option('--data-only', 'only rows, into the existing tables of --to (needs --clean: the tables are emptied first)')
    .option('--clean', 'into the existing --to database: replace only the restored objects, in one transaction (asks to confirm; a safety backup is taken first)')
    .option('--role <role>', 'restore as this role (SET ROLE)')
    .option('--reindex', 'REINDEX what was restored')
    .option('--globals', "first create the backup's roles that do not exist on the server (existing roles are left as they are)")
    .option('--dry-run', 'print the plan (target, what is dropped and created, TOC entries, size) and change nothing')
    .action(async (ref: string | undefined, options: Record<string, unknown> & OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const source = resolveSource(settings);
      const list = (value: unknown) => (Array.isArray(value) && value.length > 0 ? (value as string[]) : undefined);
      if (options.file !== undefined) {
        if (ref !== undefined) throw new PgkeepError('USAGE', `give either a backup id ("${ref}") or --file, not both`);
        const unsupported = ['dataOnly', 'clean', 'globals'].filter((o) => options[o] !== undefined);
        if (unsupported.length > 0) {
          throw new PgkeepError('USAGE', `--file restores the whole dump into a new database (or --overwrite): ${unsupported.map((o) => `--${o.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`).join(', ')} work with backups in the repository only`);
        }
        const fileRequest = {
          file: options.file as string,
          to: options.to as string | undefined,
          overwrite: Boolean(options.overwrite),
          force: Boolean(options.force),
          jobs: options.jobs as number | undefined,
          noOwner: command.getOptionValueSource('owner') === 'cli',
          noAcl: command.getOptionValueSource('acl') === 'cli',
          role: options.role as string | undefined,
          reindex: Boolean(options.reindex),
          tables: list(options.table),
          schemas: list(options.schema),
          schemaOnly: Boolean(options.schemaOnly),
        };
        if (options.dryRun) return printFileRestorePlan(await (await import('../commands/restore-file.js')).planRestoreFile(context(settings, options), source, fileRequest), json);
        const result = await (await import('../commands/restore-file.js')).runRestoreFile(context(settings, options), source, fileRequest);
        bar.clear();
        return printFileRestoreDone(result, json);
      }
      if (ref === undefined) throw new PgkeepError('USAGE', "missing required argument 'backup': give a backup id (or latest), or --file PATH (see pgkeep restore --help)");
      const request: RestoreRequest = {
        backup: ref,
        to: options.to as string | undefined,
        overwrite: Boolean(options.overwrite),
        force: Boolean(options.force),
        jobs: options.jobs as number | undefined,
        noOwner: command.getOptionValueSource('owner') === 'cli',
        noAcl: command.getOptionValueSource('acl') === 'cli',
        tables: list(options.table),
        schemas: list(options.schema),
        schemaOnly: Boolean(options.schemaOnly),
        dataOnly: Boolean(options.dataOnly),
        clean: Boolean(options.clean),
        role: options.role as string | undefined,
        reindex: Boolean(options.reindex),
        globals: Boolean(options.globals),
      };
      if (options.dryRun) {
        const ctx = context(settings, options);
        const repository = source.repos.length > 1 ? (await repositoriesWithBackup(settings, ref, source.name))[0]!.repository : await openRepository(settings, { source: source.name });
        return printRestorePlan(await (await import('../commands/restore.js')).planRestore(ctx, repository, source, request), json);
      }
      // Several repositories: the first that holds the backup, falling back on a checksum failure; --repo picks one.
      const result =
        source.repos.length > 1
          ? await (await import('../commands/restore.js')).runRestoreFromRepositories(context(settings, options), source, request)
          : await (await import('../commands/restore.js')).runRestore(context(settings, options), await openRepository(settings, { source: source.name }), source, request);
      bar.clear();
      printRestoreDone(result, json);
    });

  withOutput(program.command('extract'))
    .description('take rows of one table out of a backup, for review, without touching the live database (via a scratch database)')
    .argument('<backup>', 'backup id, or latest')
    .requiredOption('--table <pattern>', 'the table (one; schema-qualified, quoted names as in pg_dump)')
    .option('--where <sql>', 'only rows matching this SQL condition (your own SQL, run read-only against the scratch copy)')
    .addOption(new Option('--format <format>', 'csv with a header row, or sql INSERT statements').choices(['csv', 'sql']).default('csv'))
    .option('--output <file>', 'write here (never overwritten; default: stdout)')
    .action(async (ref: string, options: OutputOptions & { table: string; where?: string; format: 'csv' | 'sql'; output?: string }, command: Command) => {
      json = Boolean(options.json);
      if (json && options.output === undefined) throw new PgkeepError('USAGE', '--json prints the result on stdout, where the rows go without --output: add --output FILE');
      const settings = settingsOf(command);
      const source = resolveSource(settings);
      const result = await (await import('../commands/extract.js')).runExtract(context(settings, options), source, { backup: ref, table: options.table, where: options.where, format: options.format, output: options.output }, process.stdout);
      bar.clear();
      printExtractDone(result, json);
    });

  withOutput(program.command('copy'))
    .description('copy one backup to another repository (e.g. off-site to S3), then verify it there')
    .argument('<backup>', 'backup id, or latest')
    .requiredOption('--from <url>', 'repository to copy from: a local path or s3://bucket/prefix')
    .requiredOption('--to <url>', 'repository to copy to (an empty location is created with the same encryption)')
    .action(async (ref: string, options: OutputOptions & { from: string; to: string }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const result = await (await import('../commands/copy.js')).runCopy(context(settings, options), { backup: ref, from: options.from, to: options.to, source: settings.options.source });
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
        printPrune(await (await import('../commands/prune.js')).runPrune(context(settings, options), { dryRun: Boolean(options.dryRun), flags }), json);
      } catch (error) {
        const result = (error as PgkeepError).details?.result;
        if (result && !json) printPrune(result as PruneResult, false);
        throw error;
      }
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
      const restoreCommand = (await import('../commands/wal-fetch-command.js')).walFetchCommand(settings, ctx.keys, { source: source.name, repo: source.repo, encrypted: Boolean(repository.info.encryption) });
      const timeoutMs = options.timeout === undefined ? undefined : (options.timeout as number) * 1000;
      if (options.extractTable) {
        if (options.pgdata || options.start || options.dryRun) throw new PgkeepError('USAGE', '--extract-table recovers into a throwaway cluster of its own: leave out --pgdata, --start and --dry-run');
        if (!options.output && !options.intoDb) throw new PgkeepError('USAGE', '--extract-table needs --output FILE, or --into-db URL --as NAME');
        const extracted = await (await import('../commands/pitr-table.js')).runTablePitr(ctx, repository, source, {
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
      const result = await (await import('../commands/pitr.js')).runPitr(ctx, repository, source, {
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
    .description('pre-flight of a source, fitted to what it uses: server, client programs, table privileges, repository (writable, lock, free space), keys; for physical sources also WAL archiving (forces a WAL switch and waits for it in the repository)')
    .option('--logical', 'check only what logical backups (pg_dump) need')
    .option('--physical', 'check only what physical backups and WAL archiving need, even for a source that does not use them yet')
    .option('--wal-timeout <seconds>', 'how long to wait for the switched WAL segment (default 60)', positiveInt('--wal-timeout'))
    .action(async (options: OutputOptions & { walTimeout?: number; logical?: boolean; physical?: boolean }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const scopes = options.logical || options.physical ? ([options.logical ? 'logical' : undefined, options.physical ? 'physical' : undefined].filter(Boolean) as CheckScope[]) : undefined;
      const request = { scopes, walTimeoutMs: options.walTimeout === undefined ? undefined : options.walTimeout * 1000 };
      const { runCheck, runCheckAll } = await import('../commands/check.js');
      // a config with several sources and no --source: check each of them
      const every = settings.options.source === undefined && configuredSources(settings).length > 1 ? configuredSources(settings) : undefined;
      try {
        if (every) printCheckAll(await runCheckAll(context(settings, options), every.map((name) => resolveSource(loadSettings({ ...(command.optsWithGlobals() as GlobalOptions), source: name }))), request), json);
        else printCheck(await runCheck(context(settings, options), resolveSource(settings), request), json);
      } catch (error) {
        // the report is the one JSON document, failing or not (its ok is false)
        const { report, all } = (error as PgkeepError).details ?? {};
        if (all) printCheckAll(all as CheckAllReport, json);
        else if (report) printCheck(report as CheckReport, json);
        jsonPrinted = json && Boolean(all ?? report);
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
      printPin(await (await import('../commands/pin.js')).runPin(context(settings, options), ref, { reason: options.reason }), json);
    });

  withOutput(program.command('unpin'))
    .description('let the retention policy apply to a pinned backup again')
    .argument('<backup>', 'backup id, or latest')
    .action(async (ref: string, options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      printPin(await (await import('../commands/pin.js')).runUnpin(context(settings, options), ref), json);
    });

  const sources = withOutput(program.command('sources'))
    .description('list the sources: configured ones and those found in the repositories, with their backups and failures')
    .action(async (options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const { runListSources } = await import('../commands/sources.js');
      printSources(await runListSources(context(settingsOf(command), options)), json);
    });
  withOutput(sources.command('remove'))
    .description('remove a source from its repositories (one that holds backups, WAL or pins only with --with-backups and a typed confirmation)')
    .argument('<name>', 'the source')
    .option('--with-backups', 'also delete its backups, archived WAL and pins')
    .option('--force', 'do not ask to type the name (scripts, no terminal)')
    .action(async (name: string, own: OutputOptions & { withBackups?: boolean; force?: boolean }, command: Command) => {
      // --json and --quiet after the name are parsed by `sources` too: read them from both
      const options = { ...own, ...(command.optsWithGlobals() as OutputOptions) };
      json = Boolean(options.json);
      const { runRemoveSource } = await import('../commands/sources.js');
      printSourceRemoved(await runRemoveSource(context(settingsOf(command), options), name, options), json);
    });

  withOutput(program.command('status'))
    .description('per source: last backup, last failure, verification, restore test, repositories, PITR, and a health verdict')
    .option('--check', `exit ${ERROR_CODES.UNHEALTHY.exit} with one line per problem (for cron, Nagios, Kubernetes probes)`)
    .action(async (options: OutputOptions & { check?: boolean }, command: Command) => {
      json = Boolean(options.json);
      const settings = settingsOf(command);
      const result = await (await import('../commands/status.js')).runStatus(context(settings, options));
      if (!(options.quiet && options.check)) printStatus(result, json, Boolean(options.check));
      if (options.check && !result.healthy) exitCode = ERROR_CODES.UNHEALTHY.exit;
    });

  withOutput(program.command('serve'))
    .description('run the schedules, the HTTP API (/health, /ready, /metrics, /api) and alerts until SIGTERM')
    .option('--once', 'run the schedules that are due, wait for them, and exit (Kubernetes CronJob)')
    .option('--listen <host:port>', 'address of the HTTP API (default: serve.host/serve.port, 127.0.0.1:9187)')
    .option('--allowed-host <host>', 'a Host name to answer besides loopback and the listen address (repeatable; name, name:port, *.domain, IP, CIDR; added to serve.allowedHosts)', allowedHost)
    .option('--trust-proxy <address>', 'IP or CIDR of a reverse proxy whose X-Forwarded-Host is read and checked (repeatable; added to serve.trustProxy)', trustedProxy)
    .action(async (options: OutputOptions & { once?: boolean; listen?: string; allowedHost?: string[]; trustProxy?: string[] }, command: Command) => {
      json = Boolean(options.json);
      stopDeadlineMs = undefined; // running jobs get serve's own grace period
      const settings = settingsOf(command);
      const listen = options.listen === undefined ? {} : parseListen(options.listen);
      const { runServe } = await import('../commands/serve.js');
      const result = await runServe(context(settings, { quiet: options.quiet }), { once: Boolean(options.once), ...listen, allowedHosts: options.allowedHost, trustProxy: options.trustProxy });
      if (!options.once) {
        // serve promised to stop within gracePeriod + 5 s: a socket or child left over must not hold the process
        setTimeout(() => process.exit(process.exitCode ?? 0), 1000).unref();
        return;
      }
      if (json) return void console.log(JSON.stringify({ jobs: result.jobs }, null, 2));
      for (const job of result.jobs) console.log(`${job.state} ${job.kind} of ${job.source}${job.detail ? `: ${job.detail}` : ''}`);
    });

  const notify = program.command('notify').description('alert channels (notify.webhooks, notify.email in pgkeep.yaml)');
  withOutput(notify.command('test'))
    .description('send a test message through every configured channel')
    .action(async (options: OutputOptions, command: Command) => {
      json = Boolean(options.json);
      const printResult = (result: NotifyTestResult) => {
        if (json) return void console.log(JSON.stringify(result, null, 2));
        for (const c of result.channels) console.log(`${c.ok ? 'sent' : 'FAILED'}  ${c.channel}${c.error ? `: ${c.error}` : ''}`);
      };
      try {
        const { runNotifyTest } = await import('../commands/notify-test.js');
        printResult(await runNotifyTest(context(settingsOf(command), options)));
      } catch (error) {
        const result = (error as PgkeepError).details?.result;
        if (result && !json) printResult(result as NotifyTestResult);
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

  program
    .command('dashboard')
    .description('serve the web dashboard alone (pgkeep serve mounts the same dashboard), until Ctrl+C')
    .option('--listen <host:port>', 'address to listen on', '127.0.0.1:9188')
    .option('--token-file <file>', 'file holding the API token that unlocks actions (or set PGKEEP_API_TOKEN); without one the dashboard is read-only')
    .option('--require-login', 'with a token: every page needs logging in, not only actions')
    .option('--allowed-host <host>', 'a Host name to answer besides loopback and the listen address (repeatable; name, name:port, *.domain, IP, CIDR; added to serve.allowedHosts)', allowedHost)
    .option('--trust-proxy <address>', 'IP or CIDR of a reverse proxy whose X-Forwarded-Host is read and checked (repeatable; added to serve.trustProxy)', trustedProxy)
    .action(async (options: { listen: string; tokenFile?: string; requireLogin?: boolean; allowedHost?: string[]; trustProxy?: string[] }, command: Command) => {
      const settings = settingsOf(command);
      const token = options.tokenFile ? readSecretFile(options.tokenFile, '--token-file') : settings.env.PGKEEP_API_TOKEN || undefined;
      const { parseListen: parseDashboardListen, startDashboardServer } = await import('../server/dashboard/dashboard-server.js');
      // the same Host allowlist as pgkeep serve: serve.allowedHosts and serve.trustProxy of the config, plus the flags
      const hosts = {
        allowedHosts: [...(settings.config.serve?.allowedHosts ?? []), ...(options.allowedHost ?? [])],
        trustProxy: [...(settings.config.serve?.trustProxy ?? []), ...(options.trustProxy ?? [])],
      };
      const log = (line: string) => process.stderr.write(`pgkeep: ${line}\n`);
      const server = await startDashboardServer(settings, parseDashboardListen(options.listen), { token, requireLoginToView: options.requireLogin, ...hosts, log });
      process.stderr.write(`pgkeep: dashboard on ${server.url}/ (${token ? 'actions need the API token' : 'read-only: no API token configured'}); Ctrl+C stops it\n`);
      log(server.hosts);
      // runs until interrupted; an interrupt is a normal stop here, not an error
      await new Promise<void>((resolve) => controller.signal.addEventListener('abort', () => resolve(), { once: true }));
      await server.close();
      exitCode = 0;
    });

  addCommandHelp(program);

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
