import { createHash, hkdfSync, randomBytes } from 'node:crypto';
import { Readable } from 'node:stream';
import { z } from 'zod';
import { PgkeepError } from '../../errors.js';
import { decryptStream, encryptStream, type AgeIdentity, type AgeRecipient } from '../../pipeline/age.js';
import { collectStream, readObject, type Storage } from '../../storage/storage.js';
import type { ContentSettings } from './content-store.js';

/** The content key of an encrypted deduplicating repository, encrypted to its recipients. */
export const CONTENT_KEY_FILE = 'keys/content.age';

/**
 * What pgkeep.json records of a deduplicating repository. Chunk sizes are
 * fixed at init: a change would cut every stream anew and share nothing with
 * what is stored (the choice is measured in docs/benchmarks.md).
 */
export const ContentInfoSchema = z.object({
  /**
   * 2: index files are binary (version 2, docs/content-store.md); a pgkeep that reads only JSON index files
   * refuses the repository at open instead of calling its index damaged. 1: made before, read the same (this
   * pgkeep reads both kinds of index file and writes version 2 into either).
   */
  version: z.union([z.literal(1), z.literal(2)]),
  chunkSizes: z.object({ min: z.number().int().positive(), average: z.number().int().positive(), max: z.number().int().positive() }),
  packTarget: z.number().int().positive(),
  level: z.number().int(),
  /** The chunker's seed in an unencrypted repository (hex); in an encrypted one it is derived from the content key. */
  seed: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  /**
   * The chunker fingerprint: SHA-256 over the chunk sizes, the seed and the id
   * of the key chunk ids are made with (never the key itself). Two repositories
   * with the same fingerprint cut and name the same bytes alike, so copy moves
   * chunks between them as they are. Repositories made before it was recorded
   * have none: copy computes it from the settings it opens.
   */
  fingerprint: z.string().regex(/^[0-9a-f]{64}$/).optional(),
  /** Where the chunking parameters (and content key) came from: `pgkeep init --dedup --chunker-from` (for people; copy compares fingerprints). */
  chunkerFrom: z.string().optional(),
});
export type ContentInfo = z.infer<typeof ContentInfoSchema>;

/** 16 KiB average chunks, 16 MiB packs, zstd -3: see docs/benchmarks.md, "Deduplication". */
export const DEFAULT_CONTENT = { chunkSizes: { min: 4096, average: 16384, max: 65536 }, packTarget: 16 << 20, level: 3 };

/**
 * Sets up the content store of a new repository: the chunker's seed in the
 * clear, or (encrypted) a random content key written encrypted to the
 * recipients. Returns what pgkeep.json records.
 */
export async function createContentInfo(storage: Storage, recipients: AgeRecipient[] | null, from?: ChunkerParams): Promise<ContentInfo> {
  if (from && (recipients === null) !== (from.contentKey === undefined)) {
    throw new PgkeepError(
      'USAGE',
      recipients === null
        ? `--chunker-from ${from.location}: that repository is encrypted (its chunk ids are keyed); a repository sharing its chunks must be encrypted too (--encrypt with --recipient or a passphrase)`
        : `--chunker-from ${from.location}: that repository is not encrypted (its chunk ids are plain SHA-256, which would tell what is stored); a repository sharing its chunks must be unencrypted too`,
    );
  }
  const params = from ? { chunkSizes: from.info.chunkSizes, packTarget: from.info.packTarget, level: from.info.level, chunkerFrom: from.location } : DEFAULT_CONTENT;
  if (!recipients) {
    const seed = from?.info.seed ?? randomBytes(32).toString('hex');
    return { version: 2, ...params, seed, fingerprint: chunkerFingerprint(params.chunkSizes, Buffer.from(seed, 'hex'), undefined) };
  }
  // the content key: the other repository's when sharing its chunk ids, sealed to this one's recipients (never stored in the clear)
  const key = from?.contentKey ?? randomBytes(32);
  const sealed = await collectStream(Readable.from([Buffer.from(`${JSON.stringify({ contentKey: key.toString('hex') })}\n`)]).pipe(encryptStream(recipients)));
  if (!(await storage.putIfAbsent(CONTENT_KEY_FILE, sealed))) throw new PgkeepError('REPO_EXISTS', `${storage.location} already holds ${CONTENT_KEY_FILE}: choose an empty location`);
  const { seed, idKey } = keyedChunker(key);
  return { version: 2, ...params, fingerprint: chunkerFingerprint(params.chunkSizes, seed, idKey) };
}

