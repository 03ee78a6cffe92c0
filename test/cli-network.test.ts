import '../src/backends/all.js';
import { runWeft, type CliResult } from '../src/testbed/agents.js';
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { pino } from 'pino';
import { LeaseManager } from '../src/lease/manager.js';
import { openStore } from '../src/store/index.js';
import type { Logger } from '../src/util/log.js';

/** `weft network …` as a user runs it: a real process against a temporary sqlite store. */

let dir = '';
let storeUrl = '';


function weft(...args: string[]): Promise<CliResult> {
  return runWeft([...args, ...(args.includes('--store') ? [] : ['--store', storeUrl])], { env: { ...process.env, WEFT_LOG: 'silent' } });
}

async function ok(...args: string[]): Promise<string> {
  const r = await weft(...args);
  assert.equal(r.code, 0, `weft ${args.join(' ')} failed: ${r.stderr}`);
  return r.stdout;
}

/** Fails with exactly one line on stderr, matching `message`. */
async function fails(message: RegExp, ...args: string[]): Promise<void> {
  const r = await weft(...args);
  assert.notEqual(r.code, 0, `weft ${args.join(' ')} should fail`);
  assert.equal(r.stdout, '');
  const lines = r.stderr.trimEnd().split('\n');
  assert.equal(lines.length, 1, `one line on stderr, got: ${r.stderr}`);
  assert.match(lines[0]!, message);
}

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'weft-cli-'));
  storeUrl = `sqlite://${join(dir, 'weft.db')}`;
});
after(() => rm(dir, { recursive: true, force: true }));

test('create, ls, inspect (human and --json)', async () => {
  assert.match(await ok('network', 'create', 'blue', '--subnet', '10.5.0.0/16'), /^created network blue: 10\.5\.0\.0\/16, 255 \/24 subnets, vxlan VNI=1 Port=8472\n$/);
  const red = JSON.parse(await ok('network', 'create', 'red', '--subnet', '10.6.0.0/16', '--subnet-len', '26', '--backend', 'host-gw', '--ip-masq', '--json'));
  assert.deepEqual(red, { name: 'red', config: { Network: '10.6.0.0/16', SubnetLen: 26, Backend: { Type: 'host-gw' }, IPMasq: true } });
  // a second vxlan network gets the lowest unused VNI
  const green = JSON.parse(await ok('network', 'create', 'green', '--subnet', '10.7.0.0/16', '--json'));
  assert.equal(green.config.Backend.VNI, 2);

  const table = (await ok('network', 'ls')).trimEnd().split('\n');
  assert.match(table[0]!, /^NAME\s+NETWORK\s+SUBNET-LEN\s+SUBNETS\s+LEASES\s+BACKEND\s+VNI$/);
  assert.deepEqual(table.slice(1).map((l) => l.split(/\s+/)), [
    ['blue', '10.5.0.0/16', '24', '255', '0', 'vxlan', '1'],
    ['green', '10.7.0.0/16', '24', '255', '0', 'vxlan', '2'],
    ['red', '10.6.0.0/16', '26', '1023', '0', 'host-gw', '-'],
  ]);
  const ls = JSON.parse(await ok('network', 'ls', '--json'));
  assert.deepEqual(ls.map((n: { name: string; leases: number }) => [n.name, n.leases]), [['blue', 0], ['green', 0], ['red', 0]]);

  const inspect = await ok('network', 'inspect', 'blue');
  assert.match(inspect, /^Name:\s+blue$/m);
  assert.match(inspect, /^Network:\s+10\.5\.0\.0\/16$/m);
  assert.match(inspect, /^Leases:\s+0 of 255$/m);
  const j = JSON.parse(await ok('network', 'inspect', 'blue', '--json'));
  assert.deepEqual(j, { name: 'blue', config: { Network: '10.5.0.0/16', SubnetLen: 24, Backend: { Type: 'vxlan', VNI: 1, Port: 8472 } }, subnets: 255, leases: [] });
});

