import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, test } from 'node:test';
import { birdConfig, sessionName, sessionPeer, sessions, type BirdConfigInput } from '../../src/backends/bgp/config.js';

/** The bird.conf generator: pure, no root. Where bird is installed, every generated file is also parsed by `bird -p`. */

const base: BirdConfigInput = {
  routerId: '192.168.5.2',
  asn: 64512,
  network: '10.9.0.0/16',
  subnetLen: 24,
  own: { subnet: '10.9.2.0/24', bridge: 'weft0' },
  holdTime: 3,
  peers: [
    { ip: '192.168.5.3', subnet: '10.9.3.0/24' },
    { ip: '192.168.5.1', subnet: '10.9.1.0/24' },
  ],
  reflectors: [],
  external: [],
};

/** The text of one `protocol … NAME … { … }` block. */
function block(conf: string, name: string): string | undefined {
  const m = new RegExp(`^protocol \\w+ ${name}\\b[^]*?^}$`, 'm').exec(conf);
  return m?.[0];
}

const birdBin = ['/usr/sbin/bird', '/usr/bin/bird'].find((p) => fs.existsSync(p));
function birdParses(conf: string): void {
  if (!birdBin) return;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-bgp-unit-'));
  try {
    const f = path.join(dir, 'bird.conf');
    fs.writeFileSync(f, conf, { mode: 0o600 });
    execFileSync(birdBin, ['-p', '-c', f], { stdio: 'pipe' });
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

describe('bgp config generator', () => {
  test('full mesh: router id, AS, own subnet via the bridge, one session per peer importing exactly its subnet', () => {
    const conf = birdConfig(base);
    assert.match(conf, /^router id 192\.168\.5\.2;$/m);
    assert.match(conf, /protocol static weft_own \{\n {2}ipv4;\n {2}route 10\.9\.2\.0\/24 via "weft0";\n\}/);
    assert.match(conf, /local 192\.168\.5\.2 as 64512;/);
    assert.match(conf, /hold time 3;\n {2}keepalive time 1;/);
    // the kernel gets BGP routes only, and keeps them when bird stops
    const kernel = block(conf, 'weft_kernel')!;
    assert.match(kernel, /import none; export where source = RTS_BGP;/);
    assert.match(kernel, /persist;/);
    const s1 = block(conf, 'weft_192_168_5_1')!;
    assert.match(s1, /neighbor 192\.168\.5\.1 as 64512;/);
    assert.match(s1, /import where net = 10\.9\.1\.0\/24 && net != 10\.9\.2\.0\/24;/);
    assert.match(s1, /export where proto = "weft_own";/);
    assert.match(s1, /next hop self;/);
    assert.ok(block(conf, 'weft_192_168_5_3'));
    assert.equal(block(conf, 'weft_192_168_5_2'), undefined, 'no session with itself');
    assert.deepEqual(sessions(base).map((s) => [s.peer, s.kind]), [['192.168.5.1', 'mesh'], ['192.168.5.3', 'mesh']]);
    birdParses(conf);
  });

  test('a peer joining or an external peer added leaves the other sessions’ text unchanged (birdc configure keeps them up)', () => {
    const before = birdConfig(base);
    const after = birdConfig({ ...base, peers: [...base.peers, { ip: '192.168.5.9', subnet: '10.9.9.0/24' }], external: [{ ip: '192.168.5.250', asn: 65100 }] });
    for (const name of ['weft_192_168_5_1', 'weft_192_168_5_3', 'weft_own', 'weft_kernel', 'weft_session']) {
      const re = name === 'weft_session' ? /^template bgp weft_session[^]*?^}$/m : undefined;
      assert.equal(re ? re.exec(after)?.[0] : block(after, name), re ? re.exec(before)?.[0] : block(before, name), `${name} unchanged`);
    }
    assert.ok(block(after, 'weft_192_168_5_9'));
    assert.ok(block(after, 'ext_192_168_5_250'));
    // peer order in the input does not matter
    assert.equal(birdConfig({ ...base, peers: [...base.peers].reverse() }), before);
  });

  test('two leases on one address make one session (the first lease given wins), so bird never sees a duplicate name', () => {
    const conf = birdConfig({ ...base, peers: [...base.peers, { ip: '192.168.5.1', subnet: '10.9.7.0/24' }] });
    assert.equal(conf.match(/protocol bgp weft_192_168_5_1 /g)?.length, 1);
    assert.match(block(conf, 'weft_192_168_5_1')!, /net = 10\.9\.1\.0\/24/);
    birdParses(conf);
  });

  test('no own lease yet: nothing announced, sessions still configured', () => {
    const { own: _own, ...rest } = base;
    const conf = birdConfig(rest);
    assert.equal(block(conf, 'weft_own'), undefined);
    assert.match(block(conf, 'weft_192_168_5_1')!, /import where net = 10\.9\.1\.0\/24;/);
    birdParses(conf);
  });

  test('route reflectors: a plain host peers with the reflectors only; a reflector serves every other host as rr client', () => {
    const rr = ['192.168.5.1', '192.168.5.3'];
    const plain = sessions({ ...base, reflectors: rr });
    assert.deepEqual(plain.map((s) => [s.peer, s.kind, s.rrClient]), [['192.168.5.1', 'reflector', false], ['192.168.5.3', 'reflector', false]]);
    assert.match(plain[0]!.importWhere, /^net ~ \[ 10\.9\.0\.0\/16\{24,24\} \] && net != 10\.9\.2\.0\/24$/);

    const asReflector: BirdConfigInput = { ...base, routerId: '192.168.5.1', own: { subnet: '10.9.1.0/24', bridge: 'weft0' }, reflectors: rr, peers: [
      { ip: '192.168.5.2', subnet: '10.9.2.0/24' },
      { ip: '192.168.5.3', subnet: '10.9.3.0/24' },
      { ip: '192.168.5.4', subnet: '10.9.4.0/24' },
    ] };
    const r = sessions(asReflector);
    assert.deepEqual(r.map((s) => [s.peer, s.kind, s.rrClient]), [['192.168.5.2', 'rr-client', true], ['192.168.5.3', 'reflector', false], ['192.168.5.4', 'rr-client', true]]);
    const conf = birdConfig(asReflector);
    const client = block(conf, 'weft_192_168_5_2')!;
    assert.match(client, /rr client;/);
    assert.doesNotMatch(client, /next hop self/, 'reflected routes keep their origin as next hop');
    assert.match(client, /export where proto = "weft_own" \|\| \(source = RTS_BGP && net ~ \[ 10\.9\.0\.0\/16\{24,24\} \]\);/);
    birdParses(conf);
    birdParses(birdConfig({ ...base, reflectors: rr }));
  });

  test('external peers: own AS number, never a subnet of the network imported, deduplicated against weft hosts', () => {
    const conf = birdConfig({ ...base, external: [{ ip: '192.168.5.250', asn: 65100 }, { ip: '192.168.5.1', asn: 65001 }, { ip: '192.168.5.2', asn: 65002 }] });
    const ext = block(conf, 'ext_192_168_5_250')!;
    assert.match(ext, /neighbor 192\.168\.5\.250 as 65100;/);
    assert.match(ext, /import where !\(net ~ \[ 10\.9\.0\.0\/16\+ \]\);/);
    assert.match(ext, /export where proto = "weft_own";/);
    assert.equal(block(conf, 'ext_192_168_5_1'), undefined, 'a weft host is not also an external peer');
    assert.equal(block(conf, 'ext_192_168_5_2'), undefined, 'no session with itself');
    birdParses(conf);
  });

  test('rejects what could inject config text', () => {
    assert.throws(() => birdConfig({ ...base, routerId: '1.2.3.4; protocol x' }), /router id/);
    assert.throws(() => birdConfig({ ...base, peers: [{ ip: '1.2.3.4 as 1; }', subnet: '10.9.1.0/24' }] }), /IPv4/);
    assert.throws(() => birdConfig({ ...base, peers: [{ ip: '192.168.5.1', subnet: '10.9.1.0/24 ]; }' }] }), /CIDR/);
    assert.throws(() => birdConfig({ ...base, own: { subnet: '10.9.2.0/24', bridge: 'x"; }' } }), /bridge/);
    assert.throws(() => birdConfig({ ...base, asn: 0 }), /AS number/);
    assert.throws(() => birdConfig({ ...base, external: [{ ip: '192.168.5.250', asn: 2 ** 32 }] }), /AS number/);
  });

  test('hold time below bird’s minimum is raised to 3; keepalive is a third of it', () => {
    assert.match(birdConfig({ ...base, holdTime: 1 }), /hold time 3;\n {2}keepalive time 1;/);
    assert.match(birdConfig({ ...base, holdTime: 90 }), /hold time 90;\n {2}keepalive time 30;/);
  });

  test('session names map back to peers', () => {
    assert.equal(sessionName('weft', '10.0.0.1'), 'weft_10_0_0_1');
    assert.deepEqual(sessionPeer('ext_192_168_1_250'), { kind: 'ext', ip: '192.168.1.250' });
    assert.equal(sessionPeer('weft_kernel'), undefined);
    assert.throws(() => sessionName('weft', '10.0.0'), /IPv4/);
  });
});
