import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { Command } from 'commander';
import { addSpecCommand } from '../../src/cli/spec-command.js';
import { isPgkeepError } from '../../src/errors.js';
import type { AnyCommandSpec, CommandInput } from '../../src/registry/command-spec.js';
import { COMMAND_NAMES, createRegistry, loadRegistry } from '../../src/registry/registry.js';

const registry = await loadRegistry();

/** The words of an example command line of --help, as a shell would split them: from "pgkeep" on, without a trailing # comment. */
function wordsOf(example: string): string[] {
  const words = [...example.replace(/\s+#.*$/, '').matchAll(/'([^']*)'|"([^"]*)"|(\S+)/g)].map((m) => m[1] ?? m[2] ?? m[3]!);
  // the command line ends at a pipe or a redirection (pgkeep cat latest | pg_restore -d newdb, pgkeep runbook > RUNBOOK.md)
  const after = words.slice(words.indexOf('pgkeep') + 1);
  const end = after.findIndex((w) => w === '|' || w === '>');
  return end < 0 ? after : after.slice(0, end);
}

/** What the CLI hands the spec's parser for `argv`, through the same commander set-up as src/cli/main.ts. */
async function inputOf(spec: AnyCommandSpec, argv: string[], { withName = false } = {}): Promise<CommandInput> {
  const program = new Command('pgkeep').exitOverride().option('-c, --config <file>').option('--repo <url>').option('--db <url>').option('--source <name>').option('--identity <file>');
  let received: CommandInput | undefined;
  addSpecCommand(program, spec, async (input) => {
    received = input;
  });
  for (const command of [program, ...program.commands, ...program.commands.flatMap((c) => c.commands)]) command.exitOverride();
  await program.parseAsync(withName ? argv : [...spec.name.split(' '), ...argv], { from: 'user' });
  assert.ok(received, `${spec.name}: the action ran`);
  return received;
}

describe('command registry', () => {
  test('every command is registered once, in the order of pgkeep --help, with unique job kinds', () => {
    assert.deepEqual(
      registry.specs.map((s) => s.name),
      [...COMMAND_NAMES],
    );
    assert.equal(new Set(COMMAND_NAMES).size, COMMAND_NAMES.length);
    const kinds = registry.specs.flatMap((s) => (s.jobs ?? []).map((j) => j.kind));
    assert.equal(new Set(kinds).size, kinds.length, `job kinds: ${kinds.join(', ')}`);
    // the schedule keys users write in pgkeep.yaml, in the order serve lists their schedules
    assert.deepEqual(registry.jobKinds({ scheduled: true }), ['logical', 'physical', 'restoreTest', 'pitrDrill', 'prune', 'check']);
    assert.deepEqual(registry.jobKinds(), ['logical', 'physical', 'restoreTest', 'pitrDrill', 'verify', 'prune', 'check']);
    // a scheduled PITR drill is verify latest --pitr-drill
    assert.deepEqual(registry.byJobKind('pitrDrill')!.job.request({ source: 'app' } as never), { mode: 'one', ref: 'latest', restoreTest: true, pitrDrill: true, everyCopy: false });
    for (const kind of kinds) assert.equal(registry.byJobKind(kind)?.job.kind, kind);
    assert.equal(registry.byJobKind('restore-test'), undefined, 'one spelling: restoreTest');
  });

  test('a second command of the same name or job kind is refused', () => {
    const backup = registry.byName('backup')!;
    assert.throws(() => createRegistry([...registry.specs, backup]), (e: unknown) => isPgkeepError(e, 'INTERNAL') && /two commands are named "backup"/.test((e as Error).message));
    const copy = { ...registry.byName('prune')!, name: 'prune-again' };
    assert.throws(() => createRegistry([...registry.specs, copy]), (e: unknown) => isPgkeepError(e, 'INTERNAL') && /job kind "prune" is run by both "prune" and "prune-again"/.test((e as Error).message));
  });

  for (const spec of registry.specs) {
    test(`${spec.name}: well-formed, and its options parse with its parser`, async () => {
      assert.match(spec.name, /^[a-z][a-z-]*( [a-z][a-z-]*)?$/);
      assert.ok(spec.description.length > 10, 'a description');
      const flags = spec.options.map((o) => o.flags.split(/[ ,]+/).find((f) => f.startsWith('--'))!);
      assert.equal(new Set(flags).size, flags.length, `unique flags: ${flags.join(' ')}`);
      for (const global of ['--config', '--repo', '--db', '--source', '--identity', '--json', '--quiet']) assert.ok(!flags.includes(global), `${global} is the program's own`);
      for (const o of spec.options) assert.ok(o.description.length > 5, `${o.flags} has a description`);
      assert.ok(spec.help && spec.help.examples.length >= 1 && spec.help.examples.every((e) => e.includes('pgkeep ')), 'examples in --help');

      // every example of its --help is a valid command line: commander takes it, the spec's parser types it
      for (const example of spec.help.examples) {
        const words = wordsOf(example);
        assert.deepEqual(words.slice(0, spec.name.split(' ').length), spec.name.split(' '), example);
        const request = spec.parse(await inputOf(spec, words, { withName: true }));
        assert.equal(typeof request, 'object', example);
      }

      for (const job of spec.jobs ?? []) {
        const jobRequest = job.request({ source: 'app', target: '20261121T020000Z' });
        assert.equal(typeof jobRequest, 'object', `${job.kind}: a request`);
      }
    });
  }

  test('a parser turns bad input into one USAGE line', async () => {
    const cases: [string, string[], RegExp][] = [
      ['verify', [], /verify needs a backup id, latest or all/],
      ['pitr', ['--latest', '--target-xid', '5'], /pitr needs exactly one of/],
      ['backup', ['--physical', '--format', 'plain'], /--physical backs up the whole cluster: --format applies to logical backups only/],
      ['restore', ['--file', 'x.sql', '--clean'], /--file restores the whole dump.*--clean work with backups in the repository only/],
      ['extract', ['latest', '--table', 't', '--json'], /--json prints the result on stdout/],
    ];
    for (const [name, argv, message] of cases) {
      const spec = registry.byName(name)!;
      const input = await inputOf(spec, argv);
      assert.throws(() => spec.parse(input), (e: unknown) => isPgkeepError(e, 'USAGE') && message.test((e as Error).message), `${name} ${argv.join(' ')}`);
    }
  });
});
