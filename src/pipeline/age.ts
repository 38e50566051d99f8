import {
  createCipheriv,
  createDecipheriv,
  createHmac,
  createPrivateKey,
  createPublicKey,
  diffieHellman,
  generateKeyPairSync,
  hkdfSync,
  randomBytes,
  scrypt,
  timingSafeEqual,
  type KeyObject,
} from 'node:crypto';
import { Transform, type TransformCallback } from 'node:stream';
import { PgkeepError, type ErrorCode } from '../errors.js';

/**
 * age encryption (https://age-encryption.org/v1) as Node streams, built on
 * node:crypto only (OpenSSL's X25519, HKDF-SHA-256, HMAC-SHA-256, scrypt and
 * ChaCha20-Poly1305), so every object it writes can be read by the standard
 * tool: `age -d -i key.txt dump.zst.age | zstd -d | pg_restore …`.
 *
 * The payload is age's STREAM construction: 64 KiB chunks, each sealed with
 * ChaCha20-Poly1305 under a 12-byte nonce of an 11-byte big-endian counter
 * and a last-chunk flag. Both directions hold at most about two chunks plus
 * the stream buffers, whatever the size, and honour backpressure.
 *
 * Errors are PgkeepErrors: CHECKSUM_MISMATCH for bytes that are not a valid
 * age file (corrupt, truncated, extended), CONFIG_INVALID for keys, recipients
 * and identities that cannot be used, including "no identity opens this file".
 * `details.age` says which case it was (see AgeFailure and FAILURE_CODES).
 */

export type AgeRecipient =
  | { kind: 'x25519'; publicKey: string }
  /** workFactor: log2 of scrypt's N, default 18 (as `age -p`); 1–22. */
  | { kind: 'passphrase'; passphrase: string; workFactor?: number };

export type AgeIdentity = { kind: 'x25519'; secretKey: string } | { kind: 'passphrase'; passphrase: string };

export interface AgeKeyPair {
  /** AGE-SECRET-KEY-1… */
  secretKey: string;
  /** age1… */
  publicKey: string;
}

export interface DecryptOptions {
  /** How messages name the data, e.g. "object dump.zst.age". Default "the encrypted data". */
  what?: string;
  /** The largest scrypt work factor (log2 N) accepted from a file; default 22, as age. 2^22 needs 4 GiB. */
  maxWorkFactor?: number;
}

/** The value of `details.age` on the errors of this module. */
export type AgeFailure =
  | 'recipient' // validateRecipient / encryptStream: a recipient cannot be used
  | 'identity' // parseIdentityFile / decryptStream: an identity cannot be used
  | 'no-identity' // decryptStream: no given identity opens the file
  | 'work-factor' // decryptStream: the file's scrypt work factor is above the limit
  | 'not-age' // decryptStream: the data is not an age v1 file
  | 'header' // decryptStream: the header is malformed or its MAC does not match
  | 'payload' // decryptStream: a payload chunk fails authentication, or the payload is truncated or extended
  ;

/** The default scrypt work factor of `age -p`. */
export const DEFAULT_SCRYPT_WORK_FACTOR = 18;
const MAX_SCRYPT_WORK_FACTOR = 22;

const VERSION_LINE = 'age-encryption.org/v1\n';
const ARMOR_BEGIN = '-----BEGIN AGE ENCRYPTED FILE-----';
const CHUNK = 64 * 1024;
const TAG = 16;
const SEALED_CHUNK = CHUNK + TAG;
const FILE_KEY_SIZE = 16;
const NONCE_SIZE = 16;
/** The header is read into memory before any payload; real ones are a few hundred bytes per recipient. */
const MAX_HEADER = 1 << 20;
const X25519_INFO = 'age-encryption.org/v1/X25519';
const SCRYPT_SALT_LABEL = 'age-encryption.org/v1/scrypt';
const STREAM_BUFFER = 1 << 20;

const SECRET_KEY_HRP = 'AGE-SECRET-KEY-';
const PUBLIC_KEY_HRP = 'age';

// ---------------------------------------------------------------------------
// Keys

/** A new X25519 key pair: the secret key for the identity file, the public key for recipients. */
export function generateIdentity(): AgeKeyPair {
  const { privateKey, publicKey } = generateKeyPairSync('x25519');
  return {
    secretKey: bech32Encode(SECRET_KEY_HRP, rawPrivate(privateKey)),
    publicKey: bech32Encode(PUBLIC_KEY_HRP, rawPublic(publicKey)),
  };
}

/** The public key (age1…) of a secret key (AGE-SECRET-KEY-1…), as `age-keygen -y` prints it. */
export function publicKeyOf(secretKey: string): string {
  const raw = decodeSecretKey(secretKey.trim(), 'the age secret key');
  return bech32Encode(PUBLIC_KEY_HRP, rawPublic(createPublicKey(privateKeyObject(raw))));
}

/**
 * An identity file as `age-keygen` writes it (and `age -d -i` reads it), with
 * the public key in a comment. Write it with mode 0600.
 */
export function formatIdentityFile(keys: AgeKeyPair, created: Date = new Date()): string {
  return `# created: ${created.toISOString().replace(/\.\d{3}Z$/, 'Z')}\n# public key: ${keys.publicKey}\n${keys.secretKey}\n`;
}

