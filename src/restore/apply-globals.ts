import type { ResolvedSource } from '../config/settings.js';
import { isPgkeepError, PgkeepError } from '../errors.js';
import type { AgeIdentity } from '../pipeline/age.js';
import { childStdinSink, discardSink } from '../pipeline/load-stream.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { libpqEnv, withDatabase } from '../postgres/connection-info.js';
import { GlobalsFilter, type GlobalsReport } from '../postgres/globals-sql.js';
import { withClient } from '../postgres/pg-client.js';
import { toolInfo } from '../postgres/pg-tools.js';
import { startProcess } from '../postgres/run-process.js';
import type { Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { CommandContext } from '../registry/command-context.js';
import { feedChild, RESTORE_ERROR_LINE } from './feed-child.js';

/**
 * restore --globals: applies the backup's roles (pg_dumpall --globals-only)
 * to the source's server before its database is restored, in one
 * transaction, creating only the roles that do not exist yet (GlobalsFilter).
 * With `apply` false it only reads the object and reports what it would do
 * (--dry-run). Every checksum of the object is checked either way.
 */
export async function applyGlobals(
  ctx: CommandContext,
  repository: Repository,
  manifest: Manifest,
  identities: AgeIdentity[],
  source: ResolvedSource,
  apply: boolean,
): Promise<GlobalsReport> {
  const object = manifest.objects.find((o) => o.role === 'globals');
  if (!object) {
    throw new PgkeepError('USAGE', `backup ${manifest.id} holds no roles (it was taken with --no-globals, or pg_dumpall could not read them): restore without --globals`);
  }
  const admin = withDatabase(source.connection, 'postgres');
  const existing = await withClient(admin, async (client) => new Set((await client.query<{ name: string }>('SELECT rolname AS name FROM pg_catalog.pg_roles')).rows.map((r) => r.name)), ctx.signal);
  const filter = new GlobalsFilter(existing);
  const options = { codec: defaultZstd(), signal: ctx.signal, identities };
  if (!apply) {
    filter.pipe(discardSink());
    await repository.loadObject(manifest, object, filter, options);
    return filter.report;
  }
  const psql = await toolInfo('psql', source.pgBin);
  // One transaction, opened and committed by the filter itself (see GlobalsFilter).
  const run = startProcess(psql.path, ['-X', '-q', '-v', 'ON_ERROR_STOP=1', '--no-password', '-d', admin.database, '-f', '-'], {
    env: libpqEnv(admin),
    signal: ctx.signal,
    isErrorLine: (line) => RESTORE_ERROR_LINE.test(line),
    stdin: 'pipe',
    stdout: 'ignore',
  });
  const sink = childStdinSink(run.stdin!);
  // Its failures are the load's: reported by the load and psql's exit status.
  sink.on('error', () => undefined);
  filter.pipe(sink);
  // A cut stream must not reach psql as a clean end (pipe() would leave it waiting): close its input, the COMMIT never sent.
  filter.on('close', () => {
    if (!filter.readableEnded) sink.destroy(new Error('the globals stream was cut short'));
  });
  try {
    await feedChild(repository.loadObject(manifest, object, filter, options), run);
  } catch (error) {
    // Damage keeps its code (exit 7; a restore from several repositories tries the next one).
    const code = isPgkeepError(error, 'CHECKSUM_MISMATCH') || isPgkeepError(error, 'ABORTED') ? error.code : 'RESTORE_FAILED';
    throw new PgkeepError(code, `the backup's roles were not created (they are applied in one transaction, nothing was changed): ${(error as Error).message}`, { cause: error });
  }
  return filter.report;
}