test('bad input: one line on stderr, non-zero exit', async () => {
  await fails(/^weft: invalid network config: Network "10\.9\.1\.0\/16": host bits are set/, 'network', 'create', 'x', '--subnet', '10.9.1.0/16');
  await fails(/^weft: invalid network config: Network "nonsense": not an IPv4 CIDR/, 'network', 'create', 'x', '--subnet', 'nonsense');
  await fails(/^weft: invalid network config: SubnetLen 8: must be longer than the network's prefix \/16$/, 'network', 'create', 'x', '--subnet', '10.9.0.0/16', '--subnet-len', '8');
  await fails(/^weft: unknown backend type "gre" \(this weft has: host-gw, vxlan[,)]/, 'network', 'create', 'x', '--subnet', '10.9.0.0/16', '--backend', 'gre');
  await fails(/^weft: invalid network config: Backend\.VNI 99999999: VNI out of range/, 'network', 'create', 'x', '--subnet', '10.9.0.0/16', '--vni', '99999999');
  await fails(/--vni must be a whole number, got "abc"/, 'network', 'create', 'x', '--subnet', '10.9.0.0/16', '--vni', 'abc');
  await fails(/^weft: network "blue" already exists in sqlite:/, 'network', 'create', 'blue', '--subnet', '10.9.0.0/16');
  await fails(/^weft: network 10\.5\.128\.0\/17 overlaps network "blue" \(10\.5\.0\.0\/16\)$/, 'network', 'create', 'x', '--subnet', '10.5.128.0/17');
  await fails(/^weft: network 10\.0\.0\.0\/8 overlaps network "blue"/, 'network', 'create', 'x', '--subnet', '10.0.0.0/8');
  await fails(/^weft: VNI 2 is already used by network "green"; pick another with --vni$/, 'network', 'create', 'x', '--subnet', '10.9.0.0/16', '--vni', '2');
  await fails(/^weft: invalid network name "a\/b"/, 'network', 'create', 'a/b', '--subnet', '10.9.0.0/16');
  await fails(/^weft: no network "nope" in sqlite:\S+ \(networks: blue, green, red\)$/, 'network', 'inspect', 'nope');
  await fails(/^weft: no network "nope"/, 'network', 'rm', 'nope');
  await fails(/^weft: bad store URL "mysql:\/\/x"/, 'network', 'ls', '--store', 'mysql://x');
  // nothing of the above was created
  assert.equal(JSON.parse(await ok('network', 'ls', '--json')).length, 3);
});

test('inspect shows holders; rm is refused while leases are held, --force removes everything', async () => {
  const store = await openStore(storeUrl, { create: true });
  try {
    const quiet = pino({ level: 'silent' }) as unknown as Logger;
    const lease = await new LeaseManager(store, 'blue', { hostId: 'host-a', log: quiet }).acquire({
      publicIp: '192.168.1.5',
      backendData: { VNI: 1, VtepMAC: '62:ea:3b:12:34:56' },
    });
    const inspect = await ok('network', 'inspect', 'blue');
    assert.match(inspect, /^Leases:\s+1 of 255$/m);
    assert.match(inspect, new RegExp(`^${lease.subnet.replace(/\./g, '\\.')}\\s+192\\.168\\.1\\.5\\s+host-a\\s+vxlan\\s+\\d{4}-`, 'm'));
    const j = JSON.parse(await ok('network', 'inspect', 'blue', '--json'));
    assert.deepEqual(
      j.leases.map((l: Record<string, unknown>) => [l.subnet, l.publicIp, l.hostId, l.backendData]),
      [[lease.subnet, '192.168.1.5', 'host-a', { VNI: 1, VtepMAC: '62:ea:3b:12:34:56' }]],
    );
    assert.equal(JSON.parse(await ok('network', 'ls', '--json'))[0].leases, 1);

    await fails(new RegExp(`^weft: network "blue" has 1 live lease \\(${lease.subnet.replace(/\./g, '\\.')} by 192\\.168\\.1\\.5 \\(host-a\\)\\); stop those agents or use --force$`), 'network', 'rm', 'blue');
    assert.deepEqual(JSON.parse(await ok('network', 'rm', 'blue', '--force', '--json')), { removed: 'blue' });
    assert.deepEqual(await store.list('networks/blue/'), []);
    assert.equal(await ok('network', 'rm', 'red'), 'removed network red\n');
    assert.deepEqual(JSON.parse(await ok('network', 'ls', '--json')).map((n: { name: string }) => n.name), ['green']);
    // the name and the range are free again
    await ok('network', 'create', 'blue', '--subnet', '10.5.0.0/16');
  } finally {
    await store.close();
  }
});