/**
 * Parses an age identity file: `#` comments, blank lines, and one
 * AGE-SECRET-KEY-1… per line. Messages name `source` and the line, never the
 * key itself.
 */
export function parseIdentityFile(text: string, source = 'the identity file'): AgeIdentity[] {
  const identities: AgeIdentity[] = [];
  if (text.startsWith(VERSION_LINE) || text.startsWith(ARMOR_BEGIN)) {
    throw ageError('identity', `${source} is itself age-encrypted: decrypt it first (age -d -o key.txt FILE) and pass the result`);
  }
  const lines = text.split('\n');
  for (let i = 0; i < lines.length; i++) {
    const line = (lines[i] ?? '').trim();
    if (line === '' || line.startsWith('#')) continue;
    const where = `${source}, line ${i + 1}`;
    const upper = line.toUpperCase();
    if (upper.startsWith('AGE-PLUGIN-')) {
      throw ageError('identity', `${where}: age plugin identities (AGE-PLUGIN-…) are not supported: use an X25519 key made by age-keygen or pgkeep`);
    }
    if (line.startsWith('-----BEGIN') || line.startsWith('ssh-')) {
      throw ageError('identity', `${where}: SSH keys are not supported as age identities: use an X25519 key made by age-keygen or pgkeep`);
    }
    if (line.toLowerCase().startsWith('age1')) {
      throw ageError('identity', `${where} is a public key (age1…): an identity file holds the secret key (AGE-SECRET-KEY-1…)`);
    }
    if (!upper.startsWith(SECRET_KEY_HRP + '1')) {
      throw ageError('identity', `${where} is not an age secret key: expected AGE-SECRET-KEY-1…, a comment (#) or a blank line`);
    }
    decodeSecretKey(line, where);
    identities.push({ kind: 'x25519', secretKey: line });
  }
  if (identities.length === 0) {
    throw ageError('identity', `${source} holds no age secret key (AGE-SECRET-KEY-1…): make one with age-keygen`);
  }
  return identities;
}

/**
 * Checks one recipient as a person would write it (an age1… public key) and
 * returns it, or throws a one-line CONFIG_INVALID error saying what is wrong.
 */
export function validateRecipient(text: string): AgeRecipient {
  const key = text.trim();
  const fail = (why: string) => ageError('recipient', why);
  if (key === '') throw fail('an age recipient is empty: expected a public key age1… (from age-keygen or pgkeep)');
  const lower = key.toLowerCase();
  if (lower.startsWith('age-secret-key-')) {
    throw fail('an age recipient is a secret key (AGE-SECRET-KEY-1…): give its public key instead (age-keygen -y FILE prints it), and keep the secret key off the machine taking backups');
  }
  if (lower.startsWith('ssh-')) throw fail('SSH public keys are not supported as age recipients: use an X25519 key (age1…) from age-keygen or pgkeep');
  if (lower.startsWith('age1pq1') || lower.startsWith('age1tag')) {
    throw fail(`age recipient ${shortKey(key)}: post-quantum and hardware-tag recipients are not supported: use an X25519 key (age1…)`);
  }
  if (!lower.startsWith('age1')) throw fail('an age recipient does not start with age1: expected an X25519 public key age1… (from age-keygen or pgkeep)');
  // Only a string that looks like a public key is echoed (it is public); anything else might be a secret pasted by mistake.
  const shown = /^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]*$/.test(lower) ? `${key} ` : '';
  let decoded: { hrp: string; data: Buffer };
  try {
    decoded = bech32Decode(key);
  } catch (error) {
    throw fail(`age recipient ${shown}is malformed (${(error as Error).message}): check it was copied whole (62 characters, age1…)`);
  }
  if (decoded.hrp !== PUBLIC_KEY_HRP || decoded.data.length !== 32) {
    throw fail(`age recipient ${shown}is not an X25519 public key (${decoded.data.length} bytes after age1): expected 62 characters, age1…`);
  }
  return { kind: 'x25519', publicKey: lower };
}

/** Whether `head` (the first bytes of an object) starts like an age v1 file. */
export function looksLikeAge(head: Buffer): boolean {
  const n = Math.min(head.length, VERSION_LINE.length);
  return n > 0 && head.subarray(0, n).toString('latin1') === VERSION_LINE.slice(0, n);
}

// ---------------------------------------------------------------------------
// Encryption

/**
 * A transform that encrypts what flows through it to `recipients` as an age
 * v1 file. Either X25519 public keys (any number), or one passphrase (age
 * requires a passphrase stanza to be the only one). Throws CONFIG_INVALID at
 * once for unusable recipients.
 */
export function encryptStream(recipients: AgeRecipient[]): Transform {
  return new AgeEncryptStream(recipients);
}

/**
 * The age payload encryption without a stream around it: `update` and `final`
 * hand the ciphertext to `emit` synchronously. For callers that run their own
 * loop over a small file (wal-push); the header comes first and is built
 * asynchronously (scrypt, for a passphrase), so it is awaited once up front.
 */
