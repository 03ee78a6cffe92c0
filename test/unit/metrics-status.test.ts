import assert from 'node:assert/strict';
import { test } from 'node:test';
import { AgentMetrics, metricsFromStatus, parseHostPort } from '../../src/agent/metrics.js';
import { poolCapacity } from '../../src/agent/health.js';
import type { AgentStatus } from '../../src/agent/types.js';
import { formatStatus } from '../../src/cli/endpoints.js';

/** Metrics and `weft status` are two views of one AgentStatus: the mapping and the printing, pure. */

const NOW = 1_800_000_000_000;
const status = (): AgentStatus => ({
  hostId: 'h1',
  publicIp: '192.168.1.11',
  iface: 'eth0',
  now: NOW,
  store: { url: 'sqlite:///x.db', healthy: true, latencyMs: 3 },
  endpoints: 2,
  networks: [
    {
      name: 'blue',
      subnet: '10.5.1.0/24',
      backend: 'udp',
      bridge: 'weft0',
      mtu: 1472,
      leaseExpiresAt: NOW + 90_000,
      leaseTtlSeconds: 120,
      status: { healthy: true, detail: 'tun up', rxPackets: 10, counters: { drops: 2, name: 'x' } },
      endpoints: 2,
      ipam: { used: 2, size: 253 },
      peers: [
        { subnet: '10.5.2.0/24', publicIp: '192.168.1.12', hostId: 'h2', backendData: { Port: 8285 }, lastSeen: NOW - 4000, reachable: true },
        { subnet: '10.5.3.0/24', publicIp: '192.168.1.13', reachable: false },
      ],
    },
  ],
  failed: { red: 'store down' },
});

test('metricsFromStatus: one sample per fact of the status', () => {
  const s = metricsFromStatus(status());
  const get = (name: string, labels: Record<string, string> = { network: 'blue' }) => s.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).map((x) => x.value);
  assert.deepEqual(get('weft_lease_expiry_seconds'), [90]);
  assert.deepEqual(get('weft_leases'), [3]);
  assert.deepEqual(get('weft_peers'), [2]);
  assert.deepEqual(get('weft_peer_reachable', { peer: 'h2' }), [1]);
  assert.deepEqual(get('weft_peer_reachable', { peer: '192.168.1.13' }), [0]);
  assert.deepEqual(get('weft_endpoints'), [2]);
  assert.deepEqual(get('weft_ipam_used'), [2]);
  assert.deepEqual(get('weft_ipam_free'), [251]);
  assert.deepEqual(get('weft_backend_healthy', { backend: 'udp' }), [1]);
  assert.deepEqual(get('weft_backend_stat', { stat: 'rxPackets' }), [10]);
  assert.deepEqual(get('weft_backend_stat', { stat: 'counters.drops' }), [2]);
  assert.deepEqual(get('weft_backend_stat', { stat: 'counters.name' }), []);
  assert.deepEqual(get('weft_network_failed', { network: 'red' }), [1]);
  assert.deepEqual(get('weft_store_up', {}), [1]);
});

