import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { implementedBackends } from '../src/backends/all.js';
import { WEFT_BIN } from '../src/testbed/agents.js';
import { cleanupPrefix } from '../src/testbed/index.js';

// The demo under its own prefix and dir, so a user's demo on this machine is left alone.
const prefix = `wd${process.pid.toString(36).slice(-4)}`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-demo-'));
const env = { ...process.env, WEFT_DEMO_PREFIX: prefix, WEFT_DEMO_DIR: dir };
const weft = (...args: string[]) => spawnSync(process.execPath, [WEFT_BIN, ...args], { env, encoding: 'utf8', timeout: 120_000 });
const ours = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').filter((l) => l.startsWith(`${prefix}-`));

after(async () => {
  weft('demo', 'down');
  await cleanupPrefix(prefix);
  fs.rmSync(dir, { recursive: true, force: true });
});

for (const backend of ['vxlan', 'host-gw', 'udp']) {
  test(`weft demo --backend ${backend}: every pair pings, demo down removes everything`, { timeout: 180_000 }, () => {
    const up = weft('demo', '--hosts', '2', '--containers', '2', '--backend', backend);
    assert.equal(up.status, 0, up.stderr);
    assert.match(up.stdout, /building 2 hosts/);
    assert.match(up.stdout, /all 12 pairs answered/);
    assert.equal((up.stdout.match(/✓/g) ?? []).length, 12);
    assert.doesNotMatch(up.stdout, /✗/);
    assert.equal(ours().length, 1 + 2 + 4, 'switch, hosts and containers exist while the demo runs');

    const again = weft('demo');
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /^weft: a demo is already running .*weft demo down/);

    const down = weft('demo', 'down');
    assert.equal(down.status, 0, down.stderr);
    assert.match(down.stdout, /stopped 2 agents, removed 7 namespaces/);
    assert.deepEqual(ours(), []);
    assert.equal(fs.existsSync(dir), false);
  });
}

test('weft demo refuses a backend it cannot run, and leaves nothing behind', () => {
  const r = weft('demo', '--backend', 'frobnicate');
  assert.equal(r.status, 1);
  assert.equal(r.stderr, `weft: the demo runs one of: ${implementedBackends().join(', ')} (got --backend frobnicate)\n`);
  assert.deepEqual(ours(), []);
});
