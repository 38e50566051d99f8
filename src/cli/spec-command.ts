import { Command, Option } from 'commander';
import type { AnyCommandSpec, CommandInput } from '../registry/command-spec.js';

/** Groups of commands that are not commands themselves ("pgkeep notify test"). */
const GROUPS: Record<string, string> = { notify: 'alert channels (notify.webhooks, notify.email in pgkeep.yaml)' };

/**
 * Adds the commander command of a spec to `program` (under its group for
 * "sources remove", "notify test"): its arguments, --json/--quiet, options.
 * `run` receives the input of the command line (CommandInput) and the command.
 */
export function addSpecCommand(program: Command, spec: AnyCommandSpec, run: (input: CommandInput, command: Command) => Promise<void>): Command {
  const command = parentOf(program, spec.name).command(spec.name.split(' ').at(-1)!).description(spec.description);
  for (const arg of spec.arguments ?? []) command.argument(arg.name, arg.description);
  if (spec.output !== false) command.option('--json', 'print JSON').option('-q, --quiet', 'print only the result');
  for (const o of spec.options) {
    const option = new Option(o.flags, o.description);
    if (o.parse) option.argParser(o.parse);
    if (o.choices) option.choices(o.choices);
    if (o.default !== undefined) option.default(o.default);
    if (o.required) option.makeOptionMandatory();
    command.addOption(option);
  }
  return command.action(async (...received: unknown[]) => {
    const cli = received.at(-1) as Command;
    const input: CommandInput = {
      args: received.slice(0, spec.arguments?.length ?? 0) as (string | undefined)[],
      // a subcommand's --json and --quiet after its arguments are parsed by its parent command too: read them from both
      options: cli.optsWithGlobals(),
      given: Object.keys(cli.opts()).filter((name) => cli.getOptionValueSource(name) === 'cli'),
    };
    await run(input, cli);
  });
}

/** The command a spec's command goes under: the program, or its group (created on first use). */
function parentOf(program: Command, name: string): Command {
  const words = name.split(' ');
  if (words.length === 1) return program;
  const group = words.slice(0, -1).join(' ');
  const parent = parentOf(program, group);
  return parent.commands.find((c) => c.name() === words.at(-2)) ?? parent.command(words.at(-2)!).description(GROUPS[group] ?? '');
}
