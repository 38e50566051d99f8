import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, createWriteStream } from 'node:fs';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import * as path from 'node:path';
import { Readable, Writable } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { after, before, describe, test } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import {
  decryptStream,
  encryptStream,
  formatIdentityFile,
  generateIdentity,
  parseIdentityFile,
  publicKeyOf,
  type AgeIdentity,
  type AgeKeyPair,
  type AgeRecipient,
} from '../../src/pipeline/age.js';
import { cliZstd } from '../../src/pipeline/zstd.js';

/**
 * Interoperability with the reference implementation, the `age` and
 * `age-keygen` programs (Debian package `age`): every object pgkeep encrypts
 * must open with `age -d`, and pgkeep must open what `age` writes, with keys
 * made by either. Secrets never go on a command line: keys are files (0600),
 * passphrases are typed on a pseudo-terminal (util-linux `script`), as `age -p`
 * reads them only from a terminal.
 */

const CHUNK = 64 * 1024;
const MiB = 1 << 20;
const works = (command: string, args: string[]) => spawnSync(command, args).status === 0;
const hasAge = works('age', ['--version']) && works('age-keygen', ['--version']);
const hasScript = works('script', ['--version']);
const hasZstd = works('zstd', ['--version']);
const noAge = !hasAge && 'the age CLI is not installed (apt-get install age)';

const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');
const x = (publicKey: string): AgeRecipient => ({ kind: 'x25519', publicKey });

interface Run {
  code: number | null;
  stdout: Buffer;
  stderr: string;
}

/** Runs a program, feeding `input` (a buffer or a stream) to its stdin. */
function run(command: string, args: string[], input?: Buffer | Readable): Promise<Run> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(stdout), stderr }));
    child.stdin.on('error', () => undefined);
    if (input instanceof Readable) input.pipe(child.stdin);
    else child.stdin.end(input);
  });
}

/**
 * Runs `args` on a pseudo-terminal and answers each prompt, in order, once it
 * is on screen (the answer goes to the terminal, never to argv).
 */
function onTerminal(args: string[], answers: { prompt: string; answer: string }[]): Promise<{ code: number | null; output: string }> {
  const command = args.map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const child = spawn('script', ['-qfec', command, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
  let output = '';
  let answered = 0;
  let seen = 0;
  const onOutput = (text: string) => {
    output += text;
    const next = answers[answered];
    if (next && output.indexOf(next.prompt, seen) >= 0) {
      seen = output.indexOf(next.prompt, seen) + next.prompt.length;
      answered++;
      // age prints the prompt before it turns echo off: type a moment later, as a person would.
      setTimeout(() => child.stdin.write(`${next.answer}\r`), 100);
    }
  };
  child.stdout.setEncoding('utf8').on('data', onOutput);
  child.stderr.setEncoding('utf8').on('data', onOutput);
  child.stdin.on('error', () => undefined);
  return new Promise((resolve, reject) => {
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, output }));
  });
}

function pieces(data: Buffer, size = 256 * 1024): Readable {
  const out: Buffer[] = [];
  for (let i = 0; i < data.length; i += size) out.push(data.subarray(i, i + size));
  return Readable.from(out);
}

async function encryptToFile(data: Buffer, recipients: AgeRecipient[], file: string): Promise<void> {
  await pipeline(pieces(data), encryptStream(recipients), createWriteStream(file, { mode: 0o600 }));
}

async function decryptFile(file: string, identities: AgeIdentity[]): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    createReadStream(file),
    decryptStream(identities, { what: `object ${path.basename(file)}` }),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out.push(chunk);
        callback();
      },
    }),
  );
  return Buffer.concat(out);
}

async function decryptError(file: string, identities: AgeIdentity[]): Promise<PgkeepError> {
  const error = await decryptFile(file, identities).then(
    () => assert.fail('decryption succeeded'),
    (caught: unknown) => caught,
  );
  assert.ok(error instanceof PgkeepError, String(error));
  return error;
}

let work: string;
const file = (name: string) => path.join(work, name);

