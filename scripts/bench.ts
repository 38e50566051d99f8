/**
 * npm run bench [-- --size 200MB] [--runs N] [--only pgbench|realistic|wal] [--keep]
 *
 * Compares pgkeep with the usual ways of dumping and restoring a database, on
 * a private throwaway PostgreSQL cluster, with two databases of about --size
 * each:
 *
 *   pgbench    pgbench -i data: very compressible (blank-padded filler)
 *   realistic  orders + customers: random words from a generated vocabulary,
 *              e-mails, numbers, timestamps, jsonb; zstd -3 compresses it ~2-3x
 *
 * On each it times, one after the other: pg_dump -Fc, pg_dump -Fp | gzip,
 * pg_dump -Fp | zstd -T0, pgkeep backup; then pg_restore -j2 (from the -Fc
 * file) against pgkeep restore --jobs 2. It prints a markdown table of wall
 * times, sizes, peak RSS and ratios, then one PASS/FAIL line per target, and
 * exits 1 if a target fails. Method and results: docs/benchmarks.md.
 *
 * --only dedup runs scripts/bench-dedup.ts (30 daily backups of a changing
 * database into a deduplicating repository, against plain backups and restic).
 *
 * --only fleet runs scripts/bench-fleet.ts (one `pgkeep serve` for 100 sources;
 * its own options, see there).
 *
 * --only wal instead times `pgkeep wal-push` and `pgkeep wal-fetch` per 16 MB
 * segment (as archive_command and restore_command run them: one process per
 * segment), on real segments written by the cluster, 20 × --runs of them.
 *
 * stdout is the report (markdown, paste-able); progress goes to stderr.
 */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { startCluster, type PgCluster } from '../test/support/pg-cluster.js';
import { startS3Server, type S3TestServer } from '../test/support/s3-server.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// the installed executable (what a user runs, with its start-up)
const cli = path.join(root, 'dist', 'cli', 'pgkeep.js');
const MiB = 1024 * 1024;

// ---------------------------------------------------------------------------
// options

type Kind = 'pgbench' | 'realistic';

interface Options {
  sizeBytes: number;
  sizeLabel: string;
  runs: number;
  only: Kind | 'wal' | undefined;
  keep: boolean;
}

const USAGE = `usage: npm run bench -- [--size 200MB] [--runs 1] [--only pgbench|realistic|wal|restore] [--keep]

  --size N[MB|GB]  approximate on-disk size of each database (pg_database_size); default 200MB
  --runs N         repeat every measurement N times and report the median time; default 1
  --only KIND      benchmark only the pgbench or only the realistic database, or (wal) only wal-push/wal-fetch latency,
                   or (restore) restore speed: scripts/bench-restore.ts, with --rounds N instead of --runs
  --keep           keep the cluster running at the end (until Ctrl-C) to look around`;

function parseOptions(argv: string[]): Options {
  const { values } = parseArgs({
    args: argv,
    options: {
      size: { type: 'string', default: '200MB' },
      runs: { type: 'string', default: '1' },
      only: { type: 'string' },
      keep: { type: 'boolean', default: false },
      help: { type: 'boolean', short: 'h', default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    console.log(USAGE);
    process.exit(0);
  }
  const size = /^\s*(\d+(?:\.\d+)?)\s*(k|kb|kib|m|mb|mib|g|gb|gib)?\s*$/i.exec(values.size ?? '');
  if (!size) throw new UsageError(`--size must look like 200MB or 1GB (got "${values.size}")`);
  const unit = (size[2] ?? 'mb').toLowerCase()[0]!;
  const sizeBytes = Math.round(Number(size[1]) * (unit === 'g' ? 1024 * MiB : unit === 'k' ? 1024 : MiB));
  if (sizeBytes < 20 * MiB) throw new UsageError('--size must be at least 20MB (an empty database alone is ~8MB)');
  const runs = Number(values.runs);
  if (!Number.isInteger(runs) || runs < 1) throw new UsageError(`--runs must be a whole number of at least 1 (got "${values.runs}")`);
  const only = values.only;
  if (only !== undefined && only !== 'pgbench' && only !== 'realistic' && only !== 'wal') throw new UsageError(`--only must be pgbench, realistic or wal (got "${only}")`);
  return { sizeBytes, sizeLabel: values.size!.replace(/\s+/g, ''), runs, only, keep: Boolean(values.keep) };
}

class UsageError extends Error {}

// ---------------------------------------------------------------------------
// small helpers

const log = (message: string) => process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${message}\n`);
const shq = (s: string) => (/^[A-Za-z0-9_./=:@%+-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`);
const qi = (name: string) => `"${name.replace(/"/g, '""')}"`;
const mb = (bytes: number) => bytes / MiB;
const fmtMB = (bytes: number | undefined, digits = 1) => (bytes === undefined ? 'n/a' : `${mb(bytes).toFixed(digits)} MB`);
const fmtS = (seconds: number | undefined) => (seconds === undefined ? 'n/a' : `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`);
const fmtX = (ratio: number | undefined) => (ratio === undefined || !Number.isFinite(ratio) ? '' : `${ratio.toFixed(2)}×`);

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1 ? sorted[mid]! : (sorted[mid - 1]! + sorted[mid]!) / 2;
}

function firstLine(file: string, args: string[]): string {
  const result = spawnSync(file, args, { encoding: 'utf8' });
  return `${result.stdout ?? ''}${result.stderr ?? ''}`.split('\n').find((l) => l.trim() !== '')?.trim() ?? 'unknown';
}

function markdownTable(header: string[], rows: string[][], align: ('l' | 'r')[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) => `| ${cells.map((c, i) => (align[i] === 'r' ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join(' | ')} |`;
  const rule = `|${widths.map((w, i) => (align[i] === 'r' ? `${'-'.repeat(w + 1)}:` : `:${'-'.repeat(w + 1)}`)).join('|')}|`;
  return [line(header), rule, ...rows.map(line)].join('\n');
}

// ---------------------------------------------------------------------------
// running and measuring commands

const GNU_TIME = '/usr/bin/time';

/** GNU time gives the peak RSS of a command (ru_maxrss: the largest single process of the tree). */
function haveGnuTime(): boolean {
  if (process.env.PGKEEP_BENCH_POLL_RSS === '1' || !existsSync(GNU_TIME)) return false; // the env var tests the fallback
  const probe = spawnSync(GNU_TIME, ['-f', '%M', 'true'], { encoding: 'utf8' });
  return probe.status === 0 && /^\d+\s*$/m.test(probe.stderr);
}

interface Measured {
  seconds: number;
  /** Peak RSS of the largest single process of the command, bytes. */
  peakRss: number | undefined;
  stdout: string;
}

interface RunContext {
  env: NodeJS.ProcessEnv;
  cwd: string;
  work: string;
  gnuTime: boolean;
}

let measureCounter = 0;

/**
 * Runs argv to completion and returns its wall time (process.hrtime around the
 * whole command, from spawn to exit) and peak RSS. Throws if it fails.
 */
async function measure(ctx: RunContext, argv: string[], what: string): Promise<Measured> {
  const rssFile = path.join(ctx.work, `rss-${++measureCounter}`);
  const [file, args] = ctx.gnuTime ? [GNU_TIME, ['-f', '%M', '-o', rssFile, '--', ...argv]] : [argv[0]!, argv.slice(1)];
  const started = process.hrtime.bigint();
  const child = spawn(file, args, { cwd: ctx.cwd, env: ctx.env, stdio: ['ignore', 'pipe', 'pipe'] });
  const poller = ctx.gnuTime ? undefined : new RssPoller(child.pid!);
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (text: string) => (stdout += text));
  child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr = (stderr + text).slice(-4000)));
  const [code, signal] = await new Promise<[number | null, NodeJS.Signals | null]>((resolve, reject) => {
    child.once('error', reject);
    child.once('close', (c, s) => resolve([c, s]));
  });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const polled = poller?.stop();
  if (code !== 0) throw new Error(`${what} failed (${signal ?? `exit ${code}`}): ${stderr.trim().split('\n').slice(-8).join('\n') || 'no output'}`);
  let peakRss = polled;
  if (ctx.gnuTime) {
    const lines = (await readFile(rssFile, 'utf8')).trim().split('\n');
    const kib = Number(lines[lines.length - 1]);
    peakRss = Number.isFinite(kib) ? kib * 1024 : undefined;
    await rm(rssFile, { force: true });
  }
  return { seconds, peakRss, stdout };
}

