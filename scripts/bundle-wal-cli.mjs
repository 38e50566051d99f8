/**
 * Bundles the lean WAL path (dist/cli/wal-cli.js and what it imports, also
 * lazily) into one CommonJS file, dist/cli/wal-cli.cjs, which dist/cli/pgkeep.js
 * loads for wal-push and wal-fetch.
 *
 * Why: PostgreSQL starts one pgkeep per WAL segment, so start-up is archiving
 * throughput. Loading ~20 ES modules costs Node about 18 ms (resolution,
 * linking and an ESM facade per built-in); one CommonJS file about 8 ms.
 * (An ESM bundle, tried first, was no faster.) Packages stay external: they
 * load from node_modules as usual, and only when used.
 */
import { build } from 'esbuild';

await build({
  entryPoints: ['dist/cli/wal-cli.js'],
  outfile: 'dist/cli/wal-cli.cjs',
  bundle: true,
  platform: 'node',
  format: 'cjs',
  target: 'node20',
  packages: 'external',
  // zstd.ts resolves packages with createRequire(import.meta.url): any file inside dist/ resolves them alike.
  define: { 'import.meta.url': '__pgkeepBundleUrl' },
  banner: { js: "const __pgkeepBundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  logLevel: 'warning',
});
