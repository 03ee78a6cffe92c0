/**
 * The typed kernel operations (src/system/ops.ts, kernel.ts, links.ts) without root: the `ip -batch` text
 * each one compiles to, and how a batch is run (processes, order, errors) against a stand-in `ip`/`bridge`
 * on PATH that records its arguments and stdin.
 */
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { kernelFailure } from '../../src/system/exec.js';
import { linkAddLine } from '../../src/system/kernel.js';
import { configureBatch } from '../../src/system/links.js';
import { KernelBatch } from '../../src/system/ops.js';
import { stopWarm } from '../../src/system/warm.js';
import { WeftError } from '../../src/util/errors.js';

test('routeReplace/routeAdd/routeDel: scope and metric are written when given, only when adding', () => {
  const b = new KernelBatch()
    .routeReplace({ dst: '10.5.2.0/24', via: '192.168.1.2', dev: 'eth0', onlink: true })
    .routeReplace({ dst: 'default', via: '192.168.1.1', dev: 'br0', proto: 'dhcp', metric: 100, src: '192.168.1.10' })
    .routeReplace({ dst: '192.168.1.0/24', dev: 'br0', proto: 'static', scope: 'link', metric: 0 })
    .routeAdd({ dst: 'default', via: '10.5.1.1', dev: 'eth0' })
    .routeDel({ dst: '10.5.3.0/24', via: '192.168.1.3', dev: 'eth0', scope: 'link', metric: 5 });
  assert.deepEqual(b.lines(), [
    'route del 10.5.3.0/24 via 192.168.1.3 dev eth0',
    'route replace 10.5.2.0/24 via 192.168.1.2 dev eth0 onlink',
    'route replace default via 192.168.1.1 dev br0 src 192.168.1.10 proto dhcp metric 100',
    'route replace 192.168.1.0/24 dev br0 proto static scope link metric 0',
    'route add default via 10.5.1.1 dev eth0',
  ]);
});

test('linkSet: master, nomaster, mtu, address, up', () => {
  const b = new KernelBatch()
    .linkSet('eth0', { master: 'br0' })
    .linkSet('eth0', { nomaster: true })
    .linkSet('eth0', { mtu: 1400 })
    .linkSet('eth0', { address: '02:42:0a:05:01:02' })
    .linkSet('br0', { address: '52:54:00:12:34:56', mtu: 1500, up: true });
  assert.deepEqual(b.lines(), [
    'link set eth0 master br0',
    'link set eth0 nomaster',
    'link set eth0 mtu 1400',
    'link set eth0 address 02:42:0a:05:01:02',
    'link set br0 mtu 1500 address 52:54:00:12:34:56 up',
  ]);
});

test('addrMove: the address leaves one device, then joins the other', () => {
  assert.deepEqual(new KernelBatch().addrMove('192.168.1.10/24', 'eth0', 'br0').lines(), ['addr del 192.168.1.10/24 dev eth0', 'addr add 192.168.1.10/24 dev br0']);
});

test('linkAdd: kinds with a parent, a MAC, a namespace; macvlan, vxlan and gretap settings', () => {
  assert.equal(linkAddLine('bridge', { name: 'br0', mtu: 1500 }), 'link add br0 mtu 1500 type bridge');
  assert.equal(
    linkAddLine('macvlan', { name: 'eth0', mtu: 1500, parent: 'ens3', address: '02:00:00:00:00:01', netns: { pid: 4242 }, macvlanMode: 'bridge' }),
    'link add link ens3 address 02:00:00:00:00:01 netns 4242 eth0 mtu 1500 type macvlan mode bridge',
  );
  assert.equal(linkAddLine('macvlan', { name: 'mv-shim', parent: 'ens3', macvlanMode: 'bridge', netns: 'c1' }), 'link add link ens3 netns c1 mv-shim type macvlan mode bridge');
  assert.equal(
    linkAddLine('vxlan', { name: 'weft.1', mtu: 1450, vxlan: { id: 1, local: '10.0.0.1', dev: 'eth0', dstport: 8472 } }),
    'link add weft.1 mtu 1450 type vxlan id 1 local 10.0.0.1 dev eth0 dstport 8472 nolearning',
  );
  assert.equal(linkAddLine('vxlan', { name: 'v', vxlan: { id: 7, local: '10.0.0.1', dev: 'eth0', dstport: 4789, learning: true } }), 'link add v type vxlan id 7 local 10.0.0.1 dev eth0 dstport 4789');
  assert.equal(linkAddLine('gretap', { name: 'wg-1', gretap: { local: '10.0.0.1', remote: '10.0.0.2', key: 9 } }), 'link add wg-1 type gretap local 10.0.0.1 remote 10.0.0.2 key 9');
  // in a batch, link changes run first and in the order given
  const b = new KernelBatch().routeReplace({ dst: 'default', via: '192.168.1.1', dev: 'br0' }).linkAdd('bridge', { name: 'br0', mtu: 1500 }).linkSet('br0', { up: true });
  assert.deepEqual(b.lines(), ['link add br0 mtu 1500 type bridge', 'link set br0 up', 'route replace default via 192.168.1.1 dev br0']);
});

