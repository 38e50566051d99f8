import { formatAge, formatBytes, formatDuration } from '../../format/human-format.js';
import { DRILL_KINDS, DRILL_NAMES, type Finding } from '../../status/health.js';
import type { BackupRow, JobView, SourceOverview } from './dashboard-deps.js';
import { html, type SafeHtml } from './html.js';

/** Who is looking: read-only visitors see no action, logged-in ones carry the CSRF token in every form. */
export interface Viewer {
  /** A token is configured: logging in is possible. */
  canLogin: boolean;
  loggedIn: boolean;
  csrf?: string | undefined;
  /** Where the dashboard is mounted, '' for '/'. */
  base: string;
  now: Date;
}

export type Verdict = 'green' | 'amber' | 'red';

/** How often the jobs view asks for itself again (htmx polling; the overview's is 5 s). */
const polling = { jobsMs: 2_000 };

/**
 * Test-only (PGKEEP_TEST_DASHBOARD_POLL_MS, read by src/cli/main.ts): the jobs
 * view polls every `ms`, so a browser test sees a finished job a moment after
 * it ends instead of waiting out a 2 s poll each time. The overview keeps its
 * 5 s: tests click in it, and nothing there waits for a poll.
 */
export function setDashboardPolling(ms: number): void {
  if (Number.isInteger(ms) && ms >= 50) polling.jobsMs = ms;
}

/** htmx's trigger: "every 2s" (whole seconds read as before), "every 200ms". */
const every = (ms: number) => `every ${ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`}`;

// Problems that mean a restore today could fail or lose too much: red. The rest ask for a look: amber.
const RED: ReadonlySet<Finding['code']> = new Set(['REPOSITORY_UNREADABLE', 'NO_BACKUP', 'BACKUP_TOO_OLD', 'LAST_BACKUP_FAILED', 'VERIFY_FAILED', 'RESTORE_TEST_FAILED']);

/** green: no finding; red: a finding that endangers recovery; amber: only warnings (size drop, stale restore test, WAL lag). */
export function verdictOf(findings: readonly Finding[]): Verdict {
  if (findings.length === 0) return 'green';
  return findings.some((f) => RED.has(f.code)) ? 'red' : 'amber';
}

const VERDICT_TEXT: Record<Verdict, string> = { green: 'Healthy', amber: 'Needs a look', red: 'At risk' };

/** How far a time is from now, either way: "12s ago" for the past, "in 12s" for the future (a next run). */
export function relativeTime(iso: string, now: Date): string {
  const at = new Date(iso);
  if (at.getTime() <= now.getTime()) return formatAge(at, now);
  // the span from now to then, in formatAge's units, without its "ago"
  return `in ${formatAge(now, at).replace(/ ago$/, '')}`;
}

const when = (iso: string, now: Date) => html`<time datetime="${iso}" title="${iso}">${iso.slice(0, 16).replace('T', ' ')} UTC</time> (${relativeTime(iso, now)})`;

export function page(viewer: Viewer, title: string, body: SafeHtml, active: 'overview' | 'jobs' | 'backups' | 'login'): SafeHtml {
  const b = viewer.base;
  const nav = (href: string, label: string, key: string) => html`<a href="${b}${href}"${key === active ? html` aria-current="page"` : ''}>${label}</a>`;
  const who = viewer.loggedIn
    ? html`<form method="post" action="${b}/logout" class="inline"><input type="hidden" name="csrf" value="${viewer.csrf}"><button type="submit" class="link">Log out</button></form>`
    : viewer.canLogin
      ? nav('/login', 'Log in', 'login')
      : html`<span class="muted" title="no API token is configured">read-only</span>`;
  // non-ASCII in html`` templates as \u escapes (same page): esbuild keeps a tagged template's text as
  // written, and a bundle with one non-ASCII character is a two-byte string for V8, slower to compile
  return html`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="htmx-config" content='{"includeIndicatorStyles":false,"allowEval":false}'>
