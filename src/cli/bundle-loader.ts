/**
 * Loads a bundle of the command-line program (dist/cli/main.cjs, wal-cli.cjs)
 * the way Node's CommonJS loader does, but compiled with V8's code cache that
 * the build made for it (dist/cli/<name>.cjs.cache, scripts/bundle-cli.mjs).
 *
 * Why: compiling the 2.5 MB program is a third of every command's start-up
 * (V8 parsing the file, then each function the run calls); with the cache V8
 * takes the compiled bytecode instead (numbers in docs/architecture.md, "Two
 * entry points"). The cache is made by the build only, never here: dist/ may be
 * read-only, and wal-push runs as the postgres OS user.
 *
 * Any cache that is not exactly this bundle's is ignored, silently: missing,
 * damaged (its checksum), made for another build of the bundle (the bundle's
 * checksum and size in its header: V8 itself compares only the source's
 * length) or for the bundle at another path (a copied dist/), or refused by V8 (another Node or V8 version, other V8 flags). The
 * bundle then compiles as it would without a cache.
 */
import { readFileSync } from 'node:fs';
import Module, { createRequire } from 'node:module';
import * as path from 'node:path';
import { Script } from 'node:vm';
import * as zlib from 'node:zlib';

/**
 * What became of a bundle's code cache: `accepted` by V8; `rejected` by V8 (its version or flags differ);
 * not offered to V8 when `stale` (made for another build), `moved` (made for the bundle at another path),
 * `damaged` (checksum) or `missing` (no file); `unsupported` where Node has no zlib.crc32 to check it
 * with (before 20.15).
 */
export type CodeCacheState = 'accepted' | 'rejected' | 'stale' | 'moved' | 'damaged' | 'missing' | 'unsupported';

/** The cache file of a bundle: dist/cli/main.cjs → dist/cli/main.cjs.cache. */
export const codeCacheFile = (bundle: string): string => `${bundle}.cache`;

/**
 * The header: "PGKC" (pgkeep code cache), a format version, the bundle's crc32 and size, V8's data's crc32
 * and size, the size of the bundle's path, flags (ASCII_ONLY); then the path, then V8's data.
 *
 * The path: a script compiled from a cache keeps the file name it was made under (V8 11), so stack traces
 * of a copied dist/ would name the build's folder; a bundle elsewhere compiles without the cache.
 */
const MAGIC = 0x50474b43;
const FORMAT = 1;
const HEADER_BYTES = 32;
/**
 * The bundle has no byte above 127 (the build sees to it, scripts/bundle-cli.mjs): it is decoded as latin1,
 * which gives V8 a one-byte string; UTF-8 text with one non-ASCII character becomes a two-byte string, and
 * compiling main.cjs with its cache took ~10 ms longer (decoding, and V8 reading twice the bytes).
 */
const ASCII_ONLY = 1;

type Crc32 = (data: Uint8Array) => number;
// zlib.crc32 is Node 20.15+; without it no cache is used (computing one in JavaScript costs more than it saves)
const crc32 = (zlib as { crc32?: Crc32 }).crc32;

/** The cache file's bytes: a header binding V8's data to this exact bundle at this path, then the data. */
export function encodeCodeCache(file: string, bundle: Uint8Array, data: Uint8Array, checksum: Crc32 = crc32!): Buffer {
  const where = Buffer.from(path.resolve(file));
  const header = Buffer.alloc(HEADER_BYTES);
  header.writeUInt32BE(MAGIC, 0);
  header.writeUInt32BE(FORMAT, 4);
  header.writeUInt32BE(checksum(bundle), 8);
  header.writeUInt32BE(bundle.length, 12);
  header.writeUInt32BE(checksum(data), 16);
  header.writeUInt32BE(data.length, 20);
  header.writeUInt32BE(where.length, 24);
  header.writeUInt32BE(bundle.every((byte) => byte < 0x80) ? ASCII_ONLY : 0, 28);
  return Buffer.concat([header, where, data]);
}

