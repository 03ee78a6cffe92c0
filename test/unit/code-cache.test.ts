/**
 * bin/code-cache.cjs runs the CLI's bundle with V8's code cache (issue 15: agent start-up). A cache is written
 * when there is none, used by the next run, never mistaken for one of another build of the same length, and
 * not read or written with WEFT_NO_CODE_CACHE=1. No root needed.
 */
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { packageRoot } from '../../src/util/package-root.js';

const LOADER = path.join(packageRoot(import.meta.url), 'bin/code-cache.cjs');

function run(file: string, env: Record<string, string> = {}): { outcome: string; printed: string } {
  const r = spawnSync(process.execPath, ['-e', `const o = require(${JSON.stringify(LOADER)}).runBundle(${JSON.stringify(file)}, 'cli'); process.on('exit', () => console.log('OUTCOME ' + o));`], {
    encoding: 'utf8',
    env: { ...process.env, ...env },
  });
  assert.equal(r.status, 0, r.stderr);
  return { outcome: /^OUTCOME (\w+)$/m.exec(r.stdout)![1]!, printed: r.stdout.split('\n')[0]! };
}

const caches = (dir: string) => fs.readdirSync(dir).filter((f) => f.endsWith('.v8cache'));

test('a bundle runs as a CommonJS module; the second run uses the cache the first one wrote', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-cc-'));
  try {
    const file = path.join(dir, 'main.cjs');
    // a body with functions, so there is bytecode to cache; __filename and require work as in CommonJS
    fs.writeFileSync(file, "const p = require('node:path'); function twice(x) { return x * 2; } console.log(p.basename(__filename), twice(21));\n");
    assert.deepEqual(run(file), { outcome: 'miss', printed: 'main.cjs 42' });
    assert.equal(caches(dir).length, 1, 'written at exit');
    assert.equal(fs.statSync(path.join(dir, caches(dir)[0]!)).mode & 0o777, 0o644);
    assert.deepEqual(run(file), { outcome: 'hit', printed: 'main.cjs 42' });

    // another build of the same length: V8 itself would accept the old cache (it checks the length only)
    fs.writeFileSync(file, fs.readFileSync(file, 'utf8').replace('21', '12'));
    fs.utimesSync(file, new Date(), new Date(Date.now() + 5000));
    assert.deepEqual(run(file), { outcome: 'miss', printed: 'main.cjs 24' });
    assert.deepEqual(run(file), { outcome: 'hit', printed: 'main.cjs 24' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('WEFT_NO_CODE_CACHE=1 neither reads nor writes a cache', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-cc-'));
  try {
    const file = path.join(dir, 'main.cjs');
    fs.writeFileSync(file, 'console.log(1);\n');
    assert.equal(run(file, { WEFT_NO_CODE_CACHE: '1' }).outcome, 'miss');
    assert.deepEqual(caches(dir), []);
    run(file);
    assert.equal(run(file, { WEFT_NO_CODE_CACHE: '1' }).outcome, 'miss', 'not read');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

// Node 20 drops a script's dynamic-import callback when V8 compiles it from a code cache: an import() in the
// bundle then fails (ERR_VM_DYNAMIC_IMPORT_CALLBACK_MISSING) on every run that hits the cache — /metrics, which
// loads prom-client lazily, answered 500. scripts/bundle.mjs turns every import() into require().
test('the CLI bundle holds no dynamic import()', { skip: !fs.existsSync(path.join(packageRoot(import.meta.url), 'dist/bundle/main.cjs')) && 'no bundle: npm run build' }, () => {
  const text = fs.readFileSync(path.join(packageRoot(import.meta.url), 'dist/bundle/main.cjs'), 'utf8');
  const calls = text.split('\n').filter((l) => /\bimport\(\s*[^)\s]/.test(l));
  assert.deepEqual(calls, []);
});
