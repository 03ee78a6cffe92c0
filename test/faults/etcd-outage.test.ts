import '../../src/backends/all.js';
import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { after, describe, test } from 'node:test';
import { AgentProcess, WEFT_BIN } from '../../src/testbed/agents.js';
import { createTestbed, nsExec, type Testbed, type TestbedHost } from '../../src/testbed/index.js';
import { waitFor } from '../../src/testbed/wait.js';
import { ETCD_BIN } from '../helpers/etcd.js';
import { needsRoot } from '../helpers/require-root.js';

/**
 * The store goes away for a minute: etcd runs on a test-bed host of its own (the agents reach it over the
 * underlay), is killed for 60 s and started again on the same data. Forwarding must not notice, no lease
 * may be lost, and a container attached after the return is reachable within 5 s.
 */

const OUTAGE_MS = 60_000;
let tb: Testbed | undefined;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-etcd-outage-'));
const agents: AgentProcess[] = [];
after(async () => {
  for (const a of agents) await a.stop('SIGKILL').catch(() => {});
  await tb?.destroy().catch(() => {});
  fs.rmSync(dir, { recursive: true, force: true });
});

/** etcd inside `h`'s namespace, on its underlay address; tracked (and killed by PID) by the test bed. */
function startEtcdOn(h: TestbedHost, port: number) {
  const url = `http://${h.ip}:${port}`;
  const peer = `http://${h.ip}:${port + 1}`;
  const child = tb!.spawn(h.ns, [
    ETCD_BIN, '--name', 'outage', '--data-dir', path.join(dir, 'etcd'),
    '--listen-client-urls', url, '--advertise-client-urls', url,
    '--listen-peer-urls', peer, '--initial-advertise-peer-urls', peer, '--initial-cluster', `outage=${peer}`,
    '--logger', 'zap', '--log-level', 'error',
  ]);
  return { child, url: `etcd://${h.ip}:${port}` };
}

/** `weft` CLI inside a namespace (the store is reachable only from the test bed). */
function weftIn(ns: string, args: string[]) {
  return nsExec(ns, [process.execPath, WEFT_BIN, ...args], { allowFail: true });
}

describe('faults: etcd stopped for 60 s', { timeout: 240_000, skip: needsRoot('iptables') ?? (fs.existsSync(ETCD_BIN) ? undefined : `needs ${ETCD_BIN} (etcd-server)`) }, () => {
  test('forwarding continues, no lease is lost, a new container is reachable within 5 s of the return', { timeout: 230_000 }, async () => {
    tb = await createTestbed({ hosts: 3 });
    const [h1, h2, hs] = tb.hosts as [TestbedHost, TestbedHost, TestbedHost];
    const port = 23790;
    let etcd = startEtcdOn(hs, port);
    await waitFor('etcd answers from h1', 20_000, async () => (await weftIn(h1.ns, ['network', 'ls', '--store', etcd.url, '--json'])).code === 0);
    const created = await weftIn(h1.ns, ['network', 'create', 'out', '--subnet', '10.245.0.0/16', '--backend', 'vxlan', '--store', etcd.url, '--ignore-host-routes']);
    assert.equal(created.code, 0, created.stderr);
    for (const h of [h1, h2]) agents.push(await new AgentProcess(h, { storeUrl: etcd.url, dir, leaseTtlSeconds: 120, graceSeconds: 10 }).start());
    await Promise.all(agents.map((a) => a.waitForPeers(1, 20_000)));
    const subnets = await Promise.all(agents.map(async (a) => (await a.status())!.networks[0]!.subnet));
    const c1 = await tb.addContainer(h1, 'c1');
    const c2 = await tb.addContainer(h2, 'c2');
    const e1 = await agents[0]!.attach(c1);
    const ip2 = (await agents[1]!.attach(c2)).address.split('/')[0]!;
    await waitFor('c1 reaches c2 before the outage', 20_000, async () => (await nsExec(c1, ['ping', '-n', '-q', '-c', '1', '-W', '1', ip2], { allowFail: true })).code === 0);

    // the outage: etcd killed (SIGKILL, as a crash); pings run across it, bounded in count and time
    const pings = nsExec(c1, ['ping', '-n', '-q', '-i', '0.5', '-c', String(OUTAGE_MS / 500), '-W', '2', '-w', String(OUTAGE_MS / 1000 + 30), ip2], { allowFail: true });
    etcd.child.kill('SIGKILL');
    await new Promise((r) => etcd.child.once('exit', r));
    const outageEnds = Date.now() + OUTAGE_MS;
    // meanwhile the agents answer and say the store is unreachable or at least keep their networks
    await waitFor('the agent answers during the outage', 10_000, async () => (await agents[0]!.status())?.networks.length === 1);
    await new Promise((r) => setTimeout(r, Math.max(0, outageEnds - Date.now())));
    etcd = startEtcdOn(hs, port);
    await waitFor('etcd answers again', 20_000, async () => (await weftIn(h1.ns, ['network', 'ls', '--store', etcd.url, '--json'])).code === 0);
    const back = Date.now();
    const p = await pings;
    assert.match(p.stdout, / 0% packet loss/, `forwarding during the outage: ${p.stdout}`);

    // a container attached on h2 after the return is reachable from h1 within 5 s
    const c3 = await tb.addContainer(h2, 'c3');
    const ip3 = (await agents[1]!.attach(c3)).address.split('/')[0]!;
    await waitFor('c1 reaches the new c3', 20_000, async () => (await nsExec(c1, ['ping', '-n', '-q', '-c', '1', '-W', '1', ip3], { allowFail: true })).code === 0);
    const took = Date.now() - back;
    assert.ok(took < 5_000 + 3_000, `reconverged ${took} ms after etcd returned`);

    // no lease lost: the same subnets, the same address for c1
    const after = await Promise.all(agents.map(async (a) => (await a.status())!.networks[0]!.subnet));
    assert.deepEqual(after, subnets);
    const ls = await weftIn(h1.ns, ['network', 'inspect', 'out', '--store', etcd.url, '--json']);
    assert.equal(ls.code, 0, ls.stderr);
    assert.deepEqual(JSON.parse(ls.stdout).leases.map((l: { subnet: string }) => l.subnet).sort(), [...subnets].sort());
    assert.equal((await agents[0]!.attach(c1)).address, e1.address);
  });
});
