import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, test } from 'node:test';
import { pino } from 'pino';
import { NetworkRunner, type HostOps } from '../../src/agent/network-runner.js';
import { registerBackend } from '../../src/backends/registry.js';
import type { Backend, BackendStatus, ConnectedNetwork, EndpointInfo, ReconcileHow } from '../../src/backends/types.js';
import { createNetwork, getNetwork } from '../../src/config/registry.js';
import { hostRecordToJson, leaseToJson } from '../../src/lease/codec.js';
import type { Lease } from '../../src/lease/types.js';
import { openStore } from '../../src/store/index.js';
import { MemoryBackend, MemoryStore } from '../../src/store/memory.js';
import { dockerOptionsLine } from '../../src/lease/docker-env.js';
import { Ipam } from '../../src/ipam/ipam.js';
import { poolRange } from '../../src/agent/endpoints.js';
import { connectionKey, networkKeys } from '../../src/store/layout.js';
import { removeNetwork } from '../../src/lease/remove-network.js';
import type { Store } from '../../src/store/types.js';
import type { KernelTokens } from '../../src/system/kernel-watch.js';
import { waitFor } from '../../src/testbed/wait.js';
import { fakeKernel } from '../helpers/kernel-fakes.js';

/**
 * NetworkRunner against a recording fake backend and recording host operations: no root, no kernel.
 * The store is SQLite in a temp dir.
 */

interface Call {
  op: string;
  arg?: unknown;
}

class RecordingBackend implements Backend {
  readonly type = 'recording';
  readonly mtu = 1400;
  calls: Call[] = [];
  reconciles: Array<{ peers: string[]; endpoints?: string[] }> = [];
  /** Make reconcile slow so that events pile up behind it. */
  gate?: Promise<void>;
  /** What reconcile() says it reads from the kernel (kernelReads), when set. */
  kinds?: string[];
  kernelReads() {
    return this.kinds;
  }
  async init() {
    this.calls.push({ op: 'init' });
    return { Token: 'x' };
  }
  async activate(own: Lease) {
    this.calls.push({ op: 'activate', arg: own.subnet });
  }
  async start() {
    this.calls.push({ op: 'start' });
  }
  async stop() {
    this.calls.push({ op: 'stop' });
  }
  /** Each reconcile's ReconcileHow.readKernel, in order. */
  reads: Array<boolean | undefined> = [];
  /** readKernel of each reconcile that succeeded (beside `reconciles`). */
  okReads: Array<boolean | undefined> = [];
  /** The next reconcile fails (after recording itself in `reads`). */
  failNext = false;
  async reconcile(peers: Lease[], endpoints?: EndpointInfo[], how?: ReconcileHow) {
    await this.gate;
    this.reads.push(how?.readKernel);
    if (this.failNext) {
      this.failNext = false;
      throw new Error('injected reconcile failure');
    }
    this.okReads.push(how?.readKernel);
    this.reconciles.push({ peers: peers.map((p) => p.subnet).sort(), ...(endpoints ? { endpoints: endpoints.map((e) => e.address).sort() } : {}) });
  }
  /** What connectedNetworks() was told each time: "name cidr subnet@ip,…" per network. */
  connected: string[][] = [];
  async connectedNetworks(nets: ConnectedNetwork[]) {
    this.connected.push(nets.map((n) => `${n.name} ${n.cidr} ${(n.leases ?? []).map((l) => `${l.subnet}@${l.publicIp}`).join(',')}`));
  }
  status(): BackendStatus {
    return { healthy: true, detail: 'recording' };
  }
  async teardown() {
    this.calls.push({ op: 'teardown' });
  }
}

const backends: RecordingBackend[] = [];
registerBackend({
  type: 'recording',
  description: 'records what the runner asks of it',
  mtuOverhead: 100,
  wantsEndpoints: true,
  wantsConnectedLeases: true,
  create: () => {
    const b = new RecordingBackend();
    backends.push(b);
    return b;
  },
});

