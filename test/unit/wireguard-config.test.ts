import assert from 'node:assert/strict';
import { test } from 'node:test';
import { backendModule } from '../../src/backends/all.js';
import { judgeWireguard } from '../../src/backends/wireguard/doctor.js';
import { WireguardBackend, wgDeviceName } from '../../src/backends/wireguard/index.js';
import type { BackendCheckInput } from '../../src/backends/types.js';
import { NetworkRunner } from '../../src/agent/network-runner.js';
import { parseNetworkConfig } from '../../src/config/network.js';
import type { NetworkConfig } from '../../src/config/types.js';
import type { Store } from '../../src/store/types.js';
import { generateWgKeyPair } from '../../src/system/wireguard.js';
import { log } from '../../src/util/log.js';

test('config: wireguard fields are validated (the field at fault named) and ListenPort defaults to 51820', () => {
  const c = parseNetworkConfig({ Network: '10.9.0.0/16', Backend: { Type: 'wireguard' } });
  assert.equal(c.Backend.ListenPort, 51820);
  assert.throws(() => parseNetworkConfig({ Network: '10.9.0.0/16', Backend: { Type: 'wireguard', ListenPort: 70000 } }), /Backend\.ListenPort 70000: port out of range/);
  assert.throws(() => parseNetworkConfig({ Network: '10.9.0.0/16', Backend: { Type: 'wireguard', Implementation: 'magic' } }), /Backend\.Implementation "magic"/);
  assert.throws(() => parseNetworkConfig({ Network: '10.9.0.0/16', Backend: { Type: 'wireguard', PersistentKeepaliveInterval: -1 } }), /Backend\.PersistentKeepaliveInterval -1/);
});

test('config: a second wireguard network gets the next free port; the same port twice is a conflict', () => {
  const m = backendModule('wireguard');
  assert.equal(m.allocateIds!({ Type: 'wireguard' }, []).ListenPort, 51820);
  assert.equal(m.allocateIds!({ Type: 'wireguard' }, [{ Type: 'wireguard', ListenPort: 51820 }, { Type: 'wireguard', ListenPort: 51821 }]).ListenPort, 51822);
  assert.equal(m.allocateIds!({ Type: 'wireguard', ListenPort: 4000 }, [{ Type: 'wireguard', ListenPort: 4000 }]).ListenPort, 4000);
  assert.match(m.conflict!({ Type: 'wireguard', ListenPort: 4000 }, { name: 'a', backend: { Type: 'wireguard', ListenPort: 4000 } })!, /port 4000 is already used by network "a"/);
  assert.equal(m.conflict!({ Type: 'wireguard', ListenPort: 4001 }, { name: 'a', backend: { Type: 'wireguard', ListenPort: 4000 } }), undefined);
  assert.equal(m.mtuOverhead, 80);
});

test('backend: MTU underlay − 80, device name per network and host, files in the network\'s state dir', () => {
  const b = new WireguardBackend({
    networkName: 'n',
    network: { Network: '10.9.0.0/16', Backend: { Type: 'wireguard' } },
    underlay: { iface: 'eth0', ip: '192.168.5.5', mtu: 1500 },
    log,
    stateDir: '/var/lib/weft/n',
    bridge: 'weft0',
    hostId: 'h7',
    sys: {},
  });
  assert.equal(b.mtu, 1420);
  assert.equal(b.device, wgDeviceName('n', 'h7'));
  assert.equal(b.keyFile, '/var/lib/weft/n/wireguard.key');
  assert.equal(b.port, 51820);
});

const runner = (config: Record<string, unknown>) =>
  new NetworkRunner('n', parseNetworkConfig(config) as NetworkConfig, {
    store: {} as Store,
    hostId: 'h',
    underlay: { iface: 'eth0', ip: '192.168.5.5', mtu: 1500 },
    bridge: 'weft0',
    stateDir: '/nonexistent',
    subnetEnvPaths: [],
    log,
  });
const underlayFor = (r: NetworkRunner) => (r as unknown as { underlayForMtu(u: { iface: string; ip: string; mtu: number }): { mtu: number } }).underlayForMtu({ iface: 'eth0', ip: '192.168.5.5', mtu: 1500 });

