/**
 * End to end: two namespaced hosts of the shared test bed, each with a real dockerd (Debian docker.io 20.10)
 * and a weft agent serving the Docker plugin, one sqlite store. `docker network create -d weft` on A makes
 * the network usable on B; a container on A pings and nc's one on B (vxlan); --ip is honoured; exhaustion
 * and an --ip taken on the other host fail `docker run` with weft's message; removal leaves nothing behind.
 */
import { intToIp, parseCidr } from '../src/net/ipv4.js';
import '../src/backends/all.js';
import { WEFT_BIN } from '../src/testbed/agents.js';
import { waitFor } from '../src/testbed/wait.js';
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { needsRoot } from './helpers/require-root.js';
import * as http from 'node:http';
import { existsSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { createTestbed, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import { openStore } from '../src/store/index.js';
import { LeaseManager } from '../src/lease/manager.js';
import { listLeases } from '../src/lease/leases.js';
import { removeNetwork } from '../src/lease/remove-network.js';
import { networkKeys } from '../src/store/layout.js';
import { findNetwork } from '../src/config/registry.js';
import { startDockerd, ensureBusyboxImage, run, type Dockerd } from './helpers/dockerd.js';


interface Host {
  tb: TestbedHost;
  dockerd: Dockerd;
  api: string;
  agent: ChildProcess;
  log: string[];
}

function getJson(socket: string, p: string): Promise<any> {
  return new Promise((resolve, reject) => {
    const req = http.request({ socketPath: socket, path: p, method: 'GET' }, (res) => {
      let t = '';
      res.on('data', (c) => (t += c));
      res.on('end', () => resolve(JSON.parse(t)));
    });
    req.on('error', reject);
    req.end();
  });
}

function postJson(socket: string, p: string, body: unknown): Promise<any> {
  const text = JSON.stringify(body);
  return new Promise((resolve, reject) => {
    const req = http.request(
      { socketPath: socket, path: p, method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(text) } },
      (res) => {
        let t = '';
        res.on('data', (c) => (t += c));
        res.on('end', () => (res.statusCode === 200 ? resolve(JSON.parse(t)) : reject(new Error(`${p}: ${res.statusCode} ${t}`))));
      },
    );
    req.on('error', reject);
    req.end(text);
  });
}


function startAgent(tb: Testbed, h: TestbedHost, d: Dockerd, storeUrl: string, dir: string): Promise<Host> {
  const api = path.join(dir, `${h.id}.api`);
  const log: string[] = [];
  const child = tb.spawn(h.ns, [
    process.execPath,
    WEFT_BIN,
    'agent',
    '--docker',
    '--store', storeUrl,
    '--state-dir', path.join(dir, `state-${h.id}`),
    '--api', api,
    '--iface', 'eth0',
    '--host-id', h.id,
    '--docker-plugin-dir', d.pluginDir,
    '--docker-host', `unix://${d.socket}`,
  ], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, WEFT_LOG: 'info' } });
  return new Promise((resolve, reject) => {
    let out = '';
    child.stderr!.on('data', (c) => log.push(String(c)));
    child.stdout!.on('data', (c) => {
      out += c;
      if (out.includes('ready')) resolve({ tb: h, dockerd: d, api, agent: child, log });
    });
    child.on('exit', (code) => reject(new Error(`agent on ${h.id} exited ${code}: ${log.join('').slice(-2000)}`)));
  });
}

async function links(h: TestbedHost): Promise<string[]> {
  const r = await run('ip', ['-n', h.ns, '-o', 'link', 'show']);
  return r.stdout.split('\n').map((l) => l.split(':')[1]?.trim().split('@')[0] ?? '').filter(Boolean);
}

const ipPlus = (subnet: string, k: number) => intToIp(parseCidr(subnet).base + k);

