import type pg from 'pg';
import { configuredSources, resolveSource, scratchConnection, toolPaths, verifySettings, type Settings } from '../config/settings.js';
import { isPgkeepError, PgkeepError } from '../errors.js';
import type { AgeIdentity } from '../pipeline/age.js';
import { describeConnection, serverLabel, withDatabase, type ConnectionInfo } from '../postgres/connection-info.js';
import { createDatabase, dropDatabase, fitIdentifier } from '../postgres/database-admin.js';
import { connect, withClient, type PgClient } from '../postgres/pg-client.js';
import { startScratchCluster, type ScratchCluster } from '../postgres/scratch-cluster.js';
import { databaseExists } from '../postgres/server-info.js';
import type { LogicalManifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import { compareMigrations, type MigrationComparison } from './migrations.js';
import {
  compareSchema,
  compareTables,
  describeProbeFailure,
  runAmcheck,
  runProbes,
  type AmcheckResult,
  type Problem,
  type ProbeResult,
  type SchemaComparison,
  type TableComparison,
} from './restore-checks.js';
import type { CommandContext } from '../registry/command-context.js';
import { createSelectedSchemas } from '../restore/create-selected-schemas.js';
import { loadData } from '../restore/load-data.js';
import { recordedState } from '../restore/recorded-state.js';
import { rm } from 'node:fs/promises';
import { makeTempFolder } from '../local/temp-folders.js';
import * as path from 'node:path';
import { applyDatabaseState, describeLocale, missingRoles, rolesNamed } from '../postgres/database-state.js';
import { checkRestoredSchema, describeSchemaDifferences, SchemaCapture, selectionArgs } from './schema-compare.js';
import { markDatabase, newMarker, unmarkDatabase } from '../postgres/restore-leftovers.js';

export type ScratchKind = 'same-server' | 'local' | 'url';

export interface RestoreTestOptions {
  /** same-server, local, or a postgresql:// URL; default: the config's verify.scratch, else same-server when the role may create databases, else local. */
  scratch?: string | undefined;
  deep?: boolean | undefined;
  jobs?: number | undefined;
  /** The dump's `pg_restore --list` output, when the integrity check read one (custom and directory formats). */
  toc?: string | undefined;
}

export interface RestoreTestReport {
  scratch: { kind: ScratchKind; database: string; server: string };
  /** Creating the scratch database and loading the backup: a measured RTO for this backup. */
  restoreMs: number;
  tables: TableComparison[];
  /** Null for plain-format dumps, which have no table of contents to compare with. */
  schema: SchemaComparison | null;
  /** The whole schema (definitions, owners, privileges: pg_dump --schema-only) against the backup's; compared false with a note when it could not be fair. */
  schemaDump: { compared: boolean; objects: number; differences: number; ms: number };
  /** The database-level state (owner, privileges, comment, settings, locale) given to the scratch database and read back; null for backups of older pgkeep. */
  databaseState: { differences: string[]; ms: number } | null;
  migrations: MigrationComparison;
  probes: ProbeResult[];
  deep: { compared: number; withoutChecksum: number; amcheck: AmcheckResult } | null;
  problems: Problem[];
  /** Things not checked and why (a plain dump's schema, a backup without checksums, amcheck skipped). */
  notes: string[];
}

/**
 * Restores a backup into a scratch database and proves it, then drops the
 * scratch whatever happened (success, failure, SIGINT/SIGTERM):
 *
 *  1. choose where: a database pgkeep_verify_<id> on the source's server, on
 *     a throwaway local cluster, or on a dedicated server (URL)
 *  2. create it (a leftover of a killed test, with no sessions, is dropped first)
 *  3. load the backup with the restore machinery (checksums checked while streaming);
 *     elsewhere than the source's server without owners and privileges, whose roles are not there
 *  4. ANALYZE; compare every table's exact row count (and with --deep its
 *     content hash) with the manifest; the schema objects with the dump's TOC;
 *     the migration table with the state recorded at backup time; run the probes;
 *     with --deep run pg_amcheck
 *  5. drop the scratch database (and stop the local cluster)
 *
 * Mismatches do not throw: they are returned in `problems`, first mismatch first.
 */
export async function runRestoreTest(
  ctx: CommandContext,
  repository: Repository,
  manifest: LogicalManifest,
  identities: AgeIdentity[],
  options: RestoreTestOptions,
): Promise<RestoreTestReport> {
  const { settings, signal } = ctx;
  const tools = toolPaths(settings);
  const config = verifySettings(settings, manifest.source);
  const notes: string[] = [];
  const state = await recordedState(repository, manifest, identities, signal);

  // 1. where
  const scratch = await chooseScratch(ctx, manifest, options.scratch ?? config.scratch);
  const database = fitIdentifier(`pgkeep_verify_${manifest.id.toLowerCase().replace(/[^a-z0-9_]/g, '_')}`, '');
  const admin = withDatabase(scratch.connection, scratch.connection.database === database ? 'postgres' : scratch.connection.database);
  const target = withDatabase(scratch.connection, database);
  ctx.info(`restore test of ${manifest.id}: restoring into "${database}" on ${scratch.label}`);
  const sourceMajor = Math.floor(manifest.server.versionNum / 10000);
  if (scratch.cluster && Number(scratch.cluster.version) < sourceMajor) {
    notes.push(`the local scratch server (PostgreSQL ${scratch.cluster.version}) is older than the backup's server (${manifest.server.version}): install the server programs of PostgreSQL ${sourceMajor} (or set PG_BIN) if the restore fails on newer syntax`);
    ctx.warn(notes.at(-1)!);
  }

  let created = false;
  let localeKept = true;
  const captureDir = await makeTempFolder(tools.tempDir, 'schema');
  try {
    // 2. a fresh scratch database
    let started = Date.now();
    await withClient(
      admin,
      async (client) => {
        if (await databaseExists(client, database)) await dropLeftover(ctx, client, database);
        started = Date.now();
        // Set first: an interrupted CREATE DATABASE may still complete on the server.
        created = true;
        const { localeKept: kept } = await createDatabase(client, database, state ?? manifest.database).catch((error: unknown) => {
          if (isPgkeepError(error, 'DB_EXISTS')) created = false; // someone else's: never drop it
          throw error;
        });
        localeKept = kept;
        if (!kept) notes.push(`locale ${describeLocale(state ?? manifest.database)} is not available on the scratch server: restored with its default locale`);
        // Marked as pgkeep's: a killed restore test leaves a database the next restore or prune removes.
        await markDatabase(client, database, newMarker(database, null, manifest.id));
      },
      signal,
    );

    // 3. load it
    await createSelectedSchemas(manifest, target);
    const elsewhere = scratch.kind !== 'same-server';
    const capture = new SchemaCapture(captureDir);
    await loadData(ctx, { repository, manifest, identities, target, options: { jobs: options.jobs, noOwner: elsewhere, noAcl: elsewhere }, source: tools, capture });
    const restoreMs = Date.now() - started;

    // 4. prove it
    const client = await connect(target, signal);
    try {
      ctx.info(`restored in ${Math.round(restoreMs / 100) / 10} s; checking`);
      // The restored relations, in one statement: the scratch database is dropped afterwards, and its system
      // catalogs (CREATE DATABASE's copy of template0 and the restored DDL) say nothing about the backup; a
      // database-wide ANALYZE spent most of its time on them (the awkward test fixture: 50 ms, against 10 for its own tables).
      const restored = await client.query<{ name: string }>(
        `SELECT format('%I.%I', n.nspname, c.relname) AS name
           FROM pg_catalog.pg_class c JOIN pg_catalog.pg_namespace n ON n.oid = c.relnamespace
          WHERE c.relkind IN ('r', 'm', 'p') AND c.relpersistence <> 't' AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%'`,
      );
      if (restored.rows.length > 0) await client.query(`ANALYZE ${restored.rows.map((r) => r.name).join(', ')}`);
      const problems: Problem[] = [];
      const deep = Boolean(options.deep);
      const { tables, problems: tableProblems } = await compareTables(client, manifest.tables, { deep, signal });
      problems.push(...tableProblems);

      // The whole schema, owners and privileges included (without them elsewhere: the roles are not there).
      const serverVersionNum = Number((await client.query<{ v: string }>("SELECT current_setting('server_version_num') AS v")).rows[0]!.v);
      const noOwner = elsewhere || manifest.options.noOwner;
      const noAcl = elsewhere || manifest.options.noAcl;
      const schemaCheck = await checkRestoredSchema(
        capture,
        target,
        { noOwner, noAcl, selection: selectionArgs(manifest.options), backupPgDump: manifest.tools.pgDump, backupServerVersionNum: manifest.server.versionNum, serverVersionNum, pgBin: tools.pgBin },
        signal,
      );
      if (schemaCheck.note) notes.push(schemaCheck.note);
      if (schemaCheck.differences.length > 0) problems.push({ code: 'VERIFY_FAILED', message: `the restored schema differs from the backup's: ${describeSchemaDifferences(schemaCheck.differences)}` });

      let schema: SchemaComparison | null = null;
      if (options.toc !== undefined) {
        schema = await compareSchema(client, options.toc);
        if (schema.missing.length > 0) {
          problems.push({ code: 'VERIFY_FAILED', message: `the restored database lacks ${schema.missing.length} object(s) the dump lists: ${schema.missing.slice(0, 3).join(', ')}${schema.missing.length > 3 ? ', …' : ''}` });
        }
      } else {
        notes.push(manifest.options.format === 'plain' ? 'schema objects not compared: a plain-format dump has no table of contents' : 'schema objects not compared: the table of contents was not read');
      }

      const migrations = await compareMigrations(client, manifest.migrations);
      for (const message of migrations.problems) problems.push({ code: 'VERIFY_FAILED', message });

      const probes = await runProbes(client, config.probes);
      probes.forEach((p, i) => {
        if (!p.ok) problems.push({ code: 'VERIFY_FAILED', message: describeProbeFailure(p, i) });
      });

      let deepReport: RestoreTestReport['deep'] = null;
      if (deep) {
        const withChecksum = manifest.tables.filter((t) => t.rows !== null && t.checksum !== undefined).length;
        const withoutChecksum = manifest.tables.filter((t) => t.rows !== null && t.checksum === undefined).length;
        if (withoutChecksum > 0) notes.push(`content of ${withoutChecksum} table(s) not compared: the backup has no checksums for them (take backups with --checksums)`);
        const amcheck = await runAmcheck(client, target, { pgBin: tools.pgBin, signal });
        if (amcheck.note) notes.push(amcheck.status === 'skipped' ? `amcheck skipped: ${amcheck.note}` : `amcheck: ${amcheck.note}`);
        if (!amcheck.ok) {
          const more = amcheck.findings.length > 1 ? ` (and ${amcheck.findings.length - 1} more finding(s))` : '';
          problems.push({ code: 'VERIFY_FAILED', message: `amcheck found corruption in the restored database: ${amcheck.findings[0] ?? 'see its report'}${more}` });
        }
        deepReport = { compared: withChecksum, withoutChecksum, amcheck };
      }

      // Last (it may revoke CONNECT and change the owner): the database-level state, given as a restore gives it, and read back.
      let databaseState: RestoreTestReport['databaseState'] = null;
      if (state) {
        const stateStarted = Date.now();
        const parts = { owner: !noOwner, acl: !noAcl, roleSettings: !elsewhere };
        const missing = await withClient(admin, (c) => missingRoles(c, rolesNamed(state, parts)), signal);
        // pgkeep's marker gives way to the backup's own comment for the comparison, then comes back
        // (best effort: the state may have given the database to a role the admin connection cannot act for).
        const compare = async (c: PgClient) => {
          await unmarkDatabase(c, database, null);
          const found = await applyDatabaseState(c, database, state, parts, { locale: localeKept });
          await markDatabase(c, database, newMarker(database, null, manifest.id)).catch(() => undefined);
          return found;
        };
        const differences =
          missing.length > 0 ? [`role(s) ${missing.join(', ')} named by the database's owner, privileges or settings do not exist on the scratch server`] : await withClient(admin, compare, signal);
        if (differences.length > 0) problems.push({ code: 'VERIFY_FAILED', message: `the restored database's own state differs from the backup: ${differences.slice(0, 3).join('; ')}${differences.length > 3 ? ` (and ${differences.length - 3} more)` : ''}` });
        if (elsewhere) notes.push('database owner, privileges and role settings not compared: the scratch server does not have the source\'s roles');
        databaseState = { differences, ms: Date.now() - stateStarted };
      } else {
        notes.push('database-level state not compared: the backup was made by a pgkeep that did not record it');
      }
      return {
        scratch: { kind: scratch.kind, database, server: scratch.label },
        restoreMs,
        tables,
        schema,
        schemaDump: { compared: schemaCheck.compared, objects: schemaCheck.objects, differences: schemaCheck.differences.length, ms: schemaCheck.ms },
        databaseState,
        migrations,
        probes,
        deep: deepReport,
        problems,
        notes,
      };
    } finally {
      await client.end().catch(() => undefined);
    }
  } finally {
    // 5. always: the scratch database, then a local cluster
    if (created) {
      await withClient(admin, (client) => dropDatabase(client, database)).catch((error: unknown) =>
        ctx.warn(`could not drop the scratch database "${database}" on ${scratch.label}: drop it by hand (${(error as Error).message})`),
      );
    }
    await scratch.cluster?.stop();
    await rm(captureDir, { recursive: true, force: true });
  }
}

interface Scratch {
  kind: ScratchKind;
  /** Administrative connection (an existing database of that server). */
  connection: ConnectionInfo;
  label: string;
  cluster?: ScratchCluster | undefined;
}

async function chooseScratch(ctx: CommandContext, manifest: LogicalManifest, requested: string | undefined): Promise<Scratch> {
  const { settings, signal } = ctx;
  if (requested === 'local') return localScratch(ctx, manifest);
  if (requested !== undefined && /^postgres(ql)?:\/\//.test(requested)) {
    const connection = scratchConnection(settings, requested);
    return { kind: 'url', connection, label: describeConnection(connection) };
  }
  if (requested !== undefined && requested !== 'same-server') {
    throw new PgkeepError('USAGE', `--scratch "${requested}" is not understood: use same-server, local, or a postgresql:// URL of a test server`);
  }
  const server = sourceConnection(settings, manifest);
  const connection = withDatabase(server, 'postgres');
  if (requested === 'same-server') return { kind: 'same-server', connection, label: serverLabel(connection) };
  // The default: the source's server when the role may create databases there, else a local cluster.
  try {
    const mayCreate = await withClient(
      connection,
      async (client) => (await client.query<{ ok: boolean }>('SELECT rolcreatedb OR rolsuper AS ok FROM pg_catalog.pg_roles WHERE rolname = current_user')).rows[0]?.ok === true,
      signal,
    );
    if (mayCreate) return { kind: 'same-server', connection, label: serverLabel(connection) };
    ctx.info(`role "${connection.user}" may not create databases on ${serverLabel(connection)}: restore-testing on a local scratch cluster`);
  } catch (error) {
    if (isPgkeepError(error, 'ABORTED')) throw error;
    ctx.info(`cannot use the source's server for the restore test (${(error as Error).message}): using a local scratch cluster`);
  }
  return localScratch(ctx, manifest);
}

async function localScratch(ctx: CommandContext, manifest: LogicalManifest): Promise<Scratch> {
  let superuser: string | undefined;
  try {
    superuser = sourceConnection(ctx.settings, manifest).user;
  } catch {
    superuser = undefined;
  }
  ctx.info('starting a local scratch PostgreSQL cluster');
  const cluster = await startScratchCluster({ ...toolPaths(ctx.settings), superuser, signal: ctx.signal });
  return { kind: 'local', connection: cluster.connection, label: `a local scratch cluster (PostgreSQL ${cluster.version})`, cluster };
}

/** The connection of the backup's source: --source, else the configured source of that name, else the settings' only one. */
function sourceConnection(settings: Settings, manifest: LogicalManifest): ConnectionInfo {
  const name = settings.options.source ?? (configuredSources(settings).includes(manifest.source) ? manifest.source : undefined);
  return resolveSource(name === undefined ? settings : { ...settings, options: { ...settings.options, source: name } }).connection;
}

/**
 * A scratch database of the same name exists: a restore test killed before it
 * could drop it, or one running now. Only an unused one is dropped.
 */
async function dropLeftover(ctx: CommandContext, client: pg.Client, database: string): Promise<void> {
  const sessions = Number((await client.query<{ n: string }>('SELECT count(*) AS n FROM pg_catalog.pg_stat_activity WHERE datname = $1', [database])).rows[0]!.n);
  if (sessions > 0) {
    throw new PgkeepError('DB_EXISTS', `scratch database "${database}" exists and is in use: another restore test of this backup is running; wait for it, or drop the database`);
  }
  ctx.info(`dropping "${database}", left by an interrupted restore test`);
  await dropDatabase(client, database);
}