test('the registry renders the status, the reconcile histogram, store errors and the DNS hook', async () => {
  let errors = 0;
  const m = new AgentMetrics(status, () => errors);
  m.observeReconcile('blue', 0.02);
  m.observeReconcile('blue', 0.2, 'boom');
  let dns = { blue: { queries: 4, answered: 3, forwarded: 0, malformed: 1 } };
  const m2 = new AgentMetrics(status, () => errors, () => dns);
  errors = 3;
  const text = await m.text();
  assert.match(text, /^weft_peers\{network="blue"\} 2$/m);
  assert.match(text, /^weft_ipam_free\{network="blue"\} 251$/m);
  assert.match(text, /^weft_reconciles_total\{network="blue",result="ok"\} 1$/m);
  assert.match(text, /^weft_reconciles_total\{network="blue",result="error"\} 1$/m);
  assert.match(text, /^weft_reconcile_duration_seconds_count\{network="blue"\} 2$/m);
  assert.match(text, /^weft_store_errors_total 3$/m);
  assert.doesNotMatch(text, /^weft_dns_queries_total\{/m, 'no DNS service, no DNS counts');
  errors = 5;
  assert.match(await m.text(), /^weft_store_errors_total 5$/m);
  // the DNS servers' counts are counters read at each scrape
  const t2 = await m2.text();
  assert.match(t2, /^# TYPE weft_dns_queries_total counter$/m);
  assert.match(t2, /^weft_dns_queries_total\{network="blue"\} 4$/m);
  assert.match(t2, /^weft_dns_answered_total\{network="blue"\} 3$/m);
  assert.match(t2, /^weft_dns_malformed_total\{network="blue"\} 1$/m);
  dns = { blue: { queries: 9, answered: 7, forwarded: 1, malformed: 1 } };
  const t3 = await m2.text();
  assert.match(t3, /^weft_dns_queries_total\{network="blue"\} 9$/m);
  assert.match(t3, /^weft_dns_forwarded_total\{network="blue"\} 1$/m);
});

/** A wireguard network and a udp network as their backends' status() report them (fake values). */
const KEY_H2 = 'x'.repeat(43) + '=';
const KEY_GONE = 'y'.repeat(43) + '=';
const backends = (): AgentStatus => ({
  hostId: 'h1',
  publicIp: '192.168.1.11',
  iface: 'eth0',
  now: NOW,
  networks: [
    {
      name: 'wg',
      subnet: '10.6.1.0/24',
      backend: 'wireguard',
      bridge: 'weft1',
      mtu: 1420,
      status: {
        healthy: true,
        detail: 'wireguard-go',
        listenPort: 51820,
        restarts: 2,
        peers: [
          { publicKey: KEY_H2, endpoint: '192.168.1.12:51820', allowedIps: ['10.6.2.0/24'], latestHandshake: 1_799_999_990, rxBytes: 1234, txBytes: 5678 },
          { publicKey: KEY_GONE, endpoint: '192.168.1.14:51820', allowedIps: ['10.6.4.0/24'], latestHandshake: 0, rxBytes: 0, txBytes: 92 },
        ],
      },
      peers: [{ subnet: '10.6.2.0/24', publicIp: '192.168.1.12', hostId: 'h2', backendData: { PublicKey: KEY_H2 } }],
    },
    {
      name: 'u',
      subnet: '10.7.1.0/24',
      backend: 'udp',
      bridge: 'weft2',
      mtu: 1472,
      status: {
        healthy: true,
        detail: 'weft-udpd',
        port: 8285,
        restarts: 0,
        peers: [{ subnet: '10.7.2.0/24', ip: '192.168.1.12', port: 8285 }],
        counters: { txPackets: 10, txBytes: 1000, rxPackets: 8, rxBytes: 800 },
        drops: { unknownPeer: 1, spoofedSource: 2, total: 3 },
      },
      peers: [{ subnet: '10.7.2.0/24', publicIp: '192.168.1.12', hostId: 'h2' }],
    },
  ],
});

test('backends: WireGuard handshakes and bytes per peer, udp packets/bytes/drops, restarts', () => {
  const s = metricsFromStatus(backends());
  const get = (name: string, labels: Record<string, string>) => s.filter((x) => x.name === name && Object.entries(labels).every(([k, v]) => x.labels[k] === v)).map((x) => x.value);
  // a peer is named by the lease holding its key (host id), else by its endpoint's address
  assert.deepEqual(get('weft_wireguard_peer_last_handshake_seconds', { network: 'wg', peer: 'h2', public_key: KEY_H2 }), [1_799_999_990]);
  assert.deepEqual(get('weft_wireguard_peer_last_handshake_seconds', { network: 'wg', peer: '192.168.1.14' }), [0]);
  assert.deepEqual(get('weft_wireguard_peer_receive_bytes_total', { network: 'wg', peer: 'h2' }), [1234]);
  assert.deepEqual(get('weft_wireguard_peer_transmit_bytes_total', { network: 'wg', peer: 'h2' }), [5678]);
  assert.deepEqual(get('weft_wireguard_peer_transmit_bytes_total', { network: 'wg', peer: '192.168.1.14' }), [92]);
  assert.deepEqual(get('weft_backend_restarts_total', { network: 'wg', backend: 'wireguard' }), [2]);
  assert.deepEqual(get('weft_backend_stat', { network: 'wg', stat: 'listenPort' }), [51820]);
  // udp's peers carry no keys: no WireGuard samples for them
  assert.deepEqual(get('weft_wireguard_peer_last_handshake_seconds', { network: 'u' }), []);
  assert.deepEqual(get('weft_backend_packets_total', { network: 'u', backend: 'udp', direction: 'tx' }), [10]);
  assert.deepEqual(get('weft_backend_packets_total', { network: 'u', direction: 'rx' }), [8]);
  assert.deepEqual(get('weft_backend_bytes_total', { network: 'u', direction: 'tx' }), [1000]);
  assert.deepEqual(get('weft_backend_bytes_total', { network: 'u', direction: 'rx' }), [800]);
  assert.deepEqual(get('weft_backend_drops_total', { network: 'u', reason: 'spoofedSource' }), [2]);
  assert.deepEqual(get('weft_backend_drops_total', { network: 'u', reason: 'total' }), [], 'the sum is left to PromQL');
  // counted things are counters, not also gauges
  assert.deepEqual(get('weft_backend_stat', { network: 'u', stat: 'counters.txPackets' }), []);
  assert.deepEqual(get('weft_backend_stat', { network: 'u', stat: 'restarts' }), []);
});

test('backends: the registry types the counts as counters and the handshake time as a gauge', async () => {
  const m = new AgentMetrics(backends, () => 0);
  const text = await m.text();
  assert.match(text, /^# TYPE weft_wireguard_peer_last_handshake_seconds gauge$/m);
  assert.match(text, /^weft_wireguard_peer_last_handshake_seconds\{network="wg",peer="h2",public_key="x+="\} 1799999990$/m);
  for (const c of ['weft_wireguard_peer_receive_bytes_total', 'weft_wireguard_peer_transmit_bytes_total', 'weft_backend_packets_total', 'weft_backend_bytes_total', 'weft_backend_drops_total', 'weft_backend_restarts_total']) {
    assert.match(text, new RegExp(`^# TYPE ${c} counter$`, 'm'));
  }
  assert.match(text, /^weft_wireguard_peer_receive_bytes_total\{network="wg",peer="h2",public_key="x+="\} 1234$/m);
  assert.match(text, /^weft_backend_packets_total\{network="u",backend="udp",direction="rx"\} 8$/m);
  assert.match(text, /^weft_backend_drops_total\{network="u",backend="udp",reason="unknownPeer"\} 1$/m);
  // read again, not added up: a second scrape shows the same values
  const again = await m.text();
  assert.match(again, /^weft_backend_packets_total\{network="u",backend="udp",direction="rx"\} 8$/m);
});

test('parseHostPort and poolCapacity', () => {
  assert.deepEqual(parseHostPort('127.0.0.1:9402', '--metrics-addr'), { host: '127.0.0.1', port: 9402 });
  assert.throws(() => parseHostPort('9402', '--metrics-addr'), /--metrics-addr: expected HOST:PORT/);
  assert.throws(() => parseHostPort('1.2.3.4:70000', '--ui-addr'), /--ui-addr/);
  assert.deepEqual(parseHostPort('localhost:80', '--ui-addr'), { host: 'localhost', port: 80 });
  assert.deepEqual(parseHostPort('[::1]:80', '--ui-addr'), { host: '::1', port: 80 });
  assert.deepEqual(parseHostPort('[::]:80', '--ui-addr'), { host: '::', port: 80 });
  for (const bad of ['300.1.1.1:80', '10.1.1:80', 'example.com:80', '[::2]:80', ':80']) assert.throws(() => parseHostPort(bad, '--ui-addr'), /--ui-addr/, bad);
  assert.equal(poolCapacity('10.5.1.0/24'), 253);
  assert.equal(poolCapacity('10.5.0.0/16', '10.5.0.10', '10.5.0.19'), 10);
});

test('formatStatus: host, store, lease expiry, backend health, peers with last seen and reachability', () => {
  const text = formatStatus(status());
  assert.match(text, /^host h1 {2}underlay eth0 192\.168\.1\.11 {2}endpoints 2$/m);
  assert.match(text, /^store sqlite:\/\/\/x\.db {2}ok \(3 ms\)$/m);
  assert.match(text, /^network blue: lease 10\.5\.1\.0\/24 expires in 1m30s; backend udp healthy \(tun up\); MTU 1472; bridge weft0; endpoints 2 \(IPAM 2\/253 used\)$/m);
  assert.match(text, /^h2 +10\.5\.2\.0\/24 +192\.168\.1\.12 +Port=8285 +4s ago +yes$/m);
  assert.match(text, /^- +10\.5\.3\.0\/24 +192\.168\.1\.13 +- +NO$/m);
  assert.match(text, /^! red: not joined: store down$/m);
  const down = status();
  down.store = { url: 'etcd://127.0.0.1:1', healthy: false, error: 'refused' };
  assert.match(formatStatus(down), /^store etcd:\/\/127\.0\.0\.1:1 {2}UNREACHABLE: refused$/m);
});