<title>${title} \u00b7 pgkeep</title>
<link rel="stylesheet" href="${b}/assets/dashboard.css">
<script src="${b}/assets/htmx.min.js" defer></script>
<script src="${b}/assets/dashboard.js" defer></script>
</head>
<body>
<a class="skip" href="#main">Skip to content</a>
<header><nav aria-label="Main"><strong class="brand">pgkeep</strong>${nav('/', 'Overview', 'overview')}${nav('/jobs', 'Jobs', 'jobs')}<span class="spacer"></span>${who}</nav></header>
<main id="main">
${body}
</main>
<div id="modal"></div>
</body>
</html>`;
}

function actionLink(viewer: Viewer, action: string, source: string, label: string, backup?: string): SafeHtml {
  if (!viewer.loggedIn) return html``;
  const query = new URLSearchParams({ action, source, ...(backup ? { backup } : {}) });
  const href = `${viewer.base}/confirm?${query.toString()}`;
  // with JavaScript the dialog opens over the page; without, the link shows it as a page
  return html`<a class="button" href="${href}" hx-get="${href}" hx-target="#modal" hx-swap="innerHTML">${label}</a>`;
}

/** The overview's filters (query string of /): name substring, a label of the source's backups, a verdict. */
export interface FleetFilters {
  q?: string | undefined;
  label?: string | undefined;
  verdict?: Verdict | undefined;
}

const VERDICT_ORDER: Record<Verdict, number> = { red: 0, amber: 1, green: 2 };

/** Worst first (at risk, needs a look, healthy), then by name: what needs attention is at the top. */
export function sortWorstFirst<T extends SourceOverview>(sources: readonly T[]): T[] {
  return [...sources].sort((a, b) => VERDICT_ORDER[verdictOf(a.status.findings)] - VERDICT_ORDER[verdictOf(b.status.findings)] || a.status.source.localeCompare(b.status.source));
}

export function filterSources<T extends SourceOverview>(sources: readonly T[], f: FleetFilters): T[] {
  const q = f.q?.toLowerCase();
  return sources.filter((s) => (!q || s.status.source.toLowerCase().includes(q)) && (!f.label || (s.labels ?? []).includes(f.label)) && (!f.verdict || verdictOf(s.status.findings) === f.verdict));
}

/** A short time for the compact rows: the age ("12m ago", "in 12s"), the full time in the tooltip. */
const short = (iso: string, now: Date) => html`<time datetime="${iso}" title="${iso.slice(0, 19).replace('T', ' ')} UTC">${relativeTime(iso, now)}</time>`;

/**
 * The fleet overview: counts by verdict (each a filter link), a filter form,
 * then one compact row per source, worst first, so 100+ sources fit a screen
 * or two; a row's problems are listed in it, everything else is one line.
 */
export function overviewFragment(viewer: Viewer, sources: readonly SourceOverview[], filters: FleetFilters = {}): SafeHtml {
  const now = viewer.now;
  const counts: Record<Verdict, number> = { red: 0, amber: 0, green: 0 };
  for (const s of sources) counts[verdictOf(s.status.findings)]++;
  const shown = sortWorstFirst(filterSources(sources, filters));
  const labels = [...new Set(sources.flatMap((s) => s.labels ?? []))].sort();
  const query = (extra: FleetFilters) => {
    const p = new URLSearchParams();
    for (const [k, v] of Object.entries({ ...filters, ...extra })) if (v) p.set(k, v);
    const text = p.toString();
    return text ? `?${text}` : '';
  };
  const count = (v: Verdict) => html`<a class="count ${v}" href="${viewer.base}/${query({ verdict: filters.verdict === v ? undefined : v })}"${filters.verdict === v ? html` aria-current="true"` : ''} data-count="${v}"><strong>${counts[v]}</strong> ${VERDICT_TEXT[v].toLowerCase()}</a>`;
  const option = (value: string, label: string, current: string | undefined) => html`<option value="${value}"${(current ?? '') === value ? html` selected` : ''}>${label}</option>`;
  const rows = shown.map(({ status: s, nextRunAt, lastRestoreTestRestoreMs }) => {
    const verdict = verdictOf(s.findings);
    const test = s.lastRestoreTest;
    const page = `${viewer.base}/sources/${encodeURIComponent(s.source)}`;
    return html`<article class="card row ${verdict}" data-source="${s.source}" data-verdict="${verdict}" aria-labelledby="card-${s.source}">
