import { canonicalCidr, cidrContains, cidrWithin, ipToInt, networkAddress, nthAddress } from '../src/net/ipv4.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ExecError, run } from '../src/system/exec.js';
import { ipJson } from '../src/system/ip.js';
import { inNetns, resolveNetns } from '../src/system/netns.js';
import { findUnderlay } from '../src/system/underlay.js';
import { hostIfName, nextIfName, randomMac } from '../src/system/veth.js';
import { WeftError } from '../src/util/errors.js';

test('cidr helpers', () => {
  assert.equal(networkAddress('10.5.3.7/24'), '10.5.3.0');
  assert.equal(canonicalCidr('10.5.3.7/20'), '10.5.0.0/20');
  assert.equal(nthAddress('10.5.3.0/24', 1), '10.5.3.1/24');
  assert.ok(cidrContains('192.168.7.0/24', '192.168.7.200'));
  assert.ok(!cidrContains('192.168.7.0/24', '192.168.8.1'));
  assert.ok(cidrWithin('10.5.3.0/24', '10.5.0.0/16'));
  assert.ok(!cidrWithin('10.0.0.0/8', '10.5.0.0/16'));
  assert.equal(ipToInt('255.255.255.255'), 0xffffffff);
  assert.throws(() => ipToInt('1.2.3'), WeftError);
  assert.throws(() => canonicalCidr('1.2.3.4/33'), WeftError);
});

test('interface names', () => {
  assert.equal(nextIfName(['lo']), 'eth0');
  assert.equal(nextIfName(['lo', 'eth0']), 'ethwe0');
  assert.equal(nextIfName(['lo', 'eth0', 'ethwe0']), 'ethwe1');
  const a = hostIfName('c1', 'blue');
  assert.match(a, /^vw[0-9a-f]{8}$/);
  assert.ok(a.length <= 15);
  assert.equal(hostIfName('c1', 'blue'), a, 'stable');
  assert.notEqual(hostIfName('c1', 'red'), a);
  assert.notEqual(hostIfName('c2', 'blue'), a);
  const m = randomMac();
  assert.match(m, /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/);
  assert.equal(parseInt(m.slice(0, 2), 16) & 3, 2, 'locally administered unicast');
});

test('exec failures carry command and stderr', async () => {
  await assert.rejects(run('ip', ['link', 'show', 'dev', 'no-such-if0']), (e: unknown) => {
    assert.ok(e instanceof ExecError);
    assert.match(e.message, /ip link show dev no-such-if0/);
    assert.match(e.stderr, /does not exist/);
    assert.equal(e.exitCode, 1);
    return true;
  });
  await assert.rejects(run('no-such-binary-weft', []), /command not found/);
  const r = await run('sh', ['-c', 'cat; exit 3'], { input: 'hello', allowFail: true });
  assert.equal(r.code, 3);
  assert.equal(r.stdout, 'hello');
});

test('ipJson parses ip -json', async () => {
  const links = await ipJson<Array<{ ifname: string }>>(['link', 'show']);
  assert.ok(links.some((l) => l.ifname === 'lo'));
});

test('netns resolution', () => {
  assert.deepEqual(resolveNetns(String(process.pid)), { pid: process.pid });
  assert.deepEqual(resolveNetns(`/proc/${process.pid}/ns/net`), { pid: process.pid });
  assert.throws(() => resolveNetns('no-such-netns-weft'), /unknown container "no-such-netns-weft"/);
  assert.throws(() => resolveNetns('99999999'), /no process with pid 99999999/);
  assert.throws(() => resolveNetns('../etc'), WeftError);
  assert.deepEqual(inNetns({ name: 'x' }, 'ip', ['a']), ['nsenter', ['--net=/run/netns/x', 'ip', 'a']]);
  assert.deepEqual(inNetns({ pid: 7 }, 'ip', ['a']), ['nsenter', ['-t', '7', '-n', 'ip', 'a']]);
  assert.deepEqual(inNetns(undefined, 'ip', ['a']), ['ip', ['a']]);
});

test('underlay: clear errors', async () => {
  await assert.rejects(findUnderlay({ iface: 'nosuchif9' }), /underlay interface nosuchif9 does not exist/);
  await assert.rejects(findUnderlay({ publicIp: '203.0.113.254' }), /no interface holds the public IP 203.0.113.254/);
  const lo = await findUnderlay({ iface: 'lo' });
  assert.equal(lo.ip, '127.0.0.1');
  assert.equal(lo.mtu, 65536);
});
