import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { Readable, Writable, type Duplex, type Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import { describe, it } from 'node:test';
import { PgkeepError } from '../../src/errors.js';
import { cliZstd, DEFAULT_ZSTD_LEVEL, defaultZstd, nativeZstd, streamZstd, type ZstdCodec } from '../../src/pipeline/zstd.js';

const codecs: ZstdCodec[] = [nativeZstd, cliZstd].filter((c): c is ZstdCodec => c !== null);
const ZSTD_MAGIC = Buffer.from([0x28, 0xb5, 0x2f, 0xfd]);

/** ~5 MiB of mixed data: random (incompressible), text (compressible), zeros, and a repeating pattern. */
function mixedData(): Buffer {
  const parts: Buffer[] = [];
  const text = Buffer.from('INSERT INTO orders VALUES (42, \'2026-11-21\', \'shipped\', 19.99);\n'.repeat(4000));
  for (let i = 0; i < 8; i++) {
    parts.push(randomBytes(300_000));
    parts.push(text);
    parts.push(Buffer.alloc(50_000 + i * 1000));
    parts.push(Buffer.from(Array.from({ length: 40_000 }, (_, j) => (j * 31 + i) & 0xff)));
  }
  return Buffer.concat(parts);
}

const input = mixedData();
const sha = (b: Buffer) => createHash('sha256').update(b).digest('hex');

function chunks(buffer: Buffer, size = 256 * 1024): Readable {
  const parts: Buffer[] = [];
  for (let i = 0; i < buffer.length; i += size) parts.push(buffer.subarray(i, i + size));
  return Readable.from(parts);
}

async function through(data: Buffer, stage: Transform | Duplex): Promise<Buffer> {
  const out: Buffer[] = [];
  await pipeline(
    chunks(data),
    stage,
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        out.push(chunk);
        callback();
      },
    }),
  );
  return Buffer.concat(out);
}

/** Runs the real `zstd` program over `data`. */
function zstdProgram(args: string[], data: Buffer): Promise<{ code: number | null; stdout: Buffer; stderr: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('zstd', args, { stdio: ['pipe', 'pipe', 'pipe'] });
    const stdout: Buffer[] = [];
    let stderr = '';
    child.stdout.on('data', (chunk: Buffer) => stdout.push(chunk));
    child.stderr.setEncoding('utf8').on('data', (text: string) => (stderr += text));
    child.on('error', reject);
    child.on('close', (code) => resolve({ code, stdout: Buffer.concat(stdout), stderr }));
    child.stdin.on('error', () => undefined);
    child.stdin.end(data);
  });
}

describe('zstd codecs', () => {
  it('the zstd program is installed and cliZstd is always available', () => {
    assert.equal(cliZstd.name, 'zstd-cli');
    assert.ok(codecs.length >= 1);
    if (nativeZstd) assert.equal(nativeZstd.name, 'zstd-napi');
    assert.equal(defaultZstd(), process.env.PGKEEP_ZSTD === 'cli' ? cliZstd : (nativeZstd ?? cliZstd));
  });

  for (const codec of codecs) {
    describe(codec.name, () => {
      it('compress → decompress round-trips ~5 MiB of mixed data', async () => {
        const compressed = await through(input, codec.compressor({ level: DEFAULT_ZSTD_LEVEL }));
        assert.ok(compressed.subarray(0, 4).equals(ZSTD_MAGIC), 'a standard zstd frame');
        assert.ok(compressed.length < input.length, `compressed ${compressed.length} < ${input.length}`);
        const restored = await through(compressed, codec.decompressor());
        assert.equal(restored.length, input.length);
        assert.equal(sha(restored), sha(input));
      });

      it('round-trips with several threads and another level', async () => {
        const compressed = await through(input, codec.compressor({ level: 9, threads: 2 }));
        const restored = await through(compressed, codec.decompressor());
        assert.equal(sha(restored), sha(input));
      });

      it('round-trips an empty stream', async () => {
        const compressed = await through(Buffer.alloc(0), codec.compressor());
        const restored = await through(compressed, codec.decompressor());
        assert.equal(restored.length, 0);
      });

      it('its output is decodable by the zstd program', async () => {
        const compressed = await through(input, codec.compressor());
        const result = await zstdProgram(['-d', '-c', '-q'], compressed);
        assert.equal(result.code, 0, result.stderr);
        assert.equal(sha(result.stdout), sha(input));
      });

      it('decodes what the zstd program wrote', async () => {
        const result = await zstdProgram(['-c', '-q', '-5'], input);
        assert.equal(result.code, 0, result.stderr);
        const restored = await through(result.stdout, codec.decompressor());
        assert.equal(sha(restored), sha(input));
      });

      for (const other of codecs) {
        it(`its output is decodable by ${other.name}`, async () => {
          const compressed = await through(input, codec.compressor());
          const restored = await through(compressed, other.decompressor());
          assert.equal(sha(restored), sha(input));
        });
      }

      it('a corrupt compressed stream makes the decompressor fail', async () => {
        const compressed = await through(input, codec.compressor());
        const corrupt = Buffer.from(compressed);
        for (let i = Math.floor(corrupt.length / 3); i < corrupt.length / 3 + 64; i++) corrupt[i] = corrupt[i]! ^ 0x5a;
        await assert.rejects(through(corrupt, codec.decompressor()));
      });

      it('input that is not zstd at all makes the decompressor fail', async () => {
        await assert.rejects(through(Buffer.from('this is plain text, not a zstd frame\n'.repeat(100)), codec.decompressor()));
      });

      it('a truncated compressed stream makes the decompressor fail', async () => {
        const compressed = await through(input, codec.compressor());
        await assert.rejects(through(compressed.subarray(0, Math.floor(compressed.length / 2)), codec.decompressor()));
      });
    });
  }

  it('zstd-cli failures are TOOL_FAILED PgkeepErrors carrying zstd\'s message', async () => {
    await assert.rejects(through(Buffer.from('not zstd'), cliZstd.decompressor()), (error: unknown) => {
      assert.ok(error instanceof PgkeepError, `expected a PgkeepError, got ${String(error)}`);
      assert.equal(error.code, 'TOOL_FAILED');
      assert.match(error.message, /zstd/);
      return true;
    });
  });

  it('a backup\'s dump is compressed by the zstd program when it is installed (it runs beside pgkeep, not on its main thread)', async () => {
    const installed = (await zstdProgram(['--version'], Buffer.alloc(0))).code === 0;
    assert.ok(installed, 'the zstd program is a test prerequisite');
    assert.equal(await streamZstd(), cliZstd);
    // and what it writes, the in-process decompressor reads (restore uses defaultZstd())
    const compressed = await through(input, (await streamZstd()).compressor({ level: DEFAULT_ZSTD_LEVEL }));
    assert.equal(sha(await through(compressed, defaultZstd().decompressor())), sha(input));
  });
});
