import assert from 'node:assert/strict';
import { test } from 'node:test';
import type { AgentStatus } from '../../src/agent/types.js';
import { dnsArgs } from '../../src/cli/dns.js';

/** `weft dns-args`: docker run options pointing at the agent's DNS on the container's network gateway. */
const status = (dns?: AgentStatus['dns']): AgentStatus => ({
  hostId: 'h1',
  publicIp: '192.0.2.1',
  iface: 'eth0',
  networks: [
    { name: 'prod', subnet: '10.5.3.0/24', backend: 'vxlan', bridge: 'weft0', mtu: 1450, gateway: '10.5.3.1', peers: [] },
    { name: 'dev', subnet: '10.6.7.0/24', backend: 'vxlan', bridge: 'weft1', mtu: 1450, gateway: '10.6.7.1', peers: [] },
  ],
  ...(dns ? { dns } : {}),
});

test('the one network that serves DNS needs no --network', () => {
  assert.equal(dnsArgs(status({ domain: 'weft.local', networks: ['prod'] })), '--dns=10.5.3.1 --dns-search=weft.local');
});

test('with several networks the named one gives its own gateway and the agent\'s domain', () => {
  const st = status({ domain: 'corp.internal', networks: ['prod', 'dev'] });
  assert.equal(dnsArgs(st, 'dev'), '--dns=10.6.7.1 --dns-search=corp.internal');
  assert.throws(() => dnsArgs(st), /several networks \(prod, dev\): say which with --network/);
});

test('no DNS (--no-dns) or a network without it is an error naming why', () => {
  assert.throws(() => dnsArgs(status()), /serves no DNS/);
  assert.throws(() => dnsArgs(status({ domain: 'weft.local', networks: ['prod'] }), 'dev'), /no DNS on network dev \(it serves prod\)/);
});