/** Writes a key file as secrets are kept: mode 0600. */
async function keyFile(name: string, keys: AgeKeyPair): Promise<string> {
  await writeFile(file(name), formatIdentityFile(keys), { mode: 0o600 });
  return file(name);
}

/** A key made by age-keygen: its file, secret key and public key. */
async function ageKeygen(name: string): Promise<AgeKeyPair & { path: string }> {
  const result = await run('age-keygen', ['-o', file(name)]);
  assert.equal(result.code, 0, result.stderr);
  const text = await readFile(file(name), 'utf8');
  const secretKey = text.split('\n').find((line) => line.startsWith('AGE-SECRET-KEY-1'))!;
  const publicKey = /# public key: (age1\S+)/.exec(text)![1]!;
  return { path: file(name), secretKey, publicKey };
}

const SIZES = [0, 1, CHUNK, 3 * CHUNK + 5, 5 * MiB + 1];

describe('age interoperability', { skip: noAge }, () => {
  before(async () => {
    work = await mkdtemp(path.join(tmpdir(), 'pgkeep-age-'));
  });
  after(async () => {
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('keys: age-keygen -y agrees with pgkeep on pgkeep keys, and pgkeep with age-keygen on its keys', async () => {
    for (let i = 0; i < 3; i++) {
      const mine = generateIdentity();
      const derived = await run('age-keygen', ['-y', await keyFile(`mine-${i}.txt`, mine)]);
      assert.equal(derived.code, 0, derived.stderr);
      assert.equal(derived.stdout.toString().trim(), mine.publicKey);

      const theirs = await ageKeygen(`theirs-${i}.txt`);
      assert.equal(publicKeyOf(theirs.secretKey), theirs.publicKey);
      assert.deepEqual(parseIdentityFile(await readFile(theirs.path, 'utf8')), [{ kind: 'x25519', secretKey: theirs.secretKey }]);
    }
  });

  test('age -d opens what pgkeep encrypts to several recipients, with each one\'s key', async () => {
    const ops = generateIdentity();
    const escrow = generateIdentity();
    const third = await ageKeygen('third.txt');
    const keys = [await keyFile('ops.txt', ops), await keyFile('escrow.txt', escrow), third.path];
    for (const size of SIZES) {
      const data = randomBytes(size);
      const encrypted = file(`pgkeep-${size}.age`);
      await encryptToFile(data, [x(ops.publicKey), x(escrow.publicKey), x(third.publicKey)], encrypted);
      for (const key of keys) {
        const result = await run('age', ['-d', '-i', key, encrypted]);
        assert.equal(result.code, 0, `${size} bytes, key ${path.basename(key)}: ${result.stderr}`);
        assert.equal(sha(result.stdout), sha(data), `${size} bytes, key ${path.basename(key)}`);
      }
    }
  });

  test('pgkeep opens what age encrypts (-r several times, -R recipients file), with keys from age-keygen and from pgkeep', async () => {
    const theirs = await ageKeygen('age-made.txt');
    const mine = generateIdentity();
    const other = generateIdentity();
    await writeFile(file('recipients.txt'), `# ops\n${mine.publicKey}\n# escrow\n${other.publicKey}\n`);
    for (const size of SIZES) {
      const data = randomBytes(size);
      await writeFile(file('plain'), data);
      const encrypted = file(`age-${size}.age`);
      const result = await run('age', ['-e', '-r', theirs.publicKey, '-R', file('recipients.txt'), '-o', encrypted, file('plain')]);
      assert.equal(result.code, 0, result.stderr);
      assert.equal(sha(await decryptFile(encrypted, parseIdentityFile(await readFile(theirs.path, 'utf8')))), sha(data), `${size} bytes, age-keygen key`);
      assert.equal(sha(await decryptFile(encrypted, [{ kind: 'x25519', secretKey: mine.secretKey }])), sha(data), `${size} bytes, pgkeep key`);
      assert.equal(sha(await decryptFile(encrypted, [{ kind: 'x25519', secretKey: other.secretKey }])), sha(data), `${size} bytes, second pgkeep key`);
    }
  });

  test('streaming through pipes: pgkeep | age -d, and age -e | pgkeep, 48 MiB each way', async () => {
    const keys = generateIdentity();
    const key = await keyFile('stream.txt', keys);
    const block = randomBytes(MiB + 7);
    const total = 48;
    const source = () =>
      Readable.from(
        (function* () {
          for (let i = 0; i < total; i++) yield block;
        })(),
      );
    const expected = createHash('sha256');
    for (let i = 0; i < total; i++) expected.update(block);
    const digest = expected.digest('hex');

    const encrypting = source().pipe(encryptStream([x(keys.publicKey)]));
    const opened = await run('age', ['-d', '-i', key], encrypting);
    assert.equal(opened.code, 0, opened.stderr);
    assert.equal(sha(opened.stdout), digest);

    const child = spawn('age', ['-e', '-r', keys.publicKey], { stdio: ['pipe', 'pipe', 'inherit'] });
    const hash = createHash('sha256');
    await Promise.all([
      pipeline(source(), child.stdin),
      pipeline(
        child.stdout,
        decryptStream([{ kind: 'x25519', secretKey: keys.secretKey }]),
        new Writable({
          write(chunk: Buffer, _encoding, callback) {
            hash.update(chunk);
            callback();
          },
        }),
      ),
    ]);
    assert.equal(hash.digest('hex'), digest);
  });

  test('a key that is not a recipient fails on both sides, with a clear message from pgkeep', async () => {
    const a = generateIdentity();
    const b = generateIdentity();
    const stranger = generateIdentity();
    const strangerKey = await keyFile('stranger.txt', stranger);

    const mine = file('for-a-and-b.age');
    await encryptToFile(randomBytes(1000), [x(a.publicKey), x(b.publicKey)], mine);
    const refused = await run('age', ['-d', '-i', strangerKey, mine]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /no identity matched any of the recipients/);

    await writeFile(file('plain'), randomBytes(1000));
    const theirs = file('age-for-a-and-b.age');
    assert.equal((await run('age', ['-e', '-r', a.publicKey, '-r', b.publicKey, '-o', theirs, file('plain')])).code, 0);
    const error = await decryptError(theirs, parseIdentityFile(await readFile(strangerKey, 'utf8'), strangerKey));
    assert.equal(error.code, 'CONFIG_INVALID');
    assert.match(error.message, /^object age-for-a-and-b\.age is age-encrypted to 2 X25519 recipients .* none of the given identities opens it .*: pass a matching secret key with --identity FILE or PGKEEP_AGE_IDENTITY_FILE$/);
  });

  test('each side rejects the other\'s damaged files', async () => {
    const keys = generateIdentity();
    const key = await keyFile('damage.txt', keys);
    const data = randomBytes(3 * CHUNK + 100);

    await encryptToFile(data, [x(keys.publicKey)], file('mine.age'));
    const mine = await readFile(file('mine.age'));
    const headerEnd = mine.indexOf('\n---') + 1;
    const damaged: [string, Buffer][] = [
      ['a flipped header byte', Buffer.from(mine).fill(mine[headerEnd + 10]! ^ 1, headerEnd + 10, headerEnd + 11)],
      ['a flipped payload byte', Buffer.from(mine).fill(mine[mine.length - CHUNK]! ^ 1, mine.length - CHUNK, mine.length - CHUNK + 1)],
      ['a cut at a chunk boundary', mine.subarray(0, mine.length - (100 + 16))],
      ['a cut inside a chunk', mine.subarray(0, mine.length - 50)],
      ['an appended byte', Buffer.concat([mine, Buffer.from([0])])],
    ];
    for (const [what, bytes] of damaged) {
      await writeFile(file('bad.age'), bytes);
      const result = await run('age', ['-d', '-i', key, file('bad.age')]);
      assert.notEqual(result.code, 0, `age accepted ${what}`);
      const error = await decryptError(file('bad.age'), [{ kind: 'x25519', secretKey: keys.secretKey }]);
      assert.equal(error.code, 'CHECKSUM_MISMATCH', `${what}: ${error.message}`);
    }

    await writeFile(file('plain'), data);
    assert.equal((await run('age', ['-e', '-r', keys.publicKey, '-o', file('theirs.age'), file('plain')])).code, 0);
    const theirs = await readFile(file('theirs.age'));
    for (const bytes of [theirs.subarray(0, theirs.length - 1), theirs.subarray(0, theirs.length - 116), Buffer.from(theirs).fill(theirs[2 * CHUNK]! ^ 1, 2 * CHUNK, 2 * CHUNK + 1)]) {
      await writeFile(file('bad.age'), bytes);
      const error = await decryptError(file('bad.age'), [{ kind: 'x25519', secretKey: keys.secretKey }]);
      assert.equal(error.code, 'CHECKSUM_MISMATCH', error.message);
    }
  });

  test('the recovery path from the README: age -d -i key.txt dump.zst.age | zstd -d', { skip: !hasZstd && 'zstd is not installed' }, async () => {
    const keys = generateIdentity();
    const key = await keyFile('restore.txt', keys);
    const dump = Buffer.from('COPY public.orders (id, note) FROM stdin;\n'.repeat(50_000) + '\\.\n');
    await pipeline(pieces(dump), cliZstd.compressor({ level: 3 }), encryptStream([x(keys.publicKey)]), createWriteStream(file('dump.zst.age'), { mode: 0o600 }));
    const result = await run('sh', ['-c', 'age -d -i "$1" "$2" | zstd -d', 'sh', key, file('dump.zst.age')]);
    assert.equal(result.code, 0, result.stderr);
    assert.equal(sha(result.stdout), sha(dump));
  });

  describe('passphrases (typed on a terminal, as age -p requires)', { skip: !hasScript && 'util-linux script is not installed (age reads passphrases only from a terminal)' }, () => {
    const passphrase = 'correct horse battery staple 42';

    test('age -d opens what pgkeep encrypts with a passphrase (scrypt, work factor 18)', { timeout: 60_000 }, async () => {
      const data = randomBytes(2 * CHUNK + 3);
      await encryptToFile(data, [{ kind: 'passphrase', passphrase }], file('pgkeep-pass.age'));
      const result = await onTerminal(['age', '-d', '-o', file('pgkeep-pass.out'), file('pgkeep-pass.age')], [{ prompt: 'Enter passphrase', answer: passphrase }]);
      assert.equal(result.code, 0, result.output);
      assert.equal(sha(await readFile(file('pgkeep-pass.out'))), sha(data));

      const wrong = await onTerminal(['age', '-d', '-o', file('pgkeep-pass.wrong'), file('pgkeep-pass.age')], [{ prompt: 'Enter passphrase', answer: 'not it' }]);
      assert.notEqual(wrong.code, 0, wrong.output);
    });

    test('pgkeep opens what age -p encrypts', { timeout: 60_000 }, async () => {
      const data = randomBytes(CHUNK + 1);
      await writeFile(file('pass-plain'), data);
      const result = await onTerminal(
        ['age', '-p', '-o', file('age-pass.age'), file('pass-plain')],
        [
          { prompt: 'Enter passphrase', answer: passphrase },
          { prompt: 'Confirm passphrase', answer: passphrase },
        ],
      );
      assert.equal(result.code, 0, result.output);
      assert.match((await readFile(file('age-pass.age'))).subarray(0, 60).toString('latin1'), /^age-encryption\.org\/v1\n-> scrypt /);
      assert.equal(sha(await decryptFile(file('age-pass.age'), [{ kind: 'passphrase', passphrase }])), sha(data));
      const wrong = await decryptError(file('age-pass.age'), [{ kind: 'passphrase', passphrase: 'not it' }]);
      assert.equal(wrong.code, 'CONFIG_INVALID');
      assert.match(wrong.message, /with a passphrase, and none of the given identities opens it \(a passphrase that is wrong\): pass the passphrase with PGKEEP_PASSPHRASE$/);
    });
  });
});
