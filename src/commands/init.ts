import { repositoryUrl, selectedSourceName, type KeySettings, type Settings } from '../config/settings.js';
import { chunkerParamsOf } from '../repository/content-store/open-content-store.js';
import { PgkeepError } from '../errors.js';
import { DEDUP_BY_DEFAULT, type EncryptionInfo } from '../repository/repository.js';
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
  /** A deduplicating repository: a content store (docs/content-store.md). Without dedup or plain: DEDUP_BY_DEFAULT. */
  dedup?: boolean | undefined;
  /** A repository without deduplication: each backup's objects stored whole (compressed, encrypted), readable with zstd and age alone. */
  plain?: boolean | undefined;
  /**
   * With dedup: a repository whose chunking parameters (seed, sizes) and, when
   * encrypted, content key the new one takes, so both cut and name the same
   * bytes alike and copy moves chunks between them as they are (restic's
   * `init --copy-chunker-params`). A local path or URL.
   */
  chunkerFrom?: string | undefined;
}

export interface InitResult {
  location: string;
  created: boolean;
  id: string;
  encryption: EncryptionInfo | null;
  dedup: boolean;
  /** The chunker fingerprint of a deduplicating repository (docs/content-store.md), and where its parameters came from. */
  fingerprint?: string | undefined;
  chunkerFrom?: string | undefined;
}

/**
 * Creates a repository; on an existing pgkeep repository it changes nothing
 * (safe to run twice), but refuses to pretend an unencrypted one is encrypted.
 */
export async function runInit(settings: Settings, request: InitRequest = {}, keys?: KeySettings): Promise<InitResult> {
  // 1. the request: bad input fails before anything is read or written
  const source = safeSourceName(settings);
  const place = repositoryAt(settings, repositoryUrl(settings, source));
  const wantsEncryption = Boolean(request.encrypt || request.recipients?.length || request.passphrase !== undefined);
  for (const recipient of request.recipients ?? []) validateRecipient(recipient);
  if (request.plain && request.dedup) throw new PgkeepError('USAGE', '--plain and --dedup exclude each other: choose one (a repository deduplicates or not from its creation)');
  if (request.chunkerFrom !== undefined && request.plain) throw new PgkeepError('USAGE', '--chunker-from makes a deduplicating repository (it chooses how chunks are cut and named): it does not go with --plain');
  // asked for explicitly (checked against an existing repository), or the default (a new one only)
  const askedDedup = request.dedup === true || request.chunkerFrom !== undefined;
  const dedup = request.plain ? false : askedDedup || DEDUP_BY_DEFAULT;

  // 2. an existing repository: nothing changes, but a request it does not fit is refused
  const existing = await place.openToCreate();
  if (existing) {
    if (wantsEncryption && !existing.info.encryption) {
      throw new PgkeepError('REPO_EXISTS', `${existing.location} is already an unencrypted pgkeep repository: encryption is chosen when a repository is created; use a new location`);
    }
    if (existing.info.encryption) assertSameEncryption(existing.location, existing.info.encryption, request);
    if (askedDedup && !existing.info.content) {
      throw new PgkeepError('REPO_EXISTS', `${existing.location} is already a pgkeep repository without deduplication: it is chosen when a repository is created; use a new location (pgkeep copy moves backups into it)`);
    }
    if (request.plain && existing.info.content) {
      throw new PgkeepError('REPO_EXISTS', `${existing.location} is already a deduplicating pgkeep repository: it is chosen when a repository is created; use a new location for a plain one (pgkeep copy moves backups into it)`);
    }
    const content = existing.info.content;
    if (request.chunkerFrom !== undefined && content) {
      const other = await chunkerSource(settings, request.chunkerFrom, existing.location);
      const wanted = other.info.content?.fingerprint;
      if (wanted === undefined || wanted !== content.fingerprint) {
        throw new PgkeepError('REPO_EXISTS', `${existing.location} is already a deduplicating repository with chunking parameters of its own: they are chosen when a repository is created; use a new location for --chunker-from ${other.location}`);
      }
    }
    return { location: existing.location, created: false, id: existing.info.id, encryption: existing.info.encryption, dedup: content !== undefined, fingerprint: content?.fingerprint, chunkerFrom: content?.chunkerFrom };
  }

  // 3. the other repository's chunking parameters (its content key read with its identity), then the new repository
  const chunkerFrom = request.chunkerFrom === undefined ? undefined : await chunkerParamsOf(await chunkerSource(settings, request.chunkerFrom, place.location), keys ?? NO_KEYS);
  const { repository, encryption } = await place.create(wantsEncryption ? { recipients: request.recipients ?? [], passphrase: request.passphrase } : null, { dedup, chunkerFrom });
  const content = repository.info.content;
  return { location: repository.location, created: true, id: repository.info.id, encryption, dedup, fingerprint: content?.fingerprint, chunkerFrom: content?.chunkerFrom };
}