<h2 id="card-${s.source}"><a href="${page}">${s.source}</a> <span class="badge ${verdict}">${VERDICT_TEXT[verdict]}</span></h2>
<div class="facts" title="${s.findings.map((f) => f.message).join('\n')}">
${s.findings.length > 0 ? html`<ul class="reasons">${s.findings.map((f) => html`<li>${f.message}</li>`)}</ul>` : ''}
<dl>
<div><dt>Last success</dt><dd>${s.lastBackup ? html`${short(s.lastBackup.finishedAt, now)} \u00b7 <span class="id">${s.lastBackup.id}</span> \u00b7 ${formatBytes(s.lastBackup.rawBytes)}, ${formatDuration(s.lastBackup.durationMs)}` : 'none'}</dd></div>
<div><dt>Next run</dt><dd>${nextRunAt ? short(nextRunAt, now) : 'not scheduled'}</dd></div>
<div><dt>Restore test</dt><dd>${test ? html`${test.ok ? 'passed' : 'FAILED'} ${short(test.finishedAt, now)} on <span class="id">${test.backupId}</span>${lastRestoreTestRestoreMs !== undefined ? html`, restored in ${formatDuration(lastRestoreTestRestoreMs)}` : ''}` : 'never'}</dd></div>
${drillsLine(s, now)}<div><dt>PITR</dt><dd>${s.pitr.window ? html`${short(s.pitr.window.from, now)} \u2192 ${short(s.pitr.window.to, now)}` : 'none'}${s.pitr.archiveLagMs !== undefined ? html`, lag ${formatDuration(s.pitr.archiveLagMs)}` : ''}</dd></div>
</dl>
</div>
<p class="actions">${actionLink(viewer, 'backup', s.source, 'Backup now')}${s.lastBackup ? actionLink(viewer, 'restore-test', s.source, 'Restore test now', 'latest') : ''}<a class="button secondary" href="${page}">Backups</a></p>
</article>`;
  });
  return html`<div id="overview" hx-get="${viewer.base}/fragments/overview${query({})}" hx-trigger="every 5s" hx-swap="outerHTML">