function recordingHost(): HostOps & { calls: Call[] } {
  const calls: Call[] = [];
  return {
    calls,
    connectedPrefixes: async () => ['192.168.9.0/24'],
    enableIpForward: async () => void calls.push({ op: 'ip_forward' }),
    ensureBridge: async (name, gw, mtu) => void calls.push({ op: 'bridge', arg: `${name} ${gw} ${mtu}` }),
    ensureForwarding: async (cidr) => void calls.push({ op: 'forwarding', arg: cidr }),
    ensureMasquerade: async (cidr) => void calls.push({ op: 'masq', arg: cidr }),
    removeMasquerade: async (cidr) => void calls.push({ op: 'no-masq', arg: cidr }),
    exemptBetweenNetworks: async (cidrs) => void calls.push({ op: 'exempt', arg: cidrs.join(' ') }),
    movePorts: async (from, to) => void calls.push({ op: 'move', arg: `${from}>${to}` }),
    reconcileIsolation: async (rules) => void calls.push({ op: 'isolation', arg: String(rules.length) }),
    writeSubnetEnv: async (file, env) => void calls.push({ op: 'subnet.env', arg: `${path.basename(path.dirname(file))} ${env.subnet} ${env.mtu}` }),
    writeDockerEnv: async (file, plan) => void calls.push({ op: 'docker.env', arg: `${path.basename(path.dirname(file))} ${dockerOptionsLine(plan)}` }),
    removeDockerEnv: async (file) => void calls.push({ op: 'no-docker.env', arg: path.basename(path.dirname(file)) }),
  };
}

const dirs: string[] = [];
const log = pino({ level: 'silent' });
after(() => {
  for (const d of dirs) fs.rmSync(d, { recursive: true, force: true });
});

async function setup(ttl = 30, o: { memory?: boolean; kernel?: KernelTokens; hostRecordSeconds?: number } = {}): Promise<{ dir: string; store: Store; runner: NetworkRunner; backend: RecordingBackend; host: ReturnType<typeof recordingHost>; readdressed: string[] }> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-runner-'));
  dirs.push(dir);
  const store = o.memory ? new MemoryStore({ backend: new MemoryBackend() }) : await openStore(`sqlite://${dir}/weft.db`, { create: true });
  await createNetwork(store, 'n1', { Network: '10.77.0.0/16', Backend: { Type: 'recording' } });
  const host = recordingHost();
  const readdressed: string[] = [];
  const runner = new NetworkRunner('n1', await getNetwork(store, 'n1'), {
    store,
    hostId: 'me',
    underlay: { iface: 'eth0', ip: '192.168.9.1', mtu: 1500 },
    bridge: 'weft0',
    stateDir: dir,
    subnetEnvPaths: [path.join(dir, 'n1', 'subnet.env')],
    leaseTtlSeconds: ttl,
    graceSeconds: 1,
    resyncSeconds: 3600,
    ...(o.hostRecordSeconds !== undefined ? { hostRecordSeconds: o.hostRecordSeconds } : {}),
    host,
    onReaddressed: (_r, was) => readdressed.push(was.subnet),
    ...(o.kernel ? { kernel: o.kernel } : {}),
    log,
  });
  await runner.start();
  return { dir, store, runner, backend: backends[backends.length - 1]!, host, readdressed };
}

async function putPeer(store: Store, subnet: string, ip: string): Promise<void> {
  const keys = networkKeys(store, 'n1');
  await store.put(keys.subnet(subnet), leaseToJson({ publicIp: ip, backendType: 'recording', backendData: {} }), { ttlSeconds: 60 });
}

