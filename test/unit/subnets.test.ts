import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { AddressPool, gatewayOf } from '../../src/ipam/addresses.js';
import { formatSubnetEnv, writeSubnetEnv } from '../../src/lease/subnet-env.js';
import { cidrsOverlap, intToIp, ipToInt, parseCidr } from '../../src/net/ipv4.js';
import { keyToSubnet, parseLeaseKey, subnetToKey } from '../../src/store/layout.js';
import { SubnetRange } from '../../src/lease/subnets.js';
import { FLANNEL_NETWORK_NAME, networkKeys } from '../../src/store/layout.js';
import type { Store } from '../../src/store/types.js';

test('ip <-> int round trip, including addresses above 2^31', () => {
  assert.equal(ipToInt('10.5.72.1'), 0x0a054801);
  assert.equal(ipToInt('255.255.255.255'), 0xffffffff);
  assert.equal(intToIp(0xc0a80101), '192.168.1.1');
  assert.throws(() => ipToInt('10.5'));
});

test('subnet keys are flannel\'s a.b.c.d-len', () => {
  assert.equal(subnetToKey('10.5.72.0/24'), '10.5.72.0-24');
  assert.equal(keyToSubnet('10.5.72.0-24'), '10.5.72.0/24');
  assert.equal(keyToSubnet('10.5.72.1-24'), undefined);
  assert.equal(keyToSubnet('config'), undefined);
});

test('subnet range: whole network, SubnetMin/Max, indexOf', () => {
  // flannel's defaults: SubnetMin is the network's second subnet, SubnetMax its last
  const all = new SubnetRange({ Network: '10.5.0.0/16', SubnetLen: 24 });
  assert.equal(all.count, 255);
  assert.equal(all.at(0), '10.5.1.0/24');
  assert.equal(all.at(254), '10.5.255.0/24');
  assert.equal(all.has('10.5.0.0/24'), false);
  assert.equal(all.indexOf('10.5.72.0/24'), 71);
  assert.deepEqual([...new SubnetRange({ Network: '10.55.0.0/22', SubnetLen: 24 }).all()], ['10.55.1.0/24', '10.55.2.0/24', '10.55.3.0/24']);
  assert.equal(new SubnetRange({ Network: '10.5.0.0/16', SubnetLen: 24, SubnetMin: '10.5.0.0' }).at(0), '10.5.0.0/24');
  assert.equal(all.indexOf('10.6.0.0/24'), -1);
  assert.equal(all.indexOf('10.5.72.0/25'), -1);
  const some = new SubnetRange({ Network: '10.5.0.0/16', SubnetLen: 26, SubnetMin: '10.5.1.0', SubnetMax: '10.5.1.192' });
  assert.deepEqual([...some.all()], ['10.5.1.0/26', '10.5.1.64/26', '10.5.1.128/26', '10.5.1.192/26']);
  assert.equal(some.has('10.5.0.192/26'), false);
  const high = new SubnetRange({ Network: '192.168.0.0/22', SubnetLen: 24 });
  assert.deepEqual([...high.all()], ['192.168.1.0/24', '192.168.2.0/24', '192.168.3.0/24']);
});

test('overlap', () => {
  assert.equal(cidrsOverlap(parseCidr('10.5.0.0/16'), parseCidr('10.5.72.0/24')), true);
  assert.equal(cidrsOverlap(parseCidr('10.5.0.0/16'), parseCidr('10.6.0.0/16')), false);
  assert.equal(cidrsOverlap(parseCidr('10.0.0.0/8'), parseCidr('10.200.0.0/16')), true);
});

