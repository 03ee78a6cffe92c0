import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { judgeBgp, sessionCause } from '../../src/backends/bgp/doctor.js';
import type { BackendCheckInput } from '../../src/backends/types.js';
import { parseShowProtocols, parseShowProtocolsAll } from '../../src/system/bird.js';

/** Parsers of `birdc show protocols [all]` (outputs as BIRD 2.0.12 printed them) and the doctor's verdicts. No root. */

const SHOW = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
weft_device Device     ---        up     2026-11-23 16:03:21  
weft_kernel Kernel     master4    up     2026-11-23 16:03:21  
weft_own   Static     master4    up     2026-11-23 16:03:21  
weft_192_168_120_12 BGP        ---        up     2026-11-23 16:03:42  Established   
weft_192_168_120_13 BGP        ---        start  2026-11-23 16:03:42  Connect       BGP Error: Hold timer expired
ext_192_168_120_14 BGP        ---        start  2026-11-23 16:03:43  Idle          BGP Error: Bad peer AS
device1    Device     ---        up     15:56:42.659  
weft_peer  BGP        ---        start  15:56:57.418  Active        Received: Administrative shutdown
`;

const ALL = `BIRD 2.0.12 ready.
Name       Proto      Table      State  Since         Info
ext_192_168_120_14 BGP        ---        start  2026-11-23 16:03:43  Idle          BGP Error: Bad peer AS
  BGP state:          Idle
    Neighbor address: 192.168.120.14
    Neighbor AS:      65999
    Local AS:         64512
    Error wait:       2.242/4
    Last error:       BGP Error: Bad peer AS
  Channel ipv4
    State:          DOWN
    Table:          master4

weft_192_168_120_12 BGP        ---        up     2026-11-23 16:03:42  Established   
  BGP state:          Established
    Neighbor address: 192.168.120.12
    Neighbor AS:      64512
    Local AS:         64512
  Channel ipv4
    State:          UP
    Routes:         1 imported, 1 exported, 1 preferred
