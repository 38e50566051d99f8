import { open } from 'node:fs/promises';
import { PgkeepError } from '../errors.js';
import { formatIdentityFile, generateIdentity } from '../pipeline/age.js';
import { z } from 'zod';
import { requestParser, type CommandSpec } from '../registry/command-spec.js';

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

/** `pgkeep keygen`: needs no configuration. */
export const keygenCommand: CommandSpec<{ output: string }, { output: string; publicKey: string }> = {
  name: 'keygen',
  description: 'write a new age identity (private key) file and print its public key',
  options: [{ flags: '--output <file>', description: 'where to write the identity (mode 0600; never overwritten)', required: true }],
  help: { globals: [], examples: ['pgkeep keygen --output ~/.config/pgkeep/identity.txt'] },
  parse: requestParser(z.object({ output: z.string() }), ({ options }) => ({ output: options.output })),
  run: (_ctx, request) => runKeygen(request.output),
  print(result, out) {
    if (out.json) return out.document(result);
    out.line(`wrote ${result.output}; keep it safe and off the backup machine`);
    out.line(`public key (pgkeep init --encrypt --recipient …): ${result.publicKey}`);
  },
};