/** What another repository's chunk boundaries and ids depend on: `pgkeep init --dedup --chunker-from` copies them. */
export interface ChunkerParams {
  location: string;
  info: ContentInfo;
  /** The content key of an encrypted repository (read with its identity); undefined when unencrypted. */
  contentKey: Buffer | undefined;
}

/** Reads the chunking parameters of a deduplicating repository (an encrypted one's content key needs its identity). */
export async function readChunkerParams(storage: Storage, info: ContentInfo, encrypted: boolean, identities: AgeIdentity[]): Promise<ChunkerParams> {
  return { location: storage.location, info, contentKey: encrypted ? await unsealContentKey(storage, identities) : undefined };
}

/**
 * The chunker fingerprint (ContentInfo.fingerprint): equal for two
 * repositories exactly when they cut streams at the same places and give the
 * chunks the same ids. The key enters only as a hash of the id key, so the
 * fingerprint, stored in the clear, reveals nothing of it.
 */
export function chunkerFingerprint(sizes: ContentInfo['chunkSizes'], seed: Buffer, idKey: Buffer | undefined): string {
  const keyId = idKey ? createHash('sha256').update('pgkeep chunk id key\0').update(idKey).digest('hex') : 'sha256';
  return createHash('sha256')
    .update(`pgkeep chunker v1\0${sizes.min}/${sizes.average}/${sizes.max}\0${seed.toString('hex')}\0${keyId}`)
    .digest('hex');
}

/** The fingerprint of opened content settings (a repository created before fingerprints were recorded). */
export function fingerprintOf(settings: Pick<ContentSettings, 'sizes' | 'seed' | 'idKey'>): string {
  return chunkerFingerprint(settings.sizes, settings.seed, settings.idKey);
}

/** The seed and id key of an encrypted repository, both derived from its content key. */
function keyedChunker(key: Buffer): { seed: Buffer; idKey: Buffer } {
  return { seed: derive(key, 'pgkeep chunk boundaries'), idKey: derive(key, 'pgkeep chunk ids') };
}

/** Where a writer or reader gets the content key of an encrypted repository: the identities, or the key itself (a writer without the identity). */
export interface ContentKeySource {
  identities: AgeIdentity[];
  /** The content key as hex (PGKEEP_CONTENT_KEY_FILE), for a backup host that holds only the public keys. */
  contentKey: string | undefined;
}

/**
 * The settings of a repository's content store. In an encrypted repository the
 * chunk ids are keyed: a writer needs the content key (from the identity, or
 * given on its own) and a reader of data needs the identity.
 */
export async function contentSettings(storage: Storage, info: ContentInfo, recipients: AgeRecipient[] | null, keys: ContentKeySource): Promise<ContentSettings> {
  const base = { sizes: info.chunkSizes, packTarget: info.packTarget, level: info.level, recipients: recipients ?? [], identities: keys.identities };
  if (!recipients) return { ...base, seed: Buffer.from(info.seed!, 'hex'), idKey: undefined };
  const key = keys.contentKey !== undefined ? parseContentKey(keys.contentKey) : await unsealContentKey(storage, keys.identities);
  return { ...base, ...keyedChunker(key) };
}

/** The content key, for a backup host that should write without the identity (pgkeep init --dedup prints how to export it). */
export async function readContentKey(storage: Storage, identities: AgeIdentity[]): Promise<string> {
  return (await unsealContentKey(storage, identities)).toString('hex');
}

async function unsealContentKey(storage: Storage, identities: AgeIdentity[]): Promise<Buffer> {
  if (identities.length === 0) {
    throw new PgkeepError(
      'CONFIG_INVALID',
      `the repository at ${storage.location} deduplicates encrypted data: its chunk ids are keyed, so writing or checking them needs the repository's identity (--identity, PGKEEP_AGE_IDENTITY_FILE or the passphrase) or its content key (PGKEEP_CONTENT_KEY_FILE)`,
    );
  }
  const sealed = await readObject(storage, CONTENT_KEY_FILE);
  const text = await collectStream(Readable.from([sealed]).pipe(decryptStream(identities, { what: CONTENT_KEY_FILE })));
  return parseContentKey((JSON.parse(text.toString('utf8')) as { contentKey: string }).contentKey);
}

function parseContentKey(hex: string): Buffer {
  const key = Buffer.from(hex.trim(), 'hex');
  if (key.length !== 32 || key.toString('hex') !== hex.trim().toLowerCase()) throw new PgkeepError('CONFIG_INVALID', 'the content key is not 64 hex digits (PGKEEP_CONTENT_KEY_FILE)');
  return key;
}

function derive(key: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', key, Buffer.alloc(0), info, 32));
}
