import type { Command, Option } from 'commander';
import type { AnyCommandSpec, CommandHelp } from '../registry/command-spec.js';

/**
 * What the WAL commands' --help adds (they are no spec of the registry: the
 * `pgkeep` executable runs them on a lean path). Every other command's comes
 * from its spec (CommandSpec.help).
 */
const WAL_HELP: Record<string, CommandHelp> = {
  'wal-push': { globals: ['config', 'repo', 'source'], examples: ["archive_command = 'pgkeep wal-push %p --source main --repo /srv/backups'"] },
  'wal-fetch': { globals: ['config', 'repo', 'source', 'identity'], examples: ["restore_command = 'pgkeep wal-fetch %f %p --source main --repo /srv/backups'"] },
};

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/**
 * Adds to the --help of every command of `program` (after they are all
 * defined) the global options that apply to it (they may come before or after
 * the command name) and its examples, from its spec.
 */
export function addCommandHelp(program: Command, specs: readonly AnyCommandSpec[]): void {
  const HELP: Record<string, CommandHelp | undefined> = { ...WAL_HELP, ...Object.fromEntries(specs.map((spec) => [spec.name, spec.help])) };
  const globals = new Map<string, Option>(program.options.map((o) => [o.long!.replace(/^--/, ''), o]));
  const visit = (command: Command) => {
    for (const sub of command.commands) {
      const help = HELP[commandPath(sub)];
      if (help) {
        const options = help.globals.map((name) => globals.get(name)!).filter(Boolean);
        const width = Math.max(0, ...options.map((o) => o.flags.length));
        const lines: string[] = [];
        if (options.length > 0) {
          lines.push('', 'Global options (before or after the command):');
          for (const o of options) lines.push(`  ${o.flags.padEnd(width)}  ${o.description}`);
        }
        lines.push('', help.examples.length === 1 ? 'Example:' : 'Examples:', ...help.examples.map((e) => `  ${e}`));
        sub.addHelpText('after', lines.join('\n'));
      }
      visit(sub);
    }
  };
  visit(program);
  program.addHelpText(
    'after',
    ['', 'Examples:', '  pgkeep backup --db postgresql://app@localhost:5432/app   # a first backup into ./backups', '  pgkeep list', '  pgkeep restore latest                                    # into a new database', '', 'Each command has its own help: pgkeep backup --help'].join('\n'),
  );
}