/** Fallback without GNU time: polls VmHWM of the process and its descendants every 50 ms. */
class RssPoller {
  private peak = 0;
  private readonly timer: NodeJS.Timeout;
  constructor(private readonly pid: number) {
    this.timer = setInterval(() => this.sample(), 50);
    this.sample();
  }
  private sample(): void {
    const children = new Map<number, number[]>();
    for (const entry of readdirSync('/proc')) {
      if (!/^\d+$/.test(entry)) continue;
      try {
        const statLine = readFileSync(`/proc/${entry}/stat`, 'utf8');
        const ppid = Number(statLine.slice(statLine.lastIndexOf(')') + 2).split(' ')[1]);
        const list = children.get(ppid) ?? [];
        list.push(Number(entry));
        children.set(ppid, list);
      } catch {
        // exited meanwhile
      }
    }
    const queue = [this.pid];
    while (queue.length > 0) {
      const pid = queue.pop()!;
      try {
        const hwm = /VmHWM:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
        if (hwm) this.peak = Math.max(this.peak, Number(hwm[1]) * 1024);
      } catch {
        // exited meanwhile
      }
      queue.push(...(children.get(pid) ?? []));
    }
  }
  stop(): number | undefined {
    clearInterval(this.timer);
    return this.peak > 0 ? this.peak : undefined;
  }
}

/** Runs an untimed helper command; throws on failure. */
function runQuiet(ctx: RunContext, argv: string[], what: string): void {
  const result = spawnSync(argv[0]!, argv.slice(1), { cwd: ctx.cwd, env: ctx.env, encoding: 'utf8', maxBuffer: 64 * MiB });
  if (result.status !== 0) throw new Error(`${what} failed (${result.signal ?? `exit ${result.status}`}): ${(result.stderr || result.stdout || '').trim().slice(-2000)}`);
}

// ---------------------------------------------------------------------------
// the databases

const PGBENCH_BYTES_PER_SCALE = 15 * MiB; // measured: ~15 MB per scale unit (tables + primary keys)
const EMPTY_DB_BYTES = 7.5 * MiB;

interface Database {
  kind: Kind;
  name: string;
  bytes: number;
  description: string;
}

async function databaseSize(cluster: PgCluster, db: string): Promise<number> {
  const [row] = await cluster.query<{ size: string }>('SELECT pg_database_size($1)::text AS size', [db]);
  return Number(row!.size);
}

async function settle(cluster: PgCluster, db: string): Promise<void> {
  // Hint bits and the visibility map set now, so no dump pays for them later.
  await cluster.query('VACUUM (FREEZE, ANALYZE)', [], db);
  await cluster.query('CHECKPOINT');
}

async function createPgbench(ctx: RunContext, cluster: PgCluster, name: string, targetBytes: number): Promise<Database> {
  const scale = Math.max(1, Math.round((targetBytes - EMPTY_DB_BYTES) / PGBENCH_BYTES_PER_SCALE));
  log(`creating ${name}: pgbench -i -s ${scale}`);
  await cluster.query(`CREATE DATABASE ${qi(name)}`);
  // -I dtGvp: server-side data generation, which is much faster than the client-side default.
  runQuiet(ctx, [path.join(cluster.binDir, 'pgbench'), '-i', '-q', '-s', String(scale), '-I', 'dtGvp', name], 'pgbench -i');
  await settle(cluster, name);
  const bytes = await databaseSize(cluster, name);
  const perScale = (bytes - EMPTY_DB_BYTES) / scale;
  log(`${name}: ${fmtMB(bytes)} (${fmtMB(perScale, 2)} per scale unit)`);
  return { kind: 'pgbench', name, bytes, description: `pgbench -i -s ${scale} (${fmtMB(perScale, 1)} per scale unit)` };
}

/**
 * 8192 pseudo-words (2-11 letters, English letter frequencies), each padded
 * to 12 bytes, as one bytea literal. Picking word k is then
 * substring(vocabulary from 12k+1 for 12): O(1) on a constant, about 10x
 * faster than indexing a text[] or hashing per word.
 */
const VOCAB_WORDS = 8192;
const VOCAB_WIDTH = 12;