/** V8's data from a cache file, when the file is this bundle's, made at its path, and intact. */
function decodeCodeCache(file: string, bundle: Uint8Array, cache: Buffer, checksum: Crc32): { data: Buffer; ascii: boolean } | 'damaged' | 'stale' | 'moved' {
  if (cache.length < HEADER_BYTES || cache.readUInt32BE(0) !== MAGIC || cache.readUInt32BE(4) !== FORMAT) return 'damaged';
  const dataStart = HEADER_BYTES + cache.readUInt32BE(24);
  const data = cache.subarray(dataStart);
  if (dataStart > cache.length || data.length !== cache.readUInt32BE(20) || checksum(data) !== cache.readUInt32BE(16)) return 'damaged';
  if (cache.toString('utf8', HEADER_BYTES, dataStart) !== path.resolve(file)) return 'moved';
  if (bundle.length !== cache.readUInt32BE(12) || checksum(bundle) !== cache.readUInt32BE(8)) return 'stale';
  return { data, ascii: (cache.readUInt32BE(28) & ASCII_ONLY) !== 0 };
}

/** A compiled bundle, not yet run. */
export interface CompiledBundle {
  readonly file: string;
  /** The bundle's bytes as compiled (the build binds its cache to them). */
  readonly bytes: Buffer;
  readonly cache: CodeCacheState;
  /** The V8 script: the build calls createCachedData() on it after a run. */
  readonly script: Script;
  /** Runs the bundle's top level as Node's loader would; returns its module.exports. */
  run(): unknown;
}

/**
 * Compiles a bundle, with its code cache when there is a usable one. Separate from running it so that
 * V8 flags a command needs (the backup's small young generation) can be set after the cache was checked:
 * V8 refuses a cache made under other flags.
 */
export function compileBundle(file: string, options: { useCache?: boolean } = {}): CompiledBundle {
  const bytes = readFileSync(file);
  let cache: CodeCacheState = 'missing';
  let cachedData: Buffer | undefined;
  /** Known from the cache's header, for this very bundle (its checksum matched). */
  let ascii = false;
  if (!crc32) cache = 'unsupported';
  else if (options.useCache !== false) {
    let stored: Buffer | undefined;
    try {
      stored = readFileSync(codeCacheFile(file));
    } catch {
      // missing or unreadable: compile without it
    }
    const decoded = stored && decodeCodeCache(file, bytes, stored, crc32);
    if (typeof decoded === 'string') cache = decoded;
    else if (decoded) ({ data: cachedData, ascii } = decoded);
  }
  // Node's CommonJS wrapper, on the bundle's first line so that every line keeps its number in stack
  // traces; the shebang (main.cjs keeps main.ts's) is legal only at the start of a file, so it becomes a
  // comment of the same length.
  let source = bytes.toString(ascii ? 'latin1' : 'utf8');
  if (source.startsWith('#!')) source = `//${source.slice(2)}`;
  const script = new Script(`(function (exports, require, module, __filename, __dirname) { ${source}\n});`, { filename: file, ...(cachedData ? { cachedData } : {}) });
  if (cachedData) cache = script.cachedDataRejected ? 'rejected' : 'accepted';
  return {
    file,
    bytes,
    cache,
    script,
    run: () => {
      // A module as Node's loader makes one (in require.cache under its path, node_modules looked up from its
      // folder); its require is createRequire's, which resolves and loads exactly as the module's own would.
      const module = new Module(file);
      module.filename = file;
      module.paths = (Module as unknown as { _nodeModulePaths(dir: string): string[] })._nodeModulePaths(path.dirname(file));
      (Module as unknown as { _cache: Record<string, Module> })._cache[file] = module;
      const wrapper = script.runInThisContext() as (exports: unknown, require: NodeJS.Require, module: Module, filename: string, dirname: string) => void;
      wrapper.call(module.exports, module.exports, createRequire(file), module, file, path.dirname(file));
      module.loaded = true;
      return module.exports;
    },
  };
}