test('MTU override: any backend honours a network MTU that fits the underlay; too large or nonsense is an error', () => {
  // no override: the link's MTU as it is
  assert.equal(underlayFor(runner({ Network: '10.9.0.0/16', Backend: { Type: 'wireguard' } })).mtu, 1500);
  // the backend sees MTU + its overhead, so its container MTU is exactly MTU
  const wgRunner = runner({ Network: '10.9.0.0/16', MTU: 1400, Backend: { Type: 'wireguard' } });
  const u = underlayFor(wgRunner);
  assert.equal(u.mtu, 1480);
  assert.equal(u.mtu - backendModule('wireguard').mtuOverhead, 1400);
  assert.equal(underlayFor(runner({ Network: '10.9.0.0/16', MTU: 1450, Backend: { Type: 'vxlan' } })).mtu, 1500);
  assert.equal(underlayFor(runner({ Network: '10.9.0.0/16', MTU: 1500, Backend: { Type: 'host-gw' } })).mtu, 1500);
  assert.throws(() => underlayFor(runner({ Network: '10.9.0.0/16', MTU: 1421, Backend: { Type: 'wireguard' } })), /MTU 1421 is too large for the underlay: eth0 has MTU 1500 and wireguard needs 80 bytes of it \(at most 1420\)/);
  assert.throws(() => underlayFor(runner({ Network: '10.9.0.0/16', MTU: 1451, Backend: { Type: 'vxlan' } })), /at most 1450/);
  assert.throws(() => underlayFor(runner({ Network: '10.9.0.0/16', MTU: 'big', Backend: { Type: 'host-gw' } })), /MTU "big" must be a whole number of at least 576/);
  assert.throws(() => underlayFor(runner({ Network: '10.9.0.0/16', MTU: 100, Backend: { Type: 'host-gw' } })), /at least 576/);
});

// ------------------------------------------------------------------ doctor

const [me, peer] = [generateWgKeyPair().publicKey, generateWgKeyPair().publicKey];
const DEV = 'weftwg-00000001';
function facts(status: Record<string, unknown>, o: { routes?: boolean; up?: boolean } = {}): BackendCheckInput {
  return {
    network: {
      name: 'e2e',
      subnet: '10.61.1.0/24',
      bridge: 'weft0',
      mtu: 1420,
      backend: 'wireguard',
      peers: [{ subnet: '10.61.2.0/24', publicIp: '192.168.9.12', hostId: 'h2' }],
      status: { healthy: true, ...status },
    },
    publicIp: '192.168.9.11',
    underlayIface: 'eth0',
    links: [
      { ifname: 'eth0', ifindex: 2, mtu: 1500, flags: ['UP'] },
      { ifname: DEV, ifindex: 3, mtu: 1420, flags: o.up === false ? [] : ['UP', 'LOWER_UP'] },
    ] as BackendCheckInput['links'],
    underlay: { ifname: 'eth0', ifindex: 2, mtu: 1500, flags: ['UP'] } as BackendCheckInput['underlay'],
    routes: o.routes === false ? [] : [{ dst: '10.61.2.0/24', dev: DEV }],
    neigh: {},
    fdb: {},
    rpFilter: { all: 0 },
  };
}
const good = {
  implementation: 'wireguard-go',
  device: DEV,
  pid: 123,
  keyFile: '/var/lib/weft/e2e/wireguard.key',
  keyFileMode: 0o600,
  publicKey: me,
  peers: [{ publicKey: peer, endpoint: '192.168.9.12:51820', allowedIps: ['10.61.2.0/24'], latestHandshake: 1795000000 }],
};
const failing = (f: BackendCheckInput) => judgeWireguard(f).filter((x) => !x.ok).map((x) => `${x.severity} ${x.check}`);

test('doctor: a healthy wireguard host has no failing finding', () => {
  assert.deepEqual(failing(facts(good)), []);
});

test('doctor: wireguard-go not running, device down, key file readable by others', () => {
  assert.deepEqual(failing(facts({ ...good, healthy: false, pid: undefined, lastExit: 'killed by SIGKILL' })), ['error wireguard:weftwg-00000001:process']);
  assert.deepEqual(failing(facts(good, { up: false })), ['error wireguard:weftwg-00000001']);
  const loose = judgeWireguard(facts({ ...good, keyFileMode: 0o644 })).find((x) => x.check === 'wireguard:key')!;
  assert.equal(loose.ok, false);
  assert.match(loose.message, /mode 0644/);
  assert.match(loose.fix!, /chmod 600 \/var\/lib\/weft\/e2e\/wireguard.key/);
  assert.deepEqual(failing(facts({ ...good, keyFileMode: undefined })), ['error wireguard:key']);
});

test('doctor: a peer without a handshake (warn), not configured, or without a route (errors)', () => {
  assert.deepEqual(failing(facts({ ...good, peers: [{ ...good.peers[0], latestHandshake: 0 }] })), ['warn peer:e2e:10.61.2.0/24:handshake']);
  assert.deepEqual(failing(facts({ ...good, peers: [] })), ['error peer:e2e:10.61.2.0/24:wg']);
  assert.deepEqual(failing(facts(good, { routes: false })), ['error peer:e2e:10.61.2.0/24:route']);
});
