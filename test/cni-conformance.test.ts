import assert from 'node:assert/strict';
import fs from 'node:fs';
import { after, before, describe, test } from 'node:test';
import { callAgent } from '../src/agent/client.js';
import type { Endpoint } from '../src/agent/types.js';
import { execPlugin, type PluginCall, type PluginOutcome } from '../src/adapters/cni/exec-plugin.js';
import { ensureShim } from '../src/adapters/cni/shim-build.js';
import { cidrWithin } from '../src/net/ipv4.js';
import { ipJson } from '../src/system/ip.js';
import { Cluster, destroyLeftovers, NETWORK, waitUntil, weft, type Link } from './helpers/agent-cluster.js';

/**
 * CNI spec conformance of weft-cni, called as a runtime calls it (CNI_* env + config on stdin) against a
 * real agent in a one-host test bed: every command, every error code weft answers with, and chaining
 * with the reference meta plugins (tuning, portmap, bandwidth) from /usr/lib/cni.
 */

const REF = '/usr/lib/cni';
const haveRoot = process.getuid?.() === 0;
const skip = !haveRoot ? 'needs root' : !fs.existsSync(`${REF}/portmap`) ? `no reference plugins in ${REF} (containernetworking-plugins)` : false;

after(() => destroyLeftovers());

