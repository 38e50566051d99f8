import { DRILL_NAMES, type DrillKind, type Finding, type SourceStatus } from './health.js';

/** One repository of a source, as the runbook names it. */
export interface RunbookRepository {
  url: string;
  /** Outside this site (an object store); a lost site leaves only these. */
  offsite: boolean;
  encryption: { kind: 'none' } | { kind: 'passphrase' } | { kind: 'recipients'; recipients: string[] };
  dedup: boolean;
  /** The newest logical / physical backup is here. */
  holdsNewestLogical: boolean;
  holdsNewestPhysical: boolean;
  error: string | undefined;
}

/** What the runbook of one source is written from (read by the runbook command; no I/O here). */
export interface RunbookFacts {
  source: string;
  database: string;
  /** host:port of the source's server, never a password. */
  server: string | undefined;
  /** The source database as a libpq connection string for pg_restore and psql (host, port, dbname, user: never a password). */
  connection: string | undefined;
  /** The config file commands name (--config), when there is one. */
  configFile: string | undefined;
  repositories: RunbookRepository[];
  newestLogical: { id: string; finishedAt: string; format: string; serverVersion: string; largestTable: { schema: string; name: string; rows: number } | undefined; objects: { name: string; role: string; encrypted: boolean; content: boolean }[] } | undefined;
  newestPhysical: { id: string; finishedAt: string; serverVersion: string } | undefined;
  status: Pick<SourceStatus, 'drills' | 'pitr' | 'findings'>;
  /** Where the keys are expected, as configured here (paths and variable names, never a secret). */
  keys: { identityFile: string | undefined; passphraseFile: string | undefined; passphraseFromEnv: boolean };
  now: Date;
}

/** The finding status gives when a drill kind's newest success is older than its limit. */
const STALE_CODE: Record<DrillKind, Finding['code']> = {
  'logical-restore-test': 'RESTORE_TEST_TOO_OLD',
  'physical-restore-test': 'PHYSICAL_RESTORE_TEST_TOO_OLD',
  'pitr-drill': 'PITR_DRILL_TOO_OLD',
};

/** The drill kinds each scenario's RTO comes from. */
const SCENARIO_DRILLS: Record<'rows' | 'database' | 'server' | 'site', DrillKind[]> = {
  rows: ['logical-restore-test'],
  database: ['logical-restore-test'],
  server: ['pitr-drill', 'physical-restore-test', 'logical-restore-test'],
  site: ['pitr-drill', 'physical-restore-test', 'logical-restore-test'],
};

/**
 * The disaster-recovery runbook of one source, as markdown: the four
 * scenarios of the seeds' runbooks (rows or a table lost, a database
 * corrupted, the server lost, the site lost), each with the exact commands
 * for this installation in order, the measured RTO of the last drill that
 * covers it, the RPO the repositories give now, which repositories hold the
 * copies, the keys needed and where they are expected, and how to restore
 * without pgkeep. It says when a drill is missing or stale.
 */