function vocabularyLiteral(): string {
  let seed = 0x5eed1234;
  const random = () => {
    // mulberry32: deterministic, so every run benchmarks the same vocabulary
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
  const letters = 'etaoinshrdlcumwfgypbvkjxqz';
  const weights = [12.7, 9.1, 8.2, 7.5, 7.0, 6.7, 6.3, 6.1, 6.0, 4.3, 4.0, 2.8, 2.8, 2.4, 2.4, 2.2, 2.0, 2.0, 1.9, 1.5, 1.0, 0.8, 0.15, 0.15, 0.1, 0.07];
  const total = weights.reduce((a, b) => a + b, 0);
  const letter = () => {
    let r = random() * total;
    for (let i = 0; i < letters.length; i++) if ((r -= weights[i]!) < 0) return letters[i]!;
    return 'e';
  };
  const words = new Set<string>();
  while (words.size < VOCAB_WORDS) {
    const length = 2 + Math.floor(random() * random() * 10) + Math.floor(random() * 3); // mostly 3-7 letters
    let word = '';
    for (let i = 0; i < Math.min(length, VOCAB_WIDTH - 1); i++) word += letter();
    words.add(word);
  }
  const padded = [...words].map((w) => w.padEnd(VOCAB_WIDTH, ' ')).join('');
  return `'\\x${Buffer.from(padded, 'ascii').toString('hex')}'::bytea`;
}

const WORD = `rtrim(convert_from(substring(v.voc from 1 + ${VOCAB_WIDTH} * floor(random() * ${VOCAB_WORDS})::int for ${VOCAB_WIDTH}), 'UTF8'))`;
const words = (max: number, count: string) =>
  `concat_ws(' ', ${Array.from({ length: max }, (_, i) => `CASE WHEN ${count} > ${i} THEN ${WORD} END`).join(', ')})`;
const pick = (values: string[]) => `(ARRAY[${values.map((v) => `'${v}'`).join(',')}])[1 + floor(random() * ${values.length})::int]`;

const REALISTIC_SCHEMA = `
CREATE TABLE customers (
  id bigint NOT NULL,
  name text NOT NULL,
  email text NOT NULL,
  country text NOT NULL,
  city text NOT NULL,
  signup_at timestamptz NOT NULL,
  bio text NOT NULL
);
CREATE TABLE orders (
  id bigint NOT NULL,
  customer_id bigint NOT NULL,
  status text NOT NULL,
  created_at timestamptz NOT NULL,
  shipped_at timestamptz,
  amount numeric(12,2) NOT NULL,
  quantity integer NOT NULL,
  email text NOT NULL,
  note text NOT NULL,
  attrs jsonb NOT NULL
);`;

const REALISTIC_INDEXES = [
  'ALTER TABLE customers ADD PRIMARY KEY (id)',
  'ALTER TABLE orders ADD PRIMARY KEY (id)',
  'CREATE INDEX orders_customer_id_idx ON orders (customer_id)',
  'CREATE INDEX orders_created_at_idx ON orders (created_at)',
];
/** Rough btree size per order once the indexes exist (3 on orders, 1/10 of one on customers). */
const INDEX_BYTES_PER_ORDER = 70;
const CUSTOMERS_PER_ORDER = 0.1;

function realisticBatchSql(vocabulary: string, firstOrder: number, orders: number): string[] {
  const domains = ['example.com', 'mail.test', 'corp.example', 'shop.example', 'post.test'];
  const from = `FROM (SELECT ${vocabulary} AS voc) v`;
  const firstCustomer = Math.floor(firstOrder * CUSTOMERS_PER_ORDER);
  const customers = Math.max(1, Math.floor(orders * CUSTOMERS_PER_ORDER));
  const maxCustomer = 1_000_000;
  return [
    `INSERT INTO orders
SELECT g, 1 + floor(random() * ${maxCustomer})::int,
  ${pick(['new', 'paid', 'shipped', 'delivered', 'cancelled', 'refunded'])},
  x.t,
  CASE WHEN random() < 0.8 THEN x.t + random() * interval '10 days' END,
  round((random() * 1000)::numeric, 2),
  1 + floor(random() * 10)::int,
  ${WORD} || '.' || ${WORD} || '@' || ${pick(domains)},
  ${words(40, 'x.n')},
  jsonb_build_object('channel', ${pick(['web', 'app', 'phone', 'store'])}, 'score', round(random()::numeric, 4), 'tags', jsonb_build_array(${WORD}, ${WORD}))
${from}
CROSS JOIN generate_series(${firstOrder + 1}, ${firstOrder + orders}) g
CROSS JOIN LATERAL (SELECT timestamptz '2020-01-01' + random() * interval '5 years' AS t, floor(random() * 41)::int AS n, g AS gg OFFSET 0) x`,
    `INSERT INTO customers
SELECT g, initcap(${WORD}) || ' ' || initcap(${WORD}),
  ${WORD} || (g % 1000) || '@' || ${pick(domains)},
  ${pick(['DE', 'FR', 'US', 'GB', 'NL', 'ES', 'IT', 'PL', 'SE', 'BR', 'JP', 'IN', 'CA', 'AU', 'MX'])},
  initcap(${WORD}),
  timestamptz '2015-01-01' + random() * interval '10 years',
  ${words(16, 'x.n')}
${from}
CROSS JOIN generate_series(${firstCustomer + 1}, ${firstCustomer + customers}) g
CROSS JOIN LATERAL (SELECT floor(random() * 17)::int AS n, g AS gg OFFSET 0) x`,
  ];
}

async function createRealistic(cluster: PgCluster, name: string, targetBytes: number): Promise<Database> {
  log(`creating ${name}: orders + customers, ~${fmtMB(targetBytes, 0)}`);
  await cluster.query(`CREATE DATABASE ${qi(name)}`);
  await cluster.query(REALISTIC_SCHEMA, [], name);
  const vocabulary = vocabularyLiteral();
  const empty = await databaseSize(cluster, name);

  // Calibrate on a first small batch, then fill up to the target.
  const probe = 20_000;
  for (const sql of realisticBatchSql(vocabulary, 0, probe)) await cluster.query(sql, [], name);
  const perOrder = (await databaseSize(cluster, name) - empty) / probe + INDEX_BYTES_PER_ORDER;
  const total = Math.max(probe, Math.round((targetBytes - empty) / perOrder / 10) * 10);
  const batch = 100_000;
  let next = probe;
  let done = probe;
  const started = Date.now();
  // Two connections: the generation is CPU-bound in the backends.
  const worker = async () => {
    while (next < total) {
      const first = next;
      const count = Math.min(batch, total - first);
      next += count;
      for (const sql of realisticBatchSql(vocabulary, first, count)) await cluster.query(sql, [], name);
      done += count;
      log(`${name}: ${done.toLocaleString('en')} / ${total.toLocaleString('en')} orders`);
    }
  };
  await Promise.all([worker(), worker()]);
  for (const sql of REALISTIC_INDEXES) await cluster.query(sql, [], name);
  await settle(cluster, name);
  const bytes = await databaseSize(cluster, name);
  log(`${name}: ${fmtMB(bytes)} (${total.toLocaleString('en')} orders, ${((Date.now() - started) / 1000).toFixed(0)} s)`);
  return {
    kind: 'realistic',
    name,
    bytes,
    description: `${total.toLocaleString('en')} orders + ${Math.floor(total * CUSTOMERS_PER_ORDER).toLocaleString('en')} customers (random words, e-mails, numerics, timestamps, jsonb; 4 btree indexes)`,
  };
}

// ---------------------------------------------------------------------------
// the measurements

type StepId = 'dumpOnly' | 'fcZ0Zstd' | 'fc' | 'gzip' | 'zstd' | 'pgkeep' | 'pgkeepEncrypted' | 'pgkeepS3' | 'restore' | 'restoreAnalyze' | 'restoreAnalyzeCount' | 'unzstd' | 'pgkeepRestore';

interface StepResult {
  times: number[];
  rss: number[];
  size: number | undefined;
}

interface DatasetResult {
  db: Database;
  steps: Map<StepId, StepResult>;
  rawBytes: number;
  codec: string;
  small: { db: Database; backupRss: number | undefined; restoreRss: number | undefined } | undefined;
}

const STEP_LABELS: Record<StepId, string> = {
  dumpOnly: 'pg_dump -Fc -Z0 > /dev/null (reference: dump alone)',
  fcZ0Zstd: 'pg_dump -Fc -Z0 \\| zstd -T0 (reference: pgkeep\'s pipeline in shell)',
  fc: 'pg_dump -Fc',
  gzip: 'pg_dump -Fp \\| gzip',
  zstd: 'pg_dump -Fp \\| zstd -T0',
  pgkeep: '**pgkeep backup**',
  pgkeepEncrypted: '**pgkeep backup**, encrypted repository (age, 1 recipient)',
  pgkeepS3: '**pgkeep backup**, S3 repository (s3rver on 127.0.0.1)',
  restore: 'pg_restore -j2 (from the -Fc file)',
  restoreAnalyze: 'pg_restore -j2, then ANALYZE',
  restoreAnalyzeCount: 'pg_restore -j2, then ANALYZE and count(*) per table',
  unzstd: 'zstd -d > file (reference: decompression alone)',
  pgkeepRestore: '**pgkeep restore --jobs 2**',
};

const COUNT_ALL_TABLES = `SELECT format('SELECT count(*) FROM ONLY %I.%I', n.nspname, c.relname)
  FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
 WHERE c.relkind IN ('r', 'p') AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_%'
\\gexec`;

function findFiles(dir: string, suffix: string): string[] {
  const found: string[] = [];
  for (const entry of readdirSync(dir, { withFileTypes: true })) {
    const full = path.join(dir, entry.name);
    if (entry.isDirectory()) found.push(...findFiles(full, suffix));
    else if (entry.name.endsWith(suffix)) found.push(full);
  }
  return found.sort();
}

class Bench {
  private readonly bin: (tool: string) => string;

  constructor(
    private readonly ctx: RunContext,
    private readonly cluster: PgCluster,
    private readonly s3: S3TestServer,
  ) {
    this.bin = (tool) => path.join(cluster.binDir, tool);
  }

  /** An encrypted repository to one fresh X25519 key (not timed). */
  private initEncrypted(repo: string): void {
    const run = (args: string[]) => {
      const result = spawnSync(process.execPath, [cli, ...args], { env: this.ctx.env, encoding: 'utf8' });
      if (result.status !== 0) throw new Error(`pgkeep ${args[0]} failed: ${result.stderr}`);
      return result.stdout;
    };
    const { publicKey } = JSON.parse(run(['keygen', '--output', `${repo}.key`, '--json'])) as { publicKey: string };
    run(['init', '--repo', repo, '--plain', '--encrypt', '--recipient', publicKey]);
  }

  /** A repository without deduplication, as the figures in docs/benchmarks.md were measured. */
  private initPlain(repo: string, env: NodeJS.ProcessEnv = this.ctx.env): void {
    const result = spawnSync(process.execPath, [cli, 'init', '--repo', repo, '--plain'], { env, encoding: 'utf8' });
    if (result.status !== 0) throw new Error(`pgkeep init failed: ${result.stderr}`);
  }

  private s3Env(): NodeJS.ProcessEnv {
    return {
      ...this.ctx.env,
      AWS_ACCESS_KEY_ID: this.s3.accessKeyId,
      AWS_SECRET_ACCESS_KEY: this.s3.secretAccessKey,
      AWS_REGION: this.s3.region,
      AWS_ENDPOINT_URL: this.s3.endpoint,
    };
  }

  private url(db: string): string {
    // No password in the URL (it would show in ps): pgkeep gets PGPASSWORD from the environment.
    return `postgresql://${this.cluster.superuser}@${this.cluster.host}:${this.cluster.port}/${encodeURIComponent(db)}`;
  }

  /** Before every timed step: nothing dirty left over from the previous one. */
  private async quiesce(): Promise<void> {
    await this.cluster.query('CHECKPOINT');
    spawnSync('sync');
  }

  private async dropDatabase(name: string): Promise<void> {
    await this.cluster.query(`DROP DATABASE IF EXISTS ${qi(name)} WITH (FORCE)`);
  }

  private shell(script: string): string[] {
    return ['bash', '-c', `set -euo pipefail; ${script}`];
  }

  async run(db: Database, runs: number, small: Database | undefined): Promise<DatasetResult> {
    const steps = new Map<StepId, StepResult>();
    const record = (id: StepId, m: Measured, size?: number) => {
      const step = steps.get(id) ?? { times: [], rss: [], size: undefined };
      step.times.push(m.seconds);
      if (m.peakRss !== undefined) step.rss.push(m.peakRss);
      if (size !== undefined) step.size = size;
      steps.set(id, step);
    };
    let rawBytes = 0;
    let codec = 'unknown';
    const pgDump = shq(this.bin('pg_dump'));
    const target = `${db.name}_restored`;

    for (let run = 1; run <= runs; run++) {
      const dir = path.join(this.ctx.work, `${db.name}-run${run}`);
      await mkdir(dir, { recursive: true });
      const file = (name: string) => path.join(dir, name);
      const step = async (id: StepId, argv: string[], sizeOf?: string | (() => Promise<number>), env?: NodeJS.ProcessEnv) => {
        await this.quiesce();
        log(`${db.name} run ${run}/${runs}: ${STEP_LABELS[id].replace(/\\|\*/g, '')}`);
        const m = await measure(env ? { ...this.ctx, env } : this.ctx, argv, STEP_LABELS[id]);
        const size = typeof sizeOf === 'string' ? (await stat(sizeOf)).size : sizeOf ? await sizeOf() : undefined;
        record(id, m, size);
        log(`  ${fmtS(m.seconds)}, ${size === undefined ? '' : `${fmtMB(size)}, `}peak RSS ${fmtMB(m.peakRss, 0)}`);
        return m;
      };

      // backups
      await step('dumpOnly', this.shell(`${pgDump} -Fc -Z0 ${shq(db.name)} > /dev/null`));
      await step('fcZ0Zstd', this.shell(`${pgDump} -Fc -Z0 ${shq(db.name)} | zstd -q -T0 > ${shq(file('z0.dump.zst'))}`), file('z0.dump.zst'));
      await rm(file('z0.dump.zst'), { force: true });
      await step('fc', [this.bin('pg_dump'), '-Fc', '-f', file('fc.dump'), db.name], file('fc.dump'));
      await step('gzip', this.shell(`${pgDump} -Fp ${shq(db.name)} | gzip > ${shq(file('plain.sql.gz'))}`), file('plain.sql.gz'));
      await rm(file('plain.sql.gz'), { force: true });
      await step('zstd', this.shell(`${pgDump} -Fp ${shq(db.name)} | zstd -q -T0 > ${shq(file('plain.sql.zst'))}`), file('plain.sql.zst'));
      await rm(file('plain.sql.zst'), { force: true });
      // plain repositories: the figures of docs/benchmarks.md are of single-object backups (bench-dedup measures the deduplicating default)
      const repo = file('repo');
      this.initPlain(repo);
      const backup = await step('pgkeep', [process.execPath, cli, 'backup', '--repo', repo, '--db', this.url(db.name), '--json']);
      const manifest = JSON.parse(backup.stdout) as { totals: { rawBytes: number; storedBytes: number }; pgkeep: { codec: string } };
      steps.get('pgkeep')!.size = manifest.totals.storedBytes;
      log(`  stored ${fmtMB(manifest.totals.storedBytes)} (raw ${fmtMB(manifest.totals.rawBytes)})`);
      rawBytes = manifest.totals.rawBytes;
      codec = manifest.pgkeep.codec;
      // The same backup into an encrypted repository, and into an S3 repository.
      const encRepo = file('repo-encrypted');
      this.initEncrypted(encRepo);
      const encrypted = await step('pgkeepEncrypted', [process.execPath, cli, 'backup', '--repo', encRepo, '--db', this.url(db.name), '--json']);
      steps.get('pgkeepEncrypted')!.size = (JSON.parse(encrypted.stdout) as { totals: { storedBytes: number } }).totals.storedBytes;
      await rm(encRepo, { recursive: true, force: true });
      const bucket = await this.s3.bucket(`bench-${db.name.replace(/_/g, '-')}-${run}`);
      this.initPlain(`s3://${bucket}/pgkeep`, this.s3Env());
      const viaS3 = await step('pgkeepS3', [process.execPath, cli, 'backup', '--repo', `s3://${bucket}/pgkeep`, '--db', this.url(db.name), '--json'], undefined, this.s3Env());
      steps.get('pgkeepS3')!.size = (JSON.parse(viaS3.stdout) as { totals: { storedBytes: number } }).totals.storedBytes;

      // restores, each into a fresh database
      await this.dropDatabase(target);
      await this.cluster.query(`CREATE DATABASE ${qi(target)} TEMPLATE template0`);
      const restore = await step('restore', [this.bin('pg_restore'), '-j2', '-d', target, file('fc.dump')]);
      // pgkeep restore also runs ANALYZE (and counts rows): time ANALYZE on the same fresh restore.
      log(`${db.name} run ${run}/${runs}: ANALYZE after pg_restore`);
      const analyze = await measure(this.ctx, [this.bin('psql'), '-X', '-q', '-v', 'ON_ERROR_STOP=1', '-d', target, '-c', 'ANALYZE'], 'ANALYZE');
      record('restoreAnalyze', { seconds: restore.seconds + analyze.seconds, peakRss: restore.peakRss, stdout: '' });
      log(`${db.name} run ${run}/${runs}: count(*) per table after ANALYZE`);
      const count = await measure(this.ctx, this.shell(`${shq(this.bin('psql'))} -X -q -At -v ON_ERROR_STOP=1 -d ${shq(target)} > /dev/null <<'SQL'\n${COUNT_ALL_TABLES}\nSQL`), 'count(*)');
      record('restoreAnalyzeCount', { seconds: restore.seconds + analyze.seconds + count.seconds, peakRss: restore.peakRss, stdout: '' });
      await this.dropDatabase(target);
      // What pgkeep restore --jobs does before pg_restore: decompress the dump to a temp file.
      const object = findFiles(repo, '.zst')[0];
      if (object) {
        await step('unzstd', this.shell(`zstd -q -d -c ${shq(object)} > ${shq(file('staged.dump'))}`));
        await rm(file('staged.dump'), { force: true });
      }
      await step('pgkeepRestore', [process.execPath, cli, 'restore', 'latest', '--repo', repo, '--db', this.url(db.name), '--to', target, '--jobs', '2', '--json']);
      await this.dropDatabase(target);
      await rm(dir, { recursive: true, force: true });
    }

    let smallResult: DatasetResult['small'];
    if (small) {
      // Same pgkeep commands on a database 1/8 the size: peak RSS must not grow with size.
      const dir = path.join(this.ctx.work, `${small.name}-run`);
      const repo = path.join(dir, 'repo');
      await mkdir(dir, { recursive: true });
      this.initPlain(repo);
      await this.quiesce();
      log(`${small.name}: pgkeep backup`);
      const b = await measure(this.ctx, [process.execPath, cli, 'backup', '--repo', repo, '--db', this.url(small.name), '--json'], 'pgkeep backup (small)');
      await this.quiesce();
      log(`${small.name}: pgkeep restore --jobs 2`);
      const r = await measure(this.ctx, [process.execPath, cli, 'restore', 'latest', '--repo', repo, '--db', this.url(small.name), '--to', `${small.name}_restored`, '--jobs', '2', '--json'], 'pgkeep restore (small)');
      await this.dropDatabase(`${small.name}_restored`);
      await rm(dir, { recursive: true, force: true });
      smallResult = { db: small, backupRss: b.peakRss, restoreRss: r.peakRss };
    }
    return { db, steps, rawBytes, codec, small: smallResult };
  }
}

// ---------------------------------------------------------------------------
// the report

interface Target {
  text: string;
  pass: boolean | undefined;
}

/** The report's closing section: one PASS, FAIL or N/A line per target. */
function targetsSection(targets: Target[]): string[] {
  return ['### Targets', '', '```', ...targets.map((t) => `${t.pass === undefined ? 'N/A ' : t.pass ? 'PASS' : 'FAIL'}  ${t.text}`), '```', ''];
}

function reportDataset(result: DatasetResult, runs: number): string {
  const { steps } = result;
  const time = (id: StepId) => (steps.get(id) ? median(steps.get(id)!.times) : undefined);
  const size = (id: StepId) => steps.get(id)?.size;
  const rss = (id: StepId) => (steps.get(id)?.rss.length ? Math.max(...steps.get(id)!.rss) : undefined);
  const backupBase = { time: time('fc'), size: size('fc') };
  const restoreBase = time('restore');
  const ratio = (a: number | undefined, b: number | undefined) => (a === undefined || b === undefined ? undefined : a / b);

  const rows: string[][] = [];
  for (const id of ['dumpOnly', 'fcZ0Zstd', 'fc', 'gzip', 'zstd', 'pgkeep', 'pgkeepEncrypted', 'pgkeepS3'] as StepId[]) {
    if (!steps.has(id)) continue;
    rows.push([STEP_LABELS[id], fmtS(time(id)), fmtX(ratio(time(id), backupBase.time)), size(id) === undefined ? '' : fmtMB(size(id)), fmtX(ratio(size(id), backupBase.size)), fmtMB(rss(id), 0)]);
  }
  for (const id of ['restore', 'restoreAnalyze', 'restoreAnalyzeCount', 'unzstd', 'pgkeepRestore'] as StepId[]) {
    if (!steps.has(id)) continue;
    const derived = id === 'restoreAnalyze' || id === 'restoreAnalyzeCount';
    rows.push([STEP_LABELS[id], fmtS(time(id)), fmtX(ratio(time(id), restoreBase)), '', '', derived ? '' : fmtMB(rss(id), 0)]);
  }
  const zstdRatio = result.rawBytes / (size('pgkeep') ?? NaN);
  const gzipRatio = result.rawBytes / (size('fc') ?? NaN);
  return [
    `### ${result.db.kind}: ${fmtMB(result.db.bytes)} on disk`,
    '',
    `${result.db.description}. Uncompressed custom-format dump: ${fmtMB(result.rawBytes)}; ` +
      `it compresses ${zstdRatio.toFixed(2)}× with zstd -3 (pgkeep, ${result.codec}) and ${gzipRatio.toFixed(2)}× with pg_dump -Fc's built-in gzip.` +
      (runs > 1 ? ` Times are the median of ${runs} runs; peak RSS the largest of them.` : ''),
    '',
    markdownTable(
      ['command', 'wall time', 'time ratio', 'size', 'size ratio', 'peak RSS'],
      rows,
      ['l', 'r', 'r', 'r', 'r', 'r'],
    ),
    '',
    'Time ratio: backups to `pg_dump -Fc`, restores to `pg_restore -j2`. Size ratio: to `pg_dump -Fc`. ' +
      'Peak RSS: the largest single process of the command (for pgkeep, its Node process); the server backends are not counted.',
  ].join('\n');
}

/**
 * "Not growing with size": a pipeline that buffered the dump would grow in
 * proportion (hundreds of MB at 1GB); Node's heap settling is a few tens of MB.
 */
const RSS_GROWTH_SLACK_MB = 32;

function targetsFor(result: DatasetResult): Target[] {
  const { steps, db } = result;
  const time = (id: StepId) => median(steps.get(id)!.times);
  const size = (id: StepId) => steps.get(id)!.size!;
  const rss = (id: StepId) => (steps.get(id)!.rss.length ? Math.max(...steps.get(id)!.rss) : undefined);
  const k = db.kind;
  const out: Target[] = [];
  const limit = k === 'realistic' ? 0.5 : 1.0;
  const backupRatio = time('pgkeep') / time('fc');
  out.push({ text: `${k}: pgkeep backup wall time ${backupRatio.toFixed(2)}× pg_dump -Fc (target ≤ ${limit.toFixed(2)}×)`, pass: backupRatio <= limit });
  const vsFc = size('pgkeep') / size('fc');
  out.push({ text: `${k}: pgkeep backup size ${vsFc.toFixed(2)}× pg_dump -Fc (target ≤ 1.00×)`, pass: vsFc <= 1 });
  const vsZstd = size('pgkeep') / size('zstd');
  out.push({ text: `${k}: pgkeep backup size ${vsZstd.toFixed(2)}× pg_dump -Fp | zstd -T0 (target ≤ 1.10×)`, pass: vsZstd <= 1.1 });
  const encryptionRatio = time('pgkeepEncrypted') / time('pgkeep');
  out.push({ text: `${k}: encrypted backup wall time ${encryptionRatio.toFixed(2)}× unencrypted pgkeep backup (target ≤ 1.05×)`, pass: encryptionRatio <= 1.05 });
  const s3Peak = rss('pgkeepS3');
  out.push({ text: `${k}: pgkeep backup to S3: ${fmtS(time('pgkeepS3'))}, peak RSS ${fmtMB(s3Peak, 0)} (recorded; 150 MB is the local target)`, pass: undefined });
  const restoreRatio = time('pgkeepRestore') / time('restore');
  out.push({ text: `${k}: pgkeep restore --jobs 2 wall time ${restoreRatio.toFixed(2)}× pg_restore -j2 (target ≤ 1.05×)`, pass: restoreRatio <= 1.05 });
  for (const [id, what] of [['pgkeep', 'backup'], ['pgkeepRestore', 'restore']] as const) {
    const peak = rss(id);
    out.push({ text: `${k}: pgkeep ${what} peak RSS ${fmtMB(peak, 0)} (target ≤ 150 MB)`, pass: peak === undefined ? undefined : peak <= 150 * MiB });
  }
  if (result.small) {
    for (const [id, what, smallPeak] of [['pgkeep', 'backup', result.small.backupRss], ['pgkeepRestore', 'restore', result.small.restoreRss]] as const) {
      const peak = rss(id);
      const growth = peak !== undefined && smallPeak !== undefined ? peak / smallPeak : undefined;
      const delta = peak !== undefined && smallPeak !== undefined ? peak - smallPeak : undefined;
      out.push({
        text:
          `${k}: pgkeep ${what} peak RSS ${fmtMB(peak, 0)} at ${fmtMB(db.bytes, 0)} vs ${fmtMB(smallPeak, 0)} at ${fmtMB(result.small.db.bytes, 0)}: ` +
          `${growth === undefined ? 'n/a' : `${growth.toFixed(2)}×, ${delta! >= 0 ? '+' : ''}${fmtMB(delta, 0)}`} (target: not growing with size, ≤ 1.25× or ≤ +${RSS_GROWTH_SLACK_MB} MB)`,
        pass: growth === undefined ? undefined : growth <= 1.25 || delta! <= RSS_GROWTH_SLACK_MB * MiB,
      });
    }
  }
  return out;
}

function machineInfo(cluster: PgCluster, serverVersion: string, codec: string, loadBefore: number[], loadAfter: number[]): string {
  const cpu = /^model name\s*:\s*(.+)$/m.exec(readFileSync('/proc/cpuinfo', 'utf8'))?.[1]?.trim() ?? os.cpus()[0]?.model ?? 'unknown';
  let napi = 'not installed';
  try {
    napi = JSON.parse(readFileSync(path.join(root, 'node_modules', 'zstd-napi', 'package.json'), 'utf8')).version as string;
  } catch {
    // optional dependency missing: pgkeep falls back to the zstd program
  }
  const load = (l: number[]) => l.map((x) => x.toFixed(2)).join(' ');
  return [
    `- CPU: ${cpu}, ${os.availableParallelism()} cores (nproc); RAM ${(os.totalmem() / 1024 ** 3).toFixed(1)} GiB; Linux ${os.release()}`,
    `- PostgreSQL server ${serverVersion}; ${firstLine(path.join(cluster.binDir, 'pg_dump'), ['--version'])}; cluster with fsync=off (throwaway)`,
    `- ${firstLine('zstd', ['--version']).replace(/^\*+\s*|\s*\*+$/g, '')}; ${firstLine('gzip', ['--version'])}`,
    `- Node ${process.version}; pgkeep codec ${codec} (zstd-napi ${napi})`,
    `- load average (1/5/15 min) before: ${load(loadBefore)}; after: ${load(loadAfter)}`,
  ].join('\n');
}

// ---------------------------------------------------------------------------
// WAL archiving latency

const WAL_SEGMENTS_PER_RUN = 20;
const WAL_PUSH_TARGET_MS = 150;

/**
 * Fills real WAL segments (rows of md5 text: compressible about 2× like busy
 * OLTP WAL), copies the completed ones out of pg_wal, then times one
 * `pgkeep wal-push` process per segment into a fresh repository and one
 * `pgkeep wal-fetch` per segment back, as PostgreSQL would run them: in the
 * environment of a server (see walCommandEnv).
 */
/**
 * The environment archive_command gets from a PostgreSQL server started by
 * its service manager: this shell's, without what only a developer's shell
 * sets for Node. NODE_EXTRA_CA_CERTS above all: Node parses that CA bundle at
 * every start, before any script runs, whether it uses TLS or not (about
 * 45 ms per process on the bench machine, whose sandbox sets it for its
 * HTTPS proxy). pgkeep needs it only for an S3 endpoint with a private CA.
 */
function walCommandEnv(env: NodeJS.ProcessEnv): NodeJS.ProcessEnv {
  const { NODE_EXTRA_CA_CERTS: _certs, NODE_OPTIONS: _options, ...rest } = env;
  return rest;
}

async function walBench(ctx: RunContext, cluster: PgCluster, runs: number): Promise<{ report: string; targets: Target[] }> {
  const count = WAL_SEGMENTS_PER_RUN * runs;
  const entry = path.join(root, 'dist', 'cli', 'pgkeep.js');
  log(`writing ${count + 2} WAL segments`);
  await cluster.query('CREATE TABLE wal_bench (id bigint, body text)');
  const [{ start }] = (await cluster.query<{ start: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS start')) as [{ start: string }];
  for (let written = 0; ; written++) {
    await cluster.query(`INSERT INTO wal_bench SELECT g, md5(g::text) || md5((g * 7)::text) || md5(random()::text) FROM generate_series(${written * 100000}, ${written * 100000 + 99999}) g`);
    const [{ now }] = (await cluster.query<{ now: string }>('SELECT pg_walfile_name(pg_current_wal_lsn()) AS now')) as [{ now: string }];
    if (parseInt(now.slice(8), 16) - parseInt(start.slice(8), 16) > count + 1) break;
  }
  const segments = path.join(ctx.work, 'segments');
  await mkdir(segments);
  const names = readdirSync(path.join(cluster.dataDir, 'pg_wal'))
    .filter((n) => /^[0-9A-F]{24}$/.test(n) && n > start)
    .sort()
    .slice(0, count);
  for (const name of names) await writeFile(path.join(segments, name), await readFile(path.join(cluster.dataDir, 'pg_wal', name)));
  const repo = path.join(ctx.work, 'wal-repo');
  runQuiet(ctx, [process.execPath, cli, 'init', '--repo', repo, '--plain'], 'pgkeep init');

  // Wall time (what archiving waits for) and CPU time (user + system: what the machine's load does not inflate).
  const push = { wall: [] as number[], cpu: [] as number[] };
  const fetch = { wall: [] as number[], cpu: [] as number[] };
  const node = { wall: [] as number[], cpu: [] as number[] };
  const zstd = { wall: [] as number[], cpu: [] as number[] };
  const nodeShell = { wall: [] as number[], cpu: [] as number[] };
  const rss: number[] = [];
  const walEnv = walCommandEnv(ctx.env);
  const timed = async (into: { wall: number[]; cpu: number[] }, argv: string[], what: string, env = walEnv) => {
    const usage = path.join(ctx.work, 'usage');
    const [file, args] = ctx.gnuTime ? [GNU_TIME, ['-f', '%U %S %M', '-o', usage, '--', ...argv]] : [argv[0]!, argv.slice(1)];
    const started = process.hrtime.bigint();
    const result = spawnSync(file, args, { cwd: ctx.cwd, env, encoding: 'utf8' });
    into.wall.push(Number(process.hrtime.bigint() - started) / 1e6);
    if (result.status !== 0) throw new Error(`${what} failed: ${result.stderr}`);
    if (ctx.gnuTime) {
      const [user, sys, kib] = readFileSync(usage, 'utf8').trim().split('\n').at(-1)!.split(' ').map(Number);
      into.cpu.push((user! + sys!) * 1000);
      return kib! * 1024;
    }
    return undefined;
  };
  for (const name of names) {
    const peak = await timed(push, [process.execPath, entry, 'wal-push', path.join(segments, name), '--source', 'bench', '--repo', repo], `wal-push ${name}`);
    if (peak !== undefined) rss.push(peak);
    await timed(node, [process.execPath, '-e', '0'], 'node -e 0');
    if (ctx.env.NODE_EXTRA_CA_CERTS) await timed(nodeShell, [process.execPath, '-e', '0'], 'node -e 0', ctx.env);
    await timed(zstd, ['zstd', '-q', '-1', '-T0', '-f', path.join(segments, name), '-o', path.join(ctx.work, 'seg.zst')], 'zstd');
  }
  for (const name of names) {
    // PostgreSQL removes RECOVERYXLOG before each restore_command (replacing a file by rename costs ext4 a flush).
    await rm(path.join(ctx.work, 'RECOVERYXLOG'), { force: true });
    await timed(fetch, [process.execPath, entry, 'wal-fetch', name, path.join(ctx.work, 'RECOVERYXLOG'), '--source', 'bench', '--repo', repo], `wal-fetch ${name}`);
  }
  let stored = 0;
  for (const file of findFiles(path.join(repo, 'sources', 'bench', 'wal'), '.zst')) stored += (await stat(file)).size;

  const pct = (values: number[], p: number) => [...values].sort((a, b) => a - b)[Math.min(values.length - 1, Math.floor(values.length * p))]!;
  const ms = (values: number[], f: (v: number[]) => number) => (values.length ? `${f(values).toFixed(0)} ms` : 'n/a');
  const row = (what: string, m: { wall: number[]; cpu: number[] }) => [
    what,
    ms(m.wall, median),
    ms(m.wall, (v) => pct(v, 0.9)),
    ms(m.wall, (v) => Math.min(...v)),
    ms(m.cpu, median),
  ];
  const report = [
    `### WAL: ${names.length} segments of 16 MB, one process each`,
    '',
    markdownTable(
      ['step', 'wall median', 'wall p90', 'wall min', 'CPU median'],
      [
        row('pgkeep wal-push (zstd -1, checksums, fsync, record)', push),
        row('pgkeep wal-fetch (verify, decompress, rename)', fetch),
        row('reference: node -e 0 (Node start alone)', node),
        ...(nodeShell.wall.length ? [row("reference: node -e 0 with this shell's NODE_EXTRA_CA_CERTS", nodeShell)] : []),
        row('reference: zstd -1 -T0 of the segment (CLI)', zstd),
      ],
      ['l', 'r', 'r', 'r', 'r'],
    ),
    '',
    `Every process ran in a server's environment: this shell's without NODE_EXTRA_CA_CERTS and NODE_OPTIONS${ctx.env.NODE_EXTRA_CA_CERTS ? ' (NODE_EXTRA_CA_CERTS is set here: the extra reference row shows what it costs every Node process)' : ''}.`,
    '',
    `Stored: ${fmtMB(stored)} for ${fmtMB(names.length * 16 * MiB, 0)} of WAL (${((names.length * 16 * MiB) / stored).toFixed(2)}×). Peak RSS of wal-push: ${rss.length ? fmtMB(Math.max(...rss), 0) : 'n/a'}.`,
  ].join('\n');
  const pushMedian = median(push.wall);
  return {
    report,
    targets: [
      { text: `wal-push median ${pushMedian.toFixed(0)} ms wall per 16 MB segment (target < ${WAL_PUSH_TARGET_MS} ms)`, pass: pushMedian < WAL_PUSH_TARGET_MS },
      { text: `wal-push median ${push.cpu.length ? median(push.cpu).toFixed(0) : 'n/a'} ms CPU (user + system) per segment (recorded: what a loaded machine does not inflate)`, pass: undefined },
    ],
  };
}

// ---------------------------------------------------------------------------

async function main(): Promise<number> {
  // --only dedup: a deduplicating repository over N days of churn, against plain backups and restic (scripts/bench-dedup.ts)
  if (/(^|\s)--only[= ]dedup(\s|$)/.test(process.argv.slice(2).join(' '))) return (await import('./bench-dedup.js')).dedupBench(process.argv.slice(2).filter((a, i, all) => a !== '--only' && !(a === 'dedup' && all[i - 1] === '--only') && a !== '--only=dedup'));
  // --only fleet: one serve for a fleet, its own options (scripts/bench-fleet.ts)
  if (/(^|\s)--only[= ]fleet(\s|$)/.test(process.argv.slice(2).join(' '))) return (await import('./bench-fleet.js')).fleetBench(process.argv.slice(2));
  // --only restore: restore speed (pg_restore -j2, pgkeep restore --jobs 1/2/4, the loader's settings), scripts/bench-restore.ts
  if (process.argv.slice(2).join(' ').includes('--only restore')) return (await import('./bench-restore.js')).restoreBench(process.argv.slice(2).filter((a, i, all) => a !== '--only' && !(a === 'restore' && all[i - 1] === '--only')));
  let options: Options;
  try {
    options = parseOptions(process.argv.slice(2));
  } catch (error) {
    if (error instanceof UsageError || (error as NodeJS.ErrnoException).code?.startsWith('ERR_PARSE_ARGS')) {
      process.stderr.write(`bench: ${(error as Error).message}\n${USAGE}\n`);
      return 2;
    }
    throw error;
  }
  if (!existsSync(cli)) throw new Error(`${cli} is missing: run npm run build (npm run bench does it)`);
  const loadBefore = os.loadavg();
  if (loadBefore[0]! > os.availableParallelism() / 2) {
    log(`warning: load average is ${loadBefore[0]!.toFixed(2)} on ${os.availableParallelism()} cores: timings will be disturbed`);
  }

  const gnuTime = haveGnuTime();
  if (!gnuTime) log(`${GNU_TIME} (GNU time) not found or disabled: measuring peak RSS by polling /proc/<pid>/status VmHWM every 50 ms (apt-get install time for exact numbers)`);
  for (const tool of ['bash', 'zstd', 'gzip']) {
    if (spawnSync(tool, ['--version'], { stdio: 'ignore' }).error) throw new Error(`${tool} is not installed (apt-get install ${tool})`);
  }

  const work = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-bench-'));
  const cwd = path.join(work, 'cwd'); // empty: no stray .env or pgkeep.yaml is picked up
  await mkdir(cwd);
  let cluster: PgCluster | undefined;
  let s3: S3TestServer | undefined;
  const cleanup = () => rmSync(work, { recursive: true, force: true });
  // Ctrl-C: remove our temp dir; the harness's exit hook stops the cluster.
  const onSignal = (signal: NodeJS.Signals) => {
    cleanup();
    process.exit(signal === 'SIGINT' ? 130 : 143);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  try {
    log(`starting a private PostgreSQL cluster`);
    cluster = await startCluster({
      settings: {
        // Same for both sides of every comparison; these only keep the data
        // loading from being dominated by checkpoints.
        max_wal_size: '8GB',
        checkpoint_timeout: '1h',
        maintenance_work_mem: '256MB',
      },
    });
    const [version] = await cluster.query<{ v: string }>("SELECT current_setting('server_version') AS v");
    const serverVersion = version!.v;
    log(`PostgreSQL ${serverVersion} on ${cluster.host}:${cluster.port}; work dir ${work}`);

    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) {
      if (!/^(PG|POSTGRES_|DATABASE_URL$|BACKUP_DIR$)/.test(key)) env[key] = value;
    }
    Object.assign(env, {
      PGHOST: cluster.host,
      PGPORT: String(cluster.port),
      PGUSER: cluster.superuser,
      PGPASSWORD: cluster.password, // in the environment only, never in argv
      PG_BIN: cluster.binDir,
      PGKEEP_TEMP_DIR: work,
    });
    const ctx: RunContext = { env, cwd, work, gnuTime };

    if (options.only === 'wal') {
      const { report, targets } = await walBench(ctx, cluster, options.runs);
      process.stdout.write(
        [
          `## pgkeep benchmark: --only wal${options.runs > 1 ? `, --runs ${options.runs}` : ''}`,
          '',
          machineInfo(cluster, serverVersion, 'see docs', loadBefore, os.loadavg()),
          '',
          report,
          '',
          ...targetsSection(targets),
        ].join('\n'),
      );
      return targets.some((t) => t.pass === false) ? 1 : 0;
    }
    const kinds: Kind[] = options.only ? [options.only] : ['pgbench', 'realistic'];
    const smallBytes = Math.max(20 * MiB, options.sizeBytes / 8);
    const create = (kind: Kind, name: string, bytes: number) =>
      kind === 'pgbench' ? createPgbench(ctx, cluster!, name, bytes) : createRealistic(cluster!, name, bytes);
    const databases: { full: Database; small: Database }[] = [];
    for (const kind of kinds) {
      databases.push({ full: await create(kind, `bench_${kind}`, options.sizeBytes), small: await create(kind, `bench_${kind}_small`, smallBytes) });
    }

    s3 = await startS3Server();
    const bench = new Bench(ctx, cluster, s3);
    const results: DatasetResult[] = [];
    for (const { full, small } of databases) results.push(await bench.run(full, options.runs, small));

    const loadAfter = os.loadavg();
    const targets = results.flatMap(targetsFor);
    const report = [
      `## pgkeep benchmark: --size ${options.sizeLabel}${options.runs > 1 ? `, --runs ${options.runs}` : ''}`,
      '',
      machineInfo(cluster, serverVersion, results[0]?.codec ?? 'unknown', loadBefore, loadAfter),
      '',
      ...results.flatMap((r) => [reportDataset(r, options.runs), '']),
      ...targetsSection(targets),
    ].join('\n');
    process.stdout.write(report);

    if (options.keep) {
      const envFile = path.join(os.tmpdir(), `pgkeep-bench-${cluster.port}.env`);
      await writeFile(envFile, `PGHOST=${cluster.host}\nPGPORT=${cluster.port}\nPGUSER=${cluster.superuser}\nPGPASSWORD=${cluster.password}\n`, { mode: 0o600 });
      log(`--keep: cluster running on ${cluster.host}:${cluster.port} (databases ${databases.flatMap((d) => [d.full.name, d.small.name]).join(', ')})`);
      log(`  connect with: set -a; . ${envFile}; set +a; psql ${databases[0]!.full.name}`);
      log('  press Ctrl-C to stop it and clean up');
      process.off('SIGINT', onSignal);
      const keepAlive = setInterval(() => undefined, 1 << 30); // a pending promise alone would let Node exit
      await new Promise<void>((resolve) => process.once('SIGINT', () => resolve()));
      clearInterval(keepAlive);
      await rm(envFile, { force: true });
    }
    return targets.some((t) => t.pass === false) ? 1 : 0;
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    log('cleaning up');
    await cluster?.stop().catch((error: unknown) => log(`could not stop the cluster: ${(error as Error).message}`));
    await s3?.stop().catch(() => undefined);
    cleanup();
  }
}

main().then(
  (code) => {
    process.exitCode = code;
  },
  (error: unknown) => {
    process.stderr.write(`bench: ${(error as Error)?.stack ?? String(error)}\n`);
    process.exitCode = 1;
  },
);
