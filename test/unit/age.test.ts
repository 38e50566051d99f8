import assert from 'node:assert/strict';
import { createCipheriv, createHash, createHmac, diffieHellman, generateKeyPairSync, hkdfSync, randomBytes, scryptSync, createPublicKey } from 'node:crypto';
import { Readable, Writable, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import {
  DEFAULT_SCRYPT_WORK_FACTOR,
  decryptStream,
  encryptStream,
  formatIdentityFile,
  generateIdentity,
  looksLikeAge,
  parseIdentityFile,
  publicKeyOf,
  validateRecipient,
  type AgeIdentity,
  type AgeRecipient,
  type DecryptOptions,
} from '../../src/pipeline/age.js';

const KiB = 1024;
const MiB = 1 << 20;
const CHUNK = 64 * KiB;
const SEALED = CHUNK + 16;

// The X25519 example of the age specification (c2sp.org/age): a published test key, not a secret.
const SPEC_SECRET = 'AGE-SECRET-KEY-1GFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPYYSJZGFPQ4EGAEX';
const SPEC_PUBLIC = 'age1zvkyg2lqzraa2lnjvqej32nkuu0ues2s82hzrye869xeexvn73equnujwj';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function pieces(data: Buffer, size: number): Buffer[] {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return out;
}

interface Outcome {
  output: Buffer;
  error: unknown;
  /** Whether the sink saw a clean end (it must not, for bad input). */
  ended: boolean;
}

async function run(stage: Transform, data: Buffer, pieceSize = 256 * KiB): Promise<Outcome> {
  const out: Buffer[] = [];
  let ended = false;
  let error: unknown;
  try {
    await pipeline(
      Readable.from(pieces(data, pieceSize)),
      stage,
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          out.push(chunk);
          callback();
        },
        final(callback) {
          ended = true;
          callback();
        },
      }),
    );
  } catch (caught) {
    error = caught;
  }
  return { output: Buffer.concat(out), error, ended };
}

async function encrypt(data: Buffer, recipients: AgeRecipient[], pieceSize?: number): Promise<Buffer> {
  const { output, error } = await run(encryptStream(recipients), data, pieceSize);
  if (error) throw error;
  return output;
}

async function decrypt(data: Buffer, identities: AgeIdentity[], options?: DecryptOptions, pieceSize?: number): Promise<Buffer> {
  const { output, error, ended } = await run(decryptStream(identities, options), data, pieceSize);
  if (error) throw error;
  assert.ok(ended);
  return output;
}

