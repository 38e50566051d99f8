import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client';
import type { JobRecord } from '../scheduler/job-history.js';
import type { SourceStatus } from '../status/health.js';

/** Every pgkeep metric name (docs/prometheus-alerts.yml may use only these, and the process metrics). */
export const METRIC_NAMES = [
  'pgkeep_backup_last_success_timestamp_seconds',
  'pgkeep_backup_last_duration_seconds',
  'pgkeep_backup_last_size_bytes',
  'pgkeep_backups_total',
  'pgkeep_backup_count',
  'pgkeep_repository_size_bytes',
  'pgkeep_repository_logical_bytes',
  'pgkeep_repository_stored_bytes',
  'pgkeep_repository_dedup_ratio',
  'pgkeep_backup_added_bytes',
  'pgkeep_restore_test_last_success_timestamp_seconds',
  'pgkeep_restore_test_last_duration_seconds',
  'pgkeep_drill_last_success_timestamp_seconds',
  'pgkeep_drill_last_restore_seconds',
  'pgkeep_pitr_drill_rpo_seconds',
  'pgkeep_wal_archive_last_segment_timestamp_seconds',
  'pgkeep_wal_archive_lag_seconds',
  'pgkeep_health_problems',
  'pgkeep_jobs_running',
  'pgkeep_job_skipped_total',
  'pgkeep_catalog_reads_total',
] as const;

/**
 * The daemon's Prometheus metrics. Backup, repository, restore-test and WAL
 * gauges are set from the status module's view of each source (the
 * repository is the source of truth); pgkeep_backups_total counts the backup
 * jobs this process ran; process metrics come from prom-client.
 */
export class PgkeepMetrics {
  /** pgkeep's own series: rendered again only when one changed (100 sources are ~1,500 series, ~60 KB). */
  readonly registry = new Registry();
  /** prom-client's process metrics: collected on every scrape. */
  private readonly processRegistry = new Registry();
  private rendered: string | undefined;
  private runningNow = 0;
  private readonly lastSuccess;
  private readonly lastDuration;
  private readonly lastSize;
  private readonly backupsTotal;
  private readonly backupCount;
  private readonly repositorySize;
  private readonly repositoryLogical;
  private readonly repositoryStored;
  private readonly repositoryRatio;
  private readonly addedBytes;
  private readonly restoreSuccess;
  private readonly restoreDuration;
  private readonly drillSuccess;
  private readonly drillRestore;
  private readonly drillRpo;
  private readonly walLast;
  private readonly walLag;
  private readonly problems;
  private readonly jobsRunning;
  private readonly skippedTotal;
  private readonly catalogReads;
  /** The catalog's counts already added to catalogReads. */
  private readonly catalogSeen = { listings: 0, manifests: 0, records: 0 };