test('configureBatch: lo up, address, up, then the route (the fallback of configureInterface)', () => {
  assert.deepEqual(configureBatch({ netns: 'c1', ifname: 'eth0', address: '10.5.1.2/24', gateway: '10.5.1.1' }).lines(), [
    'link set lo up',
    'addr add 10.5.1.2/24 dev eth0',
    'link set eth0 up',
    'route add default via 10.5.1.1 dev eth0',
  ]);
  assert.deepEqual(configureBatch({ netns: 'c1', ifname: 'ethwe0', address: '10.6.1.2/24', gateway: '10.6.1.1', routeTo: '10.6.0.0/16' }).lines().at(-1), 'route add 10.6.0.0/16 via 10.6.1.1 dev ethwe0');
  assert.deepEqual(configureBatch({ netns: 'c1', ifname: 'eth0', address: '10.5.1.2/24' }).lines(), ['link set lo up', 'addr add 10.5.1.2/24 dev eth0', 'link set eth0 up']);
});

// --- commit, against stand-ins for ip and bridge ---

const bin = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-ops-'));
const calls = path.join(bin, 'calls');
const stub = (name: string) =>
  fs.writeFileSync(
    path.join(bin, name),
    `#!/bin/sh\nprintf '%s\\n' "${name} $*" >> "${calls}"\nwhile IFS= read -r l; do printf '  %s\\n' "$l" >> "${calls}"; done\n` +
      `if [ -n "$FAIL_WITH" ]; then echo "$FAIL_WITH" >&2; exit 2; fi\n`,
    { mode: 0o755 },
  );
stub('ip');
stub('bridge');
const savedPath = process.env.PATH;
process.env.PATH = `${bin}:${savedPath}`;
after(() => {
  process.env.PATH = savedPath;
  stopWarm();
  fs.rmSync(bin, { recursive: true, force: true });
});
const recorded = () => {
  const text = fs.existsSync(calls) ? fs.readFileSync(calls, 'utf8') : '';
  fs.rmSync(calls, { force: true });
  return text.trimEnd().split('\n');
};

test('commit: no bridge lines → one ip -batch with links, removals, additions in that order', async () => {
  const b = new KernelBatch().routeReplace({ dst: '10.5.2.0/24', via: '192.168.1.2', dev: 'eth0' }).routeDel({ dst: '10.5.3.0/24', dev: 'eth0' }).linkSet('eth0', { master: 'br0' });
  await b.commit({ netns: 'c1' });
  assert.deepEqual(recorded(), ['ip -n c1 -batch -', '  link set eth0 master br0', '  route del 10.5.3.0/24 dev eth0', '  route replace 10.5.2.0/24 via 192.168.1.2 dev eth0']);
  await new KernelBatch().linkDel('vw0').commit({ force: true });
  assert.deepEqual(recorded(), ['ip -force -batch -', '  link del vw0']);
});

test('commit: with FDB lines → ip (links, removals), bridge, ip (additions)', async () => {
  await new KernelBatch().neighReplace({ dst: '10.5.2.0', lladdr: '02:00:00:00:00:02', dev: 'weft.1' }).fdbReplace({ mac: '02:00:00:00:00:02', dev: 'weft.1', dst: '192.168.1.2' }).neighDel({ dst: '10.5.3.0', dev: 'weft.1' }).commit();
  assert.deepEqual(recorded(), [
    'ip -batch -',
    '  neigh del 10.5.3.0 dev weft.1',
    'bridge -batch -',
    '  fdb replace 02:00:00:00:00:02 dev weft.1 dst 192.168.1.2 self permanent',
    'ip -batch -',
    '  neigh replace 10.5.2.0 lladdr 02:00:00:00:00:02 dev weft.1 nud permanent',
  ]);
});

test('commit: a missing link kind is a WeftError naming the module; other failures stay ExecErrors', async () => {
  process.env.FAIL_WITH = 'Error: Unknown device type.';
  try {
    await assert.rejects(new KernelBatch().linkAdd('macvlan', { name: 'mv0', parent: 'eth0', macvlanMode: 'bridge' }).commit(), (e: unknown) => {
      assert.ok(e instanceof WeftError);
      assert.equal(e.code, 'ENOKERNEL');
      assert.match(e.message, /no macvlan support .*CONFIG_MACVLAN/);
      return true;
    });
    process.env.FAIL_WITH = 'Cannot find device "eth9"';
    await assert.rejects(new KernelBatch().linkSet('eth9', { nomaster: true }).commit(), (e: unknown) => {
      assert.ok(!(e instanceof WeftError));
      assert.equal(kernelFailure(e), 'missing');
      return true;
    });
    recorded();
  } finally {
    delete process.env.FAIL_WITH;
  }
});
