import { Writable } from 'node:stream';
import { defaultZstd } from '../pipeline/zstd.js';
import type { DatabaseState } from '../postgres/database-state.js';
import { databaseStateOf, type LogicalManifest as Manifest } from '../repository/manifest.js';
import type { Repository } from '../repository/repository.js';
import type { AgeIdentity } from '../pipeline/age.js';

/** The backup's database-level state: from its manifest, or its (encrypted) database-state object. */
export function recordedState(repository: Repository, manifest: Manifest, identities: AgeIdentity[], signal: AbortSignal): Promise<DatabaseState | undefined> {
  return databaseStateOf(manifest, async (object) => {
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        chunks.push(chunk);
        callback();
      },
    });
    await repository.loadObject(manifest, object, sink, { codec: defaultZstd(), identities, signal });
    return Buffer.concat(chunks);
  });
}