/** Decrypting must fail with a PgkeepError of `code` (and `age` detail), the sink never seeing a clean end. */
async function assertRejected(data: Buffer, identities: AgeIdentity[], code: string, failure?: string | string[], pieceSize?: number): Promise<PgkeepError> {
  const { error, ended } = await run(decryptStream(identities, { what: 'object dump.zst.age' }), data, pieceSize);
  assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${error === undefined ? 'success' : String(error)}`);
  assert.equal(error.code, code, error.message);
  if (failure !== undefined) assert.ok(([] as string[]).concat(failure).includes(error.details?.age as string), `details.age ${String(error.details?.age)}: ${error.message}`);
  assert.ok(!ended, 'the sink saw a clean end of bad data');
  assert.ok(error.message.startsWith('object dump.zst.age '), error.message);
  return error;
}

function headerLength(file: Buffer): number {
  const mac = file.indexOf('\n---');
  return file.indexOf(0x0a, mac + 1) + 1;
}

/** The size age gives `n` plaintext bytes after a header of `header` bytes. */
function encryptedSize(header: number, n: number): number {
  const chunks = Math.max(1, Math.ceil(n / CHUNK));
  return header + 16 + n + 16 * chunks;
}

const x = (publicKey: string): AgeRecipient => ({ kind: 'x25519', publicKey });
const id = (secretKey: string): AgeIdentity => ({ kind: 'x25519', secretKey });
const pass = (passphrase: string, workFactor = 10): AgeRecipient => ({ kind: 'passphrase', passphrase, workFactor });
const passId = (passphrase: string): AgeIdentity => ({ kind: 'passphrase', passphrase });

function assertConfigError(fn: () => unknown, pattern: RegExp, mustNotContain?: string): void {
  assert.throws(fn, (error: unknown) => {
    assert.ok(error instanceof PgkeepError, String(error));
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.match(error.message, pattern);
    assert.ok(!error.message.includes('\n'), 'one line');
    if (mustNotContain) assert.ok(!error.message.includes(mustNotContain), `the message echoes a secret: ${error.message}`);
    return true;
  });
}

// ---------------------------------------------------------------------------
// An independent writer of age files, straight from the specification, to
// build the edge cases pgkeep's encrypter never produces.

const b64 = (b: Buffer) => b.toString('base64').replace(/=+$/, '');
const hkdf = (ikm: Buffer, salt: Buffer, info: string) => Buffer.from(hkdfSync('sha256', ikm, salt, info, 32));

function aead(key: Buffer, nonce: Buffer, plaintext: Buffer): Buffer {
  const cipher = createCipheriv('chacha20-poly1305', key, nonce, { authTagLength: 16 });
  return Buffer.concat([cipher.update(plaintext), cipher.final(), cipher.getAuthTag()]);
}

/** The raw bytes of a bech32 key (checksum not checked: test input only). */
function bech32Bytes(key: string): Buffer {
  const charset = 'qpzry9x8gf2tvdw0s3jn54khce6mua7l';
  const words = [...key.toLowerCase().slice(key.lastIndexOf('1') + 1, -6)].map((c) => charset.indexOf(c));
  const out: number[] = [];
  let acc = 0;
  let bits = 0;
  for (const w of words) {
    acc = ((acc << 5) | w) & 0xfff;
    bits += 5;
    if (bits >= 8) {
      bits -= 8;
      out.push((acc >> bits) & 0xff);
    }
  }
  return Buffer.from(out);
}

function stanzaText(args: string[], body: Buffer): string {
  const encoded = b64(body);
  const lines: string[] = [];
  for (let i = 0; ; i += 64) {
    lines.push(encoded.slice(i, i + 64));
    if (encoded.length - i < 64) break;
  }
  return `-> ${args.join(' ')}\n${lines.join('\n')}\n`;
}

function x25519Stanza(fileKey: Buffer, recipient: Buffer, share?: Buffer): string {
  const ephemeral = generateKeyPairSync('x25519');
  const ephemeralShare = share ?? ephemeral.publicKey.export({ format: 'der', type: 'spki' }).subarray(12);
  const peer = createPublicKey({ key: Buffer.concat([Buffer.from('302a300506032b656e032100', 'hex'), recipient]), format: 'der', type: 'spki' });
  const shared = diffieHellman({ privateKey: ephemeral.privateKey, publicKey: peer });
  const wrapKey = hkdf(shared, Buffer.concat([ephemeralShare, recipient]), 'age-encryption.org/v1/X25519');
  return stanzaText(['X25519', b64(ephemeralShare)], aead(wrapKey, Buffer.alloc(12), fileKey));
}

function scryptStanza(fileKey: Buffer, passphrase: string, workFactor: number, workFactorText = String(workFactor)): string {
  const salt = randomBytes(16);
  const key = scryptSync(passphrase, Buffer.concat([Buffer.from('age-encryption.org/v1/scrypt'), salt]), 32, { N: 2 ** workFactor, r: 8, p: 1 });
  return stanzaText(['scrypt', b64(salt), workFactorText], aead(key, Buffer.alloc(12), fileKey));
}

/** An age file with the given stanzas and payload chunks (each with its own last flag). */
function craft(fileKey: Buffer, stanzas: string[], chunks: { data: Buffer; last: boolean }[]): Buffer {
  const macInput = `age-encryption.org/v1\n${stanzas.join('')}---`;
  const mac = createHmac('sha256', hkdf(fileKey, Buffer.alloc(0), 'header')).update(macInput).digest();
  const nonce = randomBytes(16);
  const payloadKey = hkdf(fileKey, nonce, 'payload');
  const sealed = chunks.map(({ data, last }, i) => {
    const chunkNonce = Buffer.alloc(12);
    chunkNonce.writeUIntBE(i, 5, 6);
    chunkNonce[11] = last ? 1 : 0;
    return aead(payloadKey, chunkNonce, data);
  });
  return Buffer.concat([Buffer.from(`${macInput} ${b64(mac)}\n`), nonce, ...sealed]);
}

// ---------------------------------------------------------------------------

describe('age keys', () => {
  it('derives the public key of the specification example', () => {
    assert.equal(publicKeyOf(SPEC_SECRET), SPEC_PUBLIC);
    assert.equal(publicKeyOf(`  ${SPEC_SECRET}\n`), SPEC_PUBLIC);
  });

  it('generates X25519 key pairs in age-keygen encoding', () => {
    const a = generateIdentity();
    const b = generateIdentity();
    assert.match(a.secretKey, /^AGE-SECRET-KEY-1[QPZRY9X8GF2TVDW0S3JN54KHCE6MUA7L]{58}$/);
    assert.match(a.publicKey, /^age1[qpzry9x8gf2tvdw0s3jn54khce6mua7l]{58}$/);
    assert.equal(publicKeyOf(a.secretKey), a.publicKey);
    assert.notEqual(a.secretKey, b.secretKey);
    assert.deepEqual(validateRecipient(a.publicKey), { kind: 'x25519', publicKey: a.publicKey });
  });

  it('writes identity files the way age-keygen does, and reads them back', () => {
    const keys = generateIdentity();
    const text = formatIdentityFile(keys, new Date('2026-11-21T02:00:00.123Z'));
    assert.equal(text, `# created: 2026-11-21T02:00:00Z\n# public key: ${keys.publicKey}\n${keys.secretKey}\n`);
    assert.deepEqual(parseIdentityFile(text), [{ kind: 'x25519', secretKey: keys.secretKey }]);
  });

  it('parses identity files: comments, blank lines, CRLF, several keys', () => {
    const a = generateIdentity();
    const b = generateIdentity();
    const text = `# ops key\r\n# public key: ${a.publicKey}\r\n${a.secretKey}\r\n\r\n   \n# escrow\n  ${b.secretKey}  \n`;
    assert.deepEqual(parseIdentityFile(text), [id(a.secretKey), id(b.secretKey)]);
  });

  it('rejects identity files it cannot use, naming the line but never the key', () => {
    const { secretKey, publicKey } = generateIdentity();
    const broken = secretKey.slice(0, -1) + (secretKey.endsWith('Q') ? 'P' : 'Q');
    assertConfigError(() => parseIdentityFile(`# key\n${broken}\n`, 'key.txt'), /^key\.txt, line 2: the age secret key is malformed \(bad checksum\)/, broken);
    assertConfigError(() => parseIdentityFile(`${secretKey.slice(0, 40)}\n`, 'key.txt'), /key\.txt, line 1: the age secret key is malformed/, secretKey.slice(0, 40));
    assertConfigError(() => parseIdentityFile(`${publicKey}\n`, 'key.txt'), /key\.txt, line 1 is a public key \(age1…\): an identity file holds the secret key/);
    assertConfigError(() => parseIdentityFile('hunter2 is my password\n', 'key.txt'), /key\.txt, line 1 is not an age secret key/, 'hunter2');
    assertConfigError(() => parseIdentityFile('# only comments\n\n', 'key.txt'), /key\.txt holds no age secret key/);
    assertConfigError(() => parseIdentityFile('', 'key.txt'), /key\.txt holds no age secret key/);
    assertConfigError(() => parseIdentityFile('AGE-PLUGIN-YUBIKEY-1QQQQQQ\n'), /plugin identities .* are not supported/);
    assertConfigError(() => parseIdentityFile('-----BEGIN OPENSSH PRIVATE KEY-----\nb3Blbn\n'), /SSH keys are not supported/);
    assertConfigError(() => parseIdentityFile('age-encryption.org/v1\n-> scrypt …\n'), /is itself age-encrypted/);
  });

  it('validates recipients with one clear line per mistake', () => {
    const { secretKey, publicKey } = generateIdentity();
    assert.deepEqual(validateRecipient(`  ${publicKey}\n`), x(publicKey));
    assert.deepEqual(validateRecipient(publicKey.toUpperCase()), x(publicKey), 'age accepts an all-upper-case key too');
    const typo = publicKey.slice(0, 20) + (publicKey[20] === 'q' ? 'p' : 'q') + publicKey.slice(21);
    assertConfigError(() => validateRecipient(typo), new RegExp(`^age recipient ${typo} is malformed \\(bad checksum\\)`));
    assertConfigError(() => validateRecipient(publicKey.slice(0, -3)), /is malformed \(bad checksum\): check it was copied whole/);
    assertConfigError(() => validateRecipient('age1'), /is malformed \(too short\)/);
    assertConfigError(() => validateRecipient(publicKey.slice(0, 30) + publicKey.slice(30).toUpperCase()), /malformed \(mixed upper and lower case\)/);
    assertConfigError(() => validateRecipient(''), /an age recipient is empty/);
    assertConfigError(() => validateRecipient(secretKey), /is a secret key .*give its public key instead \(age-keygen -y FILE prints it\)/, secretKey.slice(16));
    assertConfigError(() => validateRecipient('ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIL user@host'), /SSH public keys are not supported/);
    assertConfigError(() => validateRecipient('age1pq1qqqqqqqqqqqqqqqqqqqqqq'), /post-quantum .* not supported/);
    assertConfigError(() => validateRecipient('correct horse battery staple'), /does not start with age1/, 'horse');
    assertConfigError(() => validateRecipient('age1 secret passphrase'), /^age recipient is malformed/, 'passphrase');
  });

  it('knows the start of an age file', () => {
    assert.ok(looksLikeAge(Buffer.from('age-encryption.org/v1\n-> X25519')));
    assert.ok(looksLikeAge(Buffer.from('age-enc')));
    assert.ok(!looksLikeAge(Buffer.from([0x28, 0xb5, 0x2f, 0xfd])));
    assert.ok(!looksLikeAge(Buffer.alloc(0)));
  });
});

