import { open } from 'node:fs/promises';
import { PgkeepError } from '../errors.js';
import { formatIdentityFile, generateIdentity } from '../pipeline/age.js';

/**
 * Writes a new age identity (private key) to `output` with mode 0600 and
 * returns its public key, the recipient to give `pgkeep init --recipient`.
 * Never overwrites: a lost key means lost backups.
 */
export async function runKeygen(output: string): Promise<{ output: string; publicKey: string }> {
  const keys = generateIdentity();
  let handle;
  try {
    handle = await open(output, 'wx', 0o600);
  } catch (error) {
    const code = (error as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') throw new PgkeepError('USAGE', `${output} already exists: pgkeep never overwrites a key file; choose another --output`, { cause: error });
    throw new PgkeepError('CONFIG_INVALID', `cannot create ${output} (${code ?? 'error'})`, { cause: error });
  }
  try {
    await handle.writeFile(formatIdentityFile(keys));
    await handle.sync();
  } finally {
    await handle.close();
  }
  return { output, publicKey: keys.publicKey };
}