`;

describe('birdc show protocols parser', () => {
  test('rows with long names, ISO and short times, BGP state and detail', () => {
    const rows = parseShowProtocols(SHOW);
    assert.deepEqual(rows.map((r) => r.name), ['weft_device', 'weft_kernel', 'weft_own', 'weft_192_168_120_12', 'weft_192_168_120_13', 'ext_192_168_120_14', 'device1', 'weft_peer']);
    const est = rows[3]!;
    assert.deepEqual(est, { name: 'weft_192_168_120_12', proto: 'BGP', table: '---', state: 'up', since: '2026-11-23 16:03:42', info: 'Established', bgpState: 'Established' });
    assert.equal(rows[4]!.bgpState, 'Connect');
    assert.equal(rows[4]!.detail, 'BGP Error: Hold timer expired');
    assert.equal(rows[5]!.bgpState, 'Idle');
    assert.equal(rows[5]!.detail, 'BGP Error: Bad peer AS');
    assert.equal(rows[6]!.since, '15:56:42.659');
    assert.equal(rows[6]!.bgpState, undefined, 'not BGP');
    assert.equal(rows[7]!.detail, 'Received: Administrative shutdown');
    assert.equal(rows[0]!.info, '');
  });

  test('empty and garbage input give no rows', () => {
    assert.deepEqual(parseShowProtocols(''), []);
    assert.deepEqual(parseShowProtocols('BIRD 2.0.12 ready.\nName       Proto      Table      State  Since         Info\n'), []);
    assert.deepEqual(parseShowProtocols('garbage\n'), []);
  });

  test('show protocols all: neighbour, AS numbers, last error, route counts', () => {
    const d = parseShowProtocolsAll(ALL);
    assert.equal(d.length, 2);
    assert.deepEqual(d[0], { name: 'ext_192_168_120_14', bgpState: 'Idle', neighborAddress: '192.168.120.14', neighborAs: 65999, localAs: 64512, lastError: 'BGP Error: Bad peer AS' });
    assert.deepEqual(d[1]!.routes, { imported: 1, exported: 1 });
    assert.equal(d[1]!.lastError, undefined);
  });
});

function input(sessions: unknown[], over: Partial<BackendCheckInput['network']> = {}, routes: BackendCheckInput['routes'] = []): BackendCheckInput {
  return {
    network: {
      name: 'n',
      subnet: '10.9.2.0/24',
      bridge: 'weft0',
      mtu: 1500,
      backend: 'bgp',
      peers: [{ subnet: '10.9.1.0/24', publicIp: '192.168.5.1', hostId: 'h1' }],
      status: { healthy: false, asn: 64512, bird: { running: true, log: '/x/bird.log' }, detail: 'bird pid 1', sessions },
      ...over,
    },
    publicIp: '192.168.5.2',
    underlayIface: 'eth0',
    links: [],
    routes,
    neigh: {},
    fdb: {},
    rpFilter: {},
  };
}

describe('bgp doctor', () => {
  test('names the likely cause of each session that is not Established', () => {
    assert.match(sessionCause({ peer: '1.2.3.4', kind: 'external', state: 'Idle', info: 'BGP Error: Bad peer AS' }, 64512).message, /AS mismatch/);
    assert.match(sessionCause({ peer: '1.2.3.4', state: 'Active', info: 'Socket: Connection refused' }).message, /TCP port 179 at 1\.2\.3\.4 is unreachable \(connection refused/);
    assert.match(sessionCause({ peer: '1.2.3.4', state: 'Connect', info: '' }).message, /TCP port 179 at 1\.2\.3\.4 is unreachable/);
    assert.match(sessionCause({ peer: '1.2.3.4', state: 'Connect', info: '', lastError: 'BGP Error: Hold timer expired' }).message, /hold timer expired/);
    assert.match(sessionCause({ peer: '1.2.3.4', state: 'Down', info: 'bird is not running' }).message, /bird is not running/);
  });

  test('findings: sessions, routes learned from BGP, bird down, AS numbers in leases', () => {
    const good = judgeBgp(input([{ peer: '192.168.5.1', kind: 'mesh', state: 'Established', info: '' }], {}, [{ dst: '10.9.1.0/24', gateway: '192.168.5.1', dev: 'eth0', protocol: 'bird' }]));
    assert.deepEqual(good.filter((f) => !f.ok), []);
    assert.ok(good.some((f) => f.check === 'bgp:n:192.168.5.1' && f.ok));
    assert.ok(good.some((f) => f.check === 'route:n:10.9.1.0/24' && f.ok));

    const bad = judgeBgp(input([{ peer: '192.168.5.1', kind: 'mesh', state: 'Active', info: 'Socket: Connection refused' }]));
    const s = bad.find((f) => f.check === 'bgp:n:192.168.5.1')!;
    assert.equal(s.ok, false);
    assert.match(s.message, /TCP port 179/);
    const r = bad.find((f) => f.check === 'route:n:10.9.1.0/24')!;
    assert.equal(r.ok, false);
    assert.match(r.message, /its session is Active/);

    const notBird = judgeBgp(input([], {}, [{ dst: '10.9.1.0/24', gateway: '192.168.5.1', dev: 'eth0', protocol: 'static' }]));
    assert.match(notBird.find((f) => f.check === 'route:n:10.9.1.0/24')!.message, /not from BGP/);

    const down = judgeBgp(input([], { status: { healthy: false, bird: { running: false, error: 'bird does not answer' } } }));
    assert.equal(down.find((f) => f.check === 'bird:n')!.severity, 'error');

    const asn = judgeBgp({ ...input([]), store: { config: { Network: '10.9.0.0/16', Backend: { Type: 'bgp' } }, leases: [{ network: 'n', subnet: '10.9.1.0/24', publicIp: '192.168.5.1', backendType: 'bgp', backendData: { ASN: 65001 } }] } });
    assert.match(asn.find((f) => f.check === 'bgp-asn:n:192.168.5.1')!.message, /AS 65001, this host AS 64512/);
  });
});
