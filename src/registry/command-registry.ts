import { PgkeepError } from '../errors.js';
import type { AnyCommandSpec, JobSpec } from './command-spec.js';

/**
 * The registry's shape, apart from the table of commands (registry.ts).
 *
 * Whoever runs commands by name or by job kind (serve's scheduler, the
 * dashboard) is given a CommandRegistry and imports only this file, which
 * imports no command: the server reaches commands only through the registry
 * it is handed, never through a command module, not even for a type.
 */

/** A job kind and the command that runs it. */
export interface RegisteredJob {
  readonly spec: AnyCommandSpec;
  readonly job: JobSpec<any, any>;
}

/**
 * The commands the daemon and the dashboard call by name, with their request
 * and result types. Empty here: each such command adds itself from its own
 * module (TypeScript declaration merging), e.g. in commands/list.ts:
 *
 *   declare module '../registry/command-registry.js' {
 *     interface NamedCommands { list: typeof listCommand }
 *   }
 *
 * so the types flow from the commands to their callers without this file
 * importing any command.
 */
// filled by declaration merging in the command modules
export interface NamedCommands {}

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
      const spec = byName.get(name as string);
      if (!spec) throw new PgkeepError('INTERNAL', `no command "${String(name)}" is registered`);
      return spec as NamedCommands[K];
    },
    byJobKind: (kind) => jobs.get(kind),
    jobKinds: (options = {}) => [...jobs.values()].filter(({ job }) => !options.scheduled || job.scheduled).map(({ job }) => job.kind),
  };
}
