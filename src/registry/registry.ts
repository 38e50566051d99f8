import { PgkeepError } from '../errors.js';

export { quietContext } from './command-context.js';
import type { AnyCommandSpec, JobSpec } from './command-spec.js';
import type { listCommand } from '../commands/list.js';
import type { showCommand } from '../commands/show.js';
import type { pinCommand, unpinCommand } from '../commands/pin.js';
import type { runbookCommand } from '../commands/runbook.js';

/**
 * Every command of pgkeep, in the order of `pgkeep --help`. A command's module
 * is imported only when it is needed: one CLI process runs one command, and
 * importing all of them costs every command about 0.3 s of start-up (serve's
 * fastify, prom-client and nodemailer alone most of it).
 *
 * A new command is one module exporting its CommandSpec, plus one line here.
 */
const COMMANDS: readonly { readonly name: string; load(): Promise<AnyCommandSpec> }[] = [
  { name: 'init', load: async () => (await import('../commands/init.js')).initCommand },
  { name: 'keygen', load: async () => (await import('../commands/keygen.js')).keygenCommand },
  { name: 'backup', load: async () => (await import('../commands/backup.js')).backupCommand },
  { name: 'list', load: async () => (await import('../commands/list.js')).listCommand },
  { name: 'show', load: async () => (await import('../commands/show.js')).showCommand },
  { name: 'verify', load: async () => (await import('../commands/verify.js')).verifyCommand },
  { name: 'restore', load: async () => (await import('../commands/restore.js')).restoreCommand },
  { name: 'extract', load: async () => (await import('../commands/extract.js')).extractCommand },
  { name: 'cat', load: async () => (await import('../commands/cat.js')).catCommand },
  { name: 'copy', load: async () => (await import('../commands/copy.js')).copyCommand },
  { name: 'prune', load: async () => (await import('../commands/prune.js')).pruneCommand },
  { name: 'pitr', load: async () => (await import('../commands/pitr.js')).pitrCommand },
  { name: 'check', load: async () => (await import('../commands/check.js')).checkCommand },
  { name: 'pin', load: async () => (await import('../commands/pin.js')).pinCommand },
  { name: 'unpin', load: async () => (await import('../commands/pin.js')).unpinCommand },
  { name: 'sources', load: async () => (await import('../commands/sources.js')).sourcesCommand },
  { name: 'sources remove', load: async () => (await import('../commands/sources.js')).removeSourceCommand },
  { name: 'status', load: async () => (await import('../commands/status.js')).statusCommand },
  { name: 'runbook', load: async () => (await import('../commands/runbook.js')).runbookCommand },
  { name: 'serve', load: async () => (await import('../commands/serve.js')).serveCommand },
  { name: 'notify test', load: async () => (await import('../commands/notify-test.js')).notifyTestCommand },
  { name: 'dashboard', load: async () => (await import('../commands/dashboard.js')).dashboardCommand },
];

/** The names of every command ("sources remove" included), without importing any. */
export const COMMAND_NAMES: readonly string[] = COMMANDS.map((c) => c.name);

/** A job kind and the command that runs it. */
export interface RegisteredJob {
  readonly spec: AnyCommandSpec;
  readonly job: JobSpec<any, any>;
}

/** The commands the daemon and the dashboard call by name, with their request and result types. */
export interface NamedCommands {
  list: typeof listCommand;
  show: typeof showCommand;
  pin: typeof pinCommand;
  unpin: typeof unpinCommand;
  runbook: typeof runbookCommand;
}

/** Every command's spec, looked up by name and by job kind. */
export interface CommandRegistry {
  readonly specs: readonly AnyCommandSpec[];
  byName(name: string): AnyCommandSpec | undefined;
  /** A command by name, typed (INTERNAL when it is not registered). */
  command<K extends keyof NamedCommands>(name: K): NamedCommands[K];
  /** The command that runs jobs of this kind. */
  byJobKind(kind: string): RegisteredJob | undefined;
  /** Every job kind; `scheduled` only: those pgkeep.yaml may schedule (sources.<name>.schedule keys). */
  jobKinds(options?: { scheduled?: boolean }): string[];
}

/** Imports the specs of the commands whose name is or starts with one of `names` ("sources" gives "sources remove" too); all without names. */
export async function loadCommands(names?: readonly string[]): Promise<AnyCommandSpec[]> {
  const wanted = names === undefined ? COMMANDS : COMMANDS.filter((c) => names.some((n) => c.name === n || c.name.startsWith(`${n} `)));
  return Promise.all(wanted.map((c) => c.load()));
}

/** The registry of every command (imports them all). */
export async function loadRegistry(): Promise<CommandRegistry> {
  return createRegistry(await loadCommands());
}

/** A registry of these specs; names and job kinds must be unique (a programming error otherwise). */
export function createRegistry(specs: readonly AnyCommandSpec[]): CommandRegistry {
  const byName = new Map<string, AnyCommandSpec>();
  const jobs = new Map<string, RegisteredJob>();
  for (const spec of specs) {
    if (byName.has(spec.name)) throw new PgkeepError('INTERNAL', `two commands are named "${spec.name}"`);
    byName.set(spec.name, spec);
    for (const job of spec.jobs ?? []) {
      const other = jobs.get(job.kind);
      if (other) throw new PgkeepError('INTERNAL', `job kind "${job.kind}" is run by both "${other.spec.name}" and "${spec.name}"`);
      jobs.set(job.kind, { spec, job });
    }
  }
  return {
    specs,
    byName: (name) => byName.get(name),
    command<K extends keyof NamedCommands>(name: K): NamedCommands[K] {
      const spec = byName.get(name);
      if (!spec) throw new PgkeepError('INTERNAL', `no command "${name}" is registered`);
      return spec as NamedCommands[K];
    },
    byJobKind: (kind) => jobs.get(kind),
    jobKinds: (options = {}) => [...jobs.values()].filter(({ job }) => !options.scheduled || job.scheduled).map(({ job }) => job.kind),
  };
}