export interface AgeSealer {
  /** The age header and payload nonce: the first bytes of the file. */
  readonly prefix: Buffer;
  update(chunk: Buffer, emit: (sealed: Buffer) => void): void;
  /** Seals what is left as the last chunk (empty only for an empty payload). */
  final(emit: (sealed: Buffer) => void): void;
  /** The payload's size once sealed (without the prefix): one tag per 64 KiB chunk. */
  bound(payloadSize: number): number;
}

/** Starts encrypting to `recipients`: throws CONFIG_INVALID at once for unusable ones, resolves once the header is built. */
export async function createAgeSealer(recipients: AgeRecipient[]): Promise<AgeSealer> {
  const sealer = new PayloadSealer(recipients);
  return {
    prefix: await sealer.prefix,
    update: (chunk, emit) => sealer.update(chunk, emit),
    final: (emit) => sealer.final(emit),
    bound: (payloadSize) => payloadSize + TAG * Math.max(1, Math.ceil(payloadSize / CHUNK)),
  };
}

/** Splits the payload into age's 64 KiB chunks and seals each with its own nonce. */
class PayloadSealer {
  private readonly queue = new ByteQueue();
  private readonly payloadKey: Buffer;
  private readonly nonce = Buffer.alloc(12);
  private counter = 0;
  /** The header and payload nonce. */
  readonly prefix: Promise<Buffer>;

  constructor(recipients: AgeRecipient[]) {
    const checked = checkRecipients(recipients);
    const fileKey = randomBytes(FILE_KEY_SIZE);
    const payloadNonce = randomBytes(NONCE_SIZE);
    this.payloadKey = hkdf(fileKey, payloadNonce, 'payload');
    this.prefix = buildHeader(fileKey, checked).then((header) => Buffer.concat([header, payloadNonce]));
    this.prefix.catch(() => undefined); // observed by whoever writes the prefix
  }

  update(chunk: Buffer, emit: (sealed: Buffer) => void): void {
    this.queue.push(chunk);
    // A full chunk is sealed only once more data follows: at the end the last full chunk must carry the last-chunk flag.
    while (this.queue.length > CHUNK) this.sealChunk(this.queue.take(CHUNK), false, emit);
  }

  final(emit: (sealed: Buffer) => void): void {
    this.sealChunk(this.queue.take(this.queue.length), true, emit);
  }

  /**
   * Emits the ciphertext as OpenSSL returns it, then the tag, without
   * copying them into one buffer: every extra copy is garbage that V8 frees
   * late, and that shows in RSS.
   */
  private sealChunk(pieces: Buffer[], last: boolean, emit: (sealed: Buffer) => void): void {
    const cipher = createCipheriv('chacha20-poly1305', this.payloadKey, streamNonce(this.nonce, this.counter++, last), { authTagLength: TAG });
    for (const piece of pieces) {
      const sealed = cipher.update(piece);
      if (sealed.length > 0) emit(sealed);
    }
    cipher.final();
    emit(cipher.getAuthTag());
  }
}

class AgeEncryptStream extends Transform {
  private readonly sealer: PayloadSealer;
  private prefixPushed = false;
  private readonly pushSealed = (sealed: Buffer) => void this.push(sealed);

  constructor(recipients: AgeRecipient[]) {
    super({ readableHighWaterMark: STREAM_BUFFER, writableHighWaterMark: STREAM_BUFFER });
    this.sealer = new PayloadSealer(recipients);
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    this.afterPrefix(() => this.sealer.update(chunk, this.pushSealed), callback);
  }

  override _flush(callback: TransformCallback): void {
    this.afterPrefix(() => this.sealer.final(this.pushSealed), callback);
  }

  private afterPrefix(seal: () => void, callback: TransformCallback): void {
    const run = () => {
      try {
        seal();
        callback();
      } catch (error) {
        callback(error as Error);
      }
    };
    if (this.prefixPushed) return run();
    this.sealer.prefix.then((prefix) => {
      this.prefixPushed = true;
      this.push(prefix);
      run();
    }, callback);
  }
}

type CheckedRecipients = { kind: 'x25519'; keys: Buffer[] } | { kind: 'passphrase'; passphrase: string; workFactor: number };

function checkRecipients(recipients: AgeRecipient[]): CheckedRecipients {
  const fail = (why: string) => ageError('recipient', why);
  if (recipients.length === 0) throw fail('no age recipient given: pass at least one public key (age1…) or a passphrase');
  const passphrases = recipients.filter((r) => r.kind === 'passphrase');
  if (passphrases.length > 0) {
    if (recipients.length > 1) {
      throw fail('a passphrase cannot be combined with other age recipients (the age format allows a passphrase only alone): use either public keys or one passphrase');
    }
    const { passphrase, workFactor = DEFAULT_SCRYPT_WORK_FACTOR } = passphrases[0]!;
    if (passphrase.length === 0) throw fail('the age passphrase is empty');
    if (!Number.isInteger(workFactor) || workFactor < 1 || workFactor > MAX_SCRYPT_WORK_FACTOR) {
      throw fail(`scrypt work factor ${workFactor} is out of range: expected an integer from 1 to ${MAX_SCRYPT_WORK_FACTOR} (default ${DEFAULT_SCRYPT_WORK_FACTOR})`);
    }
    return { kind: 'passphrase', passphrase, workFactor };
  }
  const keys = recipients.map((r) => {
    if (r.kind !== 'x25519') throw fail(`unknown age recipient kind ${String((r as { kind: unknown }).kind)}`);
    const checked = validateRecipient(r.publicKey);
    return bech32Decode((checked as { publicKey: string }).publicKey).data;
  });
  return { kind: 'x25519', keys };
}

