/**
 * Bundles the command-line program into CommonJS files next to the compiled
 * modules, which dist/cli/pgkeep.js loads when they are there:
 *
 * - dist/cli/wal-cli.cjs: the lean WAL path (wal-push, wal-fetch). PostgreSQL
 *   starts one pgkeep per WAL segment, so start-up is archiving throughput.
 * - dist/cli/main.cjs: every other command (the commander program in main.js
 *   and what it imports, also lazily: the registry's per-command imports become
 *   functions in the one file, still run only for the command invoked).
 *
 * Why: Node loads ES modules one by one (resolution, linking and an ESM facade
 * per built-in): ~20 modules cost about 18 ms against 8 ms as one CommonJS
 * file, and the main program loads far more (numbers in docs/benchmarks.md).
 * (An ESM bundle, tried first for WAL, was no faster.) Packages stay external:
 * they load from node_modules as usual, and only when used.
 *
 * import.meta.url: CommonJS has none, and modules use it to find files relative
 * to themselves (../package.json from dist/version.js, ../cli/pgkeep.js from
 * dist/restore/, packages through createRequire). Each module's own URL is
 * written in its place, computed from the bundle's __dirname, so every such
 * lookup resolves exactly as it does from the compiled module (dist/ ships whole).
 *
 * import(): written as a require() (esbuild's `dynamic-import: false`), as it
 * already is for the bundled modules: pgkeep.js runs a bundle through vm.Script
 * (to give V8 its code cache), where an import() needs an experimental flag.
 * The two left were node:net and @aws-sdk/client-s3, whose import() loads the
 * same CommonJS file (it has no "exports" map).
 *
 * Then each bundle's V8 code cache, dist/cli/<name>.cjs.cache (what it saves
 * and why here: src/cli/bundle-loader.ts, docs/architecture.md): made by
 * scripts/warm-code-cache.mjs in a child that runs harmless commands first, so
 * the functions a run compiles are in it, not only the top level.
 */
import { spawnSync } from 'node:child_process';
import { readFile, writeFile } from 'node:fs/promises';
import path from 'node:path';
import { build, transform } from 'esbuild';

const pkg = JSON.parse(await readFile('package.json', 'utf8'));
/**
 * Bundled into main.cjs: loaded by nearly every command, each a tree of many
 * small files (zod ~95, yaml ~70, pg and its own packages ~40), which cost
 * more to find and load one by one than the program's own modules.
 */
const BUNDLED_PACKAGES = new Set(['zod', 'yaml', 'pg', 'pg-copy-streams', 'commander']);
/** pg's optional packages: pg-native only for pg.native, pg-cloudflare only on Cloudflare's runtime. */
const OPTIONAL_OF_BUNDLED = ['pg-native', 'pg-cloudflare'];
const EXTERNAL = [...Object.keys(pkg.dependencies), ...Object.keys(pkg.optionalDependencies ?? {}), ...OPTIONAL_OF_BUNDLED].filter((name) => !BUNDLED_PACKAGES.has(name));

const OUT_DIR = path.resolve('dist/cli');

/** Replaces import.meta.url in each compiled module with that module's own file URL. */
const ownModuleUrl = {
  name: 'own-module-url',
  setup(builder) {
    // only pgkeep's own compiled modules (packages' dist/ folders are not ours to rewrite)
    const ownDist = new RegExp(`^${path.resolve('dist').replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}[\\\\/].*\\.js$`);
    builder.onLoad({ filter: ownDist }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      if (!source.includes('import.meta.url')) return undefined;
      const relative = JSON.stringify(path.relative(OUT_DIR, args.path));
      const url = `require('node:url').pathToFileURL(require('node:path').join(__dirname, ${relative})).href`;
      return { contents: source.replaceAll('import.meta.url', url), loader: 'js' };
    });
  },
};

