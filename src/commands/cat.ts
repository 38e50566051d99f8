import { existsSync } from 'node:fs';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import * as path from 'node:path';
import { Writable } from 'node:stream';
import { z } from 'zod';
import { PgkeepError } from '../errors.js';
import { defaultZstd } from '../pipeline/zstd.js';
import { requestParser, type CommandSpec } from '../registry/command-spec.js';
import type { BackupObject, Manifest } from '../repository/manifest.js';
import { openRepository } from '../repository/open-repository.js';
import { identitiesFor } from '../repository/repository-keys.js';
import type { CommandContext } from '../registry/command-context.js';

export interface CatRequest {
  backup: string;
  /** The object's name in the manifest ("dump.zst", "globals.sql.zst.age") or its role ("dump", "globals", "base"); default: the dump (or base). */
  object?: string | undefined;
  /** Where to write; never overwritten. Without it, stdout. */
  output?: string | undefined;
}

export interface CatResult {
  backup: string;
  source: string;
  object: string;
  bytes: number;
  output: string | null;
}

/**
 * `pgkeep cat`: the escape hatch. Writes one object of a backup as it was
 * before pgkeep stored it (decrypted, decompressed, put together from the
 * content store's chunks), checked against the manifest as it streams: the
 * custom-format dump for pg_restore, the base backup's tar, the globals SQL.
 */
export async function runCat(ctx: CommandContext, request: CatRequest): Promise<CatResult> {
  // 1. where to write: refused before anything is read
  if (request.output !== undefined && existsSync(request.output)) {
    throw new PgkeepError('OUTPUT_EXISTS', `${request.output} already exists: choose another --output (pgkeep never overwrites it)`);
  }
  if (request.output === undefined && !ctx.stdout) throw new PgkeepError('USAGE', 'cat writes to stdout or --output FILE');

  // 2. the backup and the object
  const source = ctx.settings.options.source;
  const repository = await openRepository(ctx.settings, { source });
  const manifest = await repository.resolveBackup(request.backup, source);
  const object = chooseObject(manifest, request.object);
  const identities = await identitiesFor(repository, manifest, ctx.keys);

  // 3. stream it: into a temporary file renamed at the end, or onto stdout (left open)
  const temp = request.output === undefined ? undefined : path.join(path.dirname(path.resolve(request.output)), `.${path.basename(request.output)}.pgkeep-${process.pid}.tmp`);
  let bytes = 0;
  const sink = temp === undefined ? keepOpen(ctx.stdout!) : createWriteStream(temp, { flags: 'wx', mode: 0o600 });
  try {
    await repository.loadObject(manifest, object, sink, { codec: defaultZstd(), identities, signal: ctx.signal, onRawBytes: (n) => (bytes = n) });
    if (temp !== undefined) await rename(temp, request.output!);
  } catch (error) {
    if (temp !== undefined) await rm(temp, { force: true });
    throw error;
  }
  return { backup: manifest.id, source: manifest.source, object: object.name, bytes, output: request.output ?? null };
}

function chooseObject(manifest: Manifest, wanted: string | undefined): BackupObject {
  const objects = manifest.objects;
  const found = wanted === undefined ? (objects.find((o) => o.role === 'dump' || o.role === 'base') ?? objects[0]) : (objects.find((o) => o.name === wanted) ?? objects.find((o) => o.role === wanted));
  if (!found) {
    throw new PgkeepError('USAGE', `backup ${manifest.id} has no object ${wanted ?? ''}: it has ${objects.map((o) => `${o.name} (${o.role})`).join(', ')}`);
  }
  if (wanted === undefined && manifest.kind === 'logical' && manifest.options.format === 'directory') {
    throw new PgkeepError('USAGE', `backup ${manifest.id} is a directory-format dump of ${objects.length} files: name one with --object (${objects.map((o) => o.name).join(', ')})`);
  }
  return found;
}

/** The caller's stdout as a sink that is never ended (the CLI writes its own output after). */
function keepOpen(stdout: Writable): Writable {
  return new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (stdout.write(chunk)) callback();
      else stdout.once('drain', () => callback());
    },
  });
}

const CatCommandRequest = z.object({ backup: z.string(), object: z.string().optional(), output: z.string().optional() });

/** `pgkeep cat ID|latest [--object NAME] [--output FILE]`. */
export const catCommand: CommandSpec<z.output<typeof CatCommandRequest>, CatResult> = {
  name: 'cat',
  description: 'write one object of a backup as it was before it was stored (e.g. the dump, for pg_restore)',
  arguments: [{ name: '<backup>', description: 'backup id, or latest' }],
  options: [
    { flags: '--object <name>', description: 'object name or role (dump, globals, database-state, base); default: the dump or base backup' },
    { flags: '--output <file>', description: 'write here (never overwritten; default: stdout)' },
  ],
  help: { globals: ['config', 'repo', 'source', 'identity'], examples: ['pgkeep cat latest | pg_restore -d newdb', 'pgkeep cat latest --object globals --output globals.sql'] },
  parse: requestParser(CatCommandRequest, ({ args, options }) => ({ backup: args[0], object: options.object, output: options.output })),
  run: (ctx, request) => runCat(ctx, request),
  print(result, out) {
    // the bytes went to stdout: nothing else goes there, not even --json
    if (result.output === null) return;
    if (out.json) return out.document(result);
    out.line(`wrote ${result.object} of backup ${result.backup} (${result.bytes} bytes) to ${result.output}`);
  },
};
