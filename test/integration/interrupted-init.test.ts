// An init (or a copy creating its destination) killed between an encrypted
// repository's keys and pgkeep.json (fault point before-repo-info,
// src/repository/unfinished-init.ts): the location holds only keys/…; every
// command says so in one line (exit 5, REPO_INIT_UNFINISHED); the same init
// or copy refuses while the keys are young (another pgkeep may be creating
// the repository) and, once they are 10 minutes old, removes them and creates
// a repository that works. Over a folder and s3rver.
import assert from 'node:assert/strict';
import { readdir, stat, utimes } from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { openStorage } from '../../src/storage/open-storage.js';
import { pgkeep } from '../support/cli.js';
import { eachStorage, type TestStorage } from '../support/each-storage.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
// the keys are what these tests need, not the keygen program's output: made in process
import { keygenInProcess as keygen, runCommand } from '../support/run-command.js';

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('interrupted-init', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE shop');
  await cluster.query('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 2000) g', [], 'shop');
});

/** Every object at the repository location, as keys. */
async function objects(url: string): Promise<string[]> {
  const out: string[] = [];
  for await (const e of openStorage(url).list('', { recursive: true })) if (e.kind === 'object') out.push(e.path);
  return out.sort();
}

/**
 * Makes every object of the repository 11 minutes old, as if the kill had
 * happened then: the files of a folder repository, or s3rver's object files,
 * whose mtime it reports as the objects' last-modified time.
 */
async function ageRepository(where: TestStorage, url: string): Promise<void> {
  const folder = where.kind === 'posix' ? url : path.join(where.s3!.dataDirectory, url.slice('s3://'.length));
  const then = new Date(Date.now() - 11 * 60_000);
  for (const entry of await readdir(folder, { recursive: true })) {
    const file = path.join(folder, entry);
    if ((await stat(file)).isFile()) await utimes(file, then, then);
  }
}

/** Exit 5, one line naming the unfinished init. */
function assertUnfinished(result: { code: number | null; stderr: string }, wanted: RegExp): void {
  assert.equal(result.code, 5, result.stderr);
  assert.match(result.stderr, /holds the keys of a pgkeep init that (did not|has not) finish/);
  assert.match(result.stderr, wanted);
  assert.equal(result.stderr.trim().split('\n').length, 1, result.stderr);
}

eachStorage('an encrypted init killed before pgkeep.json', (where) => {
  test('init: the keys alone are refused by every command, kept while young, removed by init once old; the repository then works', async () => {
    const repo = where.repo('killed-init');
    const key = await keygen(path.join(work, `ops-${where.kind}.key`));
    const init = ['init', '--repo', repo, '--encrypt', '--recipient', key.publicKey];
    const killed = await pgkeep(init, { env: { ...where.env(), PGKEEP_FAULT: 'before-repo-info' } });
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    assert.deepEqual(await objects(repo), ['keys/content.age'], 'the sealed content key, and no pgkeep.json');

    const env = { ...where.env(), DATABASE_URL: cluster.url('shop'), PGKEEP_AGE_IDENTITY_FILE: key.file };
    assertUnfinished(await runCommand(['backup', '--repo', repo], { env }), /run that init \(or copy\) again/);
    assertUnfinished(await runCommand(['list', '--repo', repo], { env }), /run that init \(or copy\) again/);
    assertUnfinished(await runCommand(init, { env: where.env() }), /another pgkeep may be creating this repository; if none is, run this again in 10 min/);
    assert.deepEqual(await objects(repo), ['keys/content.age'], 'young keys are kept: an init may still be running');

    await ageRepository(where, repo);
    const again = await runCommand(init, { env: where.env() });
    assert.equal(again.code, 0, again.stderr);
    assert.deepEqual(await objects(repo), ['keys/content.age', 'pgkeep.json']);
    const backup = await runCommand(['backup', '--repo', repo], { env });
    assert.equal(backup.code, 0, backup.stderr);
    const verified = await runCommand(['verify', 'latest', '--repo', repo], { env });
    assert.equal(verified.code, 0, verified.stderr);
  });
});

eachStorage('a copy killed while creating its encrypted destination', (where) => {
  test('copy: the destination\'s keys alone are refused while young and replaced once old; the copy then verifies', async () => {
    const key = await keygen(path.join(work, `copy-${where.kind}.key`));
    const env = { ...where.env(), DATABASE_URL: cluster.url('shop'), PGKEEP_AGE_IDENTITY_FILE: key.file };
    const from = where.repo('copy-source');
    const to = where.repo('copy-destination');
    assert.equal((await runCommand(['init', '--repo', from, '--encrypt', '--recipient', key.publicKey], { env })).code, 0);
    const backup = await runCommand(['backup', '--repo', from], { env });
    assert.equal(backup.code, 0, backup.stderr);
    const copy = ['copy', 'latest', '--from', from, '--to', to];
    const killed = await pgkeep(copy, { env: { ...env, PGKEEP_FAULT: 'before-repo-info' } });
    assert.equal(killed.signal, 'SIGKILL', killed.stderr);
    assert.deepEqual(await objects(to), ['keys/content.age']);

    assertUnfinished(await runCommand(copy, { env }), /run this again in 10 min/);
    await ageRepository(where, to);
    const copied = await runCommand(copy, { env });
    assert.equal(copied.code, 0, copied.stderr);
    const verified = await runCommand(['verify', 'latest', '--repo', to], { env });
    assert.equal(verified.code, 0, verified.stderr);
  });
});
