import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { describe, test } from 'node:test';
import { PGKEEP_WASM_BASE64 } from '../../src/pipeline/pgkeep-wasm-bytes.js';
// @ts-expect-error: a plain JavaScript build script, without type declarations
import { assembleWasm, bytesModule, BYTES_FILE } from '../../scripts/build-wasm.mjs';

describe('pgkeep-wasm: the checked-in module is its source assembled', () => {
  test('the bytes shipped (pgkeep-wasm-bytes.ts) are the .wat source assembled by the pinned wabt', async () => {
    const assembled = (await assembleWasm()) as Buffer;
    const shipped = Buffer.from(PGKEEP_WASM_BASE64, 'base64');
    assert.ok(assembled.length > 8 && assembled.subarray(0, 4).equals(Buffer.from('\0asm')), 'a WebAssembly module');
    assert.ok(shipped.equals(assembled), 'src/pipeline/pgkeep-wasm-bytes.ts is out of date: run node scripts/build-wasm.mjs');
    // and the generated file itself is what the script writes (no hand edits beside the bytes)
    assert.equal(await readFile(BYTES_FILE as string, 'utf8'), (bytesModule as (b: Buffer) => string)(assembled));
  });
});