/** No keys configured: an unencrypted repository needs none. */
const NO_KEYS: KeySettings = { identityFile: undefined, passphrase: () => undefined };

/** The repository --chunker-from names (a path relative to the working folder, or a URL): it must exist, and not be the new one. */
async function chunkerSource(settings: Settings, value: string, target: string) {
  const place = repositoryAt(settings, repositoryUrl({ ...settings, options: { ...settings.options, repo: value } }));
  if (place.location === target) throw new PgkeepError('USAGE', `--chunker-from names the repository being created (${target}): name another deduplicating repository`);
  return place.open().catch((error: unknown) => {
    if (error instanceof PgkeepError && error.code === 'REPO_MISSING') throw new PgkeepError('REPO_MISSING', `no pgkeep repository at ${place.location} to take chunking parameters from: check --chunker-from`, { cause: error });
    throw error;
  });
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

const InitOptions = z.object({
  encrypt: z.boolean().optional(),
  recipients: z.array(z.string()).optional(),
  passphraseFile: z.string().optional(),
  dedup: z.boolean().optional(),
  plain: z.boolean().optional(),
  chunkerFrom: z.string().optional(),
});

/** `pgkeep init`. */
export const initCommand: CommandSpec<z.output<typeof InitOptions>, InitResult> = {
  name: 'init',
  description: 'create a repository (a backup to an empty location creates an unencrypted one too)',
  options: [
    { flags: '--encrypt', description: 'encrypt every object with age (needs --recipient or --passphrase-file)' },
    { flags: '--recipient <age1…>', description: 'age public key to encrypt to (repeatable; see pgkeep keygen)', parse: collect },
    { flags: '--passphrase-file <file>', description: 'encrypt with the passphrase in this file (or set PGKEEP_PASSPHRASE)' },
    { flags: '--dedup', description: DEDUP_BY_DEFAULT ? 'deduplicating (the default): each distinct chunk stored once; every backup stays full, each costs only what changed' : 'store each distinct chunk once: every backup stays full, each costs only what changed (docs/content-store.md)' },
    { flags: '--plain', description: DEDUP_BY_DEFAULT ? 'no deduplication: each backup stored whole as compressed (encrypted) files that zstd and age read without pgkeep' : 'no deduplication (the default): each backup stored whole as compressed (encrypted) files that zstd and age read without pgkeep' },
    {
      flags: '--chunker-from <repo>',
      description: 'deduplicating: take the chunking parameters (and content key) of this deduplicating repository, so pgkeep copy moves only the chunks missing here (its identity: --identity or the passphrase)',
    },
  ],
  help: { globals: ['config', 'repo'], examples: [DEDUP_BY_DEFAULT ? 'pgkeep init --repo /srv/backups' : 'pgkeep init --repo /srv/backups --dedup', 'PGKEEP_PASSPHRASE_FILE=/run/secrets/pass pgkeep init --repo s3://my-bucket/app --encrypt', 'pgkeep init --repo /srv/dumps --plain'] },
  parse: requestParser(InitOptions, ({ options }) => ({ encrypt: options.encrypt, recipients: options.recipient, passphraseFile: options.passphraseFile, dedup: options.dedup, plain: options.plain, chunkerFrom: options.chunkerFrom })),
  async run(ctx, request) {
    const passphrase = request.passphraseFile
      ? readSecretFile(request.passphraseFile, '--passphrase-file')
      : request.encrypt && !request.recipients?.length
        ? ctx.keys.passphrase()
        : undefined;
    return runInit(ctx.settings, { encrypt: request.encrypt, recipients: request.recipients, passphrase, dedup: request.dedup, plain: request.plain, chunkerFrom: request.chunkerFrom }, ctx.keys);
  },
  print(result, out) {
    if (out.json) return out.document(result);
    const how =
      (result.encryption ? (result.encryption.passphrase ? ', encrypted with a passphrase' : `, encrypted to ${result.encryption.recipients.length} recipient(s)`) : '') +
      (result.dedup ? ', deduplicating' : ', plain (no deduplication)');
    out.line(result.created ? `created a pgkeep repository at ${result.location}${how}` : `${result.location} is already a pgkeep repository${how} (nothing changed)`);
    // unlike a plain encrypted repository, a deduplicating one needs a secret to write (chunk ids are keyed): say so where it is made
    if (result.created && result.dedup && result.encryption && !result.encryption.passphrase) {
      out.line('backups into it need the identity, or only the content key (PGKEEP_CONTENT_KEY_FILE, see README); where the backup host may hold only public keys, use --plain');
    }
    if (result.chunkerFrom) out.line(`it shares chunk ids with ${result.chunkerFrom} (chunker ${result.fingerprint?.slice(0, 12)}): pgkeep copy between them moves only missing chunks`);
  },
};