async function buildHeader(fileKey: Buffer, recipients: CheckedRecipients): Promise<Buffer> {
  const stanzas: string[] = [];
  if (recipients.kind === 'passphrase') {
    const salt = randomBytes(16);
    const key = await scryptKey(recipients.passphrase, salt, recipients.workFactor);
    stanzas.push(stanza(['scrypt', b64(salt), String(recipients.workFactor)], aeadSeal(key, fileKey)));
  } else {
    for (const recipient of recipients.keys) {
      const ephemeral = generateKeyPairSync('x25519');
      const share = rawPublic(ephemeral.publicKey);
      const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: publicKeyObject(recipient) });
      const wrapKey = hkdf(shared, Buffer.concat([share, recipient]), X25519_INFO);
      stanzas.push(stanza(['X25519', b64(share)], aeadSeal(wrapKey, fileKey)));
    }
  }
  const macInput = `${VERSION_LINE}${stanzas.join('')}---`;
  const mac = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(macInput, 'latin1').digest();
  return Buffer.from(`${macInput} ${b64(mac)}\n`, 'latin1');
}

function stanza(args: string[], body: Buffer): string {
  const encoded = b64(body);
  let text = `-> ${args.join(' ')}\n`;
  // Wrapped at 64 columns; the last line is always shorter (possibly empty).
  for (let i = 0; ; i += 64) {
    const line = encoded.slice(i, i + 64);
    text += `${line}\n`;
    if (line.length < 64) break;
  }
  return text;
}

// ---------------------------------------------------------------------------
// Decryption

/**
 * A transform that decrypts an age v1 file with any of `identities`. It emits
 * plaintext chunk by chunk, each only after its authentication tag checked;
 * a damaged, truncated or extended file fails the stream (CHECKSUM_MISMATCH)
 * before its end, so a consumer never sees a clean end of bad data. When no
 * identity opens the file, the error says what the file is encrypted to and
 * what to pass. Throws CONFIG_INVALID at once for malformed identities.
 */
export function decryptStream(identities: AgeIdentity[], options: DecryptOptions = {}): Transform {
  return new AgeDecryptStream(identities, options);
}

interface Stanza {
  args: string[];
  body: Buffer;
}

type CheckedIdentity = { kind: 'x25519'; key: KeyObject; publicKey: Buffer } | { kind: 'passphrase'; passphrase: string };

class AgeDecryptStream extends Transform {
  private readonly identities: CheckedIdentity[];
  private readonly what: string;
  private readonly maxWorkFactor: number;
  private state: 'header' | 'nonce' | 'payload' = 'header';
  private header: Buffer = Buffer.alloc(0);
  /** Where to resume looking for the MAC line in `header`. */
  private scanned = 0;
  private fileKey: Buffer | null = null;
  private payloadKey: Buffer | null = null;
  private readonly queue = new ByteQueue();
  private readonly nonce = Buffer.alloc(12);
  private counter = 0;

  constructor(identities: AgeIdentity[], options: DecryptOptions) {
    super({ readableHighWaterMark: STREAM_BUFFER, writableHighWaterMark: STREAM_BUFFER });
    this.what = options.what ?? 'the encrypted data';
    this.maxWorkFactor = options.maxWorkFactor ?? MAX_SCRYPT_WORK_FACTOR;
    this.identities = identities.map((identity, i) => {
      if (identity.kind === 'passphrase') {
        if (identity.passphrase.length === 0) throw ageError('identity', 'the age passphrase is empty');
        return { kind: 'passphrase', passphrase: identity.passphrase };
      }
      if (identity.kind !== 'x25519') throw ageError('identity', `unknown age identity kind ${String((identity as { kind: unknown }).kind)}`);
      const raw = decodeSecretKey(identity.secretKey.trim(), `age identity ${i + 1}`);
      const key = privateKeyObject(raw);
      return { kind: 'x25519', key, publicKey: rawPublic(createPublicKey(key)) };
    });
  }

  override _transform(chunk: Buffer, _encoding: BufferEncoding, callback: TransformCallback): void {
    if (this.state === 'header') {
      this.readHeader(chunk).then(
        (rest) => {
          if (rest === null) return callback();
          this.queue.push(rest);
          callback(this.open(false));
        },
        (error: Error) => callback(error),
      );
      return;
    }
    this.queue.push(chunk);
    callback(this.open(false));
  }

  override _flush(callback: TransformCallback): void {
    if (this.state === 'header') {
      callback(this.header.length === 0 ? this.corrupt('not-age', 'is empty, not an age-encrypted file') : this.corrupt('header', 'is truncated: it ends inside the age header'));
      return;
    }
    callback(this.open(true));
  }