export function runbookMarkdown(f: RunbookFacts): string {
  const out: string[] = [];
  const pgkeep = (args: string, repo?: string) => ['pgkeep', ...(f.configFile ? ['--config', sh(f.configFile)] : []), '--source', sh(f.source), ...(repo ? ['--repo', sh(repo)] : []), args].join(' ');
  const offsite = f.repositories.find((r) => r.offsite);
  const local = f.repositories.find((r) => !r.offsite) ?? f.repositories[0];
  const holders = (which: 'holdsNewestLogical' | 'holdsNewestPhysical') => f.repositories.filter((r) => r[which]).map((r) => r.url);
  const age = (iso: string) => ago(f.now.getTime() - Date.parse(iso));
  const stale = f.status.findings.filter((x) => Object.values(STALE_CODE).includes(x.code) || x.code === 'RESTORE_TEST_FAILED');

  out.push(`# Disaster recovery: ${f.source}`, '');
  out.push(`Written by \`pgkeep runbook\` on ${f.now.toISOString()} from this installation${f.configFile ? ` (${f.configFile})` : ''}. Run it again after a change; print it and keep a copy where the servers are not.`, '');
  out.push(`- Database: \`${f.database}\`${f.server ? ` on ${f.server}` : ''}${f.newestLogical ? `, PostgreSQL ${f.newestLogical.serverVersion}` : f.newestPhysical ? `, PostgreSQL ${f.newestPhysical.serverVersion}` : ''}.`);
  out.push(`- Repositories: ${f.repositories.map((r) => `\`${r.url}\` (${[r.offsite ? 'off-site' : 'on this site', describeEncryption(r), r.dedup ? 'deduplicating' : '', r.error ? `UNREADABLE: ${r.error}` : ''].filter(Boolean).join(', ')})`).join('; ')}.`);
  out.push(
    `- Newest logical backup: ${f.newestLogical ? `\`${f.newestLogical.id}\`, ${age(f.newestLogical.finishedAt)}, in ${holders('holdsNewestLogical').map((u) => `\`${u}\``).join(' and ')}` : '**none**'}.`,
    `- Newest physical backup: ${f.newestPhysical ? `\`${f.newestPhysical.id}\`, ${age(f.newestPhysical.finishedAt)}, in ${holders('holdsNewestPhysical').map((u) => `\`${u}\``).join(' and ')}` : 'none (no point-in-time recovery)'}.`,
    `- RPO now: ${rpoLine(f)}.`,
  );
  if (!offsite) out.push(`- **No off-site repository**: a lost site loses every backup. Add one (\`repos:\` in the config, an S3 bucket) and \`pgkeep copy\` to it.`);
  for (const finding of stale) out.push(`- **Drill warning:** ${finding.message}`);
  out.push('');

  const example = f.newestLogical?.largestTable;
  const table = example ? `${quoteIdent(example.schema)}.${quoteIdent(example.name)}` : 'public.mytable';
  out.push('## 1. Rows or a table lost (deleted, dropped, a bad migration)', '');
  out.push(rtoLine(f, 'rows'), '');
  if (!f.newestLogical) out.push('**There is no logical backup to restore from.** Take one: `' + pgkeep('backup') + '`.', '');
  out.push(`Put a table back as it was at the newest backup, in the live database, in one transaction (a safety backup is taken first). The example is the largest table, \`${table}\`: change the table in each line to the one you lost. A table restore leaves out the table's foreign keys to other tables (they are dropped with it): the second line puts them back from the backup (it restores nothing when there are none). Foreign keys of *other* tables that pointed at a dropped table went with it (DROP … CASCADE): add those tables' names the same way.`, '');
  const fkLine = example && f.connection ? [`${pgkeep('cat latest')} | pg_restore -l | grep ${sh(` FK CONSTRAINT ${example.schema} ${example.name} `)} > fk.list; ${pgkeep('cat latest')} | pg_restore -L fk.list --exit-on-error -d ${sh(f.connection)}`] : [];
  out.push('```sh', pgkeep(`restore latest --table ${sh(table)} --to ${sh(f.database)} --clean --force`), ...fkLine, '```', '');
  out.push(`Only some rows: write them out of the backup as SQL, look, and apply the file with psql (the \`--where\` is an example).`, '');
  out.push('```text', pgkeep(`extract latest --table ${sh(table)} --where ${sh('true')} --format sql --output restored-rows.sql`), '```', '');
  out.push(`Before a certain time (with physical backups and WAL): \`${pgkeep(`pitr --extract-table ${sh(table)} --target-time '2026-01-01 12:00:00+00' --output table.sql`)}\`.`, '');

  out.push('## 2. The database is corrupted or lost', '');
  out.push(rtoLine(f, 'database'), '');
  out.push(`Replace the whole database with the newest backup (restored under a temporary name, checked, then swapped in; the damaged one is kept in a safety backup first). \`--force\` confirms; leave it out to be asked.`, '');
  out.push('```sh', pgkeep(`restore latest --to ${sh(f.database)} --overwrite --force`), '```', '');
  out.push(`An older backup: \`${pgkeep('list')}\`, then the id instead of \`latest\`.`, '');

  const recoveryRepo = offsite ?? local;
  out.push('## 3. The server is lost', '');
  out.push(rtoLine(f, 'server'), '');
  out.push(`On a new server with PostgreSQL ${f.newestPhysical?.serverVersion.split('.')[0] ?? f.newestLogical?.serverVersion.split('.')[0] ?? '(the same major version)'} and pgkeep installed, with this config file and the keys below:`, '');
  if (f.newestPhysical && f.status.pitr.archiving) {
    out.push('Recover the newest physical backup and replay the archived WAL to its end (`--target-time` for an earlier point):', '');
    out.push('```text', pgkeep(`pitr --latest --pgdata /var/lib/postgresql/${f.newestPhysical.serverVersion.split('.')[0]}/main --start`, recoveryRepo?.url), '```', '');
    out.push(`The recovery window now: ${f.status.pitr.window ? `${f.status.pitr.window.from} to ${f.status.pitr.window.to}` : 'unknown'}.`, '');
  } else {
    out.push('No physical backup with archived WAL: restore the newest logical backup (its roles first, with `--globals`) into the new server, named in the config (or `--db postgresql://NEW-SERVER/postgres`):', '');
    out.push('```text', pgkeep(`restore latest --to ${sh(f.database)} --globals`, recoveryRepo?.url), '```', '');
  }

  out.push('## 4. The site is lost', '');
  out.push(rtoLine(f, 'site'), '');
  if (!offsite) {
    out.push('**Nothing is kept off this site: there is nothing to recover from.**', '');
  } else {
    out.push(`Everything comes from the off-site repository \`${offsite.url}\`${offsite.holdsNewestLogical || offsite.holdsNewestPhysical ? '' : ' — **which does not hold the newest backup**: run `' + pgkeep(`copy latest --to ${sh(offsite.url)}`) + '` after each backup (or list both in `repos:`)'}.`, '');
    out.push('On a machine elsewhere: install Node.js and pgkeep, give it the storage credentials (for S3: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_REGION`) and the key below, then:', '');
    out.push('```text', pgkeep('list', offsite.url), '```', '');
    out.push('and follow scenario 3 with that repository.', '');
  }

  out.push('## Keys', '');
  for (const r of f.repositories) out.push(`- \`${r.url}\`: ${keyLine(r, f.keys)}`);
  out.push('', 'Keep a copy of each key and passphrase where a lost site cannot take it (a password manager, a safe): without it the backups cannot be read, by pgkeep or anyone.', '');

  out.push('## Without pgkeep', '');
  out.push(withoutPgkeep(f));
  return out.join('\n').replace(/\n{3,}/g, '\n\n').trimEnd() + '\n';
}