describe('age round trips', () => {
  const ops = generateIdentity();
  const escrow = generateIdentity();
  const stranger = generateIdentity();

  const sizes = [0, 1, 100, CHUNK - 1, CHUNK, CHUNK + 1, 2 * CHUNK, 3 * CHUNK + 17, MiB + 3];
  for (const size of sizes) {
    it(`${size} bytes: exact age size, any write sizes, either recipient decrypts`, async () => {
      const data = randomBytes(size);
      for (const writeSize of [256 * KiB, 1000, ...(size <= 3 * CHUNK + 17 ? [7] : [])]) {
        const file = await encrypt(data, [x(ops.publicKey), x(escrow.publicKey)], writeSize);
        assert.equal(file.length, encryptedSize(headerLength(file), size), 'a full last chunk is not followed by an empty one');
        for (const readSize of [1 << 20, 777, ...(size <= CHUNK + 1 && writeSize === 1000 ? [1, 5] : [])]) {
          assert.equal(sha(await decrypt(file, [id(ops.secretKey)], {}, readSize)), sha(data));
          assert.equal(sha(await decrypt(file, [id(stranger.secretKey), id(escrow.secretKey)], {}, readSize)), sha(data));
        }
      }
    });
  }

  it('writes one X25519 stanza per recipient and a fresh file key and nonce every time', async () => {
    const data = Buffer.from('same input');
    const a = await encrypt(data, [x(ops.publicKey), x(escrow.publicKey), x(SPEC_PUBLIC)]);
    const b = await encrypt(data, [x(ops.publicKey), x(escrow.publicKey), x(SPEC_PUBLIC)]);
    const header = a.subarray(0, headerLength(a)).toString('latin1');
    assert.match(header, /^age-encryption\.org\/v1\n(-> X25519 [A-Za-z0-9+/]{43}\n[A-Za-z0-9+/]{43}\n){3}--- [A-Za-z0-9+/]{43}\n$/);
    assert.notEqual(sha(a), sha(b));
    assert.equal((await decrypt(a, [id(SPEC_SECRET)])).toString(), 'same input');
  });

  it('encrypts with a passphrase (scrypt, the only stanza) at work factor 18 by default', async () => {
    const data = randomBytes(CHUNK + 5);
    const file = await encrypt(data, [{ kind: 'passphrase', passphrase: 'correct horse battery staple' }]);
    assert.match(file.subarray(0, headerLength(file)).toString('latin1'), new RegExp(`^age-encryption\\.org/v1\\n-> scrypt [A-Za-z0-9+/]{22} ${DEFAULT_SCRYPT_WORK_FACTOR}\\n[A-Za-z0-9+/]{43}\\n--- `));
    assert.ok((await decrypt(file, [passId('correct horse battery staple')])).equals(data));
  });

  it('tries every kind of identity it is given', async () => {
    const data = randomBytes(1000);
    const byPass = await encrypt(data, [pass('pw')]);
    assert.ok((await decrypt(byPass, [id(stranger.secretKey), passId('wrong'), passId('pw')])).equals(data));
    const byKey = await encrypt(data, [x(ops.publicKey)]);
    assert.ok((await decrypt(byKey, [passId('pw'), id(ops.secretKey)])).equals(data));
  });

  it('refuses unusable recipients at once', () => {
    assertConfigError(() => encryptStream([]), /no age recipient given/);
    assertConfigError(() => encryptStream([pass('pw'), x(ops.publicKey)]), /a passphrase cannot be combined with other age recipients/);
    assertConfigError(() => encryptStream([pass('a'), pass('b')]), /a passphrase cannot be combined/);
    assertConfigError(() => encryptStream([pass('')]), /passphrase is empty/);
    assertConfigError(() => encryptStream([pass('pw', 23)]), /work factor 23 is out of range/);
    assertConfigError(() => encryptStream([x(ops.secretKey)]), /is a secret key/, ops.secretKey.slice(16));
    assertConfigError(() => encryptStream([x('age1xyz')]), /age recipient/);
  });

  it('refuses unusable identities at once', () => {
    assertConfigError(() => decryptStream([id(ops.publicKey)]), /age identity 1: the age secret key is malformed|age identity 1 is not/);
    assertConfigError(() => decryptStream([id('AGE-SECRET-KEY-1QQQQ')]), /age identity 1: the age secret key is malformed/);
    assertConfigError(() => decryptStream([passId('')]), /passphrase is empty/);
  });
});