<p class="counts" aria-label="Sources by verdict">${count('red')}${count('amber')}${count('green')}<span class="muted">${sources.length} source${sources.length === 1 ? '' : 's'}${shown.length !== sources.length ? `, ${shown.length} shown` : ''}</span></p>
<form method="get" action="${viewer.base}/" class="filters fleet-filters" aria-label="Filter sources">
<label>Name <input type="search" name="q" value="${filters.q ?? ''}"></label>
<label>Label <select name="label">${option('', 'any', filters.label)}${labels.map((l) => option(l, l, filters.label))}</select></label>
<label>Verdict <select name="verdict">${option('', 'any', filters.verdict)}${(['red', 'amber', 'green'] as const).map((v) => option(v, VERDICT_TEXT[v], filters.verdict))}</select></label>
<button type="submit">Filter</button>
</form>
<div class="rows">${sources.length === 0 ? html`<p>No source: configure one in pgkeep.yaml or take a backup.</p>` : shown.length === 0 ? html`<p>No source matches the filter.</p>` : rows}</div>
</div>`;
}

/** Each kind of drill's newest run, when more than logical restore tests ran (those show as "Restore test"). */
function drillsLine(s: SourceOverview['status'], now: Date): SafeHtml | string {
  const kinds = DRILL_KINDS.filter((k) => s.drills[k]);
  if (kinds.length === 0 || (kinds.length === 1 && kinds[0] === 'logical-restore-test')) return '';
  const one = (k: (typeof DRILL_KINDS)[number]) => {
    const d = s.drills[k]!;
    return html`<span data-drill="${k}">${DRILL_NAMES[k]} ${d.last.ok ? 'passed' : 'FAILED'} ${short(d.last.finishedAt, now)}${!d.last.ok && d.lastSuccess ? html` (passed ${short(d.lastSuccess.finishedAt, now)})` : ''}</span>`;
  };
  return html`<div><dt>Drills</dt><dd>${kinds.map((k, i) => html`${i > 0 ? ' · ' : ''}${one(k)}`)}</dd></div>`;
}

export interface BackupFilters {
  kind?: string | undefined;
  label?: string | undefined;
  verification?: 'ok' | 'failed' | 'never' | undefined;
  pinned?: boolean | undefined;
  q?: string | undefined;
}

export function applyFilters(rows: readonly BackupRow[], f: BackupFilters): BackupRow[] {
  return rows.filter(
    (r) =>
      (!f.kind || r.kind === f.kind) &&
      (!f.label || r.labels.includes(f.label)) &&
      (!f.verification || (f.verification === 'never' ? !r.verification : r.verification?.ok === (f.verification === 'ok'))) &&
      (!f.pinned || r.pinned) &&
      (!f.q || r.id.includes(f.q) || (r.name ?? '').includes(f.q)),
  );
}

/**
 * The labels of the time axis's two ends (UTC, as every time in the
 * dashboard): dates over three days or more; under that, with the time of day
 * (to the second under ten minutes), so that several backups on one day do
 * not read as one date at both ends. One label when the range is a moment.
 */
export function timeAxisLabels(first: string, last: string): string[] {
  const span = Date.parse(last) - Date.parse(first);
  if (span >= 3 * 86_400_000) return [first.slice(0, 10), last.slice(0, 10)];
  const at = (iso: string) => iso.slice(0, span < 10 * 60_000 ? 19 : 16).replace('T', ' ');
  if (span <= 0) return [`${at(first)} UTC`];
  // the same day: the end shows only its time
  return [at(first), `${first.slice(0, 10) === last.slice(0, 10) ? at(last).slice(11) : at(last)} UTC`];
}

/**
 * Dumped size and duration of each backup over time, as two small line
 * charts sharing the time axis: a dump that suddenly shrank stands out.
 */
export function backupChart(rows: readonly BackupRow[]): SafeHtml {
  if (rows.length === 0) return html``;
  const width = 640;
  const height = 110;
  const pad = { left: 84, right: 12, top: 14, bottom: 24 };
  const times = rows.map((r) => Date.parse(r.finishedAt));
  const [t0, t1] = [Math.min(...times), Math.max(...times)];
  const x = (t: number) => pad.left + (t1 === t0 ? (width - pad.left - pad.right) / 2 : ((t - t0) / (t1 - t0)) * (width - pad.left - pad.right));
  const ends = timeAxisLabels(new Date(t0).toISOString(), new Date(t1).toISOString());
  const axis =
    ends.length === 1
      ? html`<text x="${x(t0).toFixed(1)}" y="${height - 4}" text-anchor="middle" class="tick">${ends[0]}</text>`
      : html`<text x="${pad.left}" y="${height - 4}" class="tick">${ends[0]}</text>
<text x="${width - pad.right}" y="${height - 4}" text-anchor="end" class="tick">${ends[1]}</text>`;
  const series = (title: string, values: number[], label: (v: number) => string, cls: string) => {
    const max = Math.max(...values, 1);
    const y = (v: number) => pad.top + (1 - v / max) * (height - pad.top - pad.bottom);
    const points = values.map((v, i) => `${x(times[i]!).toFixed(1)},${y(v).toFixed(1)}`);
    return html`<figure class="chart"><figcaption>${title}</figcaption>
<svg viewBox="0 0 ${width} ${height}" role="img" aria-label="${title} of the ${rows.length} listed backups, from ${label(Math.min(...values))} to ${label(max)}">
<line x1="${pad.left}" y1="${height - pad.bottom}" x2="${width - pad.right}" y2="${height - pad.bottom}" class="axis"/>
<text x="${pad.left - 6}" y="${pad.top + 4}" text-anchor="end">${label(max)}</text>
<text x="${pad.left - 6}" y="${height - pad.bottom}" text-anchor="end">0</text>
${axis}
<polyline points="${points.join(' ')}" class="${cls}"/>
${values.map((v, i) => html`<circle cx="${x(times[i]!).toFixed(1)}" cy="${y(v).toFixed(1)}" r="3.5" class="${cls}"><title>${rows[i]!.id}: ${label(v)}</title></circle>`)}
</svg></figure>`;
  };
  return html`<section aria-labelledby="chart-title" class="charts"><h2 id="chart-title">Size and duration over time</h2>
