import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { test } from 'node:test';
import { parseFast } from '../../src/cli/fast.js';
import { packageRoot } from '../../src/util/package-root.js';

const ROOT = packageRoot(import.meta.url);

const argv = (...a: string[]) => ['node', 'weft', ...a];

test('the fast path takes the plain forms of attach and detach', () => {
  assert.deepEqual(parseFast(argv('attach', 'c1', '10.1.2.3', '--network', 'blue', '--name=web', '--json', '--timeout', '2.5')), {
    command: 'attach',
    args: ['c1', '10.1.2.3'],
    opts: { network: 'blue', name: 'web', json: true, timeout: '2.5' },
  });
  assert.deepEqual(parseFast(argv('detach', 'c1', '--api', '/x.sock')), { command: 'detach', args: ['c1'], opts: { api: '/x.sock' } });
});

test('anything else is left to the full CLI (its help, messages and exit codes)', () => {
  for (const a of [
    ['status'],
    ['network', 'ls'],
    ['attach'],
    ['attach', 'c1', '10.1.2.3', 'extra'],
    ['attach', 'c1', '--help'],
    ['attach', 'c1', '-h'],
    ['attach', 'c1', '--bogus'],
    ['attach', 'c1', '--network'],
    ['attach', 'c1', '--network', '--json'],
    ['attach', 'c1', '--json=yes'],
    ['attach', 'c1', '--timeout', '0'],
    ['attach', 'c1', '--timeout', 'soon'],
    ['attach', 'c1', '--network', 'a', '--network', 'b'],
    ['detach', 'c1', '--name', 'web'],
    ['detach', 'c1', 'c2'],
    ['attach', '--', 'c1'],
  ]) {
    assert.equal(parseFast(argv(...a)), undefined, a.join(' '));
  }
});

// Issue 15 (`weft attach` ≤ 100 ms end to end): what bin/weft loads before the request is most of the CLI's cost
// over Node's own start. node:v8 alone was ~25 ms, the ESM loader several more.
test('bin/weft: the fast path loads neither node:v8 nor the ES module loader (the bundle is require()d)', { skip: !fs.existsSync(path.join(ROOT, 'dist/bundle/fast.cjs')) && 'no bundle: npm run build' }, () => {
  const pre = path.join(os.tmpdir(), `weft-modules-${process.pid}.cjs`);
  fs.writeFileSync(pre, "process.on('exit', () => require('fs').writeSync(2, '\\nMODULES ' + JSON.stringify(process.moduleLoadList) + '\\n'));\n");
  try {
    const r = spawnSync(process.execPath, ['--require', pre, path.join(ROOT, 'bin/weft'), 'attach', 'c', '--api', path.join(os.tmpdir(), `weft-none-${process.pid}.sock`)], { encoding: 'utf8' });
    assert.equal(r.status, 1, 'no agent: refused');
    assert.match(r.stderr, /no weft agent at/);
    const mods = JSON.parse(/^MODULES (.*)$/m.exec(r.stderr)![1]!) as string[];
    assert.ok(!mods.includes('NativeModule v8'), 'node:v8 is for the agent only');
    assert.deepEqual(mods.filter((m) => /internal\/modules\/esm\/(loader|module_job|translators)/.test(m)), [], 'no ES module loaded');
    assert.ok(!mods.some((m) => /^NativeModule (http|_http_client)$/.test(m)), 'no node:http');
  } finally {
    fs.rmSync(pre, { force: true });
  }
});
