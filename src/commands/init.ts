import { repositoryUrl, selectedSourceName, type Settings } from '../config/settings.js';
import { PgkeepError } from '../errors.js';
import type { EncryptionInfo } from '../repository/repository.js';
import { repositoryAt } from '../repository/open-repository.js';
import { validateRecipient } from '../pipeline/age.js';
import { z } from 'zod';
import { readSecretFile } from '../config/settings.js';
import { requestParser, type CommandSpec } from '../registry/command-spec.js';
import { collect } from '../registry/option-values.js';

export interface InitRequest {
  /** Encrypt every object: to `recipients` (age1… public keys), or with `passphrase`. */
  encrypt?: boolean | undefined;
  recipients?: string[] | undefined;
  passphrase?: string | undefined;
  /** A deduplicating repository: a content store (docs/content-store.md). */
  dedup?: boolean | undefined;
}

export interface InitResult {
  location: string;
  created: boolean;
  id: string;
  encryption: EncryptionInfo | null;
  dedup: boolean;
}

/**
 * Creates a repository; on an existing pgkeep repository it changes nothing
 * (safe to run twice), but refuses to pretend an unencrypted one is encrypted.
 */
export async function runInit(settings: Settings, request: InitRequest = {}): Promise<InitResult> {
  const source = safeSourceName(settings);
  const place = repositoryAt(settings, repositoryUrl(settings, source));
  const wantsEncryption = Boolean(request.encrypt || request.recipients?.length || request.passphrase !== undefined);
  for (const recipient of request.recipients ?? []) validateRecipient(recipient); // bad input fails before anything else

  const existing = await place.open().catch((error: unknown) => {
    if (error instanceof PgkeepError && error.code === 'REPO_MISSING') return undefined;
    throw error;
  });
  if (existing) {
    if (wantsEncryption && !existing.info.encryption) {
      throw new PgkeepError('REPO_EXISTS', `${existing.location} is already an unencrypted pgkeep repository: encryption is chosen when a repository is created; use a new location`);
    }
    if (existing.info.encryption) assertSameEncryption(existing.location, existing.info.encryption, request);
    if (request.dedup && !existing.info.content) {
      throw new PgkeepError('REPO_EXISTS', `${existing.location} is already a pgkeep repository without deduplication: it is chosen when a repository is created; use a new location (pgkeep copy moves backups into it)`);
    }
    return { location: existing.location, created: false, id: existing.info.id, encryption: existing.info.encryption, dedup: existing.info.content !== undefined };
  }

  const { repository, encryption } = await place.create(wantsEncryption ? { recipients: request.recipients ?? [], passphrase: request.passphrase } : null, { dedup: request.dedup === true });
  return { location: repository.location, created: true, id: repository.info.id, encryption, dedup: request.dedup === true };
}

/**
 * init over an encrypted repository asking for other keys than it has is an
 * error, not "nothing changed": someone holding only the key they asked for
 * would believe they can decrypt it. Recipients cannot be added to an existing
 * repository (its objects are already encrypted to the ones it has).
 */
function assertSameEncryption(location: string, has: EncryptionInfo, request: InitRequest): void {
  const how = has.passphrase ? 'a passphrase' : `the recipient(s) ${has.recipients.join(', ')}`;
  const fix =
    'pgkeep cannot add a recipient or change the key of an existing repository (its objects are already encrypted): ' +
    'use a key it has, or create a new repository with the recipients you want (pgkeep init --encrypt --recipient … at another location) and back up to it';
  const asked = request.recipients ?? [];
  if (request.passphrase !== undefined && asked.length === 0 && !has.passphrase) {
    throw new PgkeepError('REPO_EXISTS', `${location} is already a pgkeep repository encrypted to ${how}, not with a passphrase: ${fix}`);
  }
  const missing = asked.filter((r) => !has.recipients.includes(r));
  if (missing.length > 0) {
    throw new PgkeepError('REPO_EXISTS', `${location} is already a pgkeep repository encrypted to ${how}, not to ${missing.join(', ')}: ${fix}`);
  }
}

function safeSourceName(settings: Settings): string | undefined {
  try {
    return selectedSourceName(settings);
  } catch {
    return undefined;
  }
}

const InitOptions = z.object({ encrypt: z.boolean().optional(), recipients: z.array(z.string()).optional(), passphraseFile: z.string().optional(), dedup: z.boolean().optional() });

/** `pgkeep init`. */
export const initCommand: CommandSpec<z.output<typeof InitOptions>, InitResult> = {
  name: 'init',
  description: 'create a repository (a backup to an empty location creates an unencrypted one too)',
  options: [
    { flags: '--encrypt', description: 'encrypt every object with age (needs --recipient or --passphrase-file)' },
    { flags: '--recipient <age1…>', description: 'age public key to encrypt to (repeatable; see pgkeep keygen)', parse: collect },
    { flags: '--passphrase-file <file>', description: 'encrypt with the passphrase in this file (or set PGKEEP_PASSPHRASE)' },
    { flags: '--dedup', description: 'store each distinct chunk once: every backup stays full, each costs only what changed (docs/content-store.md)' },
  ],
  help: { globals: ['config', 'repo'], examples: ['pgkeep init --repo /srv/backups', 'pgkeep init --repo s3://my-bucket/app --encrypt --recipient age1…', 'PGKEEP_PASSPHRASE_FILE=/run/secrets/pass pgkeep init --repo ./backups --encrypt'] },
  parse: requestParser(InitOptions, ({ options }) => ({ encrypt: options.encrypt, recipients: options.recipient, passphraseFile: options.passphraseFile, dedup: options.dedup })),
  async run(ctx, request) {
    const passphrase = request.passphraseFile
      ? readSecretFile(request.passphraseFile, '--passphrase-file')
      : request.encrypt && !request.recipients?.length
        ? ctx.keys.passphrase()
        : undefined;
    return runInit(ctx.settings, { encrypt: request.encrypt, recipients: request.recipients, passphrase, dedup: request.dedup });
  },
  print(result, out) {
    if (out.json) return out.document(result);
    const how =
      (result.encryption ? (result.encryption.passphrase ? ', encrypted with a passphrase' : `, encrypted to ${result.encryption.recipients.length} recipient(s)`) : '') +
      (result.dedup ? ', deduplicating' : '');
    out.line(result.created ? `created a pgkeep repository at ${result.location}${how}` : `${result.location} is already a pgkeep repository${how} (nothing changed)`);
  },
};
