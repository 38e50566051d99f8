/**
 * npm run bench -- --only fleet [--sources 100] [--backups 50] [--seconds 60] [--every 30]
 *
 * One `pgkeep serve` for a fleet (issue 21): --sources sources, each with a
 * logical backup schedule every --every seconds (serve.concurrency 2,
 * overlap: skip, so jobs run the whole time), over a repository that already
 * holds --sources × --backups backups (complete synthetic copies of one real
 * backup, each under its own source and time). While the jobs run it requests
 * the overview, a source's page, /api/sources and /metrics in turn for
 * --seconds and reports their latency (median, p95), serve's RSS and CPU,
 * the catalog's reads during the window (manifests read per request), then
 * the SIGTERM-to-exit time, and `list`, `status` and `prune --dry-run` times
 * against the number of backups they cover. PASS/FAIL per target; exit 1 if
 * one fails.
 *
 * stdout is the report (markdown); progress goes to stderr.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { timestampPart } from '../src/repository/backup-id.js';
import type { Manifest } from '../src/repository/manifest.js';
import { Repository } from '../src/repository/repository.js';
import { storageOf } from '../src/repository/repository-storage.js';
import { openStorage } from '../src/storage/open-storage.js';
import { readObject } from '../src/storage/storage.js';
import { startCluster, type PgCluster } from '../test/support/pg-cluster.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
// the installed executable (what a user runs, with its start-up)
const cli = path.join(root, 'dist', 'cli', 'pgkeep.js');
const GRACE_S = 10;
const DATABASES = 4;

const log = (line: string) => process.stderr.write(`bench fleet: ${line}\n`);

interface FleetOptions {
  sources: number;
  backups: number;
  seconds: number;
  every: number;
}

function parseFleetOptions(argv: string[]): FleetOptions {
  const { values } = parseArgs({
    args: argv,
    options: {
      only: { type: 'string' },
      sources: { type: 'string', default: '100' },
      backups: { type: 'string', default: '50' },
      seconds: { type: 'string', default: '60' },
      every: { type: 'string', default: '30' },
    },
    strict: true,
    allowPositionals: false,
  });
  const whole = (name: string, value: string | undefined, min: number) => {
    const n = Number(value);
    if (!Number.isInteger(n) || n < min) throw new Error(`--${name} must be a whole number of at least ${min} (got "${value}")`);
    return n;
  };
  return { sources: whole('sources', values.sources, 1), backups: whole('backups', values.backups, 1), seconds: whole('seconds', values.seconds, 5), every: whole('every', values.every, 1) };
}

/** Median and 95th percentile (nearest rank) of a sample, in ms. */
function percentiles(sample: number[]): { median: number; p95: number; max: number; n: number } {
  const sorted = [...sample].sort((a, b) => a - b);
  const rank = (p: number) => sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1))] ?? NaN;
  return { median: rank(0.5), p95: rank(0.95), max: sorted.at(-1) ?? NaN, n: sorted.length };
}

function run(args: string[], env: NodeJS.ProcessEnv, cwd: string): Promise<{ code: number | null; stdout: string; stderr: string; ms: number }> {
  return new Promise((resolve, reject) => {
    const t0 = performance.now();
    const child = spawn(process.execPath, [cli, ...args], { env, cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (t: string) => (stdout += t));
    child.stderr.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout, stderr, ms: performance.now() - t0 }));
  });
}

/** utime + stime of a process, in seconds, and its resident set in bytes (Linux /proc). */
function processSample(pid: number): { cpuSeconds: number; rssBytes: number } {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  const rss = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1];
  return { cpuSeconds: ticks / 100, rssBytes: Number(rss) * 1024 };
}

const sumOf = (metrics: string, name: string, labels = '') =>
  [...metrics.matchAll(new RegExp(`^${name}\\{([^}]*)\\} (\\S+)$`, 'gm'))].filter((m) => m[1]!.includes(labels)).reduce((n, m) => n + Number(m[2]), 0);

/**
 * Writes `count` complete backups of `source`, one hour apart back from `newest`,
 * each a copy of `template` (objects and all) under its own source, id and times.
 */
async function writeSyntheticBackups(repository: Repository, template: Manifest, objects: Map<string, Buffer>, source: string, count: number, newest: number): Promise<void> {
  await repository.ensureSource(source, 'fleet');
  for (let i = 0; i < count; i++) {
    const at = new Date(newest - i * 3_600_000);
    const id = timestampPart(at);
    for (const [name, bytes] of objects) await storageOf(repository)!.put(repository.objectKey(source, id, name), Readable.from([bytes]));
    await repository.writeManifest({ ...template, source, id, startedAt: at.toISOString(), finishedAt: new Date(at.getTime() + template.durationMs).toISOString() } as Manifest);
  }
}