function rpoLine(f: RunbookFacts): string {
  const parts: string[] = [];
  if (f.newestLogical) parts.push(`${span(f.now.getTime() - Date.parse(f.newestLogical.finishedAt))} of changes (restoring the newest logical backup)`);
  if (f.status.pitr.archiving && f.status.pitr.lastArchivedAt) parts.push(`${span(f.now.getTime() - Date.parse(f.status.pitr.lastArchivedAt))} with point-in-time recovery (the newest archived WAL)`);
  return parts.length > 0 ? parts.join('; ') : 'no backup yet: everything';
}

function rtoLine(f: RunbookFacts, scenario: keyof typeof SCENARIO_DRILLS): string {
  for (const kind of SCENARIO_DRILLS[scenario]) {
    const drill = f.status.drills[kind];
    if (!drill) continue;
    const pass = drill.lastSuccess;
    if (!pass) return `Measured RTO: **none**: the last ${DRILL_NAMES[kind]} failed (${drill.last.finishedAt}: ${drill.last.problem ?? 'see pgkeep status'}).`;
    const stale = f.status.findings.some((x) => x.code === STALE_CODE[kind]);
    return `Measured RTO: ${seconds(pass.restoreMs ?? pass.durationMs)} (${DRILL_NAMES[kind]} of ${pass.backupId}, ${ago(f.now.getTime() - Date.parse(pass.finishedAt))}${pass.rpoMs !== undefined ? `, RPO then ${span(pass.rpoMs)}` : ''})${stale ? ' — **stale: drill again**' : ''}.`;
  }
  return `Measured RTO: **never drilled**: \`pgkeep verify latest --restore-test\`${scenario === 'server' || scenario === 'site' ? ' (on a physical backup: `--pitr-drill`)' : ''} measures it.`;
}

function describeEncryption(r: RunbookRepository): string {
  return r.encryption.kind === 'none' ? 'not encrypted' : r.encryption.kind === 'passphrase' ? 'encrypted with a passphrase' : `encrypted to ${r.encryption.recipients.length} key(s)`;
}

function keyLine(r: RunbookRepository, keys: RunbookFacts['keys']): string {
  if (r.encryption.kind === 'none') return 'not encrypted: no key needed (anyone with access to the storage can read it).';
  if (r.encryption.kind === 'passphrase') {
    const where = keys.passphraseFile ? `here in \`${keys.passphraseFile}\`` : keys.passphraseFromEnv ? 'here in `PGKEEP_PASSPHRASE`' : 'not configured on this machine';
    return `the repository passphrase (\`PGKEEP_PASSPHRASE_FILE\` or \`PGKEEP_PASSPHRASE\`; ${where}).`;
  }
  const where = keys.identityFile ? `here at \`${keys.identityFile}\`` : 'not configured on this machine';
  return `the age identity of ${r.encryption.recipients.map((k) => `\`${k.slice(0, 16)}…\``).join(' or ')} (\`--identity\` or \`PGKEEP_AGE_IDENTITY_FILE\`; ${where}).${r.dedup ? ' Writing also needs it, or the content key (`PGKEEP_CONTENT_KEY_FILE`).' : ''}`;
}

