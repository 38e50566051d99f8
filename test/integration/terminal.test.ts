import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { describe, test } from 'node:test';
import { CLI, cleanEnv, pgkeep } from '../support/cli.js';
import { runCommand } from '../support/run-command.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';

const hasScript = spawnSync('script', ['--version']).status === 0;
let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('tty', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE app');
  // ~25 MB to dump: the progress line is redrawn at most every 100 ms, and this backup lasts long enough for a few
  // redraws that name the table (4 or 5 seen; 1.5 million rows made about 2.5 times the work for nothing more)
  await cluster.query('CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 600000) g', [], 'app');
  // what the confirmation test restores, and what the piped backup dumps: their size is not what those tests are about
  // (a terminal's progress line draws its first update at once, whatever the size: piped, there must be none of it)
  await cluster.query('CREATE DATABASE small');
  await cluster.query('CREATE TABLE orders AS SELECT g AS id, md5(g::text) AS note FROM generate_series(1, 1000) g', [], 'small');
});

const env = () => cleanEnv({ DATABASE_URL: cluster.url('app') });

/** Runs pgkeep on a real pseudo-terminal (util-linux `script`), typing `input`. */
function onTerminal(args: string[], input = ''): Promise<{ code: number | null; output: string }> {
  const command = [process.execPath, CLI, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-qec', `stty cols 160; ${command}`, '/dev/null'], { env: env(), stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  child.stdout.setEncoding('utf8').on('data', (t: string) => (output += t));
  child.stderr.setEncoding('utf8').on('data', (t: string) => (output += t));
  // Type only once the question is on screen, as a person would.
  if (input) {
    const waitForPrompt = setInterval(() => {
      if (output.includes('Type the database name')) {
        clearInterval(waitForPrompt);
        child.stdin.write(input);
      }
    }, 20);
    child.on('close', () => clearInterval(waitForPrompt));
  }
  return new Promise((resolve) => child.on('close', (code) => resolve({ code, output })));
}

describe('on a terminal', { skip: !hasScript && 'util-linux script is not installed' }, () => {
  test('backup shows a progress line with bytes, rate and the current table', async () => {
    const result = await onTerminal(['backup', '--repo', path.join(work, 'tty')]);
    assert.equal(result.code, 0, result.output);
    assert.match(result.output, /\r\x1b\[2Kdump {2}[\d.]+ (B|KiB|MiB) {2}[\d.]+ (B|KiB|MiB|GiB)\/s/);
    assert.match(result.output, /public\.orders/);
    assert.match(result.output, /backup \d{8}T\d{6}Z of app done/);
  });

  test('without a terminal there is no progress line', async () => {
    const result = await pgkeep(['backup', '--repo', path.join(work, 'notty')], { env: { DATABASE_URL: cluster.url('small') } });
    assert.equal(result.code, 0, result.stderr);
    assert.ok(!result.stderr.includes('\x1b'), 'no terminal escapes in piped output');
  });

  test('overwrite asks for the database name: a wrong answer changes nothing, the right one replaces it', async () => {
    const repo = path.join(work, 'tty-restore');
    // the setup, in process: small's tables as source app's backup (the restores below name app's server)
    assert.equal((await runCommand(['backup', '--repo', repo, '--source', 'app'], { env: { DATABASE_URL: cluster.url('small') } })).code, 0);
    await cluster.query('CREATE DATABASE target');
    await cluster.query('CREATE TABLE mine (x int)', [], 'target');

    const wrong = await onTerminal(['restore', 'latest', '--repo', repo, '--to', 'target', '--overwrite'], 'targte\r');
    assert.equal(wrong.code, 8, wrong.output);
    assert.match(wrong.output, /Type the database name to confirm:/);
    assert.equal((await cluster.query("SELECT 1 FROM pg_tables WHERE tablename = 'mine'", [], 'target')).length, 1);

    const right = await onTerminal(['restore', 'latest', '--repo', repo, '--to', 'target', '--overwrite'], 'target\r');
    assert.equal(right.code, 0, right.output);
    assert.match(right.output, /the replaced database was saved first as backup target\/\d{8}T\d{6}Z-pre-restore/);
    assert.equal((await cluster.query("SELECT 1 FROM pg_tables WHERE tablename = 'mine'", [], 'target')).length, 0);
  });
});
