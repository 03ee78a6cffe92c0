import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseNetworkConfig, requireBackendType } from '../../src/config/network.js';
import { WeftError } from '../../src/util/errors.js';

function rejects(input: unknown, ...parts: Array<string | RegExp>): void {
  assert.throws(
    () => parseNetworkConfig(input as never),
    (err: unknown) => {
      assert.ok(err instanceof WeftError, `expected WeftError, got ${String(err)}`);
      assert.ok(!err.message.includes('\n'), 'one line');
      for (const p of parts) {
        if (typeof p === 'string') assert.ok(err.message.includes(p), `"${err.message}" should contain "${p}"`);
        else assert.match(err.message, p);
      }
      return true;
    },
  );
}

test('defaults: SubnetLen 24, vxlan with VNI 1 and port 8472', () => {
  const c = parseNetworkConfig('{"Network":"10.5.0.0/16"}');
  assert.deepEqual(c, { Network: '10.5.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } });
});

test("SubnetLen defaults like flannel's: 24, or a quarter of a network smaller than a /22", () => {
  assert.equal(parseNetworkConfig({ Network: '10.0.0.0/8' }).SubnetLen, 24);
  assert.equal(parseNetworkConfig({ Network: '10.5.0.0/22' }).SubnetLen, 24);
  assert.equal(parseNetworkConfig({ Network: '10.5.0.0/23' }).SubnetLen, 25);
  assert.equal(parseNetworkConfig({ Network: '10.5.0.0/28' }).SubnetLen, 30);
});

test('a full flannel config is kept as written, extras included', () => {
  const input = {
    Network: '10.5.0.0/16',
    SubnetLen: 26,
    SubnetMin: '10.5.1.0',
    SubnetMax: '10.5.20.192',
    Backend: { Type: 'vxlan', VNI: 42, Port: 4789, GBP: true },
    IPMasq: true,
  };
  assert.deepEqual(parseNetworkConfig(input), input);
  // stored in flannel's field order whatever the input order
  assert.equal(
    JSON.stringify(parseNetworkConfig({ Backend: { Type: 'host-gw' }, IPMasq: false, Network: '10.5.0.0/16', Extra: 1 })),
    '{"Network":"10.5.0.0/16","SubnetLen":24,"Backend":{"Type":"host-gw"},"IPMasq":false,"Extra":1}',
  );
  assert.deepEqual(parseNetworkConfig({ Network: '10.6.0.0/16', Backend: { Type: 'host-gw' } }).Backend, { Type: 'host-gw' });
  // a type this weft has no module for is read as it is (a newer weft may have written it)
  assert.deepEqual(parseNetworkConfig({ Network: '10.6.0.0/16', Backend: { Type: 'future', X: 1 } }).Backend, { Type: 'future', X: 1 });
});

test('rejects input that is not a JSON object', () => {
  rejects('{"Network":', 'not JSON');
  rejects('[1]', 'expected a JSON object');
});

test('rejects a missing or invalid Network', () => {
  rejects({}, 'Network is required');
  rejects({ Network: 'banana' }, 'Network "banana"', 'not an IPv4 CIDR');
  rejects({ Network: '10.5.0.0/33' }, 'Network "10.5.0.0/33"', 'not an IPv4 CIDR');
  rejects({ Network: '10.5.0.300/16' }, 'Network "10.5.0.300/16"');
  rejects({ Network: '10.5.0.0' }, 'Network "10.5.0.0"');
  rejects({ Network: 10 }, 'Network 10');
});

test('rejects a Network with host bits set, suggesting the right one', () => {
  rejects({ Network: '10.5.1.0/16' }, 'Network "10.5.1.0/16"', 'host bits', '10.5.0.0/16');
});

test('rejects a SubnetLen not longer than the network prefix, or above 30', () => {
  rejects({ Network: '10.5.0.0/16', SubnetLen: 16 }, 'SubnetLen 16', 'longer than', '/16');
  rejects({ Network: '10.5.0.0/16', SubnetLen: 8 }, 'SubnetLen 8');
  rejects({ Network: '10.5.0.0/24', SubnetLen: 24 }, 'SubnetLen 24: must be longer than the network\'s prefix /24');
  rejects({ Network: '10.5.0.0/29' }, 'Network "10.5.0.0/29": too small: weft needs at least a /28');
  rejects({ Network: '10.5.0.0/16', SubnetLen: 31 }, 'SubnetLen 31', 'at most 30');
  rejects({ Network: '10.5.0.0/16', SubnetLen: 'x' }, 'SubnetLen "x"');
  rejects({ Network: '10.5.0.0/16', SubnetLen: 24.5 }, 'SubnetLen 24.5');
});

test('rejects SubnetMin/SubnetMax outside the network, unaligned, or reversed', () => {
  rejects({ Network: '10.5.0.0/16', SubnetMin: '10.6.0.0' }, 'SubnetMin "10.6.0.0"', 'outside the network 10.5.0.0/16');
  rejects({ Network: '10.5.0.0/16', SubnetMax: '10.4.255.0' }, 'SubnetMax "10.4.255.0"', 'outside');
  rejects({ Network: '10.5.0.0/16', SubnetMin: '10.5.1.7' }, 'SubnetMin "10.5.1.7"', 'not the start of a /24 subnet');
  rejects({ Network: '10.5.0.0/16', SubnetMin: 'nope' }, 'SubnetMin "nope"', 'not an IPv4 address');
  rejects({ Network: '10.5.0.0/16', SubnetMin: '10.5.9.0', SubnetMax: '10.5.2.0' }, 'SubnetMax "10.5.2.0"', 'below SubnetMin 10.5.9.0');
});

test('rejects an unknown backend type, naming the known ones', () => {
  assert.throws(() => requireBackendType('gre'), (e: unknown) => e instanceof WeftError && /^unknown backend type "gre" \(this weft has: host-gw, vxlan/.test(e.message));
  rejects({ Network: '10.5.0.0/16', Backend: {} }, 'Backend.Type is required');
});

test('rejects a VNI or port out of range', () => {
  rejects({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', VNI: 16777216 } }, 'Backend.VNI 16777216', 'out of range');
  rejects({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', VNI: -1 } }, 'Backend.VNI -1');
  rejects({ Network: '10.5.0.0/16', Backend: { Type: 'vxlan', Port: 70000 } }, 'Backend.Port 70000', 'out of range');
});

test('refuses networks that cannot hold four subnets, as flanneld does', () => {
  rejects({ Network: '10.55.0.0/23', SubnetLen: 24 }, 'SubnetLen 24', 'network must be able to accommodate at least four subnets');
  rejects({ Network: '10.55.0.0/16', SubnetLen: 17 }, 'SubnetLen 17', 'at least four subnets');
  assert.equal(parseNetworkConfig({ Network: '10.55.0.0/22', SubnetLen: 24 }).SubnetLen, 24);
  assert.equal(parseNetworkConfig({ Network: '10.55.0.0/23' }).SubnetLen, 25, 'the default length always leaves four');
});