function withoutPgkeep(f: RunbookFacts): string {
  const b = f.newestLogical;
  if (!b) return 'There is no logical backup to read by hand.\n';
  const repo = f.repositories.find((r) => r.holdsNewestLogical);
  const dump = b.objects.find((o) => o.role === 'dump');
  if (!repo || !dump) return 'The newest backup holds no dump object.\n';
  if (dump.content) {
    return [
      `\`${repo.url}\` deduplicates: the dump is chunks in packs. \`docs/read-content-stream.py\` (Python 3 and zstd) writes it back from the repository folder and the stream ref in the manifest:`,
      '',
      '```text',
      `python3 read-content-stream.py ${sh(repo.url)} "$(jq -c '.objects[] | select(.role=="dump") | .content' ${sh(`${repo.url}/sources/${f.source}/backups/${b.id}/manifest.json`)})" | pg_restore -d NEWDB`,
      '```',
      '',
    ].join('\n');
  }
  const object = `${repo.url}/sources/${f.source}/backups/${b.id}/${dump.name}`;
  const restore = b.format === 'plain' ? 'psql -d NEWDB' : 'pg_restore -d NEWDB';
  return [
    `The newest backup's dump is one file (zstd${dump.encrypted ? ' inside age' : ''}); its SHA-256 is in \`manifest.json\` beside it.`,
    '',
    '```text',
    dump.encrypted ? `age -d -i KEY.txt ${sh(object)} | zstd -d | ${restore}` : `zstd -d < ${sh(object)} | ${restore}`,
    '```',
    '',
  ].join('\n');
}

/** A duration the way a person reads it: "42 s", "3 min", "5 h", "2 days". */
function span(ms: number): string {
  const s = Math.max(0, Math.round(ms / 1000));
  if (s < 120) return `${s} s`;
  if (s < 7200) return `${Math.round(s / 60)} min`;
  if (s < 172_800) return `${Math.round(s / 3600)} h`;
  return `${Math.round(s / 86_400)} days`;
}

function ago(ms: number): string {
  return `${span(ms)} ago`;
}

function seconds(ms: number): string {
  return ms < 120_000 ? `${(ms / 1000).toFixed(1)} s` : `${Math.round(ms / 60_000)} min`;
}

/** A shell word: as is when safe, else in single quotes. */
function sh(word: string): string {
  return /^[A-Za-z0-9_./:@%+=,-]+$/.test(word) ? word : `'${word.replace(/'/g, `'\\''`)}'`;
}

/** An SQL identifier as pg_dump patterns take it: quoted unless lower-case plain. */
function quoteIdent(name: string): string {
  return /^[a-z_][a-z0-9_]*$/.test(name) ? name : `"${name.replace(/"/g, '""')}"`;
}

/** The markdown as HTML (headings, lists, code, paragraphs), every piece of text escaped: the dashboard's runbook page. */
export function runbookBody(markdown: string): string {
  const esc = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
  const inline = (t: string) => esc(t).replace(/`([^`]+)`/g, '<code>$1</code>').replace(/\*\*([^*]+)\*\*/g, '<strong>$1</strong>');
  const body: string[] = [];
  let list = false;
  let code: string[] | undefined;
  for (const line of markdown.split('\n')) {
    if (code) {
      if (line.startsWith('```')) {
        body.push(`<pre><code>${esc(code.join('\n'))}</code></pre>`);
        code = undefined;
      } else code.push(line);
      continue;
    }
    if (line.startsWith('```')) {
      code = [];
      continue;
    }
    if (!line.startsWith('- ') && list) {
      body.push('</ul>');
      list = false;
    }
    const heading = /^(#{1,3}) (.*)$/.exec(line);
    if (heading) body.push(`<h${heading[1]!.length}>${inline(heading[2]!)}</h${heading[1]!.length}>`);
    else if (line.startsWith('- ')) {
      if (!list) body.push('<ul>');
      list = true;
      body.push(`<li>${inline(line.slice(2))}</li>`);
    } else if (line.trim() !== '') body.push(`<p>${inline(line)}</p>`);
  }
  if (list) body.push('</ul>');
  return body.join('\n');
}

/** The markdown as a page of its own (--format html). */
export function runbookHtml(markdown: string, title: string): string {
  const esc = (t: string) => t.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
  return `<!doctype html><html lang="en"><head><meta charset="utf-8"><title>${esc(title)}</title><style>body{font:15px/1.5 system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem}pre{background:#f4f4f4;padding:.75rem;overflow-x:auto}code{font-family:ui-monospace,monospace}</style></head><body>${runbookBody(markdown)}</body></html>\n`;
}
