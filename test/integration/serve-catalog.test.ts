import assert from 'node:assert/strict';
import { readdirSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test } from 'node:test';
import { Repository } from '../../src/repository/repository.js';
import { openStorage } from '../../src/storage/open-storage.js';
import { pgkeep, startServe } from '../support/cli.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import { runCommand } from '../support/run-command.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { cloneBackupAt } from '../support/synthetic-backups.js';

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('serve-catalog', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE shop');
  await cluster.query('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 2000) g', [], 'shop');
});

/** pgkeep_catalog_reads_total{what} from a /metrics text. */
const reads = (metrics: string, what: string) => Number(new RegExp(`^pgkeep_catalog_reads_total\\{what="${what}"\\} (\\d+)`, 'm').exec(metrics)?.[1] ?? NaN);
const backupIds = (repo: string, source: string) => readdirSync(path.join(repo, 'sources', source, 'backups')).sort();

describe('serve\'s catalog', () => {
  test('loaded once; pages, API and /metrics read no manifest whatever the backup count; a backup written by the CLI while serve runs appears within the refresh interval, and only its manifest is read', async () => {
    const repo = path.join(work, 'repo');
    const config = path.join(work, 'pgkeep.yaml');
    const source = { host: '127.0.0.1', port: cluster.port, user: 'postgres', database: 'shop' };
    // "small" holds 1 backup, "large" 61: per request, both must cost the catalog nothing
    await writeFile(config, JSON.stringify({ repo, serve: { stateDir: path.join(work, 'state'), catalogRefresh: '1s' }, sources: { small: source, large: source } }));
    const env = { PGPASSWORD: cluster.password };
    // the starting backups: in process (the catalog is the subject, not how they were taken)
    for (const name of ['small', 'large']) {
      const made = await runCommand(['backup', '--config', config, '--source', name], { env });
      assert.equal(made.code, 0, made.stderr);
    }
    const repository = await Repository.open(openStorage(repo));
    const real = await repository.readManifest('large', backupIds(repo, 'large')[0]!);
    for (let i = 1; i <= 60; i++) await cloneBackupAt(repository, real, new Date(Date.parse(real.startedAt) - i * 3_600_000));
    assert.equal(backupIds(repo, 'large').length, 61);

    const { child, base, done } = await startServe(['--config', config], { env });
    try {
      const ready = await fetch(`${base}/ready`);
      assert.equal(ready.status, 200, await ready.text());
      const metricsText = async () => (await fetch(`${base}/metrics`)).text();

      // the first load read every manifest once
      const loaded = await metricsText();
      assert.equal(reads(loaded, 'manifest'), 62, 'each of the 62 manifests read once at start');

      // per request: no manifest and no record read, with 1 backup or with 61
      const get = async (url: string) => {
        const response = await fetch(`${base}${url}`);
        const text = await response.text();
        assert.equal(response.status, 200, `${url}: ${text.slice(0, 300)}`);
        return text;
      };
      const urls = ['/', '/fragments/overview', '/sources/small', '/sources/large', '/api/sources', '/api/sources/small/backups', '/api/sources/large/backups', `/api/backups/${real.id}`, '/metrics'];
      for (let round = 0; round < 5; round++) for (const url of urls) await get(url);
      const after = await metricsText();
      assert.equal(reads(after, 'manifest'), 62, `${urls.length * 5} requests read no manifest`);
      assert.equal(reads(after, 'record'), reads(loaded, 'record'), 'nor any other record');
      assert.equal(JSON.parse(await get('/api/sources/large/backups')).backups.length, 61);
      assert.ok((await get('/sources/large')).includes(real.id), 'the source\'s page lists its backups');

      // another writer: the CLI takes a backup while serve runs
      const made = await pgkeep(['backup', '--config', config, '--source', 'small'], { env });
      assert.equal(made.code, 0, made.stderr);
      const newId = backupIds(repo, 'small').at(-1)!;
      const t0 = performance.now();
      let listed: string[] = [];
      while (performance.now() - t0 < 10_000) {
        listed = JSON.parse(await get('/api/sources/small/backups')).backups.map((b: { id: string }) => b.id);
        if (listed.includes(newId)) break;
        await sleep(100);
      }
      const seconds = (performance.now() - t0) / 1000;
      console.log(`a CLI backup appeared in serve's API ${seconds.toFixed(2)} s after the CLI exited (serve.catalogRefresh 1s)`);
      assert.ok(listed.includes(newId), `the CLI's backup ${newId} is in /api/sources/small/backups: ${listed.join(', ')}`);
      assert.ok(seconds < 1 + 3, `within the refresh interval (1 s) and a little: ${seconds.toFixed(2)} s`);
      assert.ok((await get('/sources/small')).includes(newId), 'the source\'s page shows it');
      const overview = await get('/');
      assert.match(overview, /data-source="small" data-verdict="green"/);
      const metrics = await metricsText();
      assert.equal(reads(metrics, 'manifest'), 63, 'the refresh read only the new manifest');
      assert.match(metrics, /^pgkeep_backup_count\{source="small",repository="[^"]+"\} 2$/m);
    } finally {
      child.kill('SIGTERM');
      const result = await done;
      assert.equal(result.code, 0, result.stderr);
    }
  });
});