test('start: lease, bridge with the gateway and the backend MTU, activate, start, subnet.env; state dir 0700', async () => {
  const { dir, store, runner, backend, host } = await setup();
  try {
    const subnet = runner.lease.subnet;
    assert.deepEqual(backend.calls.map((c) => c.op), ['init', 'activate', 'start']);
    assert.deepEqual(backend.calls[1]!.arg, subnet);
    const gw = subnet.replace(/0\/24$/, '1/24');
    // without --ip-masq a masquerade rule left by an earlier run is removed
    assert.deepEqual(host.calls.map((c) => c.op).slice(0, 5), ['ip_forward', 'bridge', 'forwarding', 'no-masq', 'subnet.env']);
    assert.equal(host.calls[1]!.arg, `weft0 ${gw} 1400`);
    assert.equal(host.calls[4]!.arg, `n1 ${subnet} 1400`);
    assert.equal(fs.statSync(path.join(dir, 'n1')).mode & 0o777, 0o700, "the network's state dir is 0700");
    assert.equal(runner.status().status?.detail, 'recording');
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('a burst of peer changes is coalesced into few reconciles with the latest set; a no-op event reconciles nothing', async () => {
  const { store, runner, backend } = await setup();
  try {
    await waitFor('first reconcile', 5000, async () => backend.reconciles.length >= 1);
    let open!: () => void;
    backend.gate = new Promise<void>((r) => (open = r));
    runner.kick(true); // a reconcile now blocks on the gate
    const before = backend.reconciles.length;
    // 20 peer subnets, none of them ours
    const peers = Array.from({ length: 21 }, (_, i) => `10.77.${10 + i}.0/24`).filter((s) => s !== runner.lease.subnet).slice(0, 20);
    for (const [i, s] of peers.entries()) await putPeer(store, s, `192.168.9.${i + 10}`);
    open();
    backend.gate = undefined;
    await waitFor('a reconcile with all 20 peers', 5000, async () => backend.reconciles.at(-1)?.peers.length === 20 || `last reconcile had ${backend.reconciles.at(-1)?.peers.length} peers, ${backend.reconciles.length} reconciles ${runner.status().error} skipped ${runner.skipped}`);
    assert.ok(backend.reconciles.length - before <= 3, `20 changes became ${backend.reconciles.length - before} reconciles`);
    // the same peers written again (a renewal): no reconcile
    const n = backend.reconciles.length;
    const skipped = runner.skipped;
    for (const [i, s] of peers.entries()) await putPeer(store, s, `192.168.9.${i + 10}`);
    await waitFor('the rewrites were seen and skipped', 5000, async () => runner.skipped > skipped);
    assert.equal(backend.reconciles.length, n, 'renewed peers caused no reconcile');
    // a forced resync does reconcile
    runner.kick(true);
    await waitFor('forced resync', 5000, async () => backend.reconciles.length === n + 1);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('a change of peers lets the backend diff against what it applied; the first, a forced and any reconcile after a failure read the kernel', async () => {
  const { store, runner, backend } = await setup();
  try {
    await waitFor('first reconcile', 5000, async () => backend.reads.length >= 1);
    assert.equal(backend.reads[0], true, 'the first reconcile reads');
    const free = Array.from({ length: 6 }, (_, i) => `10.77.${40 + i}.0/24`).filter((s) => s !== runner.lease.subnet);
    // the read flag of the first reconcile that succeeded with `n` peers
    const readWith = async (n: number) => {
      await waitFor(`a reconcile with ${n} peers`, 5000, async () => backend.reconciles.some((r) => r.peers.length === n));
      return backend.okReads[backend.reconciles.findIndex((r) => r.peers.length === n)];
    };
    await putPeer(store, free[0]!, '192.168.9.40');
    assert.equal(await readWith(1), false, 'a change of peers trusts what the last reconcile applied');
    const n = backend.reads.length;
    runner.kick(true);
    await waitFor('a forced resync reads', 5000, async () => backend.reads.slice(n).includes(true));
    backend.failNext = true;
    await putPeer(store, free[1]!, '192.168.9.41');
    await waitFor('the failed reconcile', 5000, async () => runner.status().error !== undefined);
    await putPeer(store, free[2]!, '192.168.9.42');
    assert.equal(await readWith(3), true, 'after a failure nothing applied is trusted');
    await putPeer(store, free[3]!, '192.168.9.43');
    assert.equal(await readWith(4), false, 'trusted again after a success');
  } finally {
    await runner.stop();
    await store.close();
  }
});

// Issue 15: the isolation policy was a listing of every key under networks/ (leases and host records too) on every
// reconcile of every agent; now it is read when the networks or their connections may have changed.
test('the isolation policy is read again only when networks or connections change, not on peer events or resyncs', async () => {
  const { store, runner, backend } = await setup();
  try {
    await waitFor('first reconcile', 5000, async () => backend.reads.length >= 1);
    let listings = 0;
    const list = store.list.bind(store);
    store.list = (prefix: string) => {
      if (prefix === 'networks/') listings++;
      return list(prefix);
    };
    const free = Array.from({ length: 4 }, (_, i) => `10.77.${60 + i}.0/24`).filter((s) => s !== runner.lease.subnet);
    await putPeer(store, free[0]!, '192.168.9.60');
    await waitFor('a reconcile with the peer', 5000, async () => backend.reconciles.at(-1)?.peers.length === 1);
    const n = runner.reconciles;
    runner.kick(true);
    await waitFor('a periodic resync', 5000, async () => runner.reconciles > n);
    assert.equal(listings, 0, 'neither the peer event nor the resync listed the networks');
    runner.networksChanged();
    await waitFor('the networks listed again', 5000, async () => listings > 0);
    const m = listings;
    await store.put('connections/n1+n9', '{}');
    await waitFor('a connection event reads the policy again', 5000, async () => listings > m);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('a periodic resync skips the kernel reads whose state and inputs did not change, and repeats them after a change', async () => {
  const kernel = fakeKernel();
  const { store, runner, backend, host } = await setup(30, { kernel });
  backend.kinds = ['route', 'link'];
  const forwarding = () => host.calls.filter((c) => c.op === 'forwarding').length;
  try {
    await waitFor('first reconcile', 5000, async () => runner.reconciles >= 1);
    // a forced resync right after: the tokens taken before the first reads are the same, so nothing is read
    const r0 = backend.reconciles.length;
    const f0 = forwarding();
    let done = runner.reconciles;
    runner.kick(true);
    await waitFor('forced resync', 5000, async () => runner.reconciles > done);
    // the first reconcile ran before kinds were set (no backend token kept): this one reads, the next skips
    done = runner.reconciles;
    const skipped0 = runner.resyncReadsSkipped;
    runner.kick(true);
    await waitFor('second forced resync', 5000, async () => runner.reconciles > done);
    const r1 = backend.reconciles.length;
    assert.ok(r1 - r0 <= 1, `at most the first resync reconciled the backend (${r1 - r0})`);
    assert.equal(forwarding(), f0, 'the forwarding accepts were not checked again: no nft change');
    assert.ok(runner.resyncReadsSkipped >= skipped0 + 2, 'backend and forwarding reads skipped');
    // a route changed (by hand): the next resync reconciles the backend, not the forwarding check
    kernel.bump('route');
    done = runner.reconciles;
    runner.kick(true);
    await waitFor('resync after a route change', 5000, async () => runner.reconciles > done);
    assert.equal(backend.reconciles.length, r1 + 1, 'a route change makes the resync reconcile the backend');
    assert.equal(forwarding(), f0);
    // a rule changed: the forwarding check runs again
    kernel.bump('nft');
    done = runner.reconciles;
    runner.kick(true);
    await waitFor('resync after a rule change', 5000, async () => runner.reconciles > done);
    assert.equal(forwarding(), f0 + 1, 'an nft change makes the resync check the forwarding accepts');
    assert.equal(backend.reconciles.length, r1 + 1, 'but not the routes');
    // no watch (the helper died): every resync reads
    kernel.off = true;
    done = runner.reconciles;
    runner.kick(true);
    await waitFor('resync without a watch', 5000, async () => runner.reconciles > done);
    assert.equal(backend.reconciles.length, r1 + 2);
    assert.equal(forwarding(), f0 + 2);
    // a new peer always reconciles the backend, whatever the tokens say
    kernel.off = false;
    const n = backend.reconciles.length;
    await putPeer(store, runner.lease.subnet === '10.77.50.0/24' ? '10.77.51.0/24' : '10.77.50.0/24', '192.168.9.50');
    await waitFor('the new peer reconciled', 5000, async () => backend.reconciles.length > n && backend.reconciles.at(-1)!.peers.length === 1);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('isolation and forwarding rules go through the host ops: nothing runs iptables (passes with no iptables on PATH)', async () => {
  const saved = process.env.PATH;
  process.env.PATH = '/nonexistent-weft-no-iptables'; // a real iptables/iptables-restore would fail to spawn
  const { store, runner, backend, host } = await setup();
  try {
    await waitFor('first reconcile', 5000, async () => backend.reconciles.length >= 1);
    await putPeer(store, runner.lease.subnet === '10.77.50.0/24' ? '10.77.51.0/24' : '10.77.50.0/24', '192.168.9.50');
    await waitFor('a reconcile with the peer', 5000, async () => backend.reconciles.at(-1)?.peers.length === 1 || `${runner.status().error}`);
    runner.kick(true);
    await waitFor('a forced resync', 5000, async () => host.calls.filter((c) => c.op === 'isolation').length >= 2 || `${runner.status().error}`);
    assert.equal(runner.status().error, undefined);
    // one network: no isolation rules, asked of the host ops (never of the kernel directly)
    assert.deepEqual(host.calls.filter((c) => c.op === 'isolation').map((c) => c.arg), ['0', '0']);
  } finally {
    process.env.PATH = saved;
    await runner.stop();
    await store.close();
  }
});

test('a backend that declares no kernel reads is reconciled on every resync', async () => {
  const kernel = fakeKernel();
  const { store, runner, backend, host } = await setup(30, { kernel });
  try {
    await waitFor('first reconcile', 5000, async () => runner.reconciles >= 1);
    const r0 = backend.reconciles.length;
    const f0 = host.calls.filter((c) => c.op === 'forwarding').length;
    for (let i = 0; i < 2; i++) {
      const done = runner.reconciles;
      runner.kick(true);
      await waitFor('forced resync', 5000, async () => runner.reconciles > done);
    }
    assert.equal(backend.reconciles.length, r0 + 2, 'no kernelReads: reconciled every time');
    assert.equal(host.calls.filter((c) => c.op === 'forwarding').length, f0, 'the forwarding check follows its own token');
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('--host-record-ttl reaches the lease manager: this host\'s record expires lease TTL + grace + that long from now', async () => {
  for (const [hostRecordSeconds, want] of [[1234, 30 + 1 + 1234], [undefined, 30 + 1 + 7 * 24 * 3600]] as const) {
    const { store, runner } = await setup(30, hostRecordSeconds === undefined ? {} : { hostRecordSeconds });
    try {
      const before = Date.now();
      const rec = await store.get(networkKeys(store, 'n1').host('me'));
      assert.ok(rec?.expiresAt, 'the host record has a TTL');
      const secs = (rec.expiresAt - before) / 1000;
      assert.ok(Math.abs(secs - want) < 5, `host record expires in ${secs} s, want about ${want} s (hostRecordSeconds ${hostRecordSeconds})`);
    } finally {
      await runner.stop();
      await store.close();
    }
  }
});

test('endpoints of every host reach a backend that wants them', async () => {
  const { store, runner, backend } = await setup();
  try {
    const keys = networkKeys(store, 'n1');
    await store.put(keys.endpoint('other', 'ep1'), JSON.stringify({ hostId: 'other', address: '10.77.200.5/24', mac: '02:42:0a:4d:c8:05' }));
    await waitFor('the endpoint reaches reconcile', 5000, async () => backend.reconciles.at(-1)?.endpoints?.includes('10.77.200.5/24') ?? false);
    await store.delete(keys.endpoint('other', 'ep1'));
    await waitFor('its removal too', 5000, async () => backend.reconciles.at(-1)?.endpoints?.length === 0);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('a lease that changes on renewal re-addresses bridge, backend and subnet.env, and tells the agent', async () => {
  const { store, runner, backend, host, readdressed } = await setup(3);
  try {
    const was = runner.lease.subnet;
    // another host took our subnet while we were cut off: its lease and its (newer) host record
    const keys = networkKeys(store, 'n1');
    await store.put(keys.subnet(was), leaseToJson({ publicIp: '192.168.9.99', backendType: 'recording', backendData: {} }), { ttlSeconds: 60 });
    await store.put(keys.host('thief'), hostRecordToJson({ hostId: 'thief', subnet: was, publicIp: '192.168.9.99', expiresAt: Date.now() + 600_000 }));
    await waitFor('the renewal moved us to another subnet', 10_000, async () => runner.lease.subnet !== was);
    const now = runner.lease.subnet;
    await waitFor('the agent was told', 5000, async () => readdressed.length === 1);
    assert.deepEqual(readdressed, [was]);
    assert.ok(backend.calls.some((c) => c.op === 'activate' && c.arg === now), 'backend activated with the new lease');
    assert.ok(host.calls.some((c) => c.op === 'bridge' && String(c.arg).startsWith(`weft0 ${now.replace(/0\/24$/, '1/24')}`)), 'bridge re-addressed');
    assert.ok(host.calls.some((c) => c.op === 'subnet.env' && String(c.arg).includes(now)), 'subnet.env rewritten');
    assert.ok(!backend.reconciles.at(-1)?.peers.includes(now), 'own new subnet is not a peer');
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('docker0 mode: the bridge becomes docker0, ports move, weft hands out only the lower half of the lease', async () => {
  const { store, runner, host } = await setup();
  try {
    const lease = runner.lease.subnet; // a /24
    const base = lease.split('/')[0]!.replace(/\.0$/, '');
    assert.equal(runner.dockerFixedCidr, undefined);
    await runner.moveToBridge('docker0');
    assert.equal(runner.bridge, 'docker0');
    assert.equal(runner.dockerFixedCidr, `${base}.128/25`);
    assert.deepEqual([runner.plan.pool, runner.plan.gateway, runner.plan.last], [lease, `${base}.1`, `${base}.127`]);
    assert.ok(host.calls.some((c) => c.op === 'bridge' && String(c.arg).startsWith(`docker0 ${base}.1/24`)), 'docker0 made with the gateway');
    assert.ok(host.calls.some((c) => c.op === 'move' && c.arg === 'weft0>docker0'), 'ports moved from weft0');
    assert.equal(runner.status().bridge, 'docker0');
    // the plan `weft docker-opts` prints without an agent: written once the ports are on docker0
    const ops = host.calls.map((c) => c.op);
    assert.ok(ops.lastIndexOf('docker.env') > ops.indexOf('move'), `docker.env after the move: ${ops.join(' ')}`);
    assert.equal(host.calls.filter((c) => c.op === 'docker.env').at(-1)?.arg, `n1 --bip=${base}.1/24 --fixed-cidr=${base}.128/25 --mtu=1400 --ip-masq=false`);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test("docker0 mode is refused while weft holds an address in Docker's half of the lease; afterwards weft's IPAM never hands one out there", async () => {
  const { store, runner, host } = await setup(30, { memory: true });
  try {
    const lease = runner.lease.subnet; // a /24
    const base = lease.split('/')[0]!.replace(/\.0$/, '');
    const ipam = new Ipam(store);
    const keys = networkKeys(store, 'n1');
    // before docker0 mode: a container with a static address in the upper half, and one in the lower half
    const wide = { network: 'n1', subnet: lease, range: poolRange(runner.plan), host: 'me' };
    await ipam.allocate({ ...wide, owner: 'netns:web', address: `${base}.200` });
    await store.put(keys.endpoint('me', 'ep-web'), JSON.stringify({ id: 'ep-web', container: 'web', network: 'n1', hostId: 'me', address: `${base}.200/24`, mac: '02:42:00:00:00:01', owner: 'netns:web' }));
    await ipam.allocate({ ...wide, owner: 'netns:low' });
    await ipam.allocate({ ...wide, owner: 'docker:abc:def', address: `${base}.129` });
    const before = host.calls.length;
    await assert.rejects(
      runner.moveToBridge('docker0'),
      (err: Error) => {
        assert.equal(
          err.message,
          `cannot make docker0 the bridge of network n1: Docker's IPAM would hand out ${base}.128/25 (--fixed-cidr), where weft has already given ${base}.129 (a Docker endpoint, docker:abc:def), ${base}.200 (web); detach them (attached again, weft gives them addresses below ${base}.128), then run \`weft docker-opts\` again`,
        );
        return true;
      },
    );
    // nothing changed: still weft0, the whole lease, no docker0, no plan for dockerd
    assert.equal(runner.bridge, 'weft0');
    assert.equal(runner.dockerFixedCidr, undefined);
    assert.equal(runner.plan.last, undefined);
    // nothing moved or written (a reconcile running beside it may still check its rules)
    const reconcileOps = new Set(['forwarding', 'isolation', 'exempt', 'masq', 'no-masq']);
    assert.deepEqual(host.calls.slice(before).filter((c) => !reconcileOps.has(c.op)), []);

    await ipam.release({ network: 'n1', subnet: lease, owner: 'netns:web' });
    await assert.rejects(runner.moveToBridge('docker0'), /already given 10\.77\.\d+\.129 \(a Docker endpoint, docker:abc:def\); detach it \(/);
    await ipam.release({ network: 'n1', subnet: lease, owner: 'docker:abc:def' });
    await runner.moveToBridge('docker0');
    assert.equal(runner.dockerFixedCidr, `${base}.128/25`);
    assert.ok(host.calls.some((c) => c.op === 'move' && c.arg === 'weft0>docker0'), 'switched once nothing was left in the upper half');

    // afterwards: weft's IPAM fills the lower half and then says it is full; a static address above is refused
    const narrow = { network: 'n1', subnet: lease, range: poolRange(runner.plan), host: 'me' };
    const got: string[] = [];
    for (let i = 0; i < 125; i++) got.push((await ipam.allocate({ ...narrow, owner: `netns:c${i}` })).address);
    assert.equal(got.at(-1), `${base}.127`);
    assert.ok(got.every((a) => Number(a.split('.')[3]) < 128), 'every address below .128');
    await assert.rejects(ipam.allocate({ ...narrow, owner: 'netns:one-more' }), /no free address in 10\.77\.\d+\.0\/24 of network "n1": all 126 container addresses are allocated/);
    await assert.rejects(ipam.allocate({ ...narrow, owner: 'netns:static', address: `${base}.130` }), /requested address 10\.77\.\d+\.130 is outside this host's range of 10\.77\.\d+\.0\/24 \(10\.77\.\d+\.1–10\.77\.\d+\.127\)/);
  } finally {
    await runner.stop();
    await store.close();
  }
});

test('a backend that wants connected leases is told the connected networks with their leases, follows their changes, and forgets them', async () => {
  const { store, runner, backend, host } = await setup();
  try {
    await waitFor('first reconcile', 5000, async () => backend.connected.length >= 1);
    assert.deepEqual(backend.connected.at(-1), []);
    // Connected before the second network exists, removed before the connection: two networks are never
    // unconnected here (that would make isolation rules in this unprivileged test's namespace).
    await store.put(connectionKey('n1', 'n2'), JSON.stringify({ networks: ['n1', 'n2'] }));
    await createNetwork(store, 'n2', { Network: '10.78.0.0/16', Backend: { Type: 'recording' } });
    const k2 = networkKeys(store, 'n2');
    await store.put(k2.subnet('10.78.5.0/24'), leaseToJson({ publicIp: '192.168.9.5', backendType: 'other-type', backendData: {} }), { ttlSeconds: 60 });
    runner.kick(true); // the network's creation is no connection event
    await waitFor('traffic between n1 and n2 is exempted from masquerade', 5000, async () => host.calls.some((x) => x.op === 'exempt' && x.arg === '10.77.0.0/16 10.78.0.0/16'));
    await waitFor('n2 and its lease reach the backend', 5000, async () => backend.connected.at(-1)?.[0] === 'n2 10.78.0.0/16 10.78.5.0/24@192.168.9.5' || JSON.stringify(backend.connected.at(-1)));
    // a lease of the connected network changes: told without a forced resync (resyncSeconds is an hour here)
    await store.put(k2.subnet('10.78.6.0/24'), leaseToJson({ publicIp: '192.168.9.6', backendType: 'recording', backendData: {} }), { ttlSeconds: 60 });
    await waitFor('the new lease reaches the backend', 5000, async () => backend.connected.at(-1)?.[0] === 'n2 10.78.0.0/16 10.78.5.0/24@192.168.9.5,10.78.6.0/24@192.168.9.6' || JSON.stringify(backend.connected.at(-1)));
    // a renewal of it (same holder, new expiry) is no change
    const told = backend.connected.length;
    const skipped = runner.skipped;
    await store.put(k2.subnet('10.78.6.0/24'), leaseToJson({ publicIp: '192.168.9.6', backendType: 'recording', backendData: {} }), { ttlSeconds: 90 });
    await waitFor('the renewal was seen and skipped', 5000, async () => runner.skipped > skipped);
    assert.equal(backend.connected.length, told);
    await removeNetwork(store, 'n2', { force: true });
    await store.delete(connectionKey('n1', 'n2'));
    await waitFor('the backend is told n2 is gone', 5000, async () => backend.connected.at(-1)?.length === 0 || JSON.stringify(backend.connected.at(-1)));
  } finally {
    await runner.stop();
    await store.close();
  }
});
