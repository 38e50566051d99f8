/**
 * Makes the stored-manifest fixtures of test/support/fixtures/manifests/
 * with real backups of this pgkeep (logical, physical, encrypted, copied):
 * run `npm run build && node --import tsx --test test/support/make-manifest-fixtures.ts`
 * when the manifest format changes, and keep the old files (upgradeManifest
 * must keep reading them). Not part of the suite (no .test.ts).
 */
import assert from 'node:assert/strict';
import { randomBytes } from 'node:crypto';
import { chmod, copyFile, mkdir, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, before, test } from 'node:test';
import { json, keygen, pgkeep } from './cli.js';
import { useClusterAndWorkFolder } from './integration-setup.js';
import { archivingConf, type PgCluster } from './pg-cluster.js';
import { archiveCommand, giveToServer } from './server-folder.js';

const OUT = path.join(path.dirname(fileURLToPath(import.meta.url)), 'fixtures', 'manifests');
const shared = path.join(tmpdir(), `pgkeep-fixtures-${randomBytes(6).toString('hex')}`);
const repo = path.join(shared, 'repo');
let cluster: PgCluster;
let work: string;

before(async () => {
  await mkdir(shared, { mode: 0o755 });
  await chmod(shared, 0o755);
  assert.equal((await pgkeep(['init', '--repo', repo])).code, 0);
  giveToServer(shared);
});
after(() => rm(shared, { recursive: true, force: true }));
useClusterAndWorkFolder(
  'fixtures',
  async (c, w) => {
    cluster = c;
    work = w;
    // The first archived segment makes the archive folders the server's own (as in pitr.test.ts).
    const name = (await cluster.query<{ name: string }>('SELECT pg_walfile_name(pg_switch_wal()) AS name'))[0]!.name;
    for (let i = 0; i < 300; i++) {
      const [stats] = await cluster.query<{ last: string | null }>('SELECT last_archived_wal AS last FROM pg_stat_archiver');
      if (stats!.last !== null && stats!.last >= name) break;
      await new Promise((r) => setTimeout(r, 100));
    }
  },
  { conf: archivingConf(archiveCommand(repo, 'main')) },
);

async function keep(repository: string, source: string, id: string, name: string): Promise<void> {
  await copyFile(path.join(repository, 'sources', source, 'backups', id, 'manifest.json'), path.join(OUT, `${name}.json`));
}

test('make the fixtures', { timeout: 300_000 }, async () => {
  await mkdir(OUT, { recursive: true });
  await cluster.query("CREATE TABLE items (id int PRIMARY KEY, note text); INSERT INTO items SELECT g, 'x' FROM generate_series(1, 100) g");
  const env = { DATABASE_URL: cluster.url() };
  const logical = await pgkeep(['backup', '--repo', repo, '--source', 'main', '--json', '--label', 'fixture'], { env });
  assert.equal(logical.code, 0, logical.stderr);
  await keep(repo, 'main', json(logical).id, 'logical');

  const physical = await pgkeep(['backup', '--physical', '--repo', repo, '--source', 'main', '--json'], { env });
  assert.equal(physical.code, 0, physical.stderr);
  await keep(repo, 'main', json(physical).id, 'physical');

  const key = await keygen(path.join(work, 'key.txt'));
  const encRepo = path.join(work, 'enc');
  assert.equal((await pgkeep(['init', '--repo', encRepo, '--encrypt', '--recipient', key.publicKey])).code, 0);
  const encrypted = await pgkeep(['backup', '--repo', encRepo, '--source', 'main', '--identity', key.file, '--json'], { env });
  assert.equal(encrypted.code, 0, encrypted.stderr);
  await keep(encRepo, 'main', json(encrypted).id, 'encrypted');

  const copyRepo = path.join(work, 'copy');
  const copied = await pgkeep(['copy', json(logical).id, '--from', repo, '--to', copyRepo, '--source', 'main', '--json']);
  assert.equal(copied.code, 0, copied.stderr);
  await keep(copyRepo, 'main', json(logical).id, 'copied');
  console.log(await readdir(OUT));
});
