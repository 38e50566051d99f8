#!/usr/bin/env node
// The system programs the test suite needs: the one list, used by `npm test`
// (before the suite starts) and by .ci/run.
//
//   node scripts/test-prerequisites.mjs           check; as root on Debian, install what is missing
//   node scripts/test-prerequisites.mjs --check   check only: never install
//
// Without what it needs, the suite would run for minutes and then fail or skip
// (the dashboard test without chromium, the age interop test without age):
// this stops in its first second instead, with the one command to run.
import { spawnSync } from 'node:child_process';
import { existsSync, readdirSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const onPath = (program, args = ['--version']) => spawnSync(program, args, { stdio: 'ignore' }).status === 0;
/** /usr/lib/postgresql/<N>/bin/<program> or /usr/share/postgresql/<N>/<file> of any installed major version. */
const inPostgresqlDirs = (root, file) => {
  try {
    return readdirSync(root).some((major) => existsSync(`${root}/${major}/${file}`));
  } catch {
    return false;
  }
};

/** What the tests need: what for, the Debian package that provides it, and how to tell it is there. */
export const PREREQUISITES = [
  { what: 'PostgreSQL server (initdb, postgres): every integration test starts its own cluster', debian: 'postgresql', present: () => inPostgresqlDirs('/usr/lib/postgresql', 'bin/initdb') },
  { what: 'PostgreSQL contrib extensions (the test databases use them)', debian: 'postgresql-contrib', present: () => inPostgresqlDirs('/usr/share/postgresql', 'extension/pgcrypto.control') },
  { what: 'PostgreSQL client programs (pg_dump, pg_restore, psql)', debian: 'postgresql-client', present: () => onPath('pg_dump') && onPath('pg_restore') && onPath('psql') },
  { what: 'zstd (the recovery-without-pgkeep recipes)', debian: 'zstd', present: () => onPath('zstd') },
  { what: 'python3 (docs/read-content-stream.py: reading the content store without pgkeep)', debian: 'python3', present: () => onPath('python3') },
  { what: 'age and age-keygen (encryption interoperability)', debian: 'age', present: () => onPath('age') && onPath('age-keygen') },
  { what: 'script from util-linux (tests on a terminal)', debian: 'bsdutils', present: () => onPath('script') },
  { what: 'chromium at /usr/bin/chromium (the dashboard end-to-end test)', debian: 'chromium', present: () => existsSync('/usr/bin/chromium') },
];

export function missingPrerequisites() {
  return PREREQUISITES.filter((p) => !p.present());
}

function main(args) {
  const missing = missingPrerequisites();
  if (missing.length === 0) return 0;
  const packages = missing.map((p) => p.debian);
  const canInstall = !args.includes('--check') && process.getuid?.() === 0 && existsSync('/usr/bin/apt-get');
  if (canInstall) {
    process.stderr.write(`test prerequisites: installing ${packages.join(' ')}\n`);
    const env = { ...process.env, DEBIAN_FRONTEND: 'noninteractive' };
    const update = spawnSync('apt-get', ['update'], { stdio: ['ignore', 'inherit', 'inherit'], env });
    const install = update.status === 0 && spawnSync('apt-get', ['install', '-y', '--no-install-recommends', ...packages], { stdio: ['ignore', 'inherit', 'inherit'], env });
    const still = missingPrerequisites();
    if (install && install.status === 0 && still.length === 0) return 0;
    process.stderr.write(`test prerequisites: apt-get could not install ${(still.length ? still : missing).map((p) => p.debian).join(' ')}\n`);
    return 1;
  }
  for (const p of missing) process.stderr.write(`test prerequisites: missing ${p.what}\n`);
  const sudo = process.getuid?.() === 0 ? '' : 'sudo ';
  process.stderr.write(`test prerequisites: run: ${sudo}apt-get update && ${sudo}apt-get install -y --no-install-recommends ${packages.join(' ')}\n`);
  return 1;
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) process.exitCode = main(process.argv.slice(2));
