import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { weftInProcess } from '../helpers/cli.js';

/** `weft network create --backend bgp` options and `weft bgp peer add|rm|ls` against a temp SQLite store, the CLI in-process. No root. */

const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-bgp-cli-'));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
const store = ['--store', `sqlite://${path.join(dir, 'w.db')}`];
const weft = (...args: string[]) => weftInProcess([...args, ...store]);

test('network create takes the bgp options; one bgp network per store', { timeout: 60_000 }, async () => {
  let r = await weft('network', 'create', 'blue', '--subnet', '10.70.0.0/16', '--backend', 'bgp', '--asn', '65001', '--hold-time', '9', '--route-reflector', '192.168.1.1, 192.168.1.2', '--json');
  assert.equal(r.code, 0, r.stderr);
  assert.deepEqual(JSON.parse(r.stdout).config.Backend, { Type: 'bgp', ASN: 65001, HoldTime: 9, RouteReflectors: ['192.168.1.1', '192.168.1.2'] });
  r = await weft('network', 'create', 'green', '--subnet', '10.71.0.0/16', '--backend', 'bgp');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /already uses the bgp backend/);
  r = await weft('network', 'create', 'red', '--subnet', '10.72.0.0/16', '--backend', 'bgp', '--route-reflector', 'nope');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /RouteReflectors|route reflector/);
  r = await weft('network', 'create', 'red', '--subnet', '10.72.0.0/16', '--backend', 'bgp', '--hold-time', '2');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /hold time|HoldTime/i);
  r = await weft('network', 'create', 'plain', '--subnet', '10.73.0.0/16', '--backend', 'host-gw', '--asn', '65001');
  assert.equal(r.code, 1, 'a bgp option on another backend is refused');
  assert.match(r.stderr, /--asn is not an option of backend host-gw/);
  r = await weft('network', 'create', 'plain', '--subnet', '10.73.0.0/16', '--backend', 'host-gw');
  assert.equal(r.code, 0, r.stderr);
});

test('bgp peer add|ls|rm: validated, stored, per network or for all', { timeout: 60_000 }, async () => {
  let r = await weft('bgp', 'peer', 'add', '192.168.1.250', '65100');
  assert.equal(r.code, 0, r.stderr);
  r = await weft('bgp', 'peer', 'add', '192.168.1.251', '4200000000', '--network', 'blue');
  assert.equal(r.code, 0, r.stderr);
  for (const [args, why] of [
    [['192.168.1.300', '65100'], /not an IPv4 address/],
    [['192.168.1.9', '0'], /AS number/],
    [['192.168.1.9', '65x'], /AS number/],
    [['192.168.1.9', '4294967296'], /AS number/],
    [['192.168.1.9', '65100', '--network', 'plain'], /host-gw backend, not bgp/],
    [['192.168.1.9', '65100', '--network', 'nosuch'], /nosuch/],
  ] as const) {
    r = await weft('bgp', 'peer', 'add', ...args);
    assert.equal(r.code, 1, `${args.join(' ')} is refused`);
    assert.match(r.stderr, why);
  }
  r = await weft('bgp', 'peer', 'ls', '--json');
  assert.deepEqual(JSON.parse(r.stdout), [
    { ip: '192.168.1.250', asn: 65100 },
    { ip: '192.168.1.251', asn: 4200000000, network: 'blue' },
  ]);
  r = await weft('bgp', 'peer', 'ls');
  assert.match(r.stdout, /192\.168\.1\.250\s+65100\s+\(every bgp network\)/);
  r = await weft('bgp', 'peer', 'rm', '192.168.1.250');
  assert.equal(r.code, 0, r.stderr);
  r = await weft('bgp', 'peer', 'rm', '192.168.1.250');
  assert.equal(r.code, 1);
  assert.match(r.stderr, /no BGP peer 192\.168\.1\.250/);
  r = await weft('bgp', 'peer', 'ls', '--json');
  assert.deepEqual(JSON.parse(r.stdout).map((p: { ip: string }) => p.ip), ['192.168.1.251']);
});