  constructor() {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.processRegistry });
    const gauge = (name: string, help: string, labelNames: string[]) => new Gauge({ name, help, labelNames, registers });
    this.lastSuccess = gauge('pgkeep_backup_last_success_timestamp_seconds', 'End time of the newest complete backup (Unix seconds)', ['source', 'kind']);
    this.lastDuration = gauge('pgkeep_backup_last_duration_seconds', 'Duration of the newest complete backup', ['source', 'kind']);
    this.lastSize = gauge('pgkeep_backup_last_size_bytes', 'Bytes dumped by the newest complete backup (before compression)', ['source', 'kind']);
    this.backupsTotal = new Counter({ name: 'pgkeep_backups_total', help: 'Backup jobs run by this process, by result', labelNames: ['source', 'kind', 'result'], registers });
    this.backupCount = gauge('pgkeep_backup_count', 'Complete backups in the repository', ['source', 'repository']);
    this.repositorySize = gauge('pgkeep_repository_size_bytes', 'Stored bytes of the source\'s backups in the repository', ['source', 'repository']);
    // a deduplicating repository as a whole (every source in it): the same value under each source that uses it
    this.repositoryLogical = gauge('pgkeep_repository_logical_bytes', 'Deduplicating repository: logical bytes of all its backups (every source), what restoring each would read', ['source', 'repository']);
    this.repositoryStored = gauge('pgkeep_repository_stored_bytes', 'Deduplicating repository: bytes its content store takes (packs and index files, from the storage listing)', ['source', 'repository']);
    this.repositoryRatio = gauge('pgkeep_repository_dedup_ratio', 'Deduplicating repository: logical bytes of all backups over stored bytes', ['source', 'repository']);
    this.addedBytes = gauge('pgkeep_backup_added_bytes', 'Deduplicated newest complete backup: bytes it added to the repository (its new packs)', ['source', 'kind']);
    this.restoreSuccess = gauge('pgkeep_restore_test_last_success_timestamp_seconds', 'End time of the newest successful restore test (Unix seconds)', ['source']);
    this.restoreDuration = gauge('pgkeep_restore_test_last_duration_seconds', 'Duration of the newest successful restore test: the measured RTO', ['source']);
    this.drillSuccess = gauge(
      'pgkeep_drill_last_success_timestamp_seconds',
      'End time of the newest successful drill of each kind: logical-restore-test, physical-restore-test, pitr-drill (Unix seconds)',
      ['source', 'kind'],
    );
    this.drillRestore = gauge('pgkeep_drill_last_restore_seconds', 'Restore time of the newest successful drill of each kind: its measured RTO', ['source', 'kind']);
    this.drillRpo = gauge('pgkeep_pitr_drill_rpo_seconds', 'The RPO the WAL archive gave at the newest successful PITR drill: then minus its newest recoverable point', ['source']);
    this.walLast = gauge('pgkeep_wal_archive_last_segment_timestamp_seconds', 'Time of the newest archived WAL segment (Unix seconds)', ['source']);
    this.walLag = gauge('pgkeep_wal_archive_lag_seconds', 'Now minus the time of the newest archived WAL segment', ['source']);
    this.problems = gauge('pgkeep_health_problems', 'Problems pgkeep status --check finds for the source', ['source']);
    this.jobsRunning = gauge('pgkeep_jobs_running', 'Jobs running now', []);
    this.skippedTotal = new Counter({ name: 'pgkeep_job_skipped_total', help: 'Scheduled or requested runs skipped by this process (serve.overlap: skip, a run already queued, stopping)', labelNames: ['source', 'kind'], registers });
    this.catalogReads = new Counter({
      name: 'pgkeep_catalog_reads_total',
      help: 'Reads by serve\'s catalog: listings of a source\'s folder, manifests and other records read (pages and scrapes read none)',
      labelNames: ['what'],
      registers,
    });
    for (const what of ['listing', 'manifest', 'record']) this.catalogReads.inc({ what }, 0);
  }

  /** Brings pgkeep_catalog_reads_total up to the catalog's own counts. */
  recordCatalog(counts: { listings: number; manifests: number; records: number }): void {
    const add = (what: string, key: keyof typeof counts) => {
      const delta = counts[key] - this.catalogSeen[key];
      if (delta > 0) {
        this.catalogReads.inc({ what }, delta);
        this.rendered = undefined;
      }
      this.catalogSeen[key] = counts[key];
    };
    add('listing', 'listings');
    add('manifest', 'manifests');
    add('record', 'records');
  }

  /** Sets the gauges from a fresh status of every source (sources gone from it are dropped). */
  updateStatus(statuses: readonly SourceStatus[]): void {
    this.rendered = undefined;
    for (const g of [this.lastSuccess, this.lastDuration, this.lastSize, this.addedBytes, this.backupCount, this.repositorySize, this.repositoryLogical, this.repositoryStored, this.repositoryRatio, this.restoreSuccess, this.restoreDuration, this.drillSuccess, this.drillRestore, this.drillRpo, this.walLast, this.walLag, this.problems]) g.reset();
    for (const s of statuses) {
      const source = s.source;
      for (const [kind, backup] of Object.entries(s.lastBackupByKind)) {
        const labels = { source, kind };
        this.lastSuccess.set(labels, Date.parse(backup.finishedAt) / 1000);
        this.lastDuration.set(labels, backup.durationMs / 1000);
        this.lastSize.set(labels, backup.rawBytes);
        if (backup.addedBytes !== undefined) this.addedBytes.set(labels, backup.addedBytes);
      }
      for (const r of s.repositories) {
        if (r.error) continue;
        this.backupCount.set({ source, repository: r.location }, r.backups);
        this.repositorySize.set({ source, repository: r.location }, r.storedBytes);
        if (r.usage) {
          this.repositoryLogical.set({ source, repository: r.location }, r.usage.logicalBytes);
          this.repositoryStored.set({ source, repository: r.location }, r.usage.storedBytes);
          if (r.usage.dedupRatio !== null) this.repositoryRatio.set({ source, repository: r.location }, r.usage.dedupRatio);
        }
      }
      if (s.lastRestoreTest?.ok) {
        this.restoreSuccess.set({ source }, Date.parse(s.lastRestoreTest.finishedAt) / 1000);
        this.restoreDuration.set({ source }, (s.lastRestoreTest.restoreMs ?? s.lastRestoreTest.durationMs) / 1000);
      }
      for (const [kind, drill] of Object.entries(s.drills)) {
        if (!drill.lastSuccess) continue;
        this.drillSuccess.set({ source, kind }, Date.parse(drill.lastSuccess.finishedAt) / 1000);
        this.drillRestore.set({ source, kind }, (drill.lastSuccess.restoreMs ?? drill.lastSuccess.durationMs) / 1000);
        if (kind === 'pitr-drill' && drill.lastSuccess.rpoMs !== undefined) this.drillRpo.set({ source }, drill.lastSuccess.rpoMs / 1000);
      }
      // WAL: the status module's PITR view (issue 5 fills it in)
      if (s.pitr.lastArchivedAt) this.walLast.set({ source }, Date.parse(s.pitr.lastArchivedAt) / 1000);
      if (s.pitr.archiveLagMs !== undefined) this.walLag.set({ source }, s.pitr.archiveLagMs / 1000);
      this.problems.set({ source }, s.findings.length);
    }
  }

  /** Counts a backup job that ended, or a skipped run of any kind. */
  recordJob(job: Readonly<JobRecord>): void {
    this.rendered = undefined;
    if (job.state === 'skipped') return void this.skippedTotal.inc({ source: job.source, kind: job.kind });
    if (job.kind !== 'logical' && job.kind !== 'physical') return;
    if (job.state !== 'succeeded' && job.state !== 'failed') return;
    this.backupsTotal.inc({ source: job.source, kind: job.kind, result: job.state === 'succeeded' ? 'success' : 'failure' });
  }

  /** Declares the counter's series for a source so alert expressions see 0 rather than nothing. */
  declareSource(source: string, kinds: readonly string[]): void {
    this.rendered = undefined;
    for (const kind of kinds) {
      for (const result of ['success', 'failure']) this.backupsTotal.inc({ source, kind, result }, 0);
      this.skippedTotal.inc({ source, kind }, 0);
    }
  }

  /** pgkeep_jobs_running. */
  setJobsRunning(count: number): void {
    if (count === this.runningNow) return;
    this.runningNow = count;
    this.jobsRunning.set(count);
    this.rendered = undefined;
  }

  async text(): Promise<string> {
    this.rendered ??= await this.registry.metrics();
    return `${this.rendered}${await this.processRegistry.metrics()}`;
  }

  get contentType(): string {
    return this.registry.contentType;
  }
}
