import { readFile, writeFile } from 'node:fs/promises';
import { canonicalManifest, sealManifest } from '../../src/repository/manifest-integrity.js';

/**
 * Edits a manifest file the way a faulty writer would: the change comes with a
 * matching checksum (no HMAC), so the manifest reads and the checks that come
 * after it (verify, the restore's row counts, the restore test) are what is tested.
 * An edit without a new checksum is caught when the manifest is read (see faults.test.ts).
 */
export async function rewriteManifest(file: string, edit: (manifest: any) => void): Promise<void> {
  const manifest = JSON.parse(await readFile(file, 'utf8'));
  edit(manifest);
  const { integrity: _old, ...rest } = manifest;
  await writeFile(file, JSON.stringify({ ...rest, integrity: sealManifest(canonicalManifest(rest), []) }, null, 2));
}
