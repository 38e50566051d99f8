import { formatAge } from '../format/human-format.js';
import { drillKindOf, type Verification } from '../repository/verification.js';

/** Human formatting for the terminal; --json output never goes through here. */

// Sizes, durations, ages and counts are plain text that the status checks and the
// dashboard use too: they live below every layer, in src/format/.
export { formatAge, formatBytes, formatCount, formatDuration } from '../format/human-format.js';

/** A plain text table with left-aligned columns (right-aligned where `right` says). */
export function formatTable(headers: string[], rows: string[][], right: number[] = []): string {
  const widths = headers.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((c, i) => (right.includes(i) ? c.padStart(widths[i]!) : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(headers), ...rows.map(line)].join('\n');
}

/** "restore ok 2h ago", "integrity ok 5m ago", "FAILED restore 1d ago", or "-" when never verified. */
export function verificationLabel(v: Verification | undefined): string {
  if (!v) return '-';
  // a PITR drill is told apart: status judges its age on its own
  const what = v.kind !== 'restore-test' ? 'integrity' : drillKindOf(v) === 'pitr-drill' ? 'pitr-drill' : 'restore';
  const age = formatAge(new Date(v.finishedAt));
  return v.ok ? `${what} ok ${age}` : `FAILED ${what} ${age}`;
}
