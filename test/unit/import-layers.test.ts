import assert from 'node:assert/strict';
import { readdirSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

/**
 * Imports flow one way: util/net → store → config → lease/ipam → system → backends → agent →
 * adapters/doctor/cli. A module may import from its own folder or a lower layer, never a higher one, and
 * two folders of one layer may not import each other both ways. Type-only imports count too.
 */
const LAYERS: Record<string, number> = {
  util: 0,
  net: 0,
  store: 1,
  config: 2,
  lease: 3,
  ipam: 3,
  system: 4,
  backends: 5,
  dns: 5,
  agent: 6,
  adapters: 7,
  doctor: 7,
  ui: 7,
  testbed: 7,
  demo: 8,
  bench: 8,
  cli: 9,
};

const here = path.dirname(fileURLToPath(import.meta.url));
// dist/test/unit → the sources in the repo's src/
const srcDir = path.resolve(here, '../../../src');

function walk(dir: string): string[] {
  return readdirSync(dir).flatMap((n) => {
    const p = path.join(dir, n);
    return statSync(p).isDirectory() ? walk(p) : p.endsWith('.ts') ? [p] : [];
  });
}

/** The top folder under src/ a file lives in. */
const folderOf = (file: string) => path.relative(srcDir, file).split(path.sep)[0]!;

/** Every relative import of a source file, resolved to the file it names. */
export function importsOf(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  const specs = [...text.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'(\.[^']+)'|^\s*import\s+'(\.[^']+)'|import\('(\.[^']+)'\)/gm)].map((m) => m[1] ?? m[2] ?? m[3]!);
  return specs.map((s) => path.resolve(path.dirname(file), s.replace(/\.js$/, '.ts')));
}

test('every src folder has a layer', () => {
  const folders = new Set(walk(srcDir).map(folderOf));
  const missing = [...folders].filter((f) => !(f in LAYERS) && !f.endsWith('.ts'));
  assert.deepEqual(missing, [], `give these folders a layer in ${path.basename(fileURLToPath(import.meta.url))}`);
});

test('imports flow one way between layers', () => {
  const bad: string[] = [];
  const edges = new Set<string>();
  for (const file of walk(srcDir)) {
    const from = folderOf(file);
    if (!(from in LAYERS)) continue;
    for (const target of importsOf(file)) {
      if (!target.startsWith(srcDir)) continue;
      const to = folderOf(target);
      if (to === from || !(to in LAYERS)) continue;
      if (LAYERS[to]! > LAYERS[from]!) bad.push(`${path.relative(srcDir, file)} imports ${path.relative(srcDir, target)} (${from} → ${to} goes up)`);
      edges.add(`${from}→${to}`);
    }
  }
  for (const e of edges) {
    const [a, b] = e.split('→');
    if (edges.has(`${b}→${a}`) && a! < b!) bad.push(`${a} and ${b} import each other`);
  }
  assert.deepEqual(bad, []);
});
