import type { Command, Option } from 'commander';

/** The program-wide options a command reads, by long name, and a few examples of it. */
interface CommandHelp {
  globals: ('config' | 'repo' | 'db' | 'source' | 'identity')[];
  examples: string[];
}

const REPO_READ: CommandHelp['globals'] = ['config', 'repo', 'source'];

/**
 * What each command's --help adds after its own options: the global options
 * that apply to it (they may come before or after the command name) and one
 * to three examples, as a new user would type them. Keyed by the command's
 * path ("sources remove").
 */
const HELP: Record<string, CommandHelp> = {
  init: { globals: ['config', 'repo'], examples: ['pgkeep init --repo /srv/backups', 'pgkeep init --repo s3://my-bucket/app --encrypt --recipient age1…', 'PGKEEP_PASSPHRASE_FILE=/run/secrets/pass pgkeep init --repo ./backups --encrypt'] },
  keygen: { globals: [], examples: ['pgkeep keygen --output ~/.config/pgkeep/identity.txt'] },
  backup: {
    globals: ['config', 'repo', 'db', 'source'],
    examples: ['pgkeep backup --db postgresql://app@db.internal:5432/app --repo /srv/backups', 'pgkeep backup --name before-migration --label release-42', 'pgkeep backup --physical --source main'],
  },
  list: { globals: REPO_READ, examples: ['pgkeep list --repo /srv/backups', 'pgkeep list --source app --json'] },
  show: { globals: [...REPO_READ, 'identity'], examples: ['pgkeep show latest', 'pgkeep show 20261121T020000Z --json'] },
  verify: {
    globals: [...REPO_READ, 'db', 'identity'],
    examples: ['pgkeep verify latest', 'pgkeep verify latest --restore-test', 'pgkeep verify --wal --source main'],
  },
  restore: {
    globals: [...REPO_READ, 'db', 'identity'],
    examples: ['pgkeep restore latest', 'pgkeep restore latest --to app --overwrite', "pgkeep restore --file backup_2024.sql.gz --db postgresql://app@localhost/app"],
  },
  extract: { globals: [...REPO_READ, 'db', 'identity'], examples: ['pgkeep extract latest --table customers --output customers.csv', 'pgkeep extract latest --table orders --where "id < 100" --format sql'] },
  copy: { globals: ['config', 'source', 'identity'], examples: ['pgkeep copy latest --from ./backups --to s3://offsite/app'] },
  prune: { globals: REPO_READ, examples: ['pgkeep prune --dry-run --keep-daily 7 --keep-weekly 4', 'pgkeep prune --source app'] },
  pitr: {
    globals: [...REPO_READ, 'identity'],
    examples: ["pgkeep pitr --source main --pgdata /var/lib/postgresql/restored --target-time '2026-11-21 14:05:00+00' --start", "pgkeep pitr --source main --latest --extract-table public.orders --output orders.sql"],
  },
  check: { globals: [...REPO_READ, 'db', 'identity'], examples: ['pgkeep check --db postgresql://app@db.internal/app', 'pgkeep check --source main --physical', 'pgkeep check --json'] },
  pin: { globals: REPO_READ, examples: ['pgkeep pin 20261121T020000Z --reason "before the 2.0 migration"', 'pgkeep pin latest --source app'] },
  unpin: { globals: REPO_READ, examples: ['pgkeep unpin 20261121T020000Z'] },
  sources: { globals: ['config', 'repo'], examples: ['pgkeep sources', 'pgkeep sources --repo s3://my-bucket/app --json'] },
  'sources remove': { globals: ['config', 'repo'], examples: ['pgkeep sources remove root', 'pgkeep sources remove old-app --with-backups', 'pgkeep sources remove old-app --with-backups --force   # in a script'] },
  status: { globals: REPO_READ, examples: ['pgkeep status', 'pgkeep status --check   # exit 2 and one line per problem', 'pgkeep status --json'] },
  serve: { globals: ['config'], examples: ['pgkeep serve -c /etc/pgkeep/pgkeep.yaml', 'pgkeep serve --once   # a Kubernetes CronJob'] },
  'notify test': { globals: ['config'], examples: ['pgkeep notify test -c /etc/pgkeep/pgkeep.yaml'] },
  'wal-push': { globals: ['config', 'repo', 'source'], examples: ["archive_command = 'pgkeep wal-push %p --source main --repo /srv/backups'"] },
  'wal-fetch': { globals: ['config', 'repo', 'source', 'identity'], examples: ["restore_command = 'pgkeep wal-fetch %f %p --source main --repo /srv/backups'"] },
  dashboard: { globals: ['config', 'repo'], examples: ['pgkeep dashboard --repo /srv/backups', 'pgkeep dashboard --listen 0.0.0.0:9188 --token-file /etc/pgkeep/api-token'] },
};

function commandPath(command: Command): string {
  const names: string[] = [];
  for (let c: Command | null = command; c?.parent; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Adds the global options and examples to the --help of every command of `program` (after they are all defined). */
export function addCommandHelp(program: Command): void {
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