${series('Dumped size', rows.map((r) => r.rawBytes), formatBytes, 'size')}
${series('Duration', rows.map((r) => r.durationMs), formatDuration, 'duration')}
</section>`;
}

/** The exact restore command for a backup, as the CLI takes it. */
export function restoreCommand(source: string, row: Pick<BackupRow, 'id' | 'database'> & { kind?: string }): string {
  // a physical backup is the whole cluster: it is recovered into a new data directory, not restored into a database
  if (row.kind === 'physical') return `pgkeep --source ${source} pitr --backup ${row.id} --pgdata /var/lib/postgresql/restore --latest`;
  return `pgkeep --source ${source} restore ${row.id} --to ${row.database}_restore`;
}

/** The exact point-in-time recovery command (pgkeep pitr, physical backups and WAL). */
export function pitrCommand(source: string, at: string): string {
  return `pgkeep --source ${source} pitr --pgdata /var/lib/postgresql/restore --target-time '${at}'`;
}

function copyable(text: string, id: string, what: string): SafeHtml {
  return html`<div class="copy"><code id="${id}">${text}</code><button type="button" class="secondary" data-copy="${id}" aria-label="Copy the ${what}">Copy</button></div>`;
}

function verificationCell(r: BackupRow, now: Date): SafeHtml {
  const v = r.verification;
  if (!v) return html`<span class="muted">never</span>`;
  return html`<span class="${v.ok ? 'pass' : 'fail'}">${v.ok ? '✔ ' : '✘ '}${v.kind === 'restore-test' ? 'restore test' : 'integrity'} ${v.ok ? 'passed' : 'failed'}</span><br><small>${formatAge(new Date(v.finishedAt), now)}${v.restoreMs !== undefined ? `, restored in ${formatDuration(v.restoreMs)}` : ''}${v.problem ? `: ${v.problem}` : ''}</small>`;
}

export function backupsPage(viewer: Viewer, source: string, overview: SourceOverview | undefined, all: readonly BackupRow[], filters: BackupFilters, pitrAt: string | undefined): SafeHtml {
  const rows = applyFilters(all, filters);
  const labels = [...new Set(all.flatMap((r) => r.labels))].sort();
  const kinds = [...new Set(all.map((r) => r.kind))].sort();
  const option = (value: string, label: string, current: string | undefined) => html`<option value="${value}"${current === value ? html` selected` : ''}>${label}</option>`;
  const b = viewer.base;
  const path = `${b}/sources/${encodeURIComponent(source)}`;
  const window = overview?.status.pitr.window;
  const staleDrills = (overview?.status.findings ?? []).filter((f) => /(RESTORE_TEST|PITR_DRILL)_TOO_OLD|RESTORE_TEST_FAILED/.test(f.code));
  return html`<h1>Backups of ${source}</h1>