  /** Collects the header; once complete, unwraps the file key and checks the MAC. Returns the bytes after it, or null. */
  private async readHeader(chunk: Buffer): Promise<Buffer | null> {
    this.header = this.header.length === 0 ? chunk : Buffer.concat([this.header, chunk]);
    const head = this.header.subarray(0, VERSION_LINE.length).toString('latin1');
    if (head !== VERSION_LINE.slice(0, head.length)) {
      if (ARMOR_BEGIN.startsWith(head)) {
        throw this.corrupt('not-age', 'is ASCII-armored age (-----BEGIN AGE ENCRYPTED FILE-----), which pgkeep does not read: decrypt it with age -d');
      }
      throw this.corrupt('not-age', `is not an age-encrypted file (it does not start with "age-encryption.org/v1")`);
    }
    // The MAC line is the first line that starts with "---": stanza lines start with "->", bodies are base64.
    const macLine = this.header.indexOf('\n---', this.scanned, 'latin1');
    const end = macLine < 0 ? -1 : this.header.indexOf(0x0a, macLine + 1);
    if (end < 0) {
      // Resume at the MAC line once its end arrives, or where "\n---" could still begin.
      this.scanned = macLine >= 0 ? macLine : Math.max(0, this.header.length - 3);
      if (this.header.length > MAX_HEADER) throw this.corrupt('header', `has no end of its age header within ${MAX_HEADER} bytes`);
      return null;
    }
    const headerBytes = this.header.subarray(0, end + 1);
    const rest = this.header.subarray(end + 1);
    this.header = Buffer.alloc(0);
    const { stanzas, macInput, mac } = this.parseHeader(headerBytes);
    const fileKey = await this.unwrap(stanzas);
    const expected = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(macInput).digest();
    if (!timingSafeEqual(expected, mac)) throw this.corrupt('header', 'is corrupt: the age header MAC does not match (the header was changed)');
    this.fileKey = fileKey;
    this.state = 'nonce';
    return rest;
  }

  private parseHeader(bytes: Buffer): { stanzas: Stanza[]; macInput: Buffer; mac: Buffer } {
    const bad = (why: string) => this.corrupt('header', `has a malformed age header (${why})`);
    for (const byte of bytes) if (byte !== 0x0a && (byte < 0x20 || byte > 0x7e)) throw bad('a byte that is not printable ASCII');
    const lines = bytes.toString('latin1').split('\n');
    lines.pop(); // after the final LF
    if (lines[0] !== VERSION_LINE.slice(0, -1)) throw bad('bad version line');
    const stanzas: Stanza[] = [];
    let i = 1;
    for (;;) {
      const line = lines[i++];
      if (line === undefined) throw bad('no MAC line');
      if (line.startsWith('-> ')) {
        const args = line.slice(3).split(' ');
        if (args.some((arg) => arg.length === 0 || !/^[\x21-\x7e]+$/.test(arg))) throw bad('an empty or invalid stanza argument');
        let body = '';
        for (;;) {
          const bodyLine = lines[i++];
          if (bodyLine === undefined || bodyLine.length > 64) throw bad('a stanza body line longer than 64 columns, or no final body line');
          body += bodyLine;
          if (bodyLine.length < 64) break;
        }
        const decoded = unb64(body);
        if (!decoded) throw bad('a stanza body that is not canonical unpadded base64');
        stanzas.push({ args, body: decoded });
      } else if (line.startsWith('--- ')) {
        if (i !== lines.length) throw bad('lines after the MAC line');
        const mac = unb64(line.slice(4));
        if (!mac || mac.length !== 32) throw bad('a MAC that is not 32 bytes of canonical base64');
        const macInputLength = bytes.length - 1 - line.length + 3;
        return { stanzas: this.checkStanzas(stanzas, bad), macInput: bytes.subarray(0, macInputLength), mac };
      } else {
        throw bad('a line that is neither a stanza nor the MAC');
      }
    }
  }

  private checkStanzas(stanzas: Stanza[], bad: (why: string) => PgkeepError): Stanza[] {
    if (stanzas.length === 0) throw bad('no recipient stanza');
    for (const { args, body } of stanzas) {
      if (args[0] === 'X25519') {
        const share = args.length === 2 ? unb64(args[1]!) : null;
        if (!share || share.length !== 32) throw bad('an X25519 stanza without exactly one 32-byte share');
        if (body.length !== 32) throw bad('an X25519 stanza body that is not 32 bytes');
      } else if (args[0] === 'scrypt') {
        if (stanzas.length !== 1) throw bad('a passphrase (scrypt) stanza alongside other stanzas');
        const salt = args.length === 3 ? unb64(args[1]!) : null;
        if (!salt || salt.length !== 16) throw bad('an scrypt stanza without a 16-byte salt');
        if (!/^[1-9][0-9]*$/.test(args[2]!)) throw bad('an scrypt work factor that is not a decimal number');
        if (body.length !== 32) throw bad('an scrypt stanza body that is not 32 bytes');
      }
    }
    return stanzas;
  }