describe('age: no matching identity', () => {
  const ops = generateIdentity();
  const escrow = generateIdentity();
  const stranger = generateIdentity();

  it('says how many X25519 recipients the file has, which keys were tried, and what to pass', async () => {
    const file = await encrypt(randomBytes(100), [x(ops.publicKey), x(escrow.publicKey)]);
    const error = await assertRejected(file, [id(stranger.secretKey)], 'CONFIG_INVALID', 'no-identity');
    assert.match(error.message, /^object dump\.zst\.age is age-encrypted to 2 X25519 recipients \(age1… keys\), and none of the given identities opens it \(the secret key of age1.{6}….{6}\): pass a matching secret key with --identity FILE or PGKEEP_AGE_IDENTITY_FILE$/);
    assert.ok(error.message.includes(stranger.publicKey.slice(0, 10)));
    assert.ok(!error.message.includes(stranger.secretKey.slice(16, 30)));
    assert.deepEqual(error.details?.recipients, { x25519: 2, scrypt: 0, other: {} });
  });

  it('says when no identity was given', async () => {
    const file = await encrypt(randomBytes(100), [x(ops.publicKey)]);
    const error = await assertRejected(file, [], 'CONFIG_INVALID', 'no-identity');
    assert.match(error.message, /is age-encrypted to 1 X25519 recipient \(age1… keys\), and no identity was given: pass a matching secret key with --identity FILE or PGKEEP_AGE_IDENTITY_FILE/);
  });

  it('says a passphrase is needed, or that the one given is wrong', async () => {
    const file = await encrypt(randomBytes(100), [pass('right')]);
    const noPass = await assertRejected(file, [id(ops.secretKey)], 'CONFIG_INVALID', 'no-identity');
    assert.match(noPass.message, /is age-encrypted with a passphrase, and none of the given identities opens it \(the secret key of age1.*\): pass the passphrase with PGKEEP_PASSPHRASE$/);
    const wrong = await assertRejected(file, [passId('wrong')], 'CONFIG_INVALID', 'no-identity');
    assert.match(wrong.message, /with a passphrase, and none of the given identities opens it \(a passphrase that is wrong\): pass the passphrase with PGKEEP_PASSPHRASE$/);
  });

  it('refuses a scrypt work factor above the limit before running scrypt', async () => {
    const data = randomBytes(100);
    const file = await encrypt(data, [pass('pw', 12)]);
    assert.ok((await decrypt(file, [passId('pw')])).equals(data), 'within the default limit (22)');
    const { error, ended } = await run(decryptStream([passId('pw')], { maxWorkFactor: 11, what: 'object x' }), file);
    assert.ok(error instanceof PgkeepError && error.code === 'CONFIG_INVALID' && error.details?.age === 'work-factor', String(error));
    assert.ok(!ended);
    assert.match(error.message, /^object x is encrypted with a passphrase at scrypt work factor 2\^12, above pgkeep's limit of 2\^11: decrypt it with age -d$/);
  });
});

describe('age: files written by an independent implementation of the specification', () => {
  const me = generateIdentity();
  const recipient = bech32Bytes(me.publicKey);
  const fileKey = randomBytes(16);
  const full = randomBytes(CHUNK);
  const ok = async (file: Buffer, data: Buffer, identity: AgeIdentity = id(me.secretKey)) => assert.ok((await decrypt(file, [identity])).equals(data));

  it('reads a plain file, and ignores stanzas of unknown types (e.g. grease)', async () => {
    await ok(craft(fileKey, [x25519Stanza(fileKey, recipient)], [{ data: Buffer.from('hi'), last: true }]), Buffer.from('hi'));
    const grease = stanzaText(['x-grease', 'a)b', '~'], randomBytes(100)); // a body of two lines
    const exact = stanzaText(['other.example/v1'], randomBytes(48)); // a full 64-column line, then an empty one
    assert.match(exact, /\n[A-Za-z0-9+/]{64}\n\n$/);
    await ok(craft(fileKey, [grease, exact, x25519Stanza(fileKey, recipient)], [{ data: Buffer.from('hi'), last: true }]), Buffer.from('hi'));
  });

  it('names unsupported recipient types when nothing opens the file', async () => {
    const file = craft(fileKey, [stanzaText(['ssh-ed25519', 'Xyg06A', b64(randomBytes(32))], randomBytes(32))], [{ data: Buffer.from('x'), last: true }]);
    const error = await assertRejected(file, [id(me.secretKey)], 'CONFIG_INVALID', 'no-identity');
    assert.match(error.message, /age-encrypted to 1 ssh-ed25519 recipient \(not supported by pgkeep: use age -d\).*: decrypt it with age -d$/);
  });

  it('reads a full-size final chunk, and an empty payload as one empty final chunk', async () => {
    await ok(craft(fileKey, [x25519Stanza(fileKey, recipient)], [{ data: full, last: true }]), full);
    await ok(craft(fileKey, [x25519Stanza(fileKey, recipient)], [{ data: full, last: false }, { data: full, last: true }]), Buffer.concat([full, full]));
    await ok(craft(fileKey, [x25519Stanza(fileKey, recipient)], [{ data: Buffer.alloc(0), last: true }]), Buffer.alloc(0));
  });

  it('rejects STREAM violations: an empty final chunk after data, a short middle chunk, no final chunk, data after the final chunk', async () => {
    const stanzas = [x25519Stanza(fileKey, recipient)];
    const cases: [string, { data: Buffer; last: boolean }[]][] = [
      ['empty final chunk after a full one', [{ data: full, last: false }, { data: Buffer.alloc(0), last: true }]],
      ['short chunk not marked last, then more', [{ data: full.subarray(1), last: false }, { data: full, last: true }]],
      ['no chunk marked last', [{ data: full, last: false }, { data: full, last: false }]],
      ['a chunk after the final one', [{ data: full, last: true }, { data: Buffer.from('x'), last: true }]],
      ['no chunk at all', []],
    ];
    for (const [what, chunks] of cases) {
      const error = await assertRejected(craft(fileKey, stanzas, chunks), [id(me.secretKey)], 'CHECKSUM_MISMATCH', 'payload');
      assert.ok(error.message.length > 0, what);
    }
  });

  it('rejects a passphrase stanza next to any other stanza, and malformed scrypt stanzas', async () => {
    const data = [{ data: Buffer.from('x'), last: true }];
    const mixed = craft(fileKey, [scryptStanza(fileKey, 'pw', 4), x25519Stanza(fileKey, recipient)], data);
    await assertRejected(mixed, [id(me.secretKey)], 'CHECKSUM_MISMATCH', 'header');
    await assertRejected(mixed, [passId('pw')], 'CHECKSUM_MISMATCH', 'header');
    await assertRejected(craft(fileKey, [scryptStanza(fileKey, 'pw', 4), scryptStanza(fileKey, 'pw', 4)], data), [passId('pw')], 'CHECKSUM_MISMATCH', 'header');
    await ok(craft(fileKey, [scryptStanza(fileKey, 'pw', 4)], data), Buffer.from('x'), passId('pw'));
    for (const text of ['04', '+4', '0x4', '-4', '4.0', '']) {
      await assertRejected(craft(fileKey, [scryptStanza(fileKey, 'pw', 4, text)], data), [passId('pw')], 'CHECKSUM_MISMATCH', 'header');
    }
    // Claims 2^23 (8 GiB of memory): refused before scrypt runs.
    await assertRejected(craft(fileKey, [scryptStanza(fileKey, 'pw', 4, '23')], data), [passId('pw')], 'CONFIG_INVALID', 'work-factor');
  });

  it('rejects non-canonical encodings and a low-order X25519 share', async () => {
    const data = [{ data: Buffer.from('x'), last: true }];
    const good = x25519Stanza(fileKey, recipient);
    const padded = good.replace(/^(-> X25519 \S+)/, '$1=');
    await assertRejected(craft(fileKey, [padded], data), [id(me.secretKey)], 'CHECKSUM_MISMATCH', 'header');
    const crlf = craft(fileKey, [good.replace(/\n/g, '\r\n')], data);
    await assertRejected(crlf, [id(me.secretKey)], 'CHECKSUM_MISMATCH', 'header');
    const lowOrder = x25519Stanza(fileKey, recipient, Buffer.alloc(32));
    await assertRejected(craft(fileKey, [lowOrder], data), [id(me.secretKey)], 'CHECKSUM_MISMATCH', 'header');
    const extraArg = good.replace(/^(-> X25519 \S+)/, '$1 extra');
    await assertRejected(craft(fileKey, [extraArg], data), [id(me.secretKey)], 'CHECKSUM_MISMATCH', 'header');
  });
});

describe('age: corruption and truncation are detected', () => {
  const ops = generateIdentity();
  const escrow = generateIdentity();
  const data = randomBytes(3 * CHUNK + 1000);
  let file: Buffer;
  let header: number;
  const ids = () => [id(ops.secretKey)];
  const flip = (at: number, mask = 0x01) => {
    const copy = Buffer.from(file);
    copy[at] = copy[at]! ^ mask;
    return copy;
  };
  const payload = (k: number) => header + 16 + k * SEALED; // where sealed chunk k starts

  it('encrypts the sample (3 full chunks and a short one, two recipients)', async () => {
    file = await encrypt(data, [x(ops.publicKey), x(escrow.publicKey)]);
    header = headerLength(file);
    assert.equal(file.length, payload(3) + 1000 + 16);
    assert.ok((await decrypt(file, ids())).equals(data));
  });

  it('every single-bit change in the header or the payload nonce fails', async () => {
    for (let at = 0; at < header + 16; at++) {
      const { error, ended } = await run(decryptStream(ids()), flip(at));
      assert.ok(error instanceof PgkeepError, `byte ${at}: ${String(error)}`);
      assert.ok(!ended, `byte ${at}`);
      // A changed stanza of this key can only look like "not for this key"; everything else is corruption.
      const noIdentity = error.code === 'CONFIG_INVALID' && error.details?.age === 'no-identity';
      assert.ok(error.code === 'CHECKSUM_MISMATCH' || noIdentity, `byte ${at}: ${error.code} ${error.message}`);
    }
  });

  it('changes in the version line, the MAC line and the nonce are reported as corruption', async () => {
    const macLine = file.indexOf('\n---') + 1;
    for (const at of [0, 5, 20, macLine, macLine + 3, macLine + 10, header - 2, header - 1, header, header + 15]) {
      await assertRejected(flip(at), ids(), 'CHECKSUM_MISMATCH', ['not-age', 'header', 'payload']);
      await assertRejected(flip(at, 0xff), ids(), 'CHECKSUM_MISMATCH', ['not-age', 'header', 'payload']);
    }
  });

  it('a changed byte anywhere in the payload fails, and only authenticated chunks come out before it', async () => {
    for (const at of [payload(0), payload(1) + 123, payload(2) - 1, Math.floor((payload(0) + file.length) / 2), payload(3), file.length - 17, file.length - 1]) {
      const { output, error, ended } = await run(decryptStream(ids(), { what: 'object x' }), flip(at));
      assert.ok(error instanceof PgkeepError && error.code === 'CHECKSUM_MISMATCH' && error.details?.age === 'payload', `byte ${at}: ${String(error)}`);
      assert.ok(!ended);
      const bad = Math.floor((at - payload(0)) / SEALED);
      assert.ok(output.length <= bad * CHUNK, `byte ${at}: released ${output.length} bytes, past chunk ${bad}`);
      assert.ok(output.equals(data.subarray(0, output.length)), 'what came out is the authentic prefix');
    }
  });

  it('truncation anywhere fails: at chunk boundaries, mid-chunk, inside a tag, in the header, to nothing', async () => {
    const cuts = [payload(1), payload(2), payload(3), payload(1) + 1, payload(2) + CHUNK / 2, payload(3) + 500, file.length - 1, file.length - 16, payload(0) + 10, payload(0), header + 8, header];
    for (const cut of cuts) await assertRejected(file.subarray(0, cut), ids(), 'CHECKSUM_MISMATCH', 'payload');
    for (const cut of [header - 1, 40, 10, 1]) await assertRejected(file.subarray(0, cut), ids(), 'CHECKSUM_MISMATCH', 'header');
    await assertRejected(Buffer.alloc(0), ids(), 'CHECKSUM_MISMATCH', 'not-age');
  });

  it('appended bytes and reordered, duplicated or dropped chunks fail', async () => {
    await assertRejected(Buffer.concat([file, Buffer.from([0])]), ids(), 'CHECKSUM_MISMATCH', 'payload');
    await assertRejected(Buffer.concat([file, file.subarray(payload(3))]), ids(), 'CHECKSUM_MISMATCH', 'payload');
    const chunk = (k: number) => file.subarray(payload(k), payload(k + 1));
    const head = file.subarray(0, payload(0));
    const last = file.subarray(payload(3));
    await assertRejected(Buffer.concat([head, chunk(1), chunk(0), chunk(2), last]), ids(), 'CHECKSUM_MISMATCH', 'payload');
    await assertRejected(Buffer.concat([head, chunk(0), chunk(1), chunk(1), chunk(2), last]), ids(), 'CHECKSUM_MISMATCH', 'payload');
    await assertRejected(Buffer.concat([head, chunk(0), chunk(2), last]), ids(), 'CHECKSUM_MISMATCH', 'payload');
  });

  it('says plainly when the data is not age at all', async () => {
    const zstd = await assertRejected(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 1, 2, 3]), ids(), 'CHECKSUM_MISMATCH', 'not-age');
    assert.match(zstd.message, /^object dump\.zst\.age is not an age-encrypted file/);
    const armored = await assertRejected(Buffer.from('-----BEGIN AGE ENCRYPTED FILE-----\nYWdl\n'), ids(), 'CHECKSUM_MISMATCH', 'not-age');
    assert.match(armored.message, /ASCII-armored/);
    const endless = Buffer.concat([Buffer.from('age-encryption.org/v1\n-> X25519 '), Buffer.alloc(2 * MiB, 0x41)]);
    await assertRejected(endless, ids(), 'CHECKSUM_MISMATCH', 'header');
  });
});