<p><a href="${path}/runbook">Disaster-recovery runbook</a>${staleDrills.length > 0 ? html` <span class="fail">(its drills are stale: ${staleDrills.map((f) => f.message).join('; ')})</span>` : ''}</p>
${repositoryUsage(overview)}<form method="get" action="${path}" class="filters" aria-label="Filter backups">
<label>Kind <select name="kind">${option('', 'any', filters.kind ?? '')}${kinds.map((k) => option(k, k, filters.kind))}</select></label>
<label>Label <select name="label">${option('', 'any', filters.label ?? '')}${labels.map((l) => option(l, l, filters.label))}</select></label>
<label>Verification <select name="verification">${option('', 'any', filters.verification ?? '')}${option('ok', 'passed', filters.verification)}${option('failed', 'failed', filters.verification)}${option('never', 'never', filters.verification)}</select></label>
<label><input type="checkbox" name="pinned" value="1"${filters.pinned ? html` checked` : ''}> Pinned only</label>
<label>Id or name <input type="search" name="q" value="${filters.q ?? ''}"></label>
<button type="submit">Filter</button>
</form>
${backupChart(rows)}
<h2>${rows.length} of ${all.length} backups</h2>
<div class="table-wrap"><table id="backups">
<thead><tr><th scope="col">Id</th><th scope="col">Kind</th><th scope="col">Labels</th><th scope="col" class="num">Dumped</th><th scope="col" class="num">Stored</th><th scope="col" class="num">Duration</th><th scope="col">Verification</th><th scope="col">Repositories</th><th scope="col">Restore</th>${viewer.loggedIn ? html`<th scope="col">Actions</th>` : ''}</tr></thead>
<tbody>
${[...rows].reverse().map(
  (r, i) => html`<tr data-backup="${r.id}">
<th scope="row">${r.id}${r.pinned ? html` <span class="badge pin" title="pinned: prune never deletes it">pinned</span>` : ''}<br><small>${when(r.finishedAt, viewer.now)}</small></th>
<td data-label="Kind">${r.kind}</td><td data-label="Labels">${r.labels.join(', ')}</td><td class="num" data-label="Dumped">${formatBytes(r.rawBytes)}</td><td class="num" data-label="Stored">${r.addedBytes !== undefined ? html`<span title="deduplicated: what this backup added to the repository's storage; the rest was already there">+${formatBytes(r.addedBytes)} added</span>` : formatBytes(r.storedBytes)}</td><td class="num" data-label="Duration">${formatDuration(r.durationMs)}</td>
<td data-label="Verification">${verificationCell(r, viewer.now)}</td><td data-label="Repositories">${r.repositories.map((l) => html`<div>${l}</div>`)}</td>
<td data-label="Restore"><details><summary>Command</summary>${copyable(restoreCommand(source, r), `restore-${i}`, `restore command of ${r.id}`)}</details></td>
${viewer.loggedIn ? html`<td data-label="Actions"><div class="row-actions">${actionLink(viewer, r.pinned ? 'unpin' : 'pin', source, r.pinned ? 'Unpin' : 'Pin', r.id)}${actionLink(viewer, 'restore-test', source, 'Restore test', r.id)}</div></td>` : ''}
</tr>`,
)}
</tbody></table></div>
<section aria-labelledby="pitr-title"><h2 id="pitr-title">Point-in-time recovery</h2>
<p>${window ? html`Recoverable from ${when(window.from, viewer.now)} to ${when(window.to, viewer.now)}.` : 'No PITR window yet: this source has no physical backup with archived WAL. Restore a logical backup above instead.'}</p>
<form method="get" action="${path}" class="filters"><label>Recover to (UTC) <input type="datetime-local" name="at" step="1" value="${pitrAt ?? ''}"></label><button type="submit">Show command</button></form>
${pitrAt ? copyable(pitrCommand(source, `${pitrAt.replace('T', ' ')}+00`), 'pitr-command', 'point-in-time recovery command') : ''}
</section>`;
}

/** Each deduplicating repository of the source: its backups' logical size, what it stores, the ratio. */
function repositoryUsage(overview: SourceOverview | undefined): SafeHtml | string {
  const rows = (overview?.status.repositories ?? []).flatMap((r) => (r.usage ? [{ location: r.location, usage: r.usage }] : []));
  if (rows.length === 0) return '';
  return html`<section aria-labelledby="dedup-title" id="deduplication"><h2 id="dedup-title">Deduplication</h2><ul>${rows.map(
    ({ location, usage: u }) =>
      html`<li data-repository="${location}"><span class="id">${location}</span>: ${formatBytes(u.logicalBytes)} in ${u.backups} backup${u.backups === 1 ? '' : 's'} (all sources) stored in ${formatBytes(u.storedBytes)}, <strong data-ratio="${u.dedupRatio === null ? '' : u.dedupRatio.toFixed(2)}">${u.dedupRatio === null ? 'no ratio yet' : `ratio ${u.dedupRatio.toFixed(1)}×`}</strong>${u.markedPacks > 0 ? html`; ${formatBytes(u.markedBytes)} marked unused by prune` : ''}</li>`,
  )}</ul></section>`;
}

function progressOf(j: JobView): SafeHtml {
  const fraction = j.totalBytes ? Math.min(1, j.bytes / j.totalBytes) : undefined;
  return html`${fraction !== undefined ? html`<progress max="1" value="${fraction.toFixed(3)}" aria-label="job ${j.id} progress">${Math.round(fraction * 100)}%</progress> ` : ''}${formatBytes(j.bytes)}${j.totalBytes ? ` of ${formatBytes(j.totalBytes)}` : ''}${j.rate ? ` · ${formatBytes(j.rate)}/s` : ''}`;
}

export function jobsFragment(viewer: Viewer, jobs: readonly JobView[]): SafeHtml {
  const running = jobs.filter((j) => j.state === 'running');
  const recent = jobs.filter((j) => j.state !== 'running');
  return html`<div id="jobs" hx-get="${viewer.base}/fragments/jobs" hx-trigger="${every(polling.jobsMs)}" hx-swap="outerHTML">