  private async unwrap(stanzas: Stanza[]): Promise<Buffer> {
    for (const identity of this.identities) {
      if (identity.kind !== 'x25519') continue;
      for (const { args, body } of stanzas) {
        if (args[0] !== 'X25519') continue;
        const share = unb64(args[1]!)!;
        let shared: Buffer;
        try {
          shared = diffieHellman({ privateKey: identity.key, publicKey: publicKeyObject(share) });
        } catch (error) {
          // OpenSSL refuses an all-zero shared secret (a low-order share), which age requires aborting on.
          throw this.corrupt('header', 'has a malformed age header (an X25519 share of low order)', error);
        }
        if (shared.every((b) => b === 0)) throw this.corrupt('header', 'has a malformed age header (an X25519 share of low order)');
        const fileKey = aeadOpen(hkdf(shared, Buffer.concat([share, identity.publicKey]), X25519_INFO), body);
        if (fileKey) return fileKey;
      }
    }
    const scryptStanza = stanzas.find((s) => s.args[0] === 'scrypt');
    const passphrases = this.identities.filter((i): i is { kind: 'passphrase'; passphrase: string } => i.kind === 'passphrase');
    if (scryptStanza && passphrases.length > 0) {
      const salt = unb64(scryptStanza.args[1]!)!;
      const workFactor = Number(scryptStanza.args[2]);
      if (workFactor > this.maxWorkFactor) {
        throw ageError(
          'work-factor',
          `${this.what} is encrypted with a passphrase at scrypt work factor 2^${workFactor}, above pgkeep's limit of 2^${this.maxWorkFactor}: decrypt it with age -d`,
        );
      }
      for (const { passphrase } of passphrases) {
        const fileKey = aeadOpen(await scryptKey(passphrase, salt, workFactor), scryptStanza.body);
        if (fileKey) return fileKey;
      }
    }
    throw this.noIdentity(stanzas);
  }

  private noIdentity(stanzas: Stanza[]): PgkeepError {
    const x25519 = stanzas.filter((s) => s.args[0] === 'X25519').length;
    const scryptCount = stanzas.filter((s) => s.args[0] === 'scrypt').length;
    const others = new Map<string, number>();
    for (const s of stanzas) if (s.args[0] !== 'X25519' && s.args[0] !== 'scrypt') others.set(s.args[0]!, (others.get(s.args[0]!) ?? 0) + 1);
    const parts: string[] = [];
    if (x25519 > 0) parts.push(`to ${x25519} X25519 recipient${x25519 === 1 ? '' : 's'} (age1… keys)`);
    if (scryptCount > 0) parts.push('with a passphrase');
    for (const [type, n] of others) parts.push(`to ${n} ${type} recipient${n === 1 ? '' : 's'} (not supported by pgkeep: use age -d)`);
    const keys = this.identities.filter((i) => i.kind === 'x25519');
    const tried: string[] = [];
    if (keys.length > 0) tried.push(`the secret key${keys.length === 1 ? '' : 's'} of ${keys.map((k) => shortKey(bech32Encode(PUBLIC_KEY_HRP, k.publicKey))).join(', ')}`);
    if (this.identities.length > keys.length) tried.push(scryptCount > 0 ? 'a passphrase that is wrong' : 'a passphrase');
    const hints: string[] = [];
    if (x25519 > 0) hints.push('pass a matching secret key with --identity FILE or PGKEEP_AGE_IDENTITY_FILE');
    if (scryptCount > 0) hints.push('pass the passphrase with PGKEEP_PASSPHRASE');
    if (hints.length === 0) hints.push('decrypt it with age -d');
    const given = tried.length > 0 ? `none of the given identities opens it (${tried.join('; ')})` : 'no identity was given';
    return ageError('no-identity', `${this.what} is age-encrypted ${parts.join(' and ')}, and ${given}: ${hints.join(', or ')}`, undefined, {
      recipients: { x25519, scrypt: scryptCount, other: Object.fromEntries(others) },
    });
  }

  /** Opens every chunk known not to be the last; at the end, checks and opens the last one. */
  private open(end: boolean): Error | null {
    try {
      if (this.state === 'nonce') {
        if (this.queue.length < NONCE_SIZE) {
          if (end) throw this.corrupt('payload', 'is truncated: it ends before the age payload');
          return null;
        }
        this.payloadKey = hkdf(this.fileKey!, Buffer.concat(this.queue.take(NONCE_SIZE)), 'payload');
        this.state = 'payload';
      }
      // A full sealed chunk is opened only once more data follows: the last chunk must carry the last-chunk flag.
      while (this.queue.length > SEALED_CHUNK) this.openChunk(this.queue.take(SEALED_CHUNK), false);
      if (end) {
        const rest = this.queue.length;
        if (rest === 0) throw this.corrupt('payload', `is truncated: the age payload ends after chunk ${this.counter} without its final chunk`);
        if (rest < TAG) throw this.corrupt('payload', `is truncated: the age payload ends inside chunk ${this.counter + 1}`);
        if (rest === TAG && this.counter > 0) throw this.corrupt('payload', 'is corrupt: the age payload ends with an empty chunk');
        this.openChunk(this.queue.take(rest), true);
      }
      return null;
    } catch (error) {
      return error as Error;
    }
  }

