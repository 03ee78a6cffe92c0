// Bundles the CLI (dist/src/cli/main.js and the fast attach path, dist/src/cli/fast.js) into dist/bundle/ as one
// CommonJS file each, which bin/weft loads when they are not older than tsc's output: Node then reads and
// compiles one file instead of resolving, reading and compiling ~200 ES modules, which halves the agent's
// start-up CPU and takes ~12 MB off its RSS; as CommonJS it can also be run with V8's code cache (issue 15).
// Packages with native code, worker files or dynamic requires stay outside, loaded from node_modules; so does
// prom-client (loaded lazily anyway; bundled, its metrics came out empty: test/metrics-e2e.test.ts).
import { build } from 'esbuild';
import fs from 'node:fs';
import path from 'node:path';

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
const outdir = path.join(root, 'dist/bundle');

// zod's namespace re-exports every locale (`z.locales`, ~60 modules, ~370 KB of bundled source with non-Latin-1 text);
// weft uses only the English messages zod configures itself with. The stub keeps `locales.en`.
const zodEnglishOnly = {
  name: 'zod-english-only',
  setup(b) {
    b.onResolve({ filter: /^\.\.\/locales\/index\.js$/ }, (args) =>
      /[\\/]zod[\\/]/.test(args.importer) ? { path: path.join(path.dirname(args.importer), '../locales/en.js'), namespace: 'zod-locales' } : undefined,
    );
    b.onLoad({ filter: /.*/, namespace: 'zod-locales' }, (args) => ({
      contents: `export { default as en } from ${JSON.stringify(args.path)};`,
      resolveDir: path.dirname(args.path),
    }));
  },
};
const common = {
  absWorkingDir: root,
  bundle: true,
  format: 'cjs',
  platform: 'node',
  target: 'node20',
  // class and function names stay as written: logs and error types name them
  keepNames: true,
  metafile: true,
  logLevel: 'warning',
};
// The fast attach path (src/cli/fast.ts) is one CommonJS file of its own, which bin/weft require()s: loaded
// synchronously, without the ES module loader's resolve, link and evaluate steps (each costs a `weft attach`).
const fast = await build({ ...common, outfile: path.join(outdir, 'fast.cjs'), entryPoints: ['dist/src/cli/fast.js'], external: ['node:*'] });
// The full CLI and the agent: one CommonJS file, which bin/weft runs with V8's code cache (bin/code-cache.cjs;
// Node 20 caches no ES module's code). Lazily imported modules stay lazy inside it (esbuild runs a module's body
// on its first import), and a running process never needs a file of a later build.
const result = await build({
  ...common,
  outfile: path.join(outdir, 'main.cjs'),
  entryPoints: ['dist/src/cli/main.js'],
  external: ['better-sqlite3', 'etcd3', 'pino', 'prom-client', 'playwright-core', '@opentelemetry/api'],
  // the modules that find files beside the code (src/util/package-root.ts) ask for their own URL
  define: { 'import.meta.url': '__weftModuleUrl' },
  // no import() left in the bundle (esbuild turns it into require()): Node 20 drops a script's dynamic-import
  // callback when V8 compiles it from a code cache, and import() then fails with ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING
  // (the lazily loaded prom-client: /metrics answered 500 on every agent start that hit the cache)
  supported: { 'dynamic-import': false },
  banner: { js: "const __weftModuleUrl = require('node:url').pathToFileURL(__filename).href;" },
  plugins: [zodEnglishOnly],
});
const made = new Set([...Object.keys(result.metafile.outputs), ...Object.keys(fast.metafile.outputs)].map((f) => path.basename(f)));
// What earlier builds left (ES module chunks before the bundle was CommonJS, code caches of an older main.cjs)
for (const f of fs.readdirSync(outdir)) if (!made.has(f)) fs.rmSync(path.join(outdir, f), { force: true, recursive: true });
// esbuild escapes non-ASCII text in strings and regular expressions but keeps it in comments: one such character
// makes V8 hold the whole file's source as two-byte text (twice the memory, for as long as the module lives).
for (const f of made) {
  const p = path.join(outdir, f);
  const text = fs.readFileSync(p, 'utf8');
  // per UTF-16 unit (surrogate pairs as two escapes): valid in comments, strings, templates and regexps alike
  // eslint-disable-next-line no-control-regex
  const ascii = text.replace(/[^\x00-\x7f]/g, (c) => `\\u${c.charCodeAt(0).toString(16).padStart(4, '0')}`);
  if (ascii !== text) fs.writeFileSync(p, ascii, { mode: 0o644 });
  fs.chmodSync(p, 0o644);
}