describe('age streams: backpressure and bounded memory', () => {
  const me = generateIdentity();

  it('encryptStream stops accepting input while nobody reads its output', async () => {
    const stream = encryptStream([x(me.publicKey)]);
    const block = randomBytes(256 * KiB);
    let accepted = 0;
    for (let i = 0; i < 64 && stream.write(block); i++) accepted++;
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(accepted < 16, `accepted ${accepted} writes of 256 KiB without a reader`);
    assert.ok(stream.writableLength + stream.readableLength < 8 * MiB, `buffered ${stream.writableLength + stream.readableLength} bytes`);
    stream.destroy();
  });

  it('decryptStream stops accepting input while nobody reads its output', async () => {
    const file = await encrypt(randomBytes(16 * MiB), [x(me.publicKey)]);
    const stream = decryptStream([id(me.secretKey)]);
    let offset = 0;
    while (offset < file.length && stream.write(file.subarray(offset, offset + 256 * KiB))) offset += 256 * KiB;
    await new Promise((resolve) => setTimeout(resolve, 20));
    assert.ok(offset < 4 * MiB, `accepted ${offset} bytes without a reader`);
    assert.ok(stream.writableLength + stream.readableLength < 8 * MiB);
    stream.destroy();
  });

  it('200 MiB through encrypt → decrypt: byte-exact, RSS growth under 100 MB', async (t) => {
    const TOTAL = 200 * MiB;
    const pool = randomBytes(4 * MiB + 12345);
    const inHash = createHash('sha256');
    const outHash = createHash('sha256');
    // Odd write sizes, so chunks never line up with the source's buffers.
    async function* source() {
      let sent = 0;
      let at = 0;
      while (sent < TOTAL) {
        const size = Math.min(TOTAL - sent, 200_000 + (sent % 99_991));
        if (at + size > pool.length) at = 0;
        const piece = pool.subarray(at, at + size);
        at += size;
        sent += size;
        inHash.update(piece);
        yield piece;
      }
    }
    const before = process.memoryUsage().rss;
    let peak = before;
    let received = 0;
    let sealed = 0;
    const started = performance.now();
    const encrypting = encryptStream([x(me.publicKey)]);
    encrypting.on('data', (chunk: Buffer) => (sealed += chunk.length));
    await pipeline(
      source,
      encrypting,
      decryptStream([id(me.secretKey)]),
      new Writable({
        highWaterMark: MiB,
        write(chunk: Buffer, _encoding, callback) {
          received += chunk.length;
          outHash.update(chunk);
          peak = Math.max(peak, process.memoryUsage().rss);
          setImmediate(callback); // a slow consumer, like a pipe to a child process
        },
      }),
    );
    const seconds = (performance.now() - started) / 1000;
    assert.equal(received, TOTAL);
    assert.equal(outHash.digest('hex'), inHash.digest('hex'));
    assert.ok(sealed > TOTAL + (TOTAL / CHUNK) * 16);
    const growth = peak - before;
    t.diagnostic(`RSS ${(before / MiB).toFixed(0)} → peak ${(peak / MiB).toFixed(0)} MiB (growth ${(growth / MiB).toFixed(1)} MiB) in ${seconds.toFixed(1)} s, into a slow consumer`);
    assert.ok(growth < 100 * 1e6, `RSS grew by ${(growth / MiB).toFixed(0)} MiB`);
  });
});
