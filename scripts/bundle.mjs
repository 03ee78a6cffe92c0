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
const result = await build({
  absWorkingDir: root,
  entryPoints: { main: 'dist/src/cli/main.js', fast: 'dist/src/cli/fast.js' },
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  outdir,
  chunkNames: 'chunk-[hash]',
  // class and function names stay as written: logs and error types name them
  keepNames: true,
  external: ['better-sqlite3', 'etcd3', 'pino', 'prom-client', 'playwright-core', '@opentelemetry/api'],
  // CommonJS packages inside an ES module bundle call require()
  banner: { js: "import { createRequire as __weftRequire } from 'node:module'; const require = __weftRequire(import.meta.url);" },
  metafile: true,
  logLevel: 'warning',
});
// Chunks of earlier builds go once they are old: a process started from them may still import one lazily.
const made = new Set(Object.keys(result.metafile.outputs).map((f) => path.basename(f)));
for (const f of fs.readdirSync(outdir)) {
  const p = path.join(outdir, f);
  if (!made.has(f) && Date.now() - fs.statSync(p).mtimeMs > 3600_000) fs.rmSync(p, { force: true });
}
for (const f of made) fs.chmodSync(path.join(outdir, f), 0o644);