  /** Pushes a chunk's plaintext only once its tag checked. */
  private openChunk(pieces: Buffer[], last: boolean): void {
    const index = this.counter;
    const decipher = createDecipheriv('chacha20-poly1305', this.payloadKey!, streamNonce(this.nonce, this.counter++, last), { authTagLength: TAG });
    decipher.setAuthTag(takeTail(pieces, TAG));
    const plain = pieces.map((piece) => decipher.update(piece));
    try {
      decipher.final();
    } catch (error) {
      const why = last
        ? `the last age payload chunk (${index + 1}) fails authentication: the data was changed, truncated, or has bytes appended`
        : `age payload chunk ${index + 1} fails authentication: the data was changed, or truncated or extended by whole chunks`;
      throw this.corrupt('payload', `is corrupt: ${why}`, error);
    }
    for (const chunk of plain) if (chunk.length > 0) this.push(chunk);
  }

  private corrupt(failure: AgeFailure, what: string, cause?: unknown): PgkeepError {
    return ageError(failure, `${this.what} ${what}`, cause);
  }
}

// ---------------------------------------------------------------------------
// Primitives

/**
 * The error code of each failure, in one place. Bytes that are not a valid age
 * file are corrupt bytes; keys and passphrases that cannot be used, or that do
 * not open the file, are a matter of configuration (exit 2).
 */
const FAILURE_CODES: Record<AgeFailure, ErrorCode> = {
  recipient: 'CONFIG_INVALID',
  identity: 'CONFIG_INVALID',
  'no-identity': 'CONFIG_INVALID',
  'work-factor': 'CONFIG_INVALID',
  'not-age': 'CHECKSUM_MISMATCH',
  header: 'CHECKSUM_MISMATCH',
  payload: 'CHECKSUM_MISMATCH',
};

function ageError(failure: AgeFailure, message: string, cause?: unknown, details: Record<string, unknown> = {}): PgkeepError {
  return new PgkeepError(FAILURE_CODES[failure], message, { cause, details: { age: failure, ...details } });
}

/** The 12-byte STREAM nonce: an 11-byte big-endian chunk counter, then 0x01 for the last chunk. */
function streamNonce(nonce: Buffer, counter: number, last: boolean): Buffer {
  if (counter >= 2 ** 48) throw new PgkeepError('INTERNAL', 'age payload too large');
  nonce.fill(0, 0, 5);
  nonce.writeUIntBE(counter, 5, 6);
  nonce[11] = last ? 1 : 0;
  return nonce;
}

function hkdf(ikm: Buffer, salt: Buffer, info: string): Buffer {
  return Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));
}

const ZERO_NONCE = Buffer.alloc(12);

/** ChaCha20-Poly1305 with a zero nonce, as stanzas wrap the file key. */
function aeadSeal(key: Buffer, plaintext: Buffer): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** Opens a 32-byte wrapped file key; null when this key does not open it. */
function aeadOpen(key: Buffer, sealed: Buffer): Buffer | null {
  if (sealed.length !== FILE_KEY_SIZE + TAG) return null;
  const decipher = createDecipheriv('chacha20-poly1305', key, ZERO_NONCE, { authTagLength: TAG });
  decipher.setAuthTag(sealed.subarray(FILE_KEY_SIZE));
  const plain = decipher.update(sealed.subarray(0, FILE_KEY_SIZE));
  try {
    decipher.final();
    return plain;
  } catch {
    return null;
  }
}

function scryptKey(passphrase: string, salt: Buffer, workFactor: number): Promise<Buffer> {
  const N = 2 ** workFactor;
  return new Promise((resolve, reject) => {
    scrypt(passphrase, Buffer.concat([Buffer.from(SCRYPT_SALT_LABEL, 'latin1'), salt]), 32, { N, r: 8, p: 1, maxmem: 256 * N * 8 + (1 << 20) }, (error, key) =>
      error ? reject(error) : resolve(key),
    );
  });
}

// DER prefixes of X25519 keys (RFC 8410): PKCS#8 private and SPKI public, each followed by the 32 raw bytes.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');

function privateKeyObject(raw: Buffer): KeyObject {
  return createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
}

function publicKeyObject(raw: Buffer): KeyObject {
  return createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
}

function rawPrivate(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'pkcs8' }).subarray(PKCS8_PREFIX.length);
}

function rawPublic(key: KeyObject): Buffer {
  return key.export({ format: 'der', type: 'spki' }).subarray(SPKI_PREFIX.length);
}

function decodeSecretKey(text: string, where: string): Buffer {
  let decoded: { hrp: string; data: Buffer };
  try {
    decoded = bech32Decode(text);
  } catch (error) {
    throw ageError('identity', `${where}: the age secret key is malformed (${(error as Error).message}): check it was copied whole (AGE-SECRET-KEY-1…, 74 characters)`);
  }
  if (decoded.hrp !== SECRET_KEY_HRP.toLowerCase() || decoded.data.length !== 32) {
    throw ageError('identity', `${where} is not an X25519 age secret key (AGE-SECRET-KEY-1…, 74 characters)`);
  }
  return decoded.data;
}

/** age1abcd…wxyz: enough to tell keys apart in a message. */
function shortKey(key: string): string {
  return key.length > 20 ? `${key.slice(0, 10)}…${key.slice(-6)}` : key;
}

/** Standard base64 without padding, as age writes it. */
function b64(data: Buffer): string {
  return data.toString('base64').replace(/=+$/, '');
}

