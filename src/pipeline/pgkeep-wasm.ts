import { PGKEEP_WASM_BASE64 } from './pgkeep-wasm-bytes.js';

/** The functions and memory of one instance of pgkeep-wasm.wat (see there for what each does). */
export interface PgkeepWasm {
  /** The instance's memory (never grown by these callers, so views on its buffer stay valid). */
  memory: { readonly buffer: ArrayBuffer; grow(pages: number): number };
  chunkerInit(min: number, average: number, max: number, maskSmall: number, maskLarge: number): void;
  chunkerReset(): void;
  chunkerScan(data: number, n: number, cuts: number): number;
  rowsBegin(intSize: number): void;
  rowsWalk(data: number, n: number): number;
  rowsNewlines(): number;
  rowsStatus(): number;
  rowsLastWasTrailer(): number;
  rowsBadLength(): number;
  rowsCopy(data: number, n: number, out: number, fill: number, capacity: number): number;
  rowsCopied(): number;
}

/** The size of a page of WebAssembly memory (memory.grow counts pages). */
export const WASM_PAGE = 64 * 1024;

/** Where callers may put their own bytes: above the gear table and the constants (pgkeep-wasm.wat, "Memory layout"). */
export const WASM_FREE_FROM = 2048;

/** Node's WebAssembly global, as far as it is used here (its types are in TypeScript's DOM library, which this project does not load). */
declare const WebAssembly: {
  Module: new (bytes: Uint8Array) => object;
  Instance: new (module: object, imports: object) => { exports: object };
};

let compiled: object | undefined;

/**
 * A new instance with its own memory (the module's state is per instance).
 * The module is compiled once per process, on first use: synchronously, as it
 * is about 1 KB.
 */
export function instantiatePgkeepWasm(): PgkeepWasm {
  compiled ??= new WebAssembly.Module(Buffer.from(PGKEEP_WASM_BASE64, 'base64'));
  return new WebAssembly.Instance(compiled, {}).exports as unknown as PgkeepWasm;
}
