/**
 * The layering rules of eslint.config.js fire: each forbidden import (static,
 * re-export or import()) and each process.env read below the commands is an
 * error in the folder the rule covers, and the same line is allowed where
 * the layering allows it. Linted as text at made-up paths in src/, so the
 * check does not depend on today's tree being clean.
 */
import assert from 'node:assert/strict';
import { fileURLToPath } from 'node:url';
import { describe, it } from 'node:test';
import { ESLint } from 'eslint';

const root = fileURLToPath(new URL('../..', import.meta.url));
const eslint = new ESLint({ cwd: root });

async function problems(file: string, code: string): Promise<string[]> {
  const [result] = await eslint.lintText(code, { filePath: `${root}/${file}` });
  return result!.messages.map((m) => `${m.ruleId}: ${m.message}`);
}

async function forbidden(file: string, code: string, pattern: RegExp): Promise<void> {
  const found = await problems(file, code);
  assert.ok(found.some((p) => pattern.test(p)), `${file}: expected ${pattern} for ${JSON.stringify(code)}, got ${JSON.stringify(found)}`);
}

async function allowed(file: string, code: string): Promise<void> {
  assert.deepEqual(await problems(file, code), [], `${file}: ${JSON.stringify(code)} should pass`);
}

describe('layering rules (eslint.config.js)', () => {
  it('a command module never imports another; the CommandContext type comes from the registry', async () => {
    await forbidden('src/commands/zz-new.ts', "import { listCommand } from './list.js';", /never imports another command/);
    await forbidden('src/commands/zz-new.ts', "export { listCommand } from './list.js';", /never imports another command/);
    await forbidden('src/commands/zz-new.ts', "export const load = () => import('./list.js');", /never imports another command/);
    await allowed('src/commands/zz-new.ts', "import type { CommandContext } from '../registry/command-context.js';\nexport type C = CommandContext;");
  });

  it('the server reaches commands only through the registry', async () => {
    await forbidden('src/server/dashboard/zz-new.ts', "import type { listCommand } from '../../commands/list.js';", /only through the registry/);
    await forbidden('src/server/zz-new.ts', "export const load = () => import('../commands/backup.js');", /only through the registry/);
    await allowed('src/server/zz-new.ts', "import { runJobKind } from '../registry/run-job.js';\nexport { runJobKind };");
  });

  it('commands and the backup logic reach storage only through the repository', async () => {
    await forbidden('src/commands/zz-new.ts', "import { openStorage } from '../storage/open-storage.js';", /only through the repository/);
    await forbidden('src/restore/zz-new.ts', "import type { Storage } from '../storage/storage.js';", /only through the repository/);
    await forbidden('src/backup/zz-new.ts', "import type { Storage } from '../storage/storage.js';", /backup writer|through the repository/);
    await allowed('src/repository/zz-new.ts', "import type { Storage } from '../storage/storage.js';\nexport type S = Storage;");
  });

  it('a backup is written only through the backup writer above src/repository/', async () => {
    const piecemeal = 'export async function f(repo: any, m: any) { await repo.writeManifest(m); }';
    await forbidden('src/commands/zz-new.ts', piecemeal, /only through the backup writer/);
    await forbidden('src/backup/zz-new.ts', 'export const f = (repo: any) => repo.removeLeftovers(\'app\');', /only through the backup writer/);
    await allowed('src/repository/zz-new.ts', piecemeal);
    await allowed('src/backup/zz-new.ts', "export const f = (repo: any) => repo.beginBackup('app', 'logical', { command: 'backup', database: 'app' });");
  });

  it("the repository's storage stays in src/repository/ (Repository.storage is private)", async () => {
    await forbidden('src/restore/zz-new.ts', "import { storageOf } from '../repository/repository-storage.js';\nexport { storageOf };", /Repository\.storage is private/);
    await forbidden('src/commands/zz-new.ts', "export const load = () => import('../repository/repository-storage.js');", /Repository\.storage is private/);
    await allowed('src/repository/zz-new.ts', "import { storageOf } from './repository-storage.js';\nexport { storageOf };");
  });

  it('the pipeline and the storage drivers know no repository', async () => {
    await forbidden('src/pipeline/zz-new.ts', "import type { Manifest } from '../repository/manifest.js';", /knows no repository format/);
    await forbidden('src/pipeline/zz-new.ts', "import type { Storage } from '../storage/storage.js';", /no storage driver/);
    await forbidden('src/storage/zz-new.ts', "import { Repository } from '../repository/repository.js';", /only keys and bytes/);
  });

  it('config reads no one but errors.ts and the pure parsers', async () => {
    await forbidden('src/config/zz-new.ts', "import type { ScheduleEntry } from '../scheduler/scheduler.js';", /reads no one/);
    await forbidden('src/config/zz-new.ts', "import type { HealthThresholds } from '../status/health.js';", /reads no one/);
    await allowed('src/config/zz-new.ts', "import { parseDuration } from '../retention/duration.js';\nimport { PgkeepError } from '../errors.js';\nexport { parseDuration, PgkeepError };");
  });

  it('no layer below the CLI imports the CLI', async () => {
    await forbidden('src/status/zz-new.ts', "import { formatAge } from '../cli/format.js';", /formats for a terminal/);
    await forbidden('src/verify/zz-new.ts', "import { formatBytes } from '../cli/format.js';", /formats for a terminal/);
    await allowed('src/status/zz-new.ts', "import { formatAge } from '../format/human-format.js';\nexport { formatAge };");
  });

  it('nothing below the commands reads process.env; the CLI and the commands may', async () => {
    await forbidden('src/pipeline/zz-new.ts', "export const cli = process.env.PGKEEP_ZSTD === 'cli';", /process\.env/);
    await forbidden('src/storage/zz-new.ts', "const { env } = process;\nexport const attempts = env.PGKEEP_S3_MAX_ATTEMPTS;", /process\.env/);
    await allowed('src/cli/zz-new.ts', "export const zstd = process.env.PGKEEP_ZSTD;");
    await allowed('src/commands/zz-new.ts', "export const zstd = process.env.PGKEEP_ZSTD;");
  });
});