export async function fleetBench(argv: string[]): Promise<number> {
  let options: FleetOptions;
  try {
    options = parseFleetOptions(argv);
  } catch (error) {
    process.stderr.write(`bench: ${(error as Error).message}\nusage: npm run bench -- --only fleet [--sources 100] [--backups 50] [--seconds 60] [--every 30]\n`);
    return 2;
  }
  const uptimeBefore = os.loadavg();
  const work = await mkdtemp(path.join(os.tmpdir(), 'pgkeep-bench-fleet-'));
  const cwd = path.join(work, 'cwd');
  await mkdir(cwd);
  let cluster: PgCluster | undefined;
  let serve: ChildProcess | undefined;
  try {
    log('starting a private PostgreSQL cluster');
    cluster = await startCluster();
    for (let d = 1; d <= DATABASES; d++) {
      await cluster.query(`CREATE DATABASE fleet${d}`);
      await cluster.query('CREATE TABLE items AS SELECT g AS id, md5(g::text) AS name FROM generate_series(1, 20000) g', [], `fleet${d}`);
    }
    const env: NodeJS.ProcessEnv = {};
    for (const [key, value] of Object.entries(process.env)) if (!/^(PG|PGKEEP_|POSTGRES_|DATABASE_URL$|BACKUP_DIR$)/.test(key)) env[key] = value;
    Object.assign(env, { PGPASSWORD: cluster.password, PG_BIN: cluster.binDir, PGKEEP_TEMP_DIR: work });

    const repo = path.join(work, 'repo');
    const names = Array.from({ length: options.sources }, (_, i) => `f${String(i + 1).padStart(3, '0')}`);
    const config = path.join(work, 'pgkeep.yaml');
    await writeFile(
      config,
      JSON.stringify({
        repo,
        // keep everything: prune after each backup still reads the source's manifests, but deletes none
        retention: { keepLast: options.backups * 10 },
        serve: { stateDir: path.join(work, 'state'), concurrency: 2, overlap: 'skip', gracePeriod: `${GRACE_S}s` },
        sources: Object.fromEntries(
          names.map((name, i) => [name, { host: '127.0.0.1', port: cluster!.port, user: cluster!.superuser, database: `fleet${(i % DATABASES) + 1}`, schedule: { logical: `*/${options.every} * * * * *` } }]),
        ),
      }),
    );

    // the repository: one real backup, copied to every source × --backups, one hour apart
    log(`taking one real backup, then writing ${options.sources} × ${options.backups} backups`);
    const first = await run(['backup', '--config', config, '--source', names[0]!, '--json'], env, cwd);
    if (first.code !== 0) throw new Error(`the first backup failed: ${first.stderr}`);
    const repository = await Repository.open(openStorage(repo));
    const [template] = await repository.listBackups(names[0]);
    const objects = new Map<string, Buffer>();
    for (const object of template!.objects) objects.set(object.name, await readObject(storageOf(repository)!, repository.objectKey(template!.source, template!.id, object.name)));
    await repository.removeBackup(template!.source, template!.id);
    const newest = Date.now() - 3_600_000;
    const t0 = performance.now();
    for (const name of names) await writeSyntheticBackups(repository, template!, objects, name, options.backups, newest);
    const totalBackups = options.sources * options.backups;
    log(`${totalBackups} backups written in ${((performance.now() - t0) / 1000).toFixed(1)} s`);

    // CLI times against the backup count (before serve adds any)
    const cliTimes: { command: string; backups: number; ms: number }[] = [];
    const timeCli = async (command: string, args: string[], backups: number) => {
      const result = await run([...args, '--config', config], env, cwd);
      if (result.code !== 0 && !(command.startsWith('status') && result.code !== null)) throw new Error(`${command}: ${result.stderr}`);
      cliTimes.push({ command, backups, ms: result.ms });
      log(`${command}: ${result.ms.toFixed(0)} ms over ${backups} backups`);
    };
    await timeCli('list --json --source f001', ['list', '--json', '--source', names[0]!], options.backups);
    await timeCli('status --json --source f001', ['status', '--json', '--source', names[0]!], options.backups);
    await timeCli('prune --dry-run --source f001', ['prune', '--dry-run', '--json', '--source', names[0]!], options.backups);
    await timeCli('status --json', ['status', '--json'], totalBackups);
    await timeCli('prune --dry-run', ['prune', '--dry-run', '--json'], totalBackups);

    // serve
    log('starting pgkeep serve');
    const started = performance.now();
    serve = spawn(process.execPath, [cli, 'serve', '--config', config, '--listen', '127.0.0.1:0'], { env, cwd, stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    serve.stderr!.setEncoding('utf8').on('data', (t: string) => (stderr += t));
    const exited = new Promise<number | null>((resolve) => serve!.on('close', (code) => resolve(code)));
    while (!/listening on http/.test(stderr)) {
      if (serve.exitCode !== null) throw new Error(`serve exited: ${stderr}`);
      await sleep(20);
    }
    const base = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(stderr)![1]!;
    const listeningMs = performance.now() - started;
    while (!/ info catalog: /.test(stderr)) {
      if (serve.exitCode !== null) throw new Error(`serve exited: ${stderr}`);
      await sleep(50);
    }
    const loadLine = / info (catalog: .*)/.exec(stderr)![1]!;
    log(`serve listening after ${listeningMs.toFixed(0)} ms; ${loadLine}`);

    // let the schedules get going, then measure while they run
    const warmup = Math.min(options.every, 20);
    log(`warming up ${warmup} s while the first jobs run`);
    await sleep(warmup * 1000);
    const text = async (url: string) => (await fetch(`${base}${url}`)).text();
    const before = await text('/metrics');
    const cpuBefore = processSample(serve.pid!);
    let rssMax = cpuBefore.rssBytes;
    const windowStart = performance.now();
    const latency: Record<string, number[]> = { '/': [], '/sources/:name': [], '/api/sources': [], '/metrics': [] };
    let requests = 0;
    let failures = 0;
    log(`measuring for ${options.seconds} s`);
    for (let i = 0; performance.now() - windowStart < options.seconds * 1000; i++) {
      const source = names[i % names.length]!;
      for (const [key, url] of [['/', '/'], ['/sources/:name', `/sources/${source}`], ['/api/sources', '/api/sources'], ['/metrics', '/metrics']] as const) {
        const t = performance.now();
        const response = await fetch(`${base}${url}`);
        await response.text();
        latency[key]!.push(performance.now() - t);
        requests++;
        if (response.status !== 200) failures++;
      }
      rssMax = Math.max(rssMax, processSample(serve.pid!).rssBytes);
      await sleep(50);
    }
    const windowSeconds = (performance.now() - windowStart) / 1000;
    const cpuAfter = processSample(serve.pid!);
    const after = await text('/metrics');
    const manifestReads = sumOf(after, 'pgkeep_catalog_reads_total', 'what="manifest"') - sumOf(before, 'pgkeep_catalog_reads_total', 'what="manifest"');
    const listings = sumOf(after, 'pgkeep_catalog_reads_total', 'what="listing"') - sumOf(before, 'pgkeep_catalog_reads_total', 'what="listing"');
    const backupsMade = sumOf(after, 'pgkeep_backups_total', 'result="success"') - sumOf(before, 'pgkeep_backups_total', 'result="success"');
    const backupsFailed = sumOf(after, 'pgkeep_backups_total', 'result="failure"') - sumOf(before, 'pgkeep_backups_total', 'result="failure"');
    const skipped = sumOf(after, 'pgkeep_job_skipped_total') - sumOf(before, 'pgkeep_job_skipped_total');
    // how long serve's own event loop was held (prom-client's histogram restarts at each scrape)
    const loopLag = (name: string) => Number(new RegExp(`^${name} (\\S+)$`, 'm').exec(after)?.[1] ?? NaN) * 1000;
    const lagP99 = loopLag('nodejs_eventloop_lag_p99_seconds');
    const lagMax = loopLag('nodejs_eventloop_lag_max_seconds');
    const cpuPercent = ((cpuAfter.cpuSeconds - cpuBefore.cpuSeconds) / windowSeconds) * 100;

    // /ready: the catalog's view of the repositories, and a SELECT 1 to every source's database
    const readyTimes: number[] = [];
    for (let i = 0; i < 6; i++) {
      const t = performance.now();
      await (await fetch(`${base}/ready`)).text();
      readyTimes.push(performance.now() - t);
    }
    const readyFirst = readyTimes[0]!;
    const readyMedian = percentiles(readyTimes.slice(1)).median;

    // SIGTERM while jobs run
    const running = JSON.parse(await text('/api/jobs?state=running')).total as number;
    const tStop = performance.now();
    serve.kill('SIGTERM');
    const code = await exited;
    const stopSeconds = (performance.now() - tStop) / 1000;
    serve = undefined;
    log(`SIGTERM to exit: ${stopSeconds.toFixed(2)} s (${running} job(s) running), exit code ${code}`);

    const stats = Object.fromEntries(Object.entries(latency).map(([k, v]) => [k, percentiles(v)]));
    const ms = (n: number) => `${n.toFixed(n < 10 ? 1 : 0)} ms`;
    const targets = [
      { name: 'overview / p95 ≤ 300 ms while jobs run', pass: stats['/']!.p95 <= 300, value: ms(stats['/']!.p95) },
      { name: 'source page p95 ≤ 300 ms while jobs run', pass: stats['/sources/:name']!.p95 <= 300, value: ms(stats['/sources/:name']!.p95) },
      { name: '/metrics p95 ≤ 100 ms', pass: stats['/metrics']!.p95 <= 100, value: ms(stats['/metrics']!.p95) },
      { name: `shutdown ≤ gracePeriod + 5 s (${GRACE_S + 5} s)`, pass: stopSeconds <= GRACE_S + 5 && code === 0, value: `${stopSeconds.toFixed(2)} s, exit ${code}` },
      { name: 'RSS ≤ 300 MB', pass: rssMax <= 300 * 1024 * 1024, value: `${(rssMax / 1024 / 1024).toFixed(0)} MB` },
      {
        name: 'per-request cost flat in the backups: no manifest read by a request',
        pass: manifestReads <= backupsMade + backupsFailed && failures === 0,
        value: `${manifestReads} manifest(s) read in the window for ${backupsMade} new backup(s), ${requests} requests`,
      },
    ];
    const uptimeAfter = os.loadavg();
    const report = [
      `## pgkeep benchmark: --only fleet (${options.sources} sources × ${options.backups} backups, schedules every ${options.every} s)`,
      '',
      `- machine: ${os.availableParallelism()} cores, ${(os.totalmem() / 1024 ** 3).toFixed(0)} GB, Node ${process.version}, PostgreSQL ${cluster.majorVersion}; load average (uptime) before ${uptimeBefore.map((n) => n.toFixed(2)).join(', ')}, after ${uptimeAfter.map((n) => n.toFixed(2)).join(', ')}`,
      `- serve: concurrency 2, overlap skip, gracePeriod ${GRACE_S}s; listening ${ms(listeningMs)} after start; ${loadLine}`,
      `- window: ${windowSeconds.toFixed(0)} s, ${requests} requests (${failures} not 200), ${backupsMade} backups made (${backupsFailed} failed), ${skipped} runs skipped, ${listings} catalog listings`,
      '',
      '| request (while jobs run) | n | median | p95 | max |',
      '|---|---|---|---|---|',
      ...Object.entries(stats).map(([k, s]) => `| ${k} | ${s.n} | ${ms(s.median)} | ${ms(s.p95)} | ${ms(s.max)} |`),
      '',
      '| serve | figure |',
      '|---|---|',
      `| RSS (max in the window) | ${(rssMax / 1024 / 1024).toFixed(0)} MB |`,
      `| CPU in the window (jobs included; 100% = one core) | ${cpuPercent.toFixed(0)}% |`,
      `| manifests read by the catalog in the window | ${manifestReads} (for ${backupsMade} new backups; ${requests} requests read none) |`,
      `| serve's event loop delay since the previous scrape: p99, max | ${ms(lagP99)}, ${ms(lagMax)} |`,
      `| /ready: first (SELECT 1 to each of the ${options.sources} sources), then median of 5 (answers reused 10 s) | ${ms(readyFirst)}, ${ms(readyMedian)} |`,
      `| SIGTERM to exit (${running} job(s) running) | ${stopSeconds.toFixed(2)} s |`,
      '',
      '| CLI | backups | time |',
      '|---|---|---|',
      ...cliTimes.map((c) => `| ${c.command} | ${c.backups} | ${ms(c.ms)} |`),
      '',
      // what one more backup costs: the difference between all sources and one, over the backups in between
      ...(['status', 'prune'] as const).map((command) => {
        const one = cliTimes.find((c) => c.command.startsWith(command) && c.command.includes('--source'))!;
        const all = cliTimes.find((c) => c.command.startsWith(command) && !c.command.includes('--source'))!;
        return `- ${command}: ${((all.ms - one.ms) / Math.max(1, all.backups - one.backups)).toFixed(2)} ms per further backup (linear in the backups it covers)`;
      }),
      '',
      '| target | result | |',
      '|---|---|---|',
      ...targets.map((t) => `| ${t.name} | ${t.value} | ${t.pass ? 'PASS' : 'FAIL'} |`),
      '',
    ].join('\n');
    process.stdout.write(report);
    return targets.some((t) => !t.pass) ? 1 : 0;
  } finally {
    serve?.kill('SIGKILL');
    log('cleaning up');
    await cluster?.stop().catch(() => undefined);
    await rm(work, { recursive: true, force: true });
  }
}