/** Strict decoding: only canonical unpadded base64 (no padding, no stray bits), else null. */
function unb64(text: string): Buffer | null {
  if (!/^[A-Za-z0-9+/]*$/.test(text) || text.length % 4 === 1) return null;
  const data = Buffer.from(text, 'base64');
  return b64(data) === text ? data : null;
}

/** The last `n` bytes of `pieces`, removed from them (pieces are trimmed in place). */
function takeTail(pieces: Buffer[], n: number): Buffer {
  const tail: Buffer[] = [];
  let need = n;
  while (need > 0) {
    const last = pieces.pop()!;
    if (last.length <= need) {
      tail.unshift(last);
      need -= last.length;
    } else {
      tail.unshift(last.subarray(last.length - need));
      pieces.push(last.subarray(0, last.length - need));
      need = 0;
    }
  }
  return tail.length === 1 ? tail[0]! : Buffer.concat(tail);
}

/** A FIFO of buffers from which byte counts can be taken without copying. */
class ByteQueue {
  private readonly buffers: Buffer[] = [];
  private head = 0;
  length = 0;

  push(buffer: Buffer): void {
    if (buffer.length === 0) return;
    this.buffers.push(buffer);
    this.length += buffer.length;
  }

  /** The next `n` bytes (n <= length), as views of the queued buffers. */
  take(n: number): Buffer[] {
    const out: Buffer[] = [];
    let need = n;
    while (need > 0) {
      const first = this.buffers[this.head]!;
      if (first.length <= need) {
        out.push(first);
        need -= first.length;
        this.head++;
      } else {
        out.push(first.subarray(0, need));
        this.buffers[this.head] = first.subarray(need);
        need = 0;
      }
    }
    this.length -= n;
    if (this.head > 64) {
      this.buffers.splice(0, this.head);
      this.head = 0;
    }
    return out;
  }
}

// ---------------------------------------------------------------------------
// Bech32 (BIP 173), as age encodes keys: without the 90-character limit, the
// secret key in upper case.

const CHARSET = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
const GENERATOR = [0x3b6a57b2, 0x26508e6d, 0x1ea119fa, 0x3d4233dd, 0x2a1462b3];

function polymod(values: number[]): number {
  let chk = 1;
  for (const v of values) {
    const top = chk >>> 25;
    chk = ((chk & 0x1ffffff) << 5) ^ v;
    for (let i = 0; i < 5; i++) if ((top >>> i) & 1) chk ^= GENERATOR[i]!;
  }
  return chk;
}

function hrpExpand(hrp: string): number[] {
  const out: number[] = [];
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) >>> 5);
  out.push(0);
  for (let i = 0; i < hrp.length; i++) out.push(hrp.charCodeAt(i) & 31);
  return out;
}

function convertBits(data: Iterable<number>, from: number, to: number, pad: boolean): number[] | null {
  let acc = 0;
  let bits = 0;
  const out: number[] = [];
  const max = (1 << to) - 1;
  for (const value of data) {
    acc = (acc << from) | value;
    bits += from;
    while (bits >= to) {
      bits -= to;
      out.push((acc >>> bits) & max);
    }
    acc &= (1 << bits) - 1;
  }
  if (pad) {
    if (bits > 0) out.push((acc << (to - bits)) & max);
  } else if (bits >= from || ((acc << (to - bits)) & max) !== 0) {
    return null;
  }
  return out;
}

/** Encodes in the case of `hrp` (upper-case HRP: upper-case result). */
function bech32Encode(hrp: string, data: Buffer): string {
  const lowerHrp = hrp.toLowerCase();
  const words = convertBits(data, 8, 5, true)!;
  const checksum = polymod([...hrpExpand(lowerHrp), ...words, 0, 0, 0, 0, 0, 0]) ^ 1;
  for (let i = 0; i < 6; i++) words.push((checksum >>> (5 * (5 - i))) & 31);
  const encoded = `${lowerHrp}1${words.map((w) => CHARSET[w]).join('')}`;
  return hrp === lowerHrp ? encoded : encoded.toUpperCase();
}

/** Decodes and checks; the HRP is returned in lower case. Throws with a short reason. */
function bech32Decode(text: string): { hrp: string; data: Buffer } {
  const lower = text.toLowerCase();
  if (text !== lower && text !== text.toUpperCase()) throw new Error('mixed upper and lower case');
  const separator = lower.lastIndexOf('1');
  if (separator < 1 || separator + 7 > lower.length) throw new Error('too short');
  const hrp = lower.slice(0, separator);
  for (let i = 0; i < hrp.length; i++) {
    const c = hrp.charCodeAt(i);
    if (c < 33 || c > 126) throw new Error('invalid character');
  }
  const words: number[] = [];
  for (const c of lower.slice(separator + 1)) {
    const w = CHARSET.indexOf(c);
    if (w < 0) throw new Error(`invalid character "${c}"`);
    words.push(w);
  }
  if (polymod([...hrpExpand(hrp), ...words]) !== 1) throw new Error('bad checksum');
  const data = convertBits(words.slice(0, -6), 5, 8, false);
  if (!data) throw new Error('invalid padding');
  return { hrp, data: Buffer.from(data) };
}
