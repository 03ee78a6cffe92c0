// Bundles the CLI (dist/src/cli/main.js and the fast attach path, dist/src/cli/fast.js) into dist/bundle/,
// which bin/weft loads when it is not older than tsc's output. One file per entry plus shared chunks
// (lazily imported modules stay lazy: one chunk each): Node's ESM loader then resolves, reads and compiles a
// few files instead of ~200, which halves the agent's start-up CPU and takes ~12 MB off its RSS (issue 15).
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
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir,
  // class and function names stay as written: logs and error types name them
  keepNames: true,
  metafile: true,
  logLevel: 'warning',
};
// The fast attach path (src/cli/fast.ts) is one file of its own: no shared chunks to resolve and load, and
// no createRequire banner (it bundles no CommonJS). Each module the ESM loader loads costs a `weft attach`.
const fast = await build({ ...common, entryPoints: { fast: 'dist/src/cli/fast.js' }, external: ['node:*'] });
// ... and as CommonJS (fast.cjs), which bin/weft require()s: loaded synchronously, without the ESM loader's
// asynchronous resolve, link and evaluate steps.
const fastCjs = await build({ ...common, format: 'cjs', outdir: undefined, outfile: path.join(outdir, 'fast.cjs'), entryPoints: ['dist/src/cli/fast.js'], external: ['node:*'] });
const result = await build({
  ...common,
  entryPoints: { main: 'dist/src/cli/main.js' },
  splitting: true,
  chunkNames: 'chunk-[hash]',
  external: ['better-sqlite3', 'etcd3', 'pino', 'prom-client', 'playwright-core', '@opentelemetry/api'],
  // CommonJS packages inside an ES module bundle call require()
  banner: { js: "import { createRequire as __weftRequire } from 'node:module'; const require = __weftRequire(import.meta.url);" },
  plugins: [zodEnglishOnly],
});
// Chunks of earlier builds go once they are old: a process started from them may still import one lazily.
const made = new Set([...Object.keys(result.metafile.outputs), ...Object.keys(fast.metafile.outputs), ...Object.keys(fastCjs.metafile.outputs)].map((f) => path.basename(f)));
for (const f of fs.readdirSync(outdir)) {
  const p = path.join(outdir, f);
  if (!made.has(f) && Date.now() - fs.statSync(p).mtimeMs > 3600_000) fs.rmSync(p, { force: true });
}
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
