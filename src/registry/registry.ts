import type { AnyCommandSpec } from './command-spec.js';
import { createRegistry, type CommandRegistry } from './command-registry.js';

export { createRegistry, type CommandRegistry } from './command-registry.js';

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

/** Imports the specs of the commands whose name is or starts with one of `names` ("sources" gives "sources remove" too); all without names. */
export async function loadCommands(names?: readonly string[]): Promise<AnyCommandSpec[]> {
  const wanted = names === undefined ? COMMANDS : COMMANDS.filter((c) => names.some((n) => c.name === n || c.name.startsWith(`${n} `)));
  return Promise.all(wanted.map((c) => c.load()));
}

/** The registry of every command (imports them all). */
export async function loadRegistry(): Promise<CommandRegistry> {
  return createRegistry(await loadCommands());
}