/**
 * pg's lib/stream.js asks at load whether it runs on Cloudflare Workers by making a `new Response()`,
 * and on Node 20 (no `navigator`) the first touch of `Response` loads Node's fetch (undici): ~35 ms of
 * CPU for every process that loads pg, for an answer that is always no here. The bundle takes Node's
 * streams directly (what the check returns on Node); a pg whose file no longer reads so is left as is.
 */
const pgOnNode = {
  name: 'pg-on-node',
  setup(builder) {
    builder.onLoad({ filter: /[\\/]node_modules[\\/]pg[\\/]lib[\\/]stream\.js$/ }, async (args) => {
      const source = await readFile(args.path, 'utf8');
      const check = 'if (isCloudflareRuntime()) {';
      if (!source.includes(check)) return { contents: source, loader: 'js', warnings: [{ text: `${args.path}: no "${check}" to skip: pg loads Node's fetch at start-up` }] };
      return { contents: source.replace(check, 'if (false) { // pgkeep runs on Node: see scripts/bundle-cli.mjs'), loader: 'js' };
    });
  },
};

/**
 * Makes a bundle ASCII where that changes nothing but comments: pgkeep.js then hands V8 a one-byte
 * string (src/cli/bundle-loader.ts, ASCII_ONLY). esbuild already escapes strings and identifiers; what
 * is left is comments it keeps (ours and the packages': "—", "→") and the text of tagged templates,
 * which the dashboard writes with escapes. Every character above 127 is written as a \u escape, and
 * the result is kept only if it minifies to the very same program (comments dropped); otherwise the
 * bundle stays as it was (and loads as UTF-8, a few ms slower), with a warning.
 */
async function asciiOnly(file) {
  const source = await readFile(file, 'utf8');
  if (!/[^\x00-\x7f]/.test(source)) return;
  const escaped = source.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  const program = async (text) => (await transform(text, { minify: true, legalComments: 'none', charset: 'ascii', logLevel: 'silent' })).code;
  if ((await program(escaped)) === (await program(source))) await writeFile(file, escaped);
  else console.warn(`${file}: a character above 127 outside comments: the bundle loads as UTF-8 (slower)`);
}

// The WAL path bundles the same packages: it loads zod on every run (the settings' config schema, even
// with no config file), and ~95 zod files found and loaded one by one cost more than a bigger bundle:
// wal-fetch of a missing segment took 0.20-0.21 s of CPU with packages external, 0.16-0.19 bundled
// (5 alternating runs each). PITR starts one wal-fetch per segment.
for (const [name, bundledPackages] of [['wal-cli', true], ['main', true]]) {
  await build({
    entryPoints: [`dist/cli/${name}.js`],
    outfile: `dist/cli/${name}.cjs`,
    bundle: true,
    platform: 'node',
    format: 'cjs',
    target: 'node20',
    ...(bundledPackages ? { external: [...EXTERNAL, ...EXTERNAL.map((name) => `${name}/*`)] } : { packages: 'external' }),
    supported: { 'dynamic-import': false },
    plugins: [ownModuleUrl, pgOnNode],
    logLevel: 'warning',
  });
  await asciiOnly(`dist/cli/${name}.cjs`);
  // pgkeep.js runs the bundle in a vm.Script, where an import() throws (it needs --experimental-vm-modules)
  const program = (await transform(await readFile(`dist/cli/${name}.cjs`, 'utf8'), { minify: true, legalComments: 'none', logLevel: 'silent' })).code;
  if (/\bimport\(/.test(program)) throw new Error(`dist/cli/${name}.cjs has an import(): it would fail in pgkeep.js's vm.Script (supported: { 'dynamic-import': false } should have made it a require)`);
  // a clean environment: no NODE_OPTIONS (V8 refuses a cache made under other flags), no config or repository
  const warm = spawnSync(process.execPath, ['scripts/warm-code-cache.mjs', `dist/cli/${name}.cjs`], { env: { PATH: process.env.PATH }, encoding: 'utf8' });
  if (warm.status !== 0) throw new Error(`making the code cache of dist/cli/${name}.cjs failed (exit ${warm.status ?? warm.signal}):\n${warm.stderr}`);
}