test('address pool: gateway is the first usable, containers start after it', () => {
  const pool = new AddressPool('10.5.72.0/24');
  assert.equal(gatewayOf('10.5.72.0/24'), '10.5.72.1');
  assert.equal(pool.gateway, '10.5.72.1');
  assert.equal(pool.at(0), '10.5.72.2');
  assert.equal(pool.size, 253);
  assert.equal(pool.check('10.5.72.9/24'), '10.5.72.9');
  assert.throws(() => pool.check('10.5.73.9'), /10\.5\.73\.9 is outside this host's subnet 10\.5\.72\.0\/24/);
  assert.throws(() => pool.check('10.5.72.0'), /network address/);
  assert.throws(() => pool.check('10.5.72.255'), /broadcast address/);
  assert.throws(() => pool.check('10.5.72.1'), /gateway/);
  assert.throws(() => pool.check('10.5.72.9/16'), /prefix \/16/);
  assert.throws(() => pool.check('bogus'), /not an IPv4 address/);
});

test('subnet.env in flannel\'s format and order', async () => {
  const env = { network: '10.5.0.0/16', subnet: '10.5.72.0/24', mtu: 1450, ipMasq: true };
  assert.equal(formatSubnetEnv(env), 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.72.1/24\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=true\n');
  const dir = await mkdtemp(join(tmpdir(), 'weft-env-'));
  try {
    const path = join(dir, 'run', 'flannel', 'subnet.env');
    await writeSubnetEnv(path, { ...env, subnet: '10.5.3.64/26', ipMasq: false });
    assert.equal(await readFile(path, 'utf8'), 'FLANNEL_NETWORK=10.5.0.0/16\nFLANNEL_SUBNET=10.5.3.65/26\nFLANNEL_MTU=1450\nFLANNEL_IPMASQ=false\n');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test('key layout: weft and flannel', () => {
  const weft = networkKeys({ flannelLayout: false } as Store, 'blue');
  assert.equal(weft.config, 'networks/blue/config');
  assert.equal(weft.subnet('10.5.72.0/24'), 'networks/blue/subnets/10.5.72.0-24');
  assert.equal(weft.host('host-a'), 'networks/blue/hosts/host-a');
  assert.equal(weft.ipamAddress('10.5.72.0/24', '10.5.72.2'), 'networks/blue/ipam/10.5.72.0-24/10.5.72.2');
  assert.throws(() => networkKeys({ flannelLayout: false } as Store, 'a/b'), /invalid network name "a\/b"/);
  assert.throws(() => weft.host('../x'), /invalid host id/);
  const flannel = networkKeys({ flannelLayout: true } as Store, 'anything');
  assert.equal(flannel.config, 'config');
  assert.equal(flannel.subnet('10.5.72.0/24'), 'subnets/10.5.72.0-24');
  assert.equal(FLANNEL_NETWORK_NAME, 'default');
});

test("lease keys: flannel's plain and dual-stack forms, exactly", () => {
  assert.deepEqual(parseLeaseKey('10.57.1.0-24'), { subnet: '10.57.1.0/24' });
  assert.deepEqual(parseLeaseKey('10.57.1.0-24&fd57:0:0:17::-64'), { subnet: '10.57.1.0/24', subnetV6: 'fd57:0:0:17::/64' });
  assert.deepEqual(parseLeaseKey('10.57.1.0-24&FD57:0000:0:17::-64'), { subnet: '10.57.1.0/24', subnetV6: 'fd57:0:0:17::/64' });
  assert.equal(parseLeaseKey('10.57.1.0-24&fd57:0:0:17::1-64'), undefined, 'IPv6 host bits set');
  assert.equal(parseLeaseKey('10.57.1.0-24&fd57::-129'), undefined);
  assert.equal(parseLeaseKey('10.57.1.0-24&banana-64'), undefined);
  assert.equal(parseLeaseKey('10.57.1.0-24&'), undefined);
  assert.equal(parseLeaseKey('10.57.1.1-24&fd57::-64'), undefined, 'IPv4 host bits set');
  assert.equal(keyToSubnet('10.57.1.0-24&fd57:0:0:17::-64'), undefined, 'keyToSubnet stays plain-only');
});
