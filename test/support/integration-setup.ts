import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { after, before } from 'node:test';
import { startCluster, type PgCluster, type StartClusterOptions } from './pg-cluster.js';

/**
 * Registers the before/after hooks of an integration test file: a throwaway
 * PostgreSQL cluster and a private work folder, both removed at the end.
 * `ready` receives them (to store and to seed data) before any test runs.
 */
export function useClusterAndWorkFolder(
  name: string,
  ready: (cluster: PgCluster, work: string) => Promise<void> | void,
  options: StartClusterOptions = {},
): void {
  let cluster: PgCluster | undefined;
  let work: string | undefined;
  before(async () => {
    cluster = await startCluster(options);
    work = await mkdtemp(path.join(tmpdir(), `pgkeep-${name}-`));
    await ready(cluster, work);
  });
  after(async () => {
    await cluster?.stop();
    if (work) await rm(work, { recursive: true, force: true });
  });
}
