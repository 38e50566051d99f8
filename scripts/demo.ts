/**
 * npm run demo: pgkeep's main job on a throwaway database, end to end.
 * Starts a private PostgreSQL cluster, loads a small shop database, then runs
 * the real CLI: backup (with content checksums) → restore test (verify --deep:
 * restored into a scratch database, proven, dropped) → a second backup, which
 * adds little (the repository deduplicates) → list (with the verification and
 * what each backup added) → restore into a new database → compare row counts. The cluster is removed at the end; the repository is kept so
 * you can look inside it.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { startCluster, type PgCluster } from '../test/support/pg-cluster.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// the installed executable (what a user runs, with its start-up)
const cli = path.join(root, 'dist', 'cli', 'pgkeep.js');
const bold = (text: string) => (process.stdout.isTTY ? `\x1b[1m${text}\x1b[0m` : text);

const SAMPLE_DATA = `
CREATE TABLE customers (id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, name text NOT NULL, email text UNIQUE, created_at timestamptz NOT NULL);
CREATE TABLE products (id serial PRIMARY KEY, sku text UNIQUE NOT NULL, title text NOT NULL, price numeric(10,2) NOT NULL);
CREATE TABLE orders (id bigserial PRIMARY KEY, customer_id bigint REFERENCES customers, ordered_at timestamptz NOT NULL, status text NOT NULL);
CREATE TABLE order_items (order_id bigint REFERENCES orders, product_id int REFERENCES products, quantity int NOT NULL, PRIMARY KEY (order_id, product_id));
INSERT INTO customers (name, email, created_at)
  SELECT 'Customer ' || i, 'customer' || i || '@example.com', timestamptz '2025-01-01' + i * interval '7 minutes' FROM generate_series(1, 5000) i;
INSERT INTO products (sku, title, price)
  SELECT 'SKU-' || lpad(i::text, 5, '0'), 'Product ' || i, (i % 97) + 0.99 FROM generate_series(1, 300) i;
INSERT INTO orders (customer_id, ordered_at, status)
  SELECT 1 + (i * 7919) % 5000, timestamptz '2025-06-01' + i * interval '3 minutes', (ARRAY['new','paid','shipped','delivered'])[1 + i % 4] FROM generate_series(1, 20000) i;
INSERT INTO order_items (order_id, product_id, quantity)
  SELECT o, 1 + (o * p * 31) % 300, 1 + (o + p) % 5 FROM generate_series(1, 20000) o, generate_series(1, 3) p
  ON CONFLICT DO NOTHING;
CREATE VIEW revenue_by_day AS
  SELECT date_trunc('day', o.ordered_at) AS day, sum(p.price * i.quantity) AS revenue
    FROM orders o JOIN order_items i ON i.order_id = o.id JOIN products p ON p.id = i.product_id GROUP BY 1;
`;

async function main(): Promise<void> {
  console.log(bold('pgkeep demo: a throwaway PostgreSQL, a backup, and proof that it restores\n'));
  let cluster: PgCluster | undefined;
  try {
    console.log('starting a private PostgreSQL cluster…');
    cluster = await startCluster();
    console.log(`  PostgreSQL ${cluster.majorVersion} on 127.0.0.1:${cluster.port} (data in ${cluster.dataDir})`);
    await cluster.query('CREATE DATABASE shop');
    await cluster.query(SAMPLE_DATA, [], 'shop');
    console.log('  loaded database "shop": customers, products, orders, order_items, a view\n');

    const repo = path.join(mkdtempSync(path.join(tmpdir(), 'pgkeep-demo-')), 'backups');
    // The password travels in the environment, as it would from a .env file; never on the command line.
    const env = { ...process.env, DATABASE_URL: cluster.url('shop'), PGKEEP_REPO: repo };
    const pgkeep = (...args: string[]) => {
      console.log(bold(`$ pgkeep ${args.join(' ')}`));
      const result = spawnSync(process.execPath, [cli, ...args], { env, stdio: 'inherit' });
      console.log('');
      if (result.status !== 0) throw new Error(`pgkeep ${args[0]} exited with ${result.status}`);
    };

    pgkeep('backup', '--name', 'demo', '--checksums');
    pgkeep('verify', 'latest', '--deep');
    await cluster.query("UPDATE customers SET name = name || ' (moved)' WHERE id <= 50", [], 'shop');
    console.log('changed 50 customers; the next backup is full too, but stores only what changed:\n');
    pgkeep('backup', '--name', 'next');
    pgkeep('list');
    pgkeep('restore', 'latest', '--to', 'shop_restored');

    console.log(bold('comparing the source with the restored copy:'));
    for (const table of ['customers', 'products', 'orders', 'order_items']) {
      const [a] = await cluster.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`, [], 'shop');
      const [b] = await cluster.query<{ n: string }>(`SELECT count(*) AS n FROM ${table}`, [], 'shop_restored');
      const same = a!.n === b!.n;
      console.log(`  ${table.padEnd(12)} shop=${a!.n.padStart(6)}  shop_restored=${b!.n.padStart(6)}  ${same ? 'same' : 'DIFFERENT'}`);
      if (!same) throw new Error(`row counts of ${table} differ`);
    }
    console.log(`\nthe repository is kept at ${repo}`);
    console.log('  try: PGKEEP_REPO=' + repo + ' npx pgkeep show latest');
  } finally {
    if (cluster) {
      await cluster.stop();
      console.log('the throwaway cluster was stopped and removed');
    }
  }
}

main().catch((error: unknown) => {
  console.error(`demo failed: ${(error as Error).message}`);
  process.exitCode = 1;
});
