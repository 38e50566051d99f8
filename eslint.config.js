// The layering rules of docs/architecture.md, checked on every `npm test` (and `npm run lint`).
//
// Each rule names the folders it applies to and the imports they must not
// make, as regular expressions over the import's path as written (relative,
// e.g. '../storage/storage.js'). Static imports, `export ... from` and
// dynamic import() are all checked. Only src/ is linted: tests may reach
// anything they exercise.
import tsParser from '@typescript-eslint/parser';

/** Every top-level folder of src/, and the files directly in src/ ('.'). */
const FOLDERS = ['cli', 'commands', 'registry', 'server', 'scheduler', 'notify', 'restore', 'backup', 'verify', 'status', 'repository', 'pipeline', 'storage', 'local', 'postgres', 'config', 'retention', 'format', '.'];

/** An import of src/<folder>/ from any file of src/ (one or more '../' up, then the folder). */
const into = (folder) => `^(\\.\\./)+${folder}/`;

const IMPORT_RULES = [
  {
    name: 'commands never import commands',
    from: ['commands'],
    // A sibling in src/commands/ (or the folder reached from above); what every command takes (CommandContext) is the registry's.
    forbid: '^(\\./|(\\.\\./)+commands/)',
    message: 'a command module never imports another command module: share through src/restore/, src/backup/ or src/repository/ (the CommandContext type is src/registry/command-context.ts)',
  },
  {
    name: 'the server reaches commands only through the registry',
    from: ['server'],
    // Nor the table of commands (registry/registry.ts imports each command): the server is handed a
    // CommandRegistry (registry/command-registry.ts) by the command that starts it.
    forbid: '^(\\.\\./)+(commands/|registry/registry\\.js$)',
    message: 'the server reaches jobs only through the registry it is handed (src/registry/command-registry.ts), never a command module or the table of commands',
  },
  {
    name: 'commands reach storage only through the repository',
    // The restore engine and the verification too: they read through Repository.loadObject.
    from: ['commands', 'restore', 'verify'],
    forbid: into('storage'),
    message: 'commands reach storage only through the repository (src/repository/)',
  },
  {
    name: 'the pipeline knows no repository format',
    from: ['pipeline'],
    // Nor a storage: loads read from a ByteSource, stores write to a ByteSink (a driver is both).
    forbid: '^(\\.\\./)+(repository|storage)/',
    message: 'the pipeline moves bytes; it knows no repository format and no storage driver (it reads a ByteSource and writes a ByteSink)',
  },
  {
    name: "the repository's storage stays in the repository",
    from: FOLDERS.filter((f) => f !== 'repository'),
    forbid: '^(\\.\\./)+repository/repository-storage\\.js$',
    message: "Repository.storage is private: reach storage through the repository's methods (loadObject, lockSource, ...), never through repository-storage.ts",
  },
  {
    name: 'storage drivers know only keys and bytes',
    from: ['storage'],
    forbid: into('repository'),
    message: 'drivers know only keys and bytes: no src/repository/ import in src/storage/',
  },
  {
    name: 'the backup logic writes through the repository',
    from: ['backup'],
    forbid: into('storage'),
    message: 'src/backup/ writes through the repository\'s backup writer, never to storage',
  },
  {
    name: 'config reads no one',
    from: ['config'],
    // Config may use pgkeep's errors and a few pure parsers (durations, calendars,
    // connection URLs, host patterns) and name the types it produces; nothing with behaviour.
    forbid: '^(\\.\\./)+(?!(errors\\.js|retention/(duration|calendar|retention-policy)\\.js|postgres/connection-info\\.js|server/host-allowlist\\.js|storage/open-storage\\.js)$)',
    message: 'config is read by everyone and reads no one (only errors.ts and the pure parsers listed in eslint.config.js)',
  },
  {
    name: 'no layer below the CLI formats for a terminal',
    from: FOLDERS.filter((f) => f !== 'cli' && f !== 'commands'),
    forbid: into('cli'),
    message: 'no layer below the CLI formats for a terminal: plain sizes and ages are in src/format/',
  },
];

/**
 * The Repository methods that write a backup piece by piece: above
 * src/repository/ a backup is written only through the backup writer
 * (Repository.beginBackup: lock, leftovers, id, objects, manifest last).
 */
const WRITER_STEPS = ['storeTarget', 'writeStoredObject', 'writeManifest', 'discardBackupFolder', 'removeLeftovers', 'ensureSource'];
const writerCalls = {
  selector: `CallExpression[callee.property.name=/^(${WRITER_STEPS.join('|')})$/]`,
  message: 'a backup is written only through the backup writer (Repository.beginBackup → store, commit, abort): its steps are not called one by one above src/repository/',
};

/** The two rules that state `rules` for the files of a folder (and, outside src/repository/, the writer's steps). */
function importRules(rules, folder) {
  const syntax = [
    // import('...') is not an import declaration: the same paths, as syntax (a selector's regex cannot hold '/': \x2F).
    ...rules.map((rule) => ({ selector: `ImportExpression[source.value=/${rule.forbid.replaceAll('/', '\\x2F')}/]`, message: rule.message })),
    ...(folder === 'repository' ? [] : [writerCalls]),
  ];
  return {
    ...(rules.length === 0 ? {} : { 'no-restricted-imports': ['error', { patterns: rules.map((rule) => ({ regex: rule.forbid, message: rule.message })) }] }),
    ...(syntax.length === 0 ? {} : { 'no-restricted-syntax': ['error', ...syntax] }),
  };
}

/** One config per folder: a file is in exactly one folder, so its rules are gathered there (a later config would replace an earlier one's options). */
const importConfigs = FOLDERS.map((folder) => ({
  files: folder === '.' ? ['src/*.ts'] : [`src/${folder}/**/*.ts`],
  rules: importRules(IMPORT_RULES.filter((rule) => rule.from.includes(folder)), folder),
}));

export default [
  {
    files: ['src/**/*.ts'],
    languageOptions: { parser: tsParser, ecmaVersion: 'latest', sourceType: 'module' },
    linterOptions: { reportUnusedDisableDirectives: 'error' },
  },
  ...importConfigs,
  {
    // Nothing below the commands reads the environment: the CLI reads it into Settings and passes values down.
    files: ['src/**/*.ts'],
    // child-env.ts copies the environment for child programs (it reads no setting from it).
    ignores: ['src/cli/**', 'src/commands/**', 'src/postgres/child-env.ts'],
    rules: {
      'no-restricted-properties': ['error', { object: 'process', property: 'env', message: 'nothing below src/commands/ reads process.env: read it in the CLI or a command (Settings) and pass the value down' }],
    },
  },
];
