/**
 * Compiles the TypeScript of src/ and test/ once, for a run of the suite
 * (scripts/run-tests.mjs), into plain ES modules that each test file's process
 * loads without a loader.
 *
 * Why: under `--import tsx`, every test file's process starts tsx's loader
 * thread and sends every import (and every later import(): the registry loads
 * commands lazily) through it. That cost about 0.4-0.6 CPU-s per process
 * (globals.test: 3.9-4.2 CPU-s with tsx, 3.2-3.6 compiled; custom-toc
 * 4.1-4.3 against 3.8-4.1), over ~47 processes a run. esbuild compiles all
 * ~320 files in about 1.3 s, once (session 14).
 *
 * The tree mirrors the checkout (src/, test/) in a folder of its own, with
 * node_modules and scripts/ linked and "type": "module". Imports between our files are
 * relative and already say `.js`, so they find the compiled files; packages
 * come from the checkout's node_modules.
 *
 * import.meta.url, .dirname and .filename: each file's own, in the checkout,
 * written in their place. Tests and modules find files relative to themselves
 * (fixtures, docs, dist/cli/pgkeep.js, packages through createRequire), and
 * those stay where they are, so every such path is what it is under tsx.
 *
 * Stack traces: each file carries an inline source map, and run-tests.mjs
 * starts the files with --enable-source-maps, so a failure names the .ts line.
 */
import { readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { build } from 'esbuild';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

async function typeScriptFiles(folder) {
  const found = [];
  for (const entry of await readdir(folder, { withFileTypes: true, recursive: true })) {
    if (entry.isFile() && entry.name.endsWith('.ts') && !entry.name.endsWith('.d.ts')) found.push(path.join(entry.parentPath ?? entry.path, entry.name));
  }
  return found;
}

/** import.meta's file facts of one source file, as string literals. */
const ownMeta = {
  name: 'own-import-meta',
  setup(builder) {
    builder.onLoad({ filter: /\.ts$/ }, async (args) => {
      let source = await readFile(args.path, 'utf8');
      if (source.includes('import.meta.')) {
        source = source
          .replaceAll('import.meta.url', JSON.stringify(pathToFileURL(args.path).href))
          .replaceAll('import.meta.dirname', JSON.stringify(path.dirname(args.path)))
          .replaceAll('import.meta.filename', JSON.stringify(args.path));
      }
      return { contents: source, loader: 'ts' };
    });
  },
};

/**
 * Compiles src/ and test/ into `out` and returns where a given test file's
 * compiled module is (`test/unit/x.test.ts` → `<out>/test/unit/x.test.js`).
 */
export async function compileTests(out) {
  const files = [...(await typeScriptFiles(path.join(ROOT, 'src'))), ...(await typeScriptFiles(path.join(ROOT, 'test')))];
  await build({
    entryPoints: files,
    outdir: out,
    outbase: ROOT,
    format: 'esm',
    platform: 'node',
    target: 'node20',
    bundle: false,
    sourcemap: 'inline',
    logLevel: 'warning',
    plugins: [ownMeta],
  });
  await writeFile(path.join(out, 'package.json'), '{ "type": "module" }\n');
  // what the compiled files import from outside src/ and test/: packages, and scripts/ (a unit test imports the wasm assembler)
  for (const linked of ['node_modules', 'scripts']) await symlink(path.join(ROOT, linked), path.join(out, linked), 'dir');
  return (file) => path.join(out, path.relative(ROOT, path.resolve(file))).replace(/\.([cm]?)ts$/, '.$1js');
}
