/**
 * Bundles the CLI into dist/cli/, the files bin/treecast loads: main.js (the CLI, every command),
 * the worker-thread entries next to it (worker.js, store-writer-worker.js; gzip-process.js, the process
 * pack runs to compress .tar.gz: `new Worker(new URL(
 * './worker.js', import.meta.url))` finds them beside whichever file runs it), and version.js plus
 * output.js for the `--version` fast path. The library (dist/src, from tsc) is not touched.
 *
 * Perf: Node 20's ESM loader reads each module through fs/promises (open, fstat, read, close on
 * the thread pool) and compiles it with no code cache: `treecast refs` loaded 38 files, 20 with
 * ESM code splitting. One CommonJS file, read synchronously, measured best (hyperfine, 40 runs,
 * load 7-8 on 2 cores): refs 66 ms user CPU against 86 ms unbundled, 78 ms split ESM, 80 ms for a
 * CommonJS bundle that also held undici. A command's code is still run only when it is used
 * (esbuild wraps what `import()` loads in a lazy init), so the only cost of the one file is its
 * parse. undici (0.9 MB, only the remote commands) stays in node_modules, required on first use.
 * That parse, and compiling what a command runs, is then skipped by main.js.cache, the V8 code
 * cache scripts/code-cache.mjs writes and bin/treecast compiles main.js from.
 */
import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';

const outdir = 'dist/cli';
fs.rmSync(outdir, { recursive: true, force: true });
await build({
  entryPoints: {
    main: 'src/cli/main.ts',
    version: 'src/version.ts',
    output: 'src/cli/output.ts',
    worker: 'src/fs/worker.ts',
    'store-writer-worker': 'src/remote/store-writer-worker.ts',
    'gzip-process': 'src/archive/gzip-process.ts',
  },
  outdir,
  bundle: true,
  platform: 'node',
  target: 'node20',
  format: 'cjs',
  external: ['undici'],
  // CommonJS has no import.meta: the workers are found from this file's own URL.
  define: { 'import.meta.url': '__bundleUrl' },
  banner: { js: "const __bundleUrl = require('node:url').pathToFileURL(__filename).href;" },
  sourcemap: 'linked',
  logLevel: 'warning',
});
// The package is "type": "module"; these files are CommonJS (also when a Worker loads them).
fs.writeFileSync(`${outdir}/package.json`, '{ "type": "commonjs" }\n');
// In a process of its own: V8 takes a code cache only from the same version with the same flags.
// Without a cache (say, no writable temp dir for its training run) the CLI only starts slower:
// bin/treecast then requires main.js as usual. test/cli.startup.test.ts checks the cache is there.
try {
  execFileSync(process.execPath, ['scripts/code-cache.mjs', `${outdir}/main.js`], { stdio: 'inherit', env: { ...process.env, NODE_OPTIONS: '' } });
} catch (e) {
  fs.rmSync(`${outdir}/main.js.cache`, { force: true });
  console.warn(`warning: no code cache for the CLI bundle (${e.message}); it will start slower`);
}
