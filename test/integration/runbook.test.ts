import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { chmod, mkdir, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { test } from 'node:test';
import { CLI, json, startPgkeep } from '../support/cli.js';
import { useFileS3Server } from '../support/each-storage.js';
import { runCommand as pgkeep } from '../support/run-command.js';
import { diffSnapshots, snapshotDatabase } from '../support/db-compare.js';
import { loadAwkwardFixture } from '../support/awkward-fixture.js';
import { useClusterAndWorkFolder } from '../support/integration-setup.js';
import type { PgCluster } from '../support/pg-cluster.js';
import { runbookHtml } from '../../src/status/runbook.js';

const s3 = useFileS3Server();

let cluster: PgCluster;
let work: string;

useClusterAndWorkFolder('runbook', async (c, w) => {
  cluster = c;
  work = w;
  await cluster.query('CREATE DATABASE shop');
  loadAwkwardFixture(cluster, 'shop');
  // The runbook's example table is the one with the most rows: 4,000 are more than the fixture's largest (bulk_rows,
  // 2,500), which is all the size is for (scenario 1 below checks the example names ledger)
  await cluster.query('CREATE TABLE ledger AS SELECT g AS id, md5(g::text) AS entry FROM generate_series(1, 4000) g', [], 'shop');
  await cluster.query('ALTER TABLE ledger ADD PRIMARY KEY (id)', [], 'shop');
  // a foreign key to another table: a table restore leaves it out, the runbook's lines put it back
  await cluster.query('ALTER TABLE ledger ADD COLUMN customer_id int4', [], 'shop');
  await cluster.query('UPDATE ledger SET customer_id = (SELECT min(id) FROM customers)', [], 'shop');
  await cluster.query('ALTER TABLE ledger ADD CONSTRAINT ledger_customer_fkey FOREIGN KEY (customer_id) REFERENCES customers (id)', [], 'shop');
});

/** The shell blocks (```sh) of one numbered scenario of the runbook. */
function commandsOf(markdown: string, scenario: number): string[] {
  const section = markdown.split(/^## /m).find((s) => s.startsWith(`${scenario}. `));
  assert.ok(section, `scenario ${scenario} in:\n${markdown}`);
  return [...section.matchAll(/```sh\n([\s\S]*?)```/g)].flatMap((m) => m[1]!.trim().split('\n'));
}

test('the runbook of a source with a local and an S3 repository holds commands that run as printed: a table lost, and the database lost, are put back exactly', async () => {
  const server = await s3();
  const bucket = await server.bucket('runbook');
  const config = path.join(work, 'pgkeep.yaml');
  const local = path.join(work, 'local-repo');
  await writeFile(
    config,
    JSON.stringify({
      repos: [{ url: local }, { url: `s3://${bucket}/offsite` }],
      sources: { shop: { host: cluster.host, port: cluster.port, user: cluster.superuser, database: 'shop' } },
    }),
  );
  const env = { PGPASSWORD: cluster.password, PGKEEP_TEMP_DIR: work };
  const backup = await pgkeep(['backup', '--config', config], { env });
  assert.equal(backup.code, 0, backup.stderr);
  const drill = await pgkeep(['verify', 'latest', '--config', config, '--restore-test'], { env });
  assert.equal(drill.code, 0, drill.stderr);
  const before = await snapshotDatabase(cluster, 'shop');

  const printed = await pgkeep(['runbook', '--config', config, '--json'], { env });
  assert.equal(printed.code, 0, printed.stderr);
  const markdown: string = json(printed).sources[0].markdown;
  for (const heading of ['## 1. Rows or a table lost', '## 2. The database is corrupted or lost', '## 3. The server is lost', '## 4. The site is lost', '## Keys', '## Without pgkeep']) assert.ok(markdown.includes(heading), heading);
  assert.match(markdown, /Measured RTO: \d+(\.\d)? s \(logical restore test of/);
  assert.match(markdown, new RegExp(`off-site repository \`s3://${bucket}/offsite\``));
  assert.match(markdown, /RPO now: \d+ s of changes \(restoring the newest logical backup\)/);
  assert.ok(!markdown.includes(cluster.password), 'no password in the runbook');

  // the commands run through a `pgkeep` on PATH, exactly as printed
  const bin = path.join(work, 'bin');
  await mkdir(bin, { recursive: true });
  await writeFile(path.join(bin, 'pgkeep'), `#!/bin/sh\nexec "${process.execPath}" "${CLI}" "$@"\n`);
  await chmod(path.join(bin, 'pgkeep'), 0o755);
  const runAll = (lines: string[], cwd?: string) => {
    assert.ok(lines.length > 0 && lines.every((l) => l.startsWith('pgkeep ')), lines.join('\n'));
    for (const line of lines) {
      const run = spawnSync('sh', ['-c', line], { cwd, env: { ...process.env, PATH: `${bin}:${path.dirname(path.join(cluster.binDir, 'pg_restore'))}:${process.env.PATH}`, ...env }, encoding: 'utf8' });
      assert.equal(run.status, 0, `${line}\n${run.stderr}`);
    }
  };

  // 1. a table lost: the largest table, half its rows deleted, then the runbook's command
  assert.match(commandsOf(markdown, 1).join('\n'), /--table public.ledger --to shop --clean --force/);
  await cluster.query('DELETE FROM ledger WHERE id % 2 = 0', [], 'shop');
  runAll(commandsOf(markdown, 1), work);
  assert.deepEqual(diffSnapshots(before, await snapshotDatabase(cluster, 'shop')), []);

  // 1 again: the table dropped, and the same commands (its foreign key to customers comes back too)
  await cluster.query('DROP TABLE ledger', [], 'shop');
  runAll(commandsOf(markdown, 1), work);
  assert.deepEqual(diffSnapshots(before, await snapshotDatabase(cluster, 'shop')), []);

  // 2. the database lost (tables dropped), then the runbook's command
  await cluster.query('DROP TABLE ledger; DROP TABLE "Mixed Case" CASCADE', [], 'shop');
  runAll(commandsOf(markdown, 2));
  assert.deepEqual(diffSnapshots(before, await snapshotDatabase(cluster, 'shop')), []);

  // the dashboard's page of it, linked from the source's page
  const dashboard = startPgkeep(['dashboard', '--config', config, '--listen', '127.0.0.1:0'], { env });
  try {
    let stderr = '';
    const base = await new Promise<string>((resolve, reject) => {
      dashboard.stderr!.setEncoding('utf8').on('data', (text: string) => {
        stderr += text;
        const match = /dashboard on (http:\/\/[^/\s]+)\//.exec(stderr);
        if (match) resolve(match[1]!);
      });
      dashboard.on('exit', (code) => reject(new Error(`pgkeep dashboard exited ${code}: ${stderr}`)));
    });
    const sourcePage = await (await fetch(`${base}/sources/shop`)).text();
    assert.match(sourcePage, /href="\/sources\/shop\/runbook">Disaster-recovery runbook/);
    const page = await fetch(`${base}/sources/shop/runbook`);
    assert.equal(page.status, 200);
    const text = await page.text();
    assert.match(text, /<h2>2\. The database is corrupted or lost<\/h2>/);
    assert.match(text, /Measured RTO: [\d.]+ s/);
    assert.equal((await fetch(`${base}/sources/nosuch/runbook`)).status, 404);
  } finally {
    dashboard.kill('SIGTERM');
  }

  // the page form (--format html)
  const html = await pgkeep(['runbook', '--config', config, '--format', 'html'], { env });
  assert.equal(html.code, 0, html.stderr);
  assert.match(html.stdout, /<h2>1\. Rows or a table lost/);
  assert.match(html.stdout, /<pre><code>pgkeep --config/);
  assert.ok(!/<script/i.test(runbookHtml('# a <script>alert(1)</script>', 't')), 'escaped');
});
