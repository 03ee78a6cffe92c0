import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, before, test } from 'node:test';
import { implementedBackends } from '../src/backends/all.js';
import { UDPD_BINARY } from '../src/backends/udp/index.js';
import { wgDeviceName } from '../src/backends/wireguard/peers.js';
import { pidAlive } from '../src/system/process.js';
import { wgSocketPath } from '../src/system/wireguard.js';
import { WEFT_BIN } from '../src/testbed/agents.js';
import { cleanupPrefix } from '../src/testbed/index.js';
import { PATIENCE } from '../src/testbed/wait.js';
import { freePort } from './helpers/ports.js';

/**
 * `weft demo --backend B` for every backend weft has, one after the other: 2 hosts × 2 containers, the
 * whole ping matrix answered; `weft demo down` leaves no namespace, process, socket or file behind.
 */

// The demo under its own prefix, dir and web-map port, so a user's demo on this machine is left alone.
const prefix = `wd${process.pid.toString(36).slice(-4)}`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-demo-'));
const env: NodeJS.ProcessEnv = { ...process.env, WEFT_DEMO_PREFIX: prefix, WEFT_DEMO_DIR: dir };
const weft = (...args: string[]) => spawnSync(process.execPath, [WEFT_BIN, ...args], { env, encoding: 'utf8', timeout: 120_000 * PATIENCE });
const ours = () => spawnSync('ip', ['netns', 'list'], { encoding: 'utf8' }).stdout.split('\n').map((l) => l.split(' ')[0]!).filter((n) => n.startsWith(`${prefix}-`));

before(async () => {
  env.WEFT_DEMO_UI_PORT = String(await freePort());
});

after(async () => {
  weft('demo', 'down');
  await cleanupPrefix(prefix);
  fs.rmSync(dir, { recursive: true, force: true });
});

const have = (b: string) => ['/usr/bin', '/usr/sbin', '/usr/local/bin', '/usr/local/sbin'].some((d) => fs.existsSync(`${d}/${b}`));
/** What each backend needs on this machine beyond the kernel; a backend whose binaries are missing is skipped, saying which. */
const NEEDS: Record<string, { bins?: string[]; files?: string[]; how: string }> = {
  udp: { files: [UDPD_BINARY], how: 'npm run build' },
  wireguard: { bins: ['wireguard-go', 'wg'], how: 'Debian wireguard-go, wireguard-tools' },
  bgp: { bins: ['bird', 'birdc'], how: 'Debian bird2' },
};
function skipFor(backend: string): string | false {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  const n = NEEDS[backend];
  const missing = [...(n?.bins ?? []).filter((b) => !have(b)), ...(n?.files ?? []).filter((f) => !fs.existsSync(f))];
  return missing.length ? `needs ${missing.join(', ')} (${n!.how})` : false;
}

const BACKENDS = ['vxlan', 'host-gw', 'udp', 'l2', 'bridge', 'macvlan', 'wireguard', 'bgp'];

test('the demo test covers every backend weft has', () => {
  assert.deepEqual([...BACKENDS].sort(), [...implementedBackends()].sort());
});

/** Every process in these namespaces (agents and what they run: weft-udpd, wireguard-go, bird). */
function pidsIn(namespaces: string[]): number[] {
  return namespaces.flatMap((ns) => spawnSync('ip', ['netns', 'pids', ns], { encoding: 'utf8' }).stdout.split(/\s+/).filter(Boolean).map(Number));
}

for (const backend of BACKENDS) {
  test(`weft demo --backend ${backend}: every pair pings, demo down removes everything`, { timeout: 300_000 * PATIENCE, skip: skipFor(backend) }, () => {
    const up = weft('demo', '--hosts', '2', '--containers', '2', '--backend', backend);
    assert.equal(up.status, 0, `${up.stdout}\n${up.stderr}`);
    assert.match(up.stdout, /building 2 hosts/);
    assert.match(up.stdout, new RegExp(`backend ${backend}, store`));
    assert.match(up.stdout, /h1 \(\S+\): agent pid \d+, subnet \d+\.\d+\.\d+\.\d+\/\d+\n/, 'each host says its subnet');
    assert.match(up.stdout, /all 12 pairs answered/, up.stdout);
    assert.equal((up.stdout.match(/✓/g) ?? []).length, 12, up.stdout);
    assert.doesNotMatch(up.stdout, /✗/);
    assert.equal(ours().length, 1 + 2 + 4, 'switch, hosts and containers exist while the demo runs');

    const state = JSON.parse(fs.readFileSync(path.join(dir, 'demo.json'), 'utf8')) as { agents: Array<{ pid: number }>; uiProxyPid?: number };
    const pids = [...new Set([...state.agents.map((a) => a.pid), ...(state.uiProxyPid ? [state.uiProxyPid] : []), ...pidsIn(ours())])];
    assert.ok(pids.length >= 2, 'the agents run');
    const sockets = backend === 'wireguard' ? ['h1', 'h2'].map((h) => wgSocketPath(wgDeviceName('demo', h))) : [];
    for (const s of sockets) assert.ok(fs.existsSync(s), `wireguard-go's socket ${s} while the demo runs`);

    const again = weft('demo');
    assert.notEqual(again.status, 0);
    assert.match(again.stderr, /^weft: a demo is already running .*weft demo down/);

    const down = weft('demo', 'down');
    assert.equal(down.status, 0, down.stderr);
    assert.match(down.stdout, /stopped 2 agents, removed 7 namespaces/);
    assert.deepEqual(ours(), []);
    assert.equal(fs.existsSync(dir), false);
    assert.deepEqual(pids.filter(pidAlive), [], 'no process of the demo is left (agents, data-plane daemons, web-map forwarder)');
    assert.deepEqual(sockets.filter((s) => fs.existsSync(s)), [], 'no wireguard-go socket is left');
    assert.deepEqual(fs.existsSync('/etc/netns') ? fs.readdirSync('/etc/netns').filter((n) => n.startsWith(`${prefix}-`)) : [], [], 'no per-namespace files are left');
  });
}

test('weft demo refuses a backend it cannot run, and leaves nothing behind', () => {
  const r = weft('demo', '--backend', 'frobnicate');
  assert.equal(r.status, 1);
  assert.equal(r.stderr, `weft: the demo runs one of: ${implementedBackends().join(', ')} (got --backend frobnicate)\n`);
  assert.deepEqual(ours(), []);
});