test('docker on two hosts over a weft vxlan network', { timeout: 300_000, skip: needsRoot('dockerd', 'busybox') }, async (t) => {
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wde-'));
  const storeUrl = `sqlite://${dir}/weft.db`;
  const tb = await createTestbed({ hosts: 2 });
  const daemons: Dockerd[] = [];
  const hosts: Host[] = [];
  const store = await openStore(storeUrl, { create: true });
  const holders: LeaseManager[] = [];
  t.after(async () => {
    for (const h of holders) await h.release().catch(() => {});
    for (const d of daemons) await d.stop().catch(() => {});
    await tb.destroy(); // stops the agents (by PID) and removes the namespaces
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });

  const [h1, h2] = tb.hosts as [TestbedHost, TestbedHost];
  for (const h of [h1, h2]) {
    const d = await startDockerd({ netns: h.ns, dir: path.join(dir, h.id) });
    daemons.push(d);
    await ensureBusyboxImage(d);
  }
  const A = await startAgent(tb, h1, daemons[0]!, storeUrl, dir);
  let B = await startAgent(tb, h2, daemons[1]!, storeUrl, dir);
  hosts.push(A, B);
  const dockerA = A.dockerd;
  const dockerB = B.dockerd;

  // state shared by the steps below (each step is a subtest, run in order)
  let ipB: any;
  let stA: any;
  let stB: any;
  let taken: any;
  await t.test('create on A; the network appears in the store and on B', async () => {
    await dockerA.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.40.0.0/16', 'prodnet']);
    assert.equal(await dockerA.dockerOk(['network', 'inspect', '-f', '{{.Driver}} {{.IPAM.Driver}} {{(index .IPAM.Config 0).Subnet}}', 'prodnet']), 'weft weft 10.40.0.0/16');
    await waitFor('prodnet on B', 20_000, async () => (await dockerB.docker(['network', 'inspect', '-f', '{{.Driver}}', 'prodnet'])).stdout.trim() === 'weft');
    stA = await waitFor('A joined prodnet with B as peer', 20_000, async () => {
      const s = await getJson(A.api, '/status');
      const n = s.networks.find((x: any) => x.name === 'prodnet');
      return n && n.peers.length === 1 ? n : undefined;
    });
    stB = await waitFor('B joined prodnet with A as peer', 20_000, async () => {
      const s = await getJson(B.api, '/status');
      const n = s.networks.find((x: any) => x.name === 'prodnet');
      return n && n.peers.length === 1 ? n : undefined;
    });
    assert.equal(stA.backend, 'vxlan');
    // `weft docker-opts` will not take docker0 from a dockerd that runs with its own (docker-bridge-e2e covers the real path)
    const opts = await run(process.execPath, [WEFT_BIN, 'docker-opts', '--api', A.api, '--network', 'prodnet']);
    assert.notEqual(opts.code, 0);
    assert.match(opts.stderr, /^weft: docker0 is dockerd's bridge with 172\.17\.0\.1\/16 now: stop dockerd, run `weft docker-opts` again, then start dockerd with the options it prints\n$/);
    assert.ok(stA.mtu <= 1450, 'vxlan MTU leaves room for the encapsulation');
    assert.notEqual(stA.subnet, stB.subnet);

  });
  await t.test("B: a server with a static --ip in B's lease", async () => {
    ipB = ipPlus(stB.subnet, 9);
    await dockerB.dockerOk([
      'run', '-d', '--name', 'srv', '--network', 'prodnet', '--ip', ipB, 'busybox:local',
      'sh', '-c', 'while true; do echo pong-from-b | nc -l -p 7777; done',
    ]);
    assert.equal(await dockerB.dockerOk(['inspect', '-f', '{{.NetworkSettings.Networks.prodnet.IPAddress}}', 'srv']), ipB, '--ip honoured');
    const inB = await dockerB.dockerOk(['exec', 'srv', 'sh', '-c', 'ip -o -4 addr show eth0; ip route']);
    assert.match(inB, new RegExp(`inet ${ipB.replace(/\./g, '\\.')}/24 `));
    assert.match(inB, new RegExp(`default via ${ipPlus(stB.subnet, 1).replace(/\./g, '\\.')} dev eth0`));

  });
  await t.test("B's agent (and plugin) restarts: Docker replays nothing, the plugin's saved state carries on", async () => {
    const oldPid = B.agent.pid!;
    const exited = new Promise((r) => B.agent.once('exit', r));
    process.kill(oldPid, 'SIGTERM');
    await exited;
    const B2 = await startAgent(tb, h2, dockerB, storeUrl, dir);
    hosts[1] = B2;
    B = B2;
    const stB2 = await waitFor('B rejoined prodnet', 20_000, async () => {
      const s = await getJson(B2.api, '/status');
      return s.networks.find((x: any) => x.name === 'prodnet' && x.peers.length === 1);
    });
    assert.equal(stB2.subnet, stB.subnet, 'same lease after a restart');

  });
  await t.test("A: ping and nc to B's container by IP", async () => {
    const out = await dockerA.dockerOk(
      ['run', '--rm', '--name', 'cli', '--network', 'prodnet', 'busybox:local', 'sh', '-c',
        `ip -o -4 addr show eth0; for i in 1 2 3 4 5; do ping -c 1 -W 1 ${ipB} >/dev/null && break; done; ping -c 3 -W 2 ${ipB}; echo hello | nc -w 3 ${ipB} 7777`],
      { timeoutMs: 60_000 },
    );
    assert.match(out, new RegExp(`inet ${ipPlus(stA.subnet, 2).replace(/\./g, '\\.')}/24 `), 'first free address of A\'s lease');
    assert.match(out, /3 packets transmitted, 3 packets received/);
    assert.match(out, /pong-from-b/);

  });
  await t.test('names: `docker run --name web --network-alias www` on A resolves from a container on B; gone after docker rm -f', async () => {
    await dockerA.dockerOk(['run', '-d', '--name', 'web', '--network-alias', 'www', '--network', 'prodnet', 'busybox:local', 'sleep', '600']);
    const webIp = await dockerA.dockerOk(['inspect', '-f', '{{.NetworkSettings.Networks.prodnet.IPAddress}}', 'web']);
    const gwB = stB.gateway ?? ipPlus(stB.subnet, 1);
    // Docker's embedded resolver (127.0.0.11) forwards what it does not know to --dns: B's agent on its
    // gateway, as `weft dns-args` says (Weave's `docker run $(weave dns-args)`)
    const dnsArgs = (await run(process.execPath, [WEFT_BIN, 'dns-args', '--api', B.api, '--network', 'prodnet'])).stdout.trim();
    assert.equal(dnsArgs, `--dns=${gwB} --dns-search=weft.local`);
    await dockerB.dockerOk(['run', '-d', '--name', 'asker', '--network', 'prodnet', ...dnsArgs.split(' '), 'busybox:local', 'sleep', '600']);
    const lookup = async (name: string) => {
      const r = await dockerB.docker(['exec', 'asker', 'nslookup', name], { timeoutMs: 20_000 });
      const addrs = [...r.stdout.split(/^Name:/m).slice(1).join('').matchAll(/Address(?: \d+)?:\s+(\d+\.\d+\.\d+\.\d+)/g)].map((m) => m[1]);
      return { ok: r.code === 0, addrs, text: (r.stdout + r.stderr).trim() };
    };
    for (const name of ['web.weft.local', 'www.weft.local', 'web']) {
      await waitFor(`${name} resolves to ${webIp} on B`, 30_000, async () => {
        const r = await lookup(name);
        return (r.ok && r.addrs.join() === webIp) || `got ${JSON.stringify(r.text)}`;
      });
    }
    // and the name is the container: B pings it by name
    assert.match(await dockerB.dockerOk(['exec', 'asker', 'ping', '-c', '2', '-W', '2', 'web.weft.local'], { timeoutMs: 30_000 }), /2 packets transmitted, 2 packets received/);
    const keys = networkKeys(store, 'prodnet');
    const recs = (await store.list(keys.dnsPrefix)).map((e) => JSON.parse(e.value) as { name: string; ip: string; source: string; hostId?: string; container?: string });
    const webRecs = recs.filter((r) => r.ip === webIp).map((r) => `${r.name} ${r.source} ${r.hostId} ${r.container}`).sort();
    const shortId = (await dockerA.dockerOk(['inspect', '-f', '{{.Id}}', 'web'])).slice(0, 12);
    // Docker adds the short id as an alias on user-defined networks (its own DNS answers it too)
    assert.deepEqual(webRecs, [`${shortId} docker h1 web`, 'web docker h1 web', 'www docker h1 web'].sort());
    await dockerA.dockerOk(['rm', '-f', 'web']);
    for (const name of ['web.weft.local', 'www.weft.local']) {
      await waitFor(`${name} gone on B`, 30_000, async () => {
        const r = await lookup(name);
        return (!r.ok && /NXDOMAIN|can't find/i.test(r.text)) || `got ${JSON.stringify(r.text)}`;
      });
    }
    assert.deepEqual((await store.list(keys.dnsPrefix)).filter((e) => e.value.includes(`"${webIp}"`)).map((e) => e.key), [], 'no record of web left');
    await dockerB.dockerOk(['rm', '-f', 'asker']);
  });
  await t.test('two containers on one host get two addresses', async () => {
    await dockerA.dockerOk(['run', '-d', '--name', 'a1', '--network', 'prodnet', 'busybox:local', 'sleep', '600']);
    await dockerA.dockerOk(['run', '-d', '--name', 'a2', '--network', 'prodnet', 'busybox:local', 'sleep', '600']);
    const ipsA = await Promise.all(['a1', 'a2'].map((c) => dockerA.dockerOk(['inspect', '-f', '{{.NetworkSettings.Networks.prodnet.IPAddress}}', c])));
    assert.notEqual(ipsA[0], ipsA[1]);
    assert.match(await dockerA.dockerOk(['exec', 'a1', 'ping', '-c', '1', '-W', '2', ipsA[1]!]), /1 packets received/);
    await dockerA.dockerOk(['rm', '-f', 'a1', 'a2']);

  });
  await t.test('weft attach <docker container>: a container started without weft, found through the Docker API', async () => {
    await dockerA.dockerOk(['run', '-d', '--name', 'lone', '--network', 'none', 'busybox:local', 'sleep', '600']);
    const ep = await postJson(A.api, '/attach', { container: 'lone', network: 'prodnet' });
    assert.equal(ep.network, 'prodnet');
    assert.match(ep.address, new RegExp(`^${ipPlus(stA.subnet, 0).replace(/\.0$/, '').replace(/\./g, '\\.')}\\.\\d+/24$`));
    const lonePing = await dockerA.dockerOk(['exec', 'lone', 'ping', '-c', '2', '-W', '2', ipB]);
    assert.match(lonePing, /2 packets transmitted, 2 packets received/);
    await postJson(A.api, '/detach', { container: 'lone', network: 'prodnet' });
    await dockerA.dockerOk(['rm', '-f', 'lone']);

  });
  await t.test("--ip taken on the other host; --ip in the other host's subnet", async () => {
    taken = await dockerA.docker(['run', '--rm', '--network', 'prodnet', '--ip', ipB, 'busybox:local', 'true']);
    assert.notEqual(taken.code, 0);
    assert.match(taken.stderr, new RegExp(`weft: address ${ipB.replace(/\./g, '\\.')} is already in use on host h2`));
    const foreign = await dockerA.docker(['run', '--rm', '--network', 'prodnet', '--ip', ipPlus(stB.subnet, 20), 'busybox:local', 'true']);
    assert.notEqual(foreign.code, 0);
    assert.match(foreign.stderr, new RegExp(`weft: address ${ipPlus(stB.subnet, 20).replace(/\./g, '\\.')} belongs to host h2's subnet ${stB.subnet.replace(/\./g, '\\.')}`));

  });
  await t.test('exhaustion: a network whose two subnets are held by two other hosts', async () => {
    for (const id of ['h8', 'h9']) {
      const m = new LeaseManager(store, 'small', { hostId: id, ttlSeconds: 600 });
      holders.push(m);
    }
    const { createNetwork } = await import('../src/config/registry.js');
    // the agents are paused meanwhile: otherwise one of them may join the new network (and take a subnet) first
    for (const h of hosts) process.kill(h.agent.pid!, 'SIGSTOP');
    try {
      await createNetwork(store, 'small', { Network: '10.41.0.0/24', SubnetLen: 26, SubnetMin: '10.41.0.64', SubnetMax: '10.41.0.128', Backend: { Type: 'vxlan' } });
      for (const [i, m] of holders.entries()) await m.acquire({ publicIp: `192.0.2.${98 + i}`, backendType: 'vxlan', backendData: {} });
    } finally {
      for (const h of hosts) process.kill(h.agent.pid!, 'SIGCONT');
    }
    await dockerA.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.41.0.0/24', 'small']);
    const full = await dockerA.docker(['run', '--rm', '--network', 'small', 'busybox:local', 'true'], { timeoutMs: 60_000 });
    assert.notEqual(full.code, 0);
    assert.match(full.stderr, /weft: network "small" \(10\.41\.0\.0\/24\) is full: all 2 \/26 subnets are taken — held by .*\(h[89]\).*\(h[89]\)/);
    await dockerA.dockerOk(['network', 'rm', 'small']);
    await waitFor('small gone from B (its record went)', 20_000, async () => (await dockerB.docker(['network', 'inspect', 'small'])).code !== 0);
    // B's Docker removed its copy too (DeleteNetwork on B with no record left): the weft network, made
    // before Docker used it, stays — only `weft network rm` removes it (before the holders let go, so no
    // agent joins it meanwhile)
    assert.ok(await findNetwork(store, 'small'), 'a weft network Docker did not create outlives its Docker networks');
    await removeNetwork(store, 'small', { force: true });
    for (const m of holders.splice(0)) await m.release();

  });
  await t.test('published port: -p 8080:80 on B answers from A (underlay), from B itself, and from a container', async () => {
    await dockerB.dockerOk([
      'run', '-d', '--name', 'web', '--network', 'prodnet', '-p', '8080:80', 'busybox:local',
      'sh', '-c', 'while true; do echo hello-from-web | nc -l -p 80; done',
    ]);
    const webIp = await dockerB.dockerOk(['inspect', '-f', '{{.NetworkSettings.Networks.prodnet.IPAddress}}', 'web']);
    const fetch = (ns: string, target: string) => async () => {
      const r = await run('ip', ['netns', 'exec', ns, 'busybox', 'nc', '-w', '2', target, '8080'], { input: '', timeoutMs: 10_000 });
      return r.stdout.includes('hello-from-web');
    };
    await waitFor(`A (underlay) reaches ${h2.ip}:8080`, 20_000, fetch(h1.ns, h2.ip));
    await waitFor(`B itself reaches ${h2.ip}:8080`, 20_000, fetch(h2.ns, h2.ip));
    // a container of the network on A, through B's underlay address
    await waitFor('a container on A reaches B:8080', 30_000, async () => {
      const r = await dockerA.docker(['run', '--rm', '--network', 'prodnet', 'busybox:local', 'sh', '-c', `nc -w 2 ${h2.ip} 8080 </dev/null`], { timeoutMs: 30_000 });
      return r.stdout.includes('hello-from-web');
    });
    const dnat = await run('ip', ['netns', 'exec', h2.ns, 'iptables', '-t', 'nat', '-S', 'WEFT-DNAT']);
    assert.match(dnat.stdout, new RegExp(`--dport 8080 .*-j DNAT --to-destination ${webIp.replace(/\./g, '\\.')}:80`));
    // weft ps / status on B list Docker's containers
    const ps = JSON.parse((await run(process.execPath, [WEFT_BIN, 'ps', '--json', '--api', B.api])).stdout) as any[];
    const web = ps.find((e) => e.container === 'web');
    assert.ok(web, `weft ps lists the Docker container: ${JSON.stringify(ps)}`);
    assert.equal(web.runtime, 'docker');
    assert.equal(web.network, 'prodnet');
    assert.equal(web.address.split('/')[0], webIp);
    assert.equal(web.id, (await dockerB.dockerOk(['inspect', '-f', '{{.Id}}', 'web'])).slice(0, 12));
    assert.deepEqual(web.ports, ['8080->80/tcp']);
    assert.ok(ps.some((e) => e.container === 'srv'), 'srv listed too');
    const table = (await run(process.execPath, [WEFT_BIN, 'ps', '--api', B.api])).stdout;
    assert.match(table, /web\s+[0-9a-f]{12}\s+docker\s+prodnet\s+/);
    await waitFor('weft status on B counts both Docker containers', 20_000, async () => {
      const st = await getJson(B.api, '/status');
      return st.networks.find((x: any) => x.name === 'prodnet')?.endpoints === 2;
    });
    // reconciled: rules lost (flushed by hand) are made again when the agent (and its plugin) starts
    await run('ip', ['netns', 'exec', h2.ns, 'iptables', '-t', 'nat', '-F', 'WEFT-DNAT']);
    assert.equal((await fetch(h1.ns, h2.ip)()), false, 'flushed: the port does not answer');
    const exited = new Promise((r) => B.agent.once('exit', r));
    process.kill(B.agent.pid!, 'SIGTERM');
    await exited;
    B = await startAgent(tb, h2, dockerB, storeUrl, dir);
    hosts[1] = B;
    await waitFor(`${h2.ip}:8080 answers again after the agent restarts`, 20_000, fetch(h1.ns, h2.ip));
    // a container removed while the agent (and plugin) is down never gets its Revoke: unpublished at start
    const down = new Promise((r) => B.agent.once('exit', r));
    process.kill(B.agent.pid!, 'SIGTERM');
    await down;
    await dockerB.dockerOk(['rm', '-f', 'web'], { timeoutMs: 90_000 });
    assert.match((await run('ip', ['netns', 'exec', h2.ns, 'iptables', '-t', 'nat', '-S', 'WEFT-DNAT'])).stdout, /--dport 8080/, 'stale rule while the agent is down');
    B = await startAgent(tb, h2, dockerB, storeUrl, dir);
    hosts[1] = B;
    await waitFor('the stale published port is gone after the agent starts', 20_000, async () => !/WEFT-DNAT/.test((await run('ip', ['netns', 'exec', h2.ns, 'iptables', '-t', 'nat', '-S'])).stdout));
    // and the container's endpoint is forgotten, its address free again
    const psAfter = JSON.parse((await run(process.execPath, [WEFT_BIN, 'ps', '--json', '--api', B.api])).stdout) as any[];
    assert.ok(!psAfter.some((e) => e.address.split('/')[0] === webIp), `no ghost of web in weft ps: ${JSON.stringify(psAfter)}`);
    const ipamKeys = (await store.list(networkKeys(store, 'prodnet').ipamPrefix)).map((e) => e.key).filter((k) => k.endsWith(`/${webIp}`));
    assert.deepEqual(ipamKeys, [], "web's address released");
    // removed with the container: chain and jumps gone when no port is published
    await dockerB.dockerOk(['run', '-d', '--name', 'web2', '--network', 'prodnet', '-p', '8081:80', 'busybox:local', 'sleep', '600']);
    assert.match((await run('ip', ['netns', 'exec', h2.ns, 'iptables', '-t', 'nat', '-S', 'WEFT-DNAT'])).stdout, /--dport 8081/);
    await dockerB.dockerOk(['rm', '-f', 'web2']);
    const after = await run('ip', ['netns', 'exec', h2.ns, 'iptables', '-t', 'nat', '-S']);
    assert.doesNotMatch(after.stdout, /WEFT-DNAT/);
  });
  await t.test('removal: `docker network rm` on A while B still has containers; re-create refused meanwhile', async () => {
    // Docker drops its own network whatever the driver says; weft keeps the network for B's containers,
    // refuses new containers on it and removes it everywhere when the last one is gone.
    await dockerB.dockerOk(['run', '-d', '--name', 'srv2', '--network', 'prodnet', 'busybox:local', 'sleep', '600']);
    // (earlier, `docker rm web` with the plugin down failed its release, as it must: only what follows counts)
    const logFrom = (await dockerA.log()).length;
    const logFromB = (await dockerB.log()).length;
    await dockerA.dockerOk(['network', 'rm', 'prodnet']);
    assert.equal((await dockerA.docker(['network', 'inspect', 'prodnet'])).code, 1);
    assert.ok((await listLeases(store, 'prodnet')).length === 2, 'leases kept while B has a container');
    assert.match(await dockerB.dockerOk(['exec', 'srv', 'ip', '-o', '-4', 'addr', 'show', 'eth0']), new RegExp(ipB.replace(/\./g, '\\.')));
    const late = await dockerB.docker(['run', '--rm', '--network', 'prodnet', 'busybox:local', 'true']);
    assert.notEqual(late.code, 0);
    assert.match(late.stderr, /weft: network prodnet is being removed \(docker network rm on host h1\); it goes away once its last container is gone/);
    // re-creating it meanwhile is refused (accepting it would let the pending removal delete it later)
    const again = await dockerA.docker(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.40.0.0/16', 'prodnet']);
    assert.notEqual(again.code, 0, `re-create during removal must fail: ${again.stdout}`);
    assert.match(again.stderr, /weft: network prodnet \(10\.40\.0\.0\/16\) is being removed \(docker network rm on host h1 at [^)]+\); it goes away once its last container is gone \(2 endpoint\(s\): .*create it again after that/);
    assert.equal((await dockerA.docker(['network', 'inspect', 'prodnet'])).code, 1, 'no Docker network left behind by the refused create');
    // each release during the removal succeeds (the first leaves srv's address: no "Failed to release")
    await dockerB.dockerOk(['rm', '-f', 'srv2']);
    await dockerB.dockerOk(['rm', '-f', 'srv']);
    await waitFor('prodnet gone from B', 20_000, async () => (await dockerB.docker(['network', 'inspect', 'prodnet'])).code !== 0);
    await waitFor('agents left prodnet', 20_000, async () => {
      const [a, b] = await Promise.all([getJson(A.api, '/status'), getJson(B.api, '/status')]);
      const left = [a, b].flatMap((s) => s.networks.filter((n: any) => n.name === 'prodnet' || n.name === 'small').map((n: any) => `${s.hostId}:${n.name}${n.error ? ` (${n.error})` : ''}`));
      return left.length === 0 || `still joined: ${left.join(', ')}`;
    });
    // nothing left: no veth, no address, no lease, no network, no Docker record
    for (const h of [h1, h2]) {
      const l = await links(h);
      assert.deepEqual(l.filter((n) => /^(wd|wp|vw)/.test(n)), [], `no veth left on ${h.id}: ${l.join(' ')}`);
    }
    assert.deepEqual(await listLeases(store, 'prodnet'), []);
    const left = (await store.list('')).map((e) => e.key).filter((k) => k.includes('prodnet') || k.includes('small') || k.startsWith('docker/'));
    assert.deepEqual(left, []);
    assert.doesNotMatch((await dockerA.log()).slice(logFrom), /Failed to release/, 'dockerd A was told every release succeeded');
    assert.doesNotMatch((await dockerB.log()).slice(logFromB), /Failed to release/, 'dockerd B was told every release succeeded');
    for (const h of [h1, h2]) assert.equal(existsSync(path.join(dir, `state-${h.id}`, 'prodnet', 'subnet.env')), false, `no stale subnet.env on ${h.id}`);
    for (const h of hosts) {
      const lines = h.log.join('').split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { level: number; network?: string; msg: string });
      // the only errors: this host could not join the exhausted network
      const errors = lines.filter((l) => l.level >= 50 && !(l.network === 'small' && l.msg.startsWith('cannot join network')));
      assert.deepEqual(errors, [], `no unexpected errors logged by ${h.tb.id}`);
    }
  });
  await t.test('removal while an agent is down: the stale Docker network goes at agent start', async () => {
    await dockerA.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.40.0.0/16', 'prodnet']);
    await waitFor('prodnet on B again', 20_000, async () => (await dockerB.docker(['network', 'inspect', '-f', '{{.Driver}}', 'prodnet'])).stdout.trim() === 'weft');
    await waitFor('B joined prodnet again', 20_000, async () => (await getJson(B.api, '/status')).networks.some((x: any) => x.name === 'prodnet'));
    assert.ok(existsSync(path.join(dir, 'state-h2', 'prodnet', 'subnet.env')));
    const exited = new Promise((r) => B.agent.once('exit', r));
    process.kill(B.agent.pid!, 'SIGTERM');
    await exited;
    await dockerA.dockerOk(['network', 'rm', 'prodnet']);
    assert.equal((await store.get('docker/networks/prodnet')), undefined, 'removed from the store (no endpoint anywhere)');
    assert.equal((await dockerB.docker(['network', 'inspect', 'prodnet'])).code, 0, 'still on B while its agent is down');
    B = await startAgent(tb, h2, dockerB, storeUrl, dir);
    hosts[1] = B;
    await waitFor('stale prodnet removed from B at agent start', 20_000, async () => (await dockerB.docker(['network', 'inspect', 'prodnet'])).code !== 0);
    assert.equal(existsSync(path.join(dir, 'state-h2', 'prodnet', 'subnet.env')), false, 'stale subnet.env removed at agent start');
    assert.match(B.log.join(''), /removed on another host while this agent was down/);
  });
});