<h2>Running</h2>
${running.length === 0 ? html`<p class="muted">No job is running.</p>` : html`<div class="table-wrap"><table><thead><tr><th scope="col">Job</th><th scope="col">Source</th><th scope="col">Kind</th><th scope="col">Phase</th><th scope="col">Progress</th><th scope="col">Started</th></tr></thead><tbody>
${running.map((j) => html`<tr data-job="${j.id}" data-state="running"><th scope="row">${j.id}</th><td>${j.source}</td><td>${j.kind}</td><td>${j.phase ?? 'starting'}</td><td>${progressOf(j)}</td><td>${when(j.startedAt, viewer.now)}</td></tr>`)}
</tbody></table></div>`}
<h2>Recent</h2>
${recent.length === 0 ? html`<p class="muted">No finished job yet.</p>` : html`<div class="table-wrap"><table><thead><tr><th scope="col">Job</th><th scope="col">Source</th><th scope="col">Kind</th><th scope="col">Result</th><th scope="col">Backup</th><th scope="col">Bytes</th><th scope="col">Took</th></tr></thead><tbody>
${recent.map((j) => html`<tr data-job="${j.id}" data-state="${j.state}"><th scope="row">${j.id}</th><td>${j.source}</td><td>${j.kind}</td><td class="${j.state === 'succeeded' ? 'pass' : 'fail'}">${j.state === 'succeeded' ? '✔ succeeded' : html`\u2718 failed: <span class="error">${j.error?.code}: ${j.error?.message}</span>`}</td><td>${j.backupId ?? ''}</td><td class="num">${formatBytes(j.bytes)}</td><td class="num">${j.finishedAt ? formatDuration(Date.parse(j.finishedAt) - Date.parse(j.startedAt)) : ''}</td></tr>`)}
</tbody></table></div>`}
</div>`;
}

const ACTION_TEXT: Record<string, (source: string, backup: string | undefined) => string> = {
  backup: (s) => `Take a backup of ${s} now?`,
  'restore-test': (s, b) => `Restore backup ${b ?? 'latest'} of ${s} into a scratch database and check it now?`,
  pin: (s, b) => `Pin backup ${b} of ${s}? Prune will never delete it until it is unpinned.`,
  unpin: (s, b) => `Unpin backup ${b} of ${s}? Prune may then delete it under the retention policy.`,
};

export function isAction(action: string): boolean {
  return Object.hasOwn(ACTION_TEXT, action);
}

/** The confirmation dialog of an action: a real form, so it works without JavaScript too. */
export function confirmPage(viewer: Viewer, action: string, source: string, backup: string | undefined, back: string, overlay = false): SafeHtml {
  const dialog = html`<dialog open aria-modal="true" aria-labelledby="confirm-title" class="confirm">
<h1 id="confirm-title">Please confirm</h1>
<p>${ACTION_TEXT[action]!(source, backup)}</p>
<form method="post" action="${viewer.base}/actions/${action}">
<input type="hidden" name="csrf" value="${viewer.csrf}">
<input type="hidden" name="source" value="${source}">
${backup ? html`<input type="hidden" name="backup" value="${backup}">` : ''}
<button type="submit" autofocus>Confirm</button> <a class="button secondary" href="${back}" data-close-dialog>Cancel</a>
</form>
</dialog>`;
  return overlay ? html`<div class="backdrop">${dialog}</div>` : dialog;
}

export function loginPage(viewer: Viewer, error: string | undefined): SafeHtml {
  if (!viewer.canLogin) {
    return html`<h1>Read-only dashboard</h1><p>No API token is configured, so actions are disabled. Set <code>PGKEEP_API_TOKEN</code> to enable them.</p>`;
  }
  return html`<h1>Log in</h1>
${error ? html`<p class="fail" role="alert">${error}</p>` : ''}
<form method="post" action="${viewer.base}/login" class="login">
<label for="token">API token</label>
<input id="token" name="token" type="password" autocomplete="current-password" required>
<button type="submit">Log in</button>
</form>`;
}

export function messagePage(title: string, message: string, back: string): SafeHtml {
  return html`<h1>${title}</h1><p role="alert">${message}</p><p><a href="${back}">Back</a></p>`;
}
