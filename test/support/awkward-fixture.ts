import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { PgCluster } from './pg-cluster.js';

/** The awkward fixture: escaped text, unicode names, large objects, matviews, partitions, comments, triggers. */
export const AWKWARD_FIXTURE = path.resolve(path.dirname(fileURLToPath(import.meta.url)), 'fixtures/awkward.sql');

/** Loads the awkward fixture into `database` (which must exist) with psql, failing the test with psql's error. */
export function loadAwkwardFixture(cluster: PgCluster, database: string): void {
  const load = spawnSync(path.join(cluster.binDir, 'psql'), ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '-h', cluster.host, '-p', String(cluster.port), '-U', cluster.superuser, '-d', database, '-f', AWKWARD_FIXTURE], {
    env: { ...process.env, PGPASSWORD: cluster.password },
    encoding: 'utf8',
  });
  assert.equal(load.status, 0, `loading the awkward fixture failed: ${load.stderr}`);
}

/**
 * The database of the deduplication tests: `shop` with the awkward fixture,
 * plus `events` rows of `events` (60,000 by default: a dump of ~7 MB, ~400
 * chunks of ~16 KiB), enough that a day's change is a small part of the dump.
 * Each row is ~115 bytes of the dump: a file that needs fewer chunks asks for
 * fewer rows.
 */
export async function createShopWithEvents(cluster: PgCluster, events = 60_000): Promise<void> {
  await cluster.query('CREATE DATABASE shop');
  loadAwkwardFixture(cluster, 'shop');
  await cluster.query(`CREATE TABLE events AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS body, now() - g * interval '1 minute' AS at FROM generate_series(1, ${events}) g`, [], 'shop');
}
