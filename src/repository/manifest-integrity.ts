import { createHash, createHmac, hkdfSync, timingSafeEqual } from 'node:crypto';
import { z } from 'zod';

/**
 * How a manifest proves it was not changed since pgkeep wrote it.
 *
 * `sha256` covers the manifest's canonical text (the JSON of every other
 * field, compact, in the file's key order): every reader checks it, so
 * damage or a careless edit (a row count, an object name) is refused. It is
 * no protection against someone who means it: they can recompute it.
 *
 * `hmac` is that protection, in encrypted repositories: HMAC-SHA256 of the
 * same text under a key derived (HKDF-SHA256) from an age identity of the
 * repository, the way restic authenticates its snapshots with a key only the
 * holders of the repository password have. `key` names the identity by its
 * public key, so a reader holding that identity can check it; someone with
 * write access to the bucket but no identity cannot make a valid one. A
 * writer that holds no identity (a backup host given only the public keys)
 * writes no hmac, and readers say the manifest is not authenticated.
 */
export const IntegritySchema = z.object({
  sha256: z.string().regex(/^[0-9a-f]{64}$/),
  hmac: z.array(z.object({ key: z.string().startsWith('age1'), sha256: z.string().regex(/^[0-9a-f]{64}$/) })).optional(),
});
export type Integrity = z.infer<typeof IntegritySchema>;

/** An authentication key and the public key of the identity it was derived from. */
export interface ManifestKey {
  id: string;
  key: Buffer;
}

const HKDF_INFO = 'pgkeep manifest authentication v1';

/** The manifest key of an age X25519 identity (its secret key string, any case). */
export function deriveManifestKey(secretKey: string, publicKey: string): ManifestKey {
  const key = Buffer.from(hkdfSync('sha256', Buffer.from(secretKey.trim().toUpperCase()), Buffer.alloc(0), HKDF_INFO, 32));
  return { id: publicKey, key };
}

/** The canonical text of a manifest: every field but `integrity`, as compact JSON in its key order. */
export function canonicalManifest(manifest: Record<string, unknown>): string {
  const { integrity: _ignored, ...rest } = manifest;
  return JSON.stringify(rest);
}

export function sealManifest(canonical: string, keys: readonly ManifestKey[]): Integrity {
  const sha256 = createHash('sha256').update(canonical).digest('hex');
  if (keys.length === 0) return { sha256 };
  return { sha256, hmac: keys.map((k) => ({ key: k.id, sha256: createHmac('sha256', k.key).update(canonical).digest('hex') })) };
}

/** The plain checksum: true when it matches (or the manifest predates checksums). */
export function checksumMatches(canonical: string, integrity: Integrity | undefined): boolean {
  if (!integrity) return true;
  return safeEqualHex(createHash('sha256').update(canonical).digest('hex'), integrity.sha256);
}

export type Authentication =
  /** An hmac made with one of `keys` matched. */
  | { state: 'authenticated'; key: string }
  /** An hmac made with one of `keys` did not match: the manifest was changed. */
  | { state: 'forged'; key: string }
  /** hmacs exist, none with a key the reader holds. */
  | { state: 'other-key'; keys: string[] }
  /** No hmac (written without an identity, or before manifests were authenticated). */
  | { state: 'unauthenticated' };

export function authenticate(canonical: string, integrity: Integrity | undefined, keys: readonly ManifestKey[]): Authentication {
  const hmacs = integrity?.hmac ?? [];
  if (hmacs.length === 0) return { state: 'unauthenticated' };
  for (const hmac of hmacs) {
    const key = keys.find((k) => k.id === hmac.key);
    if (!key) continue;
    const expected = createHmac('sha256', key.key).update(canonical).digest('hex');
    return safeEqualHex(expected, hmac.sha256) ? { state: 'authenticated', key: hmac.key } : { state: 'forged', key: hmac.key };
  }
  return { state: 'other-key', keys: hmacs.map((h) => h.key) };
}

function safeEqualHex(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}