describe('weft-cni conformance', { skip, timeout: 240_000 }, () => {
  let c: Cluster;
  let plugin: string;
  let sock: string;
  let hostNs: string;
  let subnet: string;
  let n = 0;
  const config = (extra: Record<string, unknown> = {}) => ({ cniVersion: '1.1.0', name: 'cnitest', type: 'weft-cni', network: NETWORK, agentSocket: sock, ...extra });
  /** A fresh container namespace; its path is what a runtime passes as CNI_NETNS. */
  const container = async () => {
    const ns = await c.tb.addContainer(c.tb.hosts[0]!, `k${++n}`);
    return { ns, path: `/run/netns/${ns}`, id: `ctr-${n}-${Date.now()}` };
  };
  const call = (p: PluginCall, bin = plugin): Promise<PluginOutcome> => execPlugin(bin, p, { hostNetns: hostNs });
  const endpoints = () => callAgent<Endpoint[]>(sock, 'GET', '/endpoints');
  const expectError = (r: PluginOutcome, code: number, re?: RegExp) => {
    assert.equal(r.code, 1, `exit 1 expected: ${r.stdout} ${r.stderr}`);
    assert.equal(r.json?.code, code, `code ${code} expected: ${r.stdout}`);
    assert.equal(typeof r.json?.msg, 'string');
    assert.ok(typeof r.json?.cniVersion === 'string');
    if (re) assert.match(r.json.msg, re);
  };
  const addrsIn = async (ns: string, ifname: string) =>
    (await ipJson<Array<{ addr_info: Array<{ local: string; prefixlen: number }> }>>(['-4', 'addr', 'show', 'dev', ifname], { netns: ns }))[0]?.addr_info.map((a) => `${a.local}/${a.prefixlen}`) ?? [];

  before(async () => {
    plugin = ensureShim();
    c = await Cluster.create({ backend: 'host-gw', cidr: '10.93.0.0/16', hosts: 1, containersPerHost: 0 });
    sock = c.agent('h1').api;
    hostNs = c.tb.hosts[0]!.ns;
    subnet = await c.subnetOf('h1');
  });
  after(async () => {
    const left = await c?.destroy();
    assert.deepEqual(left ?? [], [], 'namespaces left behind');
  });

  test('VERSION answers the supported versions, with or without an agent', async () => {
    for (const cfg of [{ cniVersion: '1.0.0' }, { cniVersion: '1.1.0', agentSocket: '/nonexistent/weft.sock' }]) {
      const r = await call({ command: 'VERSION', config: cfg });
      assert.equal(r.code, 0, r.stdout);
      assert.deepEqual(r.json, { cniVersion: '1.1.0', supportedVersions: ['0.4.0', '1.0.0', '1.1.0'] });
    }
  });

  test('ADD attaches and answers a 1.1.0 result; CHECK passes; DEL frees; DEL again and DEL of an unknown id succeed', async () => {
    const k = await container();
    const add = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config() });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const res = add.json;
    assert.equal(res.cniVersion, '1.1.0');
    assert.equal(res.interfaces.length, 2);
    const [hostIf, inner] = res.interfaces;
    assert.equal(hostIf.sandbox, undefined, 'host side has no sandbox');
    assert.deepEqual({ name: inner.name, sandbox: inner.sandbox }, { name: 'eth0', sandbox: k.path });
    assert.match(inner.mac, /^([0-9a-f]{2}:){5}[0-9a-f]{2}$/);
    assert.equal(res.ips.length, 1);
    assert.equal(res.ips[0].interface, 1);
    assert.equal(res.ips[0].version, undefined, '1.x results carry no ip version');
    assert.ok(cidrWithin(res.ips[0].address, subnet), `${res.ips[0].address} inside ${subnet}`);
    assert.deepEqual(res.routes, [{ dst: '0.0.0.0/0', gw: res.ips[0].gateway }]);
    // the kernel agrees
    assert.deepEqual(await addrsIn(k.ns, 'eth0'), [res.ips[0].address]);
    const links = await ipJson<Link[]>(['link', 'show', 'dev', hostIf.name], { netns: hostNs });
    assert.equal(links.length, 1, 'host veth exists in the host namespace');
    assert.ok((await endpoints()).some((e) => e.address === res.ips[0].address));

    const check = await call({ command: 'CHECK', containerId: k.id, netns: k.path, ifname: 'eth0', config: config({ prevResult: res }) });
    assert.equal(check.code, 0, check.stdout);
    assert.equal(check.stdout, '', 'CHECK prints nothing on success');

    const del = await call({ command: 'DEL', containerId: k.id, netns: k.path, ifname: 'eth0', config: config({ prevResult: res }) });
    assert.equal(del.code, 0, del.stdout);
    assert.equal(del.stdout, '');
    assert.ok(!(await endpoints()).some((e) => e.address === res.ips[0].address), 'address freed on the agent');
    assert.deepEqual(await addrsIn(k.ns, 'eth0').catch(() => []), []);

    for (const id of [k.id, 'never-added']) {
      const again = await call({ command: 'DEL', containerId: id, netns: k.path, ifname: 'eth0', config: config() });
      assert.equal(again.code, 0, again.stdout);
      assert.equal(again.stdout, '');
    }
    // CHECK of what is no longer there: container unknown
    expectError(await call({ command: 'CHECK', containerId: k.id, netns: k.path, ifname: 'eth0', config: config({ prevResult: res }) }), 3);
  });

  test('names: K8S_POD_NAME and runtimeConfig.aliases are registered on ADD (weft dns-lookup) and removed on DEL; an alias that is no DNS name is code 7', async () => {
    const lookup = async (name: string) => {
      const r = await weft(['dns-lookup', name, '--network', NETWORK, '--store', c.storeUrl, '--json']);
      if (r.code !== 0) {
        assert.match(r.stderr, /no such name/);
        return [];
      }
      return (JSON.parse(r.stdout) as Array<{ ip: string; source: string; hostId?: string }>).map((x) => `${x.ip} ${x.source} ${x.hostId}`);
    };
    const k = await container();
    const args = 'IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME=web_1';
    const cfg = config({ capabilities: { aliases: true }, runtimeConfig: { aliases: { cnitest: ['www', 'Web_1'], other: ['elsewhere'] } } });
    const add = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', args, config: cfg });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    const ip = add.json.ips[0].address.split('/')[0];
    for (const n of ['web_1', 'www']) assert.deepEqual(await lookup(n), [`${ip} endpoint h1`], n);
    assert.deepEqual(await lookup('elsewhere'), [], "another network's aliases are not this one's");
    const del = await call({ command: 'DEL', containerId: k.id, netns: k.path, ifname: 'eth0', args, config: cfg });
    assert.equal(del.code, 0, del.stdout);
    for (const n of ['web_1', 'www']) assert.deepEqual(await lookup(n), [], `${n} gone with DEL`);
    const bad = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', args, config: config({ runtimeConfig: { aliases: { cnitest: ['no good'] } } }) });
    expectError(bad, 7, /runtimeConfig\.aliases\.cnitest\.0: not a DNS name/);
    assert.ok(!(await endpoints()).some((e) => e.container === k.path), 'nothing attached');
  });

  test('ADD twice with the same container id and ifname is an error and leaves the first attachment alone', async () => {
    const k = await container();
    const first = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config() });
    assert.equal(first.code, 0, first.stdout);
    const second = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config() });
    expectError(second, 101, /already has eth0/);
    assert.deepEqual(await addrsIn(k.ns, 'eth0'), [first.json.ips[0].address]);
    // the same namespace under another ifname: one interface per network, refused without harm
    expectError(await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth1', config: config() }), 101, /one interface per network/);
    assert.equal((await endpoints()).filter((e) => e.container === k.path).length, 1);
    assert.equal((await call({ command: 'DEL', containerId: k.id, netns: k.path, ifname: 'eth0', config: config() })).code, 0);
  });

  test('concurrent ADDs: same id and ifname, or two ids on one namespace — exactly one wins, nothing leaks', async () => {
    for (const sameId of [true, false]) {
      const k = await container();
      const ids = sameId ? [k.id, k.id, k.id] : [`${k.id}-a`, `${k.id}-b`, `${k.id}-c`];
      const rs = await Promise.all(ids.map((id) => call({ command: 'ADD', containerId: id, netns: k.path, ifname: 'eth0', config: config() })));
      const won = rs.filter((r) => r.code === 0);
      assert.equal(won.length, 1, `one ADD succeeds: ${rs.map((r) => r.stdout).join(' | ')}`);
      for (const r of rs.filter((x) => x.code !== 0)) expectError(r, 101);
      const mine = (await endpoints()).filter((e) => e.container === k.path);
      assert.deepEqual(mine.map((e) => e.address), [won[0]!.json.ips[0].address]);
      assert.deepEqual(await addrsIn(k.ns, 'eth0'), [won[0]!.json.ips[0].address]);
      for (const id of new Set(ids)) assert.equal((await call({ command: 'DEL', containerId: id, ifname: 'eth0', config: config() })).code, 0);
      assert.deepEqual((await endpoints()).filter((e) => e.container === k.path), []);
    }
  });

  test('DEL after the namespace is gone still frees the address', async () => {
    const k = await container();
    const add = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config() });
    assert.equal(add.code, 0, add.stdout);
    await c.tb.exec(hostNs, ['ip', 'netns', 'del', k.ns]);
    const del = await call({ command: 'DEL', containerId: k.id, ifname: 'eth0', config: config() });
    assert.equal(del.code, 0, del.stdout);
    assert.ok(!(await endpoints()).some((e) => e.container === k.path));
  });

  test('DEL of a stale attachment leaves alone what now holds its namespace path', async () => {
    const k = await container();
    const a = await call({ command: 'ADD', containerId: `${k.id}-old`, netns: k.path, ifname: 'eth0', config: config() });
    assert.equal(a.code, 0, a.stdout);
    // someone detaches it behind the runtime's back, then the path is attached again for another id
    await callAgent(sock, 'POST', '/detach', { container: k.path });
    const b = await call({ command: 'ADD', containerId: `${k.id}-new`, netns: k.path, ifname: 'eth0', config: config() });
    assert.equal(b.code, 0, b.stdout);
    assert.equal((await call({ command: 'DEL', containerId: `${k.id}-old`, ifname: 'eth0', config: config() })).code, 0);
    assert.deepEqual((await endpoints()).filter((e) => e.container === k.path).map((e) => e.address), [b.json.ips[0].address], 'the new attachment survives');
    assert.equal((await call({ command: 'DEL', containerId: `${k.id}-new`, ifname: 'eth0', config: config() })).code, 0);
    assert.deepEqual((await endpoints()).filter((e) => e.container === k.path), []);
  });

  test('static address from CNI_ARGS IP= and from runtimeConfig.ips; a 0.4.0 config gets a 0.4.0 result', async () => {
    const base = subnet.split('/')[0]!.split('.').slice(0, 3).join('.');
    const k1 = await container();
    const a1 = await call({ command: 'ADD', containerId: k1.id, netns: k1.path, ifname: 'eth0', args: `IgnoreUnknown=1;IP=${base}.77`, config: config() });
    assert.equal(a1.code, 0, a1.stdout);
    assert.equal(a1.json.ips[0].address.split('/')[0], `${base}.77`);
    const k2 = await container();
    const a2 = await call({ command: 'ADD', containerId: k2.id, netns: k2.path, ifname: 'eth0', config: config({ cniVersion: '0.4.0', runtimeConfig: { ips: [`${base}.78/${subnet.split('/')[1]}`] } }) });
    assert.equal(a2.code, 0, a2.stdout);
    assert.equal(a2.json.cniVersion, '0.4.0');
    assert.deepEqual({ v: a2.json.ips[0].version, a: a2.json.ips[0].address.split('/')[0] }, { v: '4', a: `${base}.78` });
    // the address is taken now
    const k3 = await container();
    const a3 = await call({ command: 'ADD', containerId: k3.id, netns: k3.path, ifname: 'eth0', args: `IP=${base}.77`, config: config() });
    expectError(a3, 100, /already taken/);
    for (const k of [k1, k2]) assert.equal((await call({ command: 'DEL', containerId: k.id, ifname: 'eth0', config: config() })).code, 0);
  });

  test('each error code: 4 invalid env, 6 undecodable stdin, 1 unsupported version, 7 invalid config, 2 unsupported ipMasq', async () => {
    const k = await container();
    const add = (p: Partial<PluginCall>) => call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config(), ...p });
    expectError(await call({ command: '', config: config() }), 4, /CNI_COMMAND/);
    expectError(await call({ command: 'FROB', config: config() }), 4, /CNI_COMMAND/);
    expectError(await add({ netns: undefined }), 4, /CNI_NETNS/);
    expectError(await add({ containerId: undefined }), 4, /CNI_CONTAINERID/);
    expectError(await add({ ifname: 'this-name-is-too-long' }), 4, /CNI_IFNAME/);
    expectError(await add({ netns: '/run/netns/weft-no-such-ns' }), 4, /CNI_NETNS/);
    expectError(await add({ args: 'IP=not-an-ip' }), 4, /CNI_ARGS/);
    expectError(await add({ config: '{"cniVersion": "1.1.0", "name": ' }), 6);
    expectError(await add({ config: '[1,2]' }), 6);
    expectError(await add({ config: '' }), 6);
    expectError(await add({ config: config({ cniVersion: '0.3.1' }) }), 1, /0\.3\.1/);
    expectError(await add({ config: config({ mtu: 'big' }) }), 7, /mtu/);
    expectError(await add({ config: config({ mtu: 9000 }) }), 7, /mtu 9000/);
    expectError(await add({ config: config({ network: 'no-such-net' }) }), 7, /no-such-net/);
    expectError(await add({ config: config({ dns: { nameservers: ['nope'] } }) }), 7, /dns\.nameservers/);
    expectError(await add({ config: config({ ipMasq: true }) }), 2, /ipMasq/);
    // none of those left anything behind
    assert.ok(!(await endpoints()).some((e) => e.container === k.path));
  });

  test('mtu, runtimeConfig.mac and dns from the config reach the interface and the result', async () => {
    const k = await container();
    const dns = { nameservers: ['10.93.0.53'], search: ['example.test'] };
    const r = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'net1', config: config({ mtu: 1400, dns, runtimeConfig: { mac: '02:00:00:aa:bb:cc' } }) });
    assert.equal(r.code, 0, r.stdout);
    assert.deepEqual(r.json.dns, dns);
    assert.equal(r.json.interfaces[1].mac, '02:00:00:aa:bb:cc');
    const [l] = await ipJson<Array<{ mtu: number; address: string }>>(['link', 'show', 'dev', 'net1'], { netns: k.ns });
    assert.deepEqual({ mtu: l!.mtu, mac: l!.address }, { mtu: 1400, mac: '02:00:00:aa:bb:cc' });
    // and on the host's end of the veth (a larger port would send it packets the container's end drops)
    const [port] = await ipJson<Array<{ mtu: number }>>(['link', 'show', 'dev', r.json.interfaces[0].name], { netns: hostNs });
    assert.equal(port!.mtu, 1400, "the host's end of the veth has the same MTU");
    assert.notEqual(r.json.routes[0].dst, '0.0.0.0/0', 'a non-eth0 interface routes only the network');
    assert.equal((await call({ command: 'DEL', containerId: k.id, ifname: 'net1', config: config() })).code, 0);
  });

  test('CHECK fails when the interface is gone and without prevResult', async () => {
    const k = await container();
    const add = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config() });
    assert.equal(add.code, 0, add.stdout);
    const check = (cfg: Record<string, unknown>) => call({ command: 'CHECK', containerId: k.id, netns: k.path, ifname: 'eth0', config: config(cfg) });
    expectError(await check({}), 7, /prevResult/);
    const other = structuredClone(add.json);
    other.ips[0].address = '10.93.250.250/24';
    expectError(await check({ prevResult: other }), 102, /prevResult does not hold/);
    await c.tb.exec(k.ns, ['ip', 'link', 'del', 'eth0']);
    expectError(await check({ prevResult: add.json }), 102, /gone/);
    assert.equal((await call({ command: 'DEL', containerId: k.id, ifname: 'eth0', config: config() })).code, 0);
  });

  test('GC frees the attachments of this configuration that are not listed as valid', async () => {
    const ks = [await container(), await container(), await container()];
    for (const [i, k] of ks.entries()) {
      const r = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config(i === 2 ? { name: 'othercfg' } : {}) });
      assert.equal(r.code, 0, r.stdout);
    }
    expectError(await call({ command: 'GC', config: config() }), 7, /valid-attachments/);
    const gc = await call({ command: 'GC', config: config({ 'cni.dev/valid-attachments': [{ containerID: ks[0]!.id, ifname: 'eth0' }] }) });
    assert.equal(gc.code, 0, gc.stdout);
    assert.equal(gc.stdout, '');
    const left = (await endpoints()).map((e) => e.container);
    assert.ok(left.includes(ks[0]!.path), 'valid attachment kept');
    assert.ok(!left.includes(ks[1]!.path), 'stale attachment freed');
    assert.ok(left.includes(ks[2]!.path), "another configuration's attachment untouched");
    for (const [i, k] of ks.entries()) await call({ command: 'DEL', containerId: k.id, ifname: 'eth0', config: config(i === 2 ? { name: 'othercfg' } : {}) });
    assert.deepEqual((await endpoints()).filter((e) => ks.some((k) => k.path === e.container)), []);
  });

  test('STATUS: ready for a running network, 50 for one this host does not run or when the agent is down; ADD then gets 11', async () => {
    const ok = await call({ command: 'STATUS', config: config() });
    assert.equal(ok.code, 0, ok.stdout);
    assert.equal(ok.stdout, '');
    expectError(await call({ command: 'STATUS', config: config({ network: 'absent' }) }), 50, /absent/);
    const down = '/tmp/weft-cni-no-agent.sock';
    expectError(await call({ command: 'STATUS', config: config({ agentSocket: down }) }), 50, /not reachable/);
    const k = await container();
    const add = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: config({ agentSocket: down, cniVersion: '1.0.0' }) });
    expectError(add, 11, /not reachable/);
    assert.equal(add.json.cniVersion, '1.0.0', 'the error speaks the config version');
  });

  test('STATUS 51: the network was removed while the agent was down and a container is still attached; DEL frees it, then 50', async () => {
    const name = 'cni51';
    const h1 = c.tb.hosts[0]!;
    const runs = async (n: string) => (await c.agent(h1).status())?.networks.some((x) => x.name === n) ?? false;
    const r0 = await weft(['network', 'create', name, '--subnet', '10.95.0.0/16', '--backend', 'host-gw', '--ignore-host-routes', '--store', c.storeUrl]);
    assert.equal(r0.code, 0, r0.stderr);
    await waitUntil('the agent joins the new network', 20_000, () => runs(name));
    const cfg = config({ name: 'cni51cfg', network: name });
    const ready = await call({ command: 'STATUS', config: cfg });
    assert.equal(ready.code, 0, ready.stdout);
    const k = await container();
    const add = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: cfg });
    assert.equal(add.code, 0, add.stdout + add.stderr);
    // the agent away (its lease is not renewed then), the network removed, the agent back: it no longer runs it
    await c.agent(h1).stop('SIGTERM');
    const rm = await weft(['network', 'rm', name, '--force', '--store', c.storeUrl]);
    assert.equal(rm.code, 0, rm.stderr);
    await c.startAgent(h1);
    await waitUntil('the agent runs its first network again', 20_000, () => runs(NETWORK));
    assert.equal(await runs(name), false);
    // the spec's error shape: exit 1, and on stdout only cniVersion, code, msg and (optional) details
    const st = await call({ command: 'STATUS', config: cfg });
    expectError(st, 51, new RegExp(`network ${name}`));
    assert.deepEqual(Object.keys(st.json).filter((x) => !['cniVersion', 'code', 'msg', 'details'].includes(x)), [], `only the spec's fields: ${st.stdout}`);
    assert.equal(st.json.cniVersion, '1.1.0');
    // the network took its addresses with it: DEL succeeds and drops the attachment; then plain 50
    const del = await call({ command: 'DEL', containerId: k.id, netns: k.path, ifname: 'eth0', config: cfg });
    assert.equal(del.code, 0, del.stdout);
    expectError(await call({ command: 'STATUS', config: cfg }), 50, new RegExp(`network ${name}`));
  });

  test('chained with the reference tuning, bandwidth and portmap plugins', async () => {
    const k = await container();
    const chain = [
      config(),
      { cniVersion: '1.0.0', name: 'cnitest', type: 'tuning', mac: '02:00:00:00:77:01', sysctl: { 'net.ipv4.conf.eth0.arp_ignore': '1' } },
      { cniVersion: '1.0.0', name: 'cnitest', type: 'bandwidth', ingressRate: 8_000_000, ingressBurst: 65536, egressRate: 8_000_000, egressBurst: 65536 },
      { cniVersion: '1.0.0', name: 'cnitest', type: 'portmap', capabilities: { portMappings: true }, runtimeConfig: { portMappings: [{ hostPort: 18080, containerPort: 80, protocol: 'tcp' }] } },
    ];
    let prev: any;
    for (const p of chain) {
      const cfg = { ...p, cniVersion: '1.0.0', ...(prev ? { prevResult: prev } : {}) };
      const bin = p.type === 'weft-cni' ? plugin : `${REF}/${p.type}`;
      const r = await call({ command: 'ADD', containerId: k.id, netns: k.path, ifname: 'eth0', config: cfg }, bin);
      assert.equal(r.code, 0, `${p.type} ADD: ${r.stdout} ${r.stderr}`);
      prev = r.json;
    }
    const ip = prev.ips[0].address.split('/')[0];
    // tuning: MAC and sysctl applied in the container, and the result says so
    const [l] = await ipJson<Array<{ address: string }>>(['link', 'show', 'dev', 'eth0'], { netns: k.ns });
    assert.equal(l!.address, '02:00:00:00:77:01');
    assert.equal((await c.tb.exec(k.ns, ['cat', '/proc/sys/net/ipv4/conf/eth0/arp_ignore'])).stdout.trim(), '1');
    // bandwidth: a tbf qdisc on the host veth weft named in its result
    const hostIf = prev.interfaces.find((i: { sandbox?: string }) => !i.sandbox).name;
    assert.match((await c.tb.exec(hostNs, ['tc', 'qdisc', 'show', 'dev', hostIf])).stdout, /tbf/);
    const ifbs = async () => (await ipJson<Link[]>(['-d', 'link', 'show'], { netns: hostNs })).filter((x) => x.linkinfo?.info_kind === 'ifb');
    assert.equal((await ifbs()).length, 1, 'egress shaping through an ifb device');
    // portmap: the host's own address :18080 reaches the container's :80
    const server = c.tb.spawn(k.ns, ['busybox', 'nc', '-ll', '-p', '80', '-e', 'echo', 'hello-from-container']);
    try {
      const hostIp = c.tb.hosts[0]!.ip;
      await waitUntil('portmap forwards to the container', 15_000, async () => {
        const r = await c.tb.exec(hostNs, ['busybox', 'nc', '-w', '2', hostIp, '18080'], { allowFail: true });
        return r.stdout.includes('hello-from-container') || `got ${JSON.stringify(r.stdout + r.stderr)}`;
      });
    } finally {
      server.kill('SIGKILL');
    }
    // CHECK and DEL down the chain (DEL in reverse)
    // (portmap's own CHECK fails here without IPv6: it looks for its ip6tables chain regardless)
    for (const p of chain.filter((x) => x.type !== 'portmap')) {
      const bin = p.type === 'weft-cni' ? plugin : `${REF}/${p.type}`;
      const r = await call({ command: 'CHECK', containerId: k.id, netns: k.path, ifname: 'eth0', config: { ...p, cniVersion: '1.0.0', prevResult: prev } }, bin);
      assert.equal(r.code, 0, `${p.type} CHECK: ${r.stdout} ${r.stderr}`);
    }
    for (const p of [...chain].reverse()) {
      const bin = p.type === 'weft-cni' ? plugin : `${REF}/${p.type}`;
      const r = await call({ command: 'DEL', containerId: k.id, netns: k.path, ifname: 'eth0', config: { ...p, cniVersion: '1.0.0', prevResult: prev } }, bin);
      assert.equal(r.code, 0, `${p.type} DEL: ${r.stdout} ${r.stderr}`);
    }
    assert.ok(!(await endpoints()).some((e) => e.address.startsWith(`${ip}/`)));
    assert.deepEqual(await ifbs(), [], "bandwidth's ifb gone");
    assert.doesNotMatch((await c.tb.exec(hostNs, ['iptables-save', '-t', 'nat'])).stdout, /18080/, 'portmap rules gone');
  });
});
