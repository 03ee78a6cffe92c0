import '../src/backends/all.js';
import { setTimeout as sleep } from 'node:timers/promises';
/**
 * `npm run bench`: one run, one table.
 *  - throughput (iperf3, one stream) and ping RTT container→container across two hosts for the underlay,
 *    host-gw and vxlan made by weft (real agents) and the same paths typed out by hand with `ip`; bgp made
 *    by weft (BIRD-learned routes) beside host-gw by hand (the same kernel path);
 *  - attach latency through the weft agent's API next to the reference CNI `bridge` plugin.
 * Everything lives in test-bed namespaces with a fresh prefix and is removed at the end (also on
 * failure and Ctrl-C). Processes are stopped by PID. Traffic only goes to addresses inside them.
 *
 *   node dist/bench/main.js [--only throughput|attach|dns|cni|docker] [--reps N] [--seconds S] [--pings N]
 *                           [--attaches N] [--cli N] [--no-rules-row] [--backends LIST] [--json] [--verbose]
 *  - wireguard: weft's wireguard backend next to wireguard-go configured by hand with `wg` (same MTU, same
 *    layout: device with the subnet's network address /32, one peer, a route via the device).
 *  - udp: weft's udp backend (weft-udpd) next to socat relaying UDP⇄TUN by hand (iff-no-pi, MTU 1472).
 */
import type { ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetwork } from '../src/config/registry.js';
import { openStore } from '../src/store/index.js';
import { run } from '../src/system/exec.js';
import { ipBatch } from '../src/system/ip.js';
import { inNetns } from '../src/system/netns.js';
import { AgentProcess, WEFT_BIN } from '../src/testbed/agents.js';
import { PID_FILE, stopWireguardGo, wgDeviceName } from '../src/backends/wireguard/index.js';
import { wgSocketPath } from '../src/system/wireguard.js';
import { createTestbed, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import type { WorkerInput, WorkerOutput } from './attach-worker.js';
import { iperf as measureIperf, median, pairedRatio, pct, pingRtts, type NsRun } from '../src/bench/measure.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const WORKER = path.join(HERE, 'attach-worker.js');
const CNI_DIR = '/usr/lib/cni';

// ---------------------------------------------------------------- options

interface Options {
  only?: 'throughput' | 'attach' | SubBench;
  reps: number;
  seconds: number;
  pings: number;
  attaches: number;
  cli: number;
  json: boolean;
  verbose: boolean;
  /** Leave out the "host-gw by hand + FORWARD accepts" row. */
  noRules: boolean;
  /** Which backends' rows (weft and by hand) to build; the underlay and host-gw by hand are always there. */
  backends: Set<string>;
}

/** Benchmarks with a test bed of their own, each in its own file, run by this one in turn (after the rest). */
const SUB_BENCHES = {
  dns: { file: 'dns.js', what: "weft agent's DNS vs dnsmasq" },
  cni: { file: 'cni.js', what: 'weft-cni ADD/DEL vs the reference bridge + host-local plugins' },
  docker: { file: 'docker.js', what: '`docker run` → first ping, weft network vs Docker bridge' },
} as const;
type SubBench = keyof typeof SUB_BENCHES;
const isSubBench = (v: string | undefined): v is SubBench => v !== undefined && Object.hasOwn(SUB_BENCHES, v);

const BENCH_BACKENDS = ['host-gw', 'vxlan', 'wireguard', 'l2', 'bridge', 'macvlan', 'bgp', 'udp'];

function usage(msg?: string): never {
  if (msg) process.stderr.write(`bench: ${msg}\n`);
  process.stderr.write(
    'usage: node dist/bench/main.js [--only throughput|attach|dns|cni|docker] [--reps N (5)] [--seconds S (3)] [--pings N (20)]\n' +
      '                              [--attaches N (100)] [--cli N (20)] [--no-rules-row] [--backends host-gw,vxlan,wireguard,l2,bridge,macvlan,bgp,udp]\n' +
      '                              [--json] [--verbose]\n',
  );
  process.exit(msg ? 2 : 0);
}

function parseArgs(argv: string[]): Options {
  const o: Options = { reps: 5, seconds: 3, pings: 20, attaches: 100, cli: 20, json: false, verbose: false, noRules: false, backends: new Set(BENCH_BACKENDS) };
  const int = (v: string | undefined, name: string, min: number, max: number): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min || n > max) usage(`${name} must be an integer in ${min}..${max}`);
    return n;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    switch (a) {
      case '--only': {
        const v = argv[++i];
        if (v !== 'throughput' && v !== 'attach' && !isSubBench(v)) usage(`--only takes throughput, attach, ${Object.keys(SUB_BENCHES).join(', ')}`);
        o.only = v;
        break;
      }
      case '--reps': o.reps = int(argv[++i], a, 1, 50); break;
      case '--seconds': o.seconds = int(argv[++i], a, 1, 60); break;
      case '--pings': o.pings = int(argv[++i], a, 1, 1000); break;
      case '--attaches': o.attaches = int(argv[++i], a, 1, 200); break;
      case '--cli': o.cli = int(argv[++i], a, 0, 50); break;
      case '--json': o.json = true; break;
      case '--no-rules-row': o.noRules = true; break;
      case '--backends': {
        const list = (argv[++i] ?? '').split(',').filter(Boolean);
        if (!list.length || list.some((b) => !BENCH_BACKENDS.includes(b))) usage(`--backends takes a comma list of ${BENCH_BACKENDS.join(', ')}`);
        o.backends = new Set(list);
        break;
      }
      case '--verbose': case '-v': o.verbose = true; break;
      case '--help': case '-h': usage();
      default: usage(`unknown argument ${a}`);
    }
  }
  return o;
}

// ---------------------------------------------------------------- helpers

let log: (line: string) => void = (line) => process.stderr.write(`bench: ${line}\n`);
let verbose = false;

/** Runs a shell script the way a user types it at a root prompt (commands shown with --verbose). */
async function sh(script: string): Promise<void> {
  if (verbose) log(`$ ${script.trim().split('\n').join('\n$ ')}`);
  await run('sh', ['-ec', script]);
}

// ---------------------------------------------------------------- state and cleanup

const state: { tb?: Testbed; agents: AgentProcess[]; servers: ChildProcess[]; workers: ChildProcess[]; wgSockets: string[]; dir?: string; cleaning?: Promise<void> } = {
  wgSockets: [],
  agents: [],
  servers: [],
  workers: [],
};

async function cleanup(): Promise<void> {
  state.cleaning ??= (async () => {
    for (const c of [...state.workers, ...state.servers]) {
      if (c.pid && c.exitCode === null && c.signalCode === null) {
        try {
          process.kill(c.pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    for (const a of state.agents) await a.stop('SIGTERM').catch(() => {});
    // weft's wireguard-go outlives its agent by design: stop it by the PID file the agent wrote
    for (const a of state.agents) await stopWireguardGo(path.join(a.stateDir, 'bench', PID_FILE), wgDeviceName('bench', a.host.id)).catch(() => undefined);
    await state.tb?.destroy().catch((e: Error) => log(`cleanup: ${e.message}`));
    for (const s of state.wgSockets) fs.rmSync(s, { force: true });
    if (state.dir) fs.rmSync(state.dir, { recursive: true, force: true });
  })();
  return state.cleaning;
}

// ---------------------------------------------------------------- paths

interface Path {
  key: string;
  label: string;
  /** Where traffic starts and where it goes. */
  srcNs: string;
  dstNs: string;
  dstIp: string;
  /** The hand-made path this one is compared with. */
  hand?: string;
}

interface BuildCtx {
  tb: Testbed;
  dir: string;
  opts: Options;
}

/** Two hosts with a weft agent each (own SQLite store, one network), one container attached on each. */
async function weftPair(c: BuildCtx, key: string, backend: string, cidr: string, config: Record<string, unknown> = {}, hand = `${backend}-hand`): Promise<Path> {
  const storeUrl = `sqlite://${path.join(c.dir, `${key}.db`)}`;
  const store = await openStore(storeUrl, { create: true });
  try {
    await createNetwork(store, 'bench', { Network: cidr, SubnetLen: 24, ...config, Backend: { Type: backend } });
  } finally {
    await store.close();
  }
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  const agents: AgentProcess[] = [];
  for (const h of hosts) {
    const a = new AgentProcess(h, { storeUrl, dir: path.join(c.dir, key) });
    state.agents.push(a);
    agents.push(await a.start());
  }
  await Promise.all(agents.map((a) => a.waitForPeers(1, 15_000)));
  const ips: string[] = [];
  const nss: string[] = [];
  for (const a of agents) {
    const ns = await c.tb.addContainer(a.host, 'c1');
    const ep = await a.attach(ns);
    nss.push(ns);
    ips.push(ep.address.split('/')[0]!);
  }
  // routes may come a moment after the leases (bgp: once the BGP session is up)
  await waitFor(`${key}: ${nss[0]} reaches ${ips[1]}`, 20_000, () => c.tb.ping(nss[0]!, ips[1]!, { timeoutSec: 1 }));
  log(`${key}: agents on ${hosts.map((h) => h.ns).join(', ')}; containers ${ips.join(' → ')}`);
  return { key, label: `${backend} (weft)`, srcNs: nss[0]!, dstNs: nss[1]!, dstIp: ips[1]!, hand };
}

/** The bridge and container of one host, typed out by hand: bridge, veth made in the container, address, route. */
function handHostScript(h: TestbedHost, ns: string, subnet: number, base: string, mtu: number): string {
  const gw = `${base}.${subnet}.1`;
  return `
ip -n ${h.ns} link add cbr0 mtu ${mtu} type bridge
ip -n ${h.ns} addr add ${gw}/24 dev cbr0
ip -n ${h.ns} link set cbr0 up
ip -n ${h.ns} link add veth0 mtu ${mtu} type veth peer name eth0 mtu ${mtu} netns ${ns}
ip -n ${h.ns} link set veth0 master cbr0 up
ip -n ${ns} addr add ${base}.${subnet}.2/24 dev eth0
ip -n ${ns} link set eth0 up
ip -n ${ns} route add default via ${gw}
ip netns exec ${h.ns} sysctl -qw net.ipv4.ip_forward=1`;
}

/**
 * The anti-spoofing rules weft puts on a container's bridge port (src/system/antispoof.ts), typed by hand
 * with ebtables for the port veth0 of `h` and the container in `ns` at `ip`: the container's MAC, IPv4
 * source and ARP sender pinned, IPv6 dropped, in the port's chain WEFT-AS-veth0, which WEFT-ANTISPOOF
 * (jumped to from the bridge's INPUT and FORWARD) jumps to for frames from veth0.
 */
function handAntispoofScript(h: TestbedHost, ns: string, ip: string): string {
  const eb = `ip netns exec ${h.ns} ebtables`;
  return `
mac=$(ip netns exec ${ns} cat /sys/class/net/eth0/address)
${eb} -N WEFT-ANTISPOOF -P RETURN
${eb} -I INPUT 1 -j WEFT-ANTISPOOF
${eb} -I FORWARD 1 -j WEFT-ANTISPOOF
${eb} -N WEFT-AS-veth0 -P RETURN
${eb} -A WEFT-AS-veth0 -s ! $mac -j DROP
${eb} -A WEFT-AS-veth0 -p IPv4 --ip-src ! ${ip} -j DROP
${eb} -A WEFT-AS-veth0 -p ARP --arp-ip-src ! ${ip} -j DROP
${eb} -A WEFT-AS-veth0 -p ARP --arp-mac-src ! $mac -j DROP
${eb} -A WEFT-AS-veth0 -p IPv6 -j DROP
${eb} -A WEFT-ANTISPOOF -i veth0 -j WEFT-AS-veth0`;
}

/** The label suffix of a by-hand path that carries weft's anti-spoofing rules. */
const AS = ' + anti-spoofing ebtables';

/** What a by-hand path adds to the bare one: nothing, weft's iptables FORWARD accepts, or its anti-spoofing. */
type HandExtra = 'none' | 'forward-rules' | 'antispoof';

/**
 * host-gw by hand: bridge, veth, address, default route, forwarding, one route to the peer's subnet.
 * `forward-rules` adds the two iptables FORWARD accepts weft installs, `antispoof` weft's anti-spoofing
 * ebtables rules (typed as a user would): the same path with netfilter hooked in, to tell each one's cost
 * apart from anything else weft does.
 */
async function handHostGw(c: BuildCtx, extra: HandExtra = 'none'): Promise<Path> {
  const { base, key, label } = {
    none: { base: '10.245', key: 'host-gw-hand', label: 'host-gw (by hand)' },
    'forward-rules': { base: '10.243', key: 'host-gw-hand-fw', label: 'host-gw (by hand + iptables FORWARD accepts)' },
    antispoof: { base: '10.239', key: 'host-gw-hand-as', label: 'host-gw (by hand + anti-spoofing ebtables)' },
  }[extra];
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  const nss: string[] = [];
  for (const [i, h] of hosts.entries()) {
    const ns = await c.tb.addContainer(h, 'c1');
    nss.push(ns);
    const peer = hosts[1 - i]!;
    const more =
      extra === 'forward-rules'
        ? `
ip netns exec ${h.ns} iptables -A FORWARD -s ${base}.0.0/16 -j ACCEPT
ip netns exec ${h.ns} iptables -A FORWARD -d ${base}.0.0/16 -j ACCEPT`
        : extra === 'antispoof'
          ? handAntispoofScript(h, ns, `${base}.${i + 1}.2`)
          : '';
    await sh(`${handHostScript(h, ns, i + 1, base, c.tb.mtu)}
ip -n ${h.ns} route add ${base}.${2 - i}.0/24 via ${peer.ip} dev eth0${more}`);
  }
  log(`${key}: ${hosts.map((h) => h.ns).join(', ')}; containers ${base}.1.2 → ${base}.2.2`);
  return { key, label, srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.2.2`, ...(extra === 'none' ? {} : { hand: 'host-gw-hand' }) };
}

/** vxlan by hand (flannel's layout); `antispoof` adds weft's anti-spoofing ebtables rules, typed by hand. */
async function handVxlan(c: BuildCtx, extra: 'none' | 'antispoof' = 'none'): Promise<Path> {
  const base = extra === 'antispoof' ? '10.238' : '10.247';
  const key = extra === 'antispoof' ? 'vxlan-hand-as' : 'vxlan-hand';
  const mtu = c.tb.mtu - 50;
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  const mac = (i: number) => `02:00:0a:f7:0${i + 1}:00`;
  const nss: string[] = [];
  for (const [i, h] of hosts.entries()) {
    const ns = await c.tb.addContainer(h, 'c1');
    nss.push(ns);
    const j = 1 - i;
    const peer = hosts[j]!;
    // flannel's layout: VTEP device with the subnet's network address /32, per peer fdb + neigh + onlink route
    await sh(`${handHostScript(h, ns, i + 1, base, mtu)}
ip -n ${h.ns} link add flannel.1 address ${mac(i)} mtu ${mtu} type vxlan id 1 local ${h.ip} dev eth0 dstport 8472 nolearning
ip -n ${h.ns} addr add ${base}.${i + 1}.0/32 dev flannel.1
ip -n ${h.ns} link set flannel.1 up
bridge -n ${h.ns} fdb append ${mac(j)} dev flannel.1 dst ${peer.ip} self permanent
ip -n ${h.ns} neigh add ${base}.${j + 1}.0 lladdr ${mac(j)} dev flannel.1 nud permanent
ip -n ${h.ns} route add ${base}.${j + 1}.0/24 via ${base}.${j + 1}.0 dev flannel.1 onlink${extra === 'antispoof' ? handAntispoofScript(h, ns, `${base}.${i + 1}.2`) : ''}`);
  }
  log(`${key}: ${hosts.map((h) => h.ns).join(', ')}; containers ${base}.1.2 → ${base}.2.2`);
  return extra === 'antispoof'
    ? { key, label: 'vxlan (by hand + anti-spoofing ebtables)', srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.2.2`, hand: 'vxlan-hand' }
    : { key, label: 'vxlan (by hand)', srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.2.2` };
}

/**
 * bridge by hand: eth0 enslaved to a bridge that takes its MAC, address and default route; a container on the
 * segment, its port with weft's anti-spoofing rules typed by hand (weft's bridge ports carry them).
 */
async function handBridge(c: BuildCtx): Promise<Path> {
  const base = c.tb.underlayCidr.split('.').slice(0, 3).join('.');
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  const nss: string[] = [];
  for (const [i, h] of hosts.entries()) {
    const ns = await c.tb.addContainer(h, 'c1');
    nss.push(ns);
    await sh(`
ip -n ${h.ns} link add cbr0 mtu ${c.tb.mtu} type bridge
ip -n ${h.ns} link set cbr0 address $(ip -n ${h.ns} -br link show eth0 | awk '{print $3}') up
ip -n ${h.ns} link set eth0 master cbr0
ip -n ${h.ns} addr del ${h.ip}/24 dev eth0
ip -n ${h.ns} addr add ${h.ip}/24 dev cbr0
ip -n ${h.ns} route replace default via ${c.tb.gateway} dev cbr0
ip -n ${h.ns} link add veth0 mtu ${c.tb.mtu} type veth peer name eth0 mtu ${c.tb.mtu} netns ${ns}
ip -n ${h.ns} link set veth0 master cbr0 up
ip -n ${ns} addr add ${base}.${200 + i}/24 dev eth0
ip -n ${ns} link set eth0 up
ip -n ${ns} route add default via ${h.ip}${handAntispoofScript(h, ns, `${base}.${200 + i}`)}`);
  }
  log(`bridge-hand: ${hosts.map((h) => h.ns).join(', ')}; containers ${base}.200 → ${base}.201`);
  return { key: 'bridge-hand', label: `bridge (by hand${AS})`, srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.201` };
}

/**
 * l2 by hand: one /16 across both hosts; on each a bridge with the shared gateway, a VXLAN port
 * (nolearning) with an all-zeros FDB entry to the peer and the peer container's MAC, a veth container
 * whose port has weft's anti-spoofing rules typed by hand.
 */
async function handL2(c: BuildCtx): Promise<Path> {
  const base = '10.254';
  const mtu = c.tb.mtu - 50;
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  const cmac = (i: number) => `02:42:0a:fa:00:0${i + 2}`;
  const nss: string[] = [];
  for (const [i, h] of hosts.entries()) {
    const ns = await c.tb.addContainer(h, 'c1');
    nss.push(ns);
    const peer = hosts[1 - i]!;
    await sh(`
ip -n ${h.ns} link add cbr0 mtu ${mtu} type bridge
ip -n ${h.ns} addr add ${base}.0.1/16 dev cbr0
ip -n ${h.ns} link set cbr0 up
ip -n ${h.ns} link add vx0 mtu ${mtu} type vxlan id 42 local ${h.ip} dev eth0 dstport 4789 nolearning
ip -n ${h.ns} link set vx0 master cbr0 up
bridge -n ${h.ns} link set dev vx0 neigh_suppress on
bridge -n ${h.ns} fdb append 00:00:00:00:00:00 dev vx0 dst ${peer.ip} self permanent
bridge -n ${h.ns} fdb replace ${cmac(1 - i)} dev vx0 dst ${peer.ip} self permanent
ip -n ${h.ns} link add veth0 mtu ${mtu} type veth peer name eth0 mtu ${mtu} address ${cmac(i)} netns ${ns}
ip -n ${h.ns} link set veth0 master cbr0 up
ip -n ${ns} addr add ${base}.0.${i + 2}/16 dev eth0
ip -n ${ns} link set eth0 up
ip -n ${ns} route add default via ${base}.0.1${handAntispoofScript(h, ns, `${base}.0.${i + 2}`)}`);
  }
  log(`l2-hand: ${hosts.map((h) => h.ns).join(', ')}; containers ${base}.0.2 → ${base}.0.3`);
  return { key: 'l2-hand', label: `l2 (by hand${AS})`, srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.0.3` };
}

/** macvlan by hand: a macvlan (bridge mode) on each host's eth0 made inside the container, one /16. */
async function handMacvlan(c: BuildCtx): Promise<Path> {
  const base = '10.252';
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  const nss: string[] = [];
  for (const [i, h] of hosts.entries()) {
    const ns = await c.tb.addContainer(h, 'c1');
    nss.push(ns);
    await sh(`
ip -n ${h.ns} link add link eth0 name mv0 netns ${ns} type macvlan mode bridge
ip -n ${ns} link set mv0 name eth0
ip -n ${ns} addr add ${base}.${i + 1}.2/16 dev eth0
ip -n ${ns} link set eth0 up`);
  }
  log(`macvlan-hand: ${hosts.map((h) => h.ns).join(', ')}; containers ${base}.1.2 → ${base}.2.2`);
  return { key: 'macvlan-hand', label: 'macvlan (by hand)', srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.2.2` };
}

/**
 * wireguard-go configured by hand with `wg`, as a user would type it: keys from `wg genkey`, wireguard-go in
 * the foreground, one peer with the other host's subnet, the subnet's network address /32 on the device, MTU
 * underlay − 80 and a route to the peer's subnet via the device; the container's port has weft's
 * anti-spoofing rules typed by hand.
 */
async function handWireguard(c: BuildCtx): Promise<Path> {
  const base = '10.249';
  const mtu = c.tb.mtu - 80;
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  // wireguard-go's sockets are machine-wide: names unique to this test bed
  const devs = hosts.map((_, i) => `bwg${c.tb.prefix}${i}`);
  const keyFiles = hosts.map((_, i) => path.join(c.dir, `hand-wg${i}.key`));
  const pubs: string[] = [];
  for (const f of keyFiles) {
    const priv = (await run('wg', ['genkey'])).stdout.trim();
    fs.writeFileSync(f, `${priv}\n`, { mode: 0o600 });
    pubs.push((await run('wg', ['pubkey'], { input: priv })).stdout.trim());
  }
  for (const [i, h] of hosts.entries()) {
    state.wgSockets.push(wgSocketPath(devs[i]!));
    c.tb.spawn(h.ns, ['wireguard-go', '-f', devs[i]!], { env: { ...process.env, LOG_LEVEL: 'error' } });
  }
  for (const d of devs) {
    const until = Date.now() + 10_000;
    while (!fs.existsSync(wgSocketPath(d))) {
      if (Date.now() > until) throw new Error(`wireguard-go ${d} did not start`);
      await sleep(20);
    }
  }
  const nss: string[] = [];
  for (const [i, h] of hosts.entries()) {
    const ns = await c.tb.addContainer(h, 'c1');
    nss.push(ns);
    const j = 1 - i;
    await sh(`${handHostScript(h, ns, i + 1, base, mtu)}
ip netns exec ${h.ns} wg set ${devs[i]} listen-port 51820 private-key ${keyFiles[i]} peer ${pubs[j]} endpoint ${hosts[j]!.ip}:51820 allowed-ips ${base}.${j + 1}.0/24
ip -n ${h.ns} addr add ${base}.${i + 1}.0/32 dev ${devs[i]}
ip -n ${h.ns} link set ${devs[i]} mtu ${mtu} up
ip -n ${h.ns} route add ${base}.${j + 1}.0/24 dev ${devs[i]}${handAntispoofScript(h, ns, `${base}.${i + 1}.2`)}`);
  }
  log(`wireguard-hand: ${hosts.map((h) => h.ns).join(', ')}; containers ${base}.1.2 → ${base}.2.2`);
  return { key: 'wireguard-hand', label: `wireguard-go (by hand with wg${AS})`, srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.2.2` };
}

/**
 * The userspace reference for the udp backend: socat relaying between a TUN device and UDP port 8285 on each
 * host, typed as in flannel-era how-tos but fair to socat: iff-no-pi (no 4-byte header) and the TUN MTU
 * underlay − 28 (no fragments), a route for the peer's subnet via the device; containers with the same MTU.
 */
async function handSocat(c: BuildCtx): Promise<Path> {
  const base = '10.241';
  const mtu = c.tb.mtu - 28;
  const hosts = [await c.tb.addHost(), await c.tb.addHost()];
  const nss: string[] = [];
  for (const [i, h] of hosts.entries()) {
    const ns = await c.tb.addContainer(h, 'c1');
    nss.push(ns);
    const j = 1 - i;
    const tun = `stun${i}`;
    // socat's connected UDP socket dies on the ICMP port-unreachable that the first packet (an IPv6 router
    // solicitation from the new TUN) earns while the peer's socat is not up yet: no IPv6 on these hosts
    await sh(`ip netns exec ${h.ns} sysctl -qw net.ipv6.conf.all.disable_ipv6=1 net.ipv6.conf.default.disable_ipv6=1`);
    const argv = ['socat', `UDP:${hosts[j]!.ip}:8285,bind=:8285`, `TUN:${base}.${i + 1}.0/16,tun-name=${tun},iff-up,iff-no-pi`];
    if (verbose) log(`$ ip netns exec ${h.ns} ${argv.join(' ')} &`);
    state.servers.push(c.tb.spawn(h.ns, argv));
    const until = Date.now() + 10_000;
    while ((await run('ip', ['-n', h.ns, 'link', 'show', tun], { allowFail: true })).code !== 0) {
      if (Date.now() > until) throw new Error(`socat did not make ${tun} on ${h.ns}`);
      await sleep(20);
    }
    await sh(`${handHostScript(h, ns, i + 1, base, mtu)}
ip -n ${h.ns} link set ${tun} mtu ${mtu}
ip -n ${h.ns} route replace ${base}.${j + 1}.0/24 dev ${tun}`);
  }
  log(`udp-hand (socat): ${hosts.map((h) => h.ns).join(', ')}; containers ${base}.1.2 → ${base}.2.2`);
  return { key: 'udp-hand', label: 'socat UDP⇄TUN by hand', srcNs: nss[0]!, dstNs: nss[1]!, dstIp: `${base}.2.2` };
}

// ---------------------------------------------------------------- measurements

const nsRun = (tb: Testbed): NsRun => (ns, argv) => tb.exec(ns, argv, { allowFail: true });
const iperf = (tb: Testbed, p: Path, seconds: number) => measureIperf(nsRun(tb), { key: p.key, srcNs: p.srcNs, dstIp: p.dstIp }, seconds);
const ping = (tb: Testbed, p: Path, count: number) => pingRtts(nsRun(tb), { key: p.key, srcNs: p.srcNs, dstIp: p.dstIp }, count);

interface PathResult {
  key: string;
  label: string;
  gbps: number[];
  rttUs: number[];
  gbpsMedian: number;
  rttMedianUs: number;
  /** The hand-made path the × by hand ratios are against. */
  handKey?: string;
  gbpsVsHand?: number;
  rttVsHand?: number;
  gbpsVsUnderlay?: number;
  rttVsUnderlay?: number;
}

async function throughput(c: BuildCtx): Promise<PathResult[]> {
  const { tb, opts } = c;
  log('building the paths (2 hosts each): underlay, host-gw by hand (± FORWARD rules, ± anti-spoofing) and by weft, vxlan by hand (± anti-spoofing) and by weft, the other backends by hand and by weft');
  const hgHand = await handHostGw(c);
  const hgHosts = tb.hosts.slice(-2);
  const underlay: Path = { key: 'underlay', label: 'underlay (host → host)', srcNs: hgHosts[0]!.ns, dstNs: hgHosts[1]!.ns, dstIp: hgHosts[1]!.ip };
  const paths = [underlay];
  const want = opts.backends;
  // weft's veth-bridge ports carry anti-spoofing rules: its host-gw and vxlan rows are compared with the
  // same path by hand with the same rules, and that one with the bare path (the cost of anti-spoofing).
  // Each path sits next to the one it is compared with (see the rounds below).
  if (want.has('host-gw')) {
    if (!opts.noRules) paths.push(await handHostGw(c, 'forward-rules'));
    paths.push(hgHand, await handHostGw(c, 'antispoof'));
    paths.push(await weftPair(c, 'host-gw-weft', 'host-gw', '10.244.0.0/16', {}, 'host-gw-hand-as'));
  } else paths.push(hgHand);
  if (want.has('vxlan')) paths.push(await handVxlan(c), await handVxlan(c, 'antispoof'), await weftPair(c, 'vxlan-weft', 'vxlan', '10.246.0.0/16', {}, 'vxlan-hand-as'));
  if (want.has('wireguard')) paths.push(await handWireguard(c), await weftPair(c, 'wireguard-weft', 'wireguard', '10.250.0.0/16'));
  if (want.has('l2')) paths.push(await handL2(c), await weftPair(c, 'l2-weft', 'l2', '10.253.0.0/16'));
  if (want.has('bridge')) {
    const u24 = c.tb.underlayCidr.split('.').slice(0, 3).join('.');
    paths.push(await handBridge(c), await weftPair(c, 'bridge-weft', 'bridge', c.tb.underlayCidr, { SubnetLen: 28, SubnetMin: `${u24}.128` }));
  }
  if (want.has('macvlan')) paths.push(await handMacvlan(c), await weftPair(c, 'macvlan-weft', 'macvlan', '10.251.0.0/16'));
  // bgp: BIRD-learned routes, the same kernel path as host-gw by hand (with the same anti-spoofing rules)
  if (want.has('bgp')) {
    if (!want.has('host-gw')) paths.push(await handHostGw(c, 'antispoof'));
    paths.push(await weftPair(c, 'bgp-weft', 'bgp', '10.242.0.0/16', {}, 'host-gw-hand-as'));
  }
  if (want.has('udp')) paths.push(await handSocat(c), await weftPair(c, 'udp-weft', 'udp', '10.240.0.0/16'));

  for (const p of paths) {
    const srv = tb.spawn(p.dstNs, ['iperf3', '-s', '-B', p.dstIp]);
    state.servers.push(srv);
  }
  await sleep(300);
  for (const p of paths) await ping(tb, p, 2); // warm up ARP/neighbour entries; fails loudly if a path is broken

  const res = new Map<string, { gbps: number[]; rtt: number[] }>(paths.map((p) => [p.key, { gbps: [], rtt: [] }]));
  const rounds = opts.reps;
  log(`throughput: ${rounds} rounds × ${paths.length} paths × ${opts.seconds + 1} s (first second omitted), interleaved`);
  for (let r = 0; r < rounds; r++) {
    // A path and the one it is compared with are next to each other in `paths`; every other round runs the
    // list backwards, so each pair runs back to back (the same load on a shared machine) in both orders.
    const order = r % 2 ? [...paths].reverse() : paths;
    for (const p of order) res.get(p.key)!.gbps.push(await iperf(tb, p, opts.seconds));
    log(`  round ${r + 1}/${rounds}: ${paths.map((p) => `${p.key} ${res.get(p.key)!.gbps.at(-1)!.toFixed(2)}`).join(' · ')} Gbit/s`);
  }
  const pingRounds = Math.min(opts.pings, 4);
  const per = Math.ceil(opts.pings / pingRounds);
  for (let r = 0; r < pingRounds; r++) {
    const order = paths.map((_, i) => paths[(i + r) % paths.length]!);
    for (const p of order) res.get(p.key)!.rtt.push(...(await ping(tb, p, per)));
  }

  const out: PathResult[] = paths.map((p) => {
    const x = res.get(p.key)!;
    return { key: p.key, label: p.label, gbps: x.gbps, rttUs: x.rtt, gbpsMedian: median(x.gbps), rttMedianUs: median(x.rtt) };
  });
  const byKey = new Map(out.map((r) => [r.key, r]));
  const u = byKey.get('underlay')!;
  // throughput ratios: the median of the per-round ratios (each round's pair ran back to back)
  for (const [i, r] of out.entries()) {
    const hand = paths[i]!.hand ? byKey.get(paths[i]!.hand!) : undefined;
    if (hand) {
      r.handKey = hand.key;
      r.gbpsVsHand = pairedRatio(r.gbps, hand.gbps);
      r.rttVsHand = r.rttMedianUs / hand.rttMedianUs;
    }
    if (r !== u) {
      r.gbpsVsUnderlay = pairedRatio(r.gbps, u.gbps);
      r.rttVsUnderlay = r.rttMedianUs / u.rttMedianUs;
    }
  }
  return out;
}

interface AttachResult {
  n: number;
  weft: { medianMs: number; p90Ms: number; minMs: number };
  cni: { medianMs: number; p90Ms: number; minMs: number };
  ratio: number;
  cli?: { n: number; medianMs: number; p90Ms: number };
  cniPlugin: string;
}

function stats(xs: number[]) {
  return { medianMs: median(xs), p90Ms: pct(xs, 90), minMs: Math.min(...xs) };
}

async function attach(c: BuildCtx): Promise<AttachResult> {
  const { tb, opts, dir } = c;
  const plugin = path.join(CNI_DIR, 'bridge');
  if (!fs.existsSync(plugin) || !fs.existsSync(path.join(CNI_DIR, 'host-local'))) {
    throw new Error(`the reference plugins ${plugin} and host-local are missing (Debian containernetworking-plugins)`);
  }
  const storeUrl = `sqlite://${path.join(dir, 'attach.db')}`;
  const store = await openStore(storeUrl, { create: true });
  try {
    await createNetwork(store, 'bench', { Network: '10.248.0.0/16', SubnetLen: 24, Backend: { Type: 'host-gw' } });
  } finally {
    await store.close();
  }
  const h = await tb.addHost();
  const agent = new AgentProcess(h, { storeUrl, dir: path.join(dir, 'attach') });
  state.agents.push(agent);
  await agent.start();
  await agent.waitForPeers(0, 15_000);

  const warmup = 3;
  const n = opts.attaches + warmup;
  const names = (tag: string, k: number) => Array.from({ length: k }, (_, i) => `${h.ns}-${tag}${String(i).padStart(3, '0')}`);
  const weftNs = names('w', n);
  const cniNs = names('b', n);
  const cliNs = names('x', opts.cli);
  const all = [...weftNs, ...cniNs, ...cliNs];
  log(`attach: making ${all.length} container namespaces on ${h.ns} (before any timing)`);
  for (let i = 0; i < all.length; i += 100) await ipBatch(all.slice(i, i + 100).map((ns) => `netns add ${ns}`));
  h.containers.push(...all);

  const input: WorkerInput = {
    api: agent.api,
    weftNs,
    cniNs,
    cliNs,
    warmup,
    cniPlugin: plugin,
    cniPath: CNI_DIR,
    cniConf: {
      cniVersion: '1.0.0',
      name: 'benchcni',
      type: 'bridge',
      bridge: 'cni0',
      isGateway: true,
      ipMasq: false,
      mtu: 1500,
      ipam: { type: 'host-local', subnet: '10.249.0.0/24', dataDir: path.join(dir, 'cni-ipam') },
    },
    weftBin: WEFT_BIN,
  };
  log(`attach: ${opts.attaches} serial attaches each (after ${warmup} warm-up), weft API and CNI bridge interleaved; then ${opts.cli} × 'weft attach' CLI`);
  const [cmd, args] = inNetns(h.ns, process.execPath, [WORKER]);
  const { spawn } = await import('node:child_process');
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  state.workers.push(child);
  const outBufs: Buffer[] = [];
  const errBufs: Buffer[] = [];
  child.stdout!.on('data', (b: Buffer) => outBufs.push(b));
  child.stderr!.on('data', (b: Buffer) => errBufs.push(b));
  child.stdin!.end(JSON.stringify(input));
  const code = await new Promise<number | null>((resolve) => child.on('close', resolve));
  if (code !== 0) throw new Error(`attach worker failed (exit ${code}): ${Buffer.concat(errBufs).toString().trim()}`);
  const w = JSON.parse(Buffer.concat(outBufs).toString()) as WorkerOutput;
  if (verbose) log(`attach samples: weft ${JSON.stringify(w.sample.weft)} cni ${JSON.stringify(w.sample.cni)}`);
  const weft = stats(w.weftMs);
  const cni = stats(w.cniMs);
  return {
    n: w.weftMs.length,
    weft,
    cni,
    ratio: weft.medianMs / cni.medianMs,
    ...(w.cliMs.length ? { cli: { n: w.cliMs.length, medianMs: median(w.cliMs), p90Ms: pct(w.cliMs, 90) } } : {}),
    cniPlugin: `${plugin} + host-local`,
  };
}

// ---------------------------------------------------------------- output

const f2 = (x: number) => x.toFixed(2);
const f0 = (x: number) => x.toFixed(0);
const ratio = (x: number | undefined) => (x === undefined ? '—' : `${x.toFixed(3)}×`);

function markdown(o: Options, tp: PathResult[] | undefined, at: AttachResult | undefined, meta: Record<string, string>): string {
  const lines: string[] = [];
  lines.push(`weft bench — ${meta.date} — \`${meta.command}\` — ${meta.machine}`, '');
  if (tp) {
    lines.push(
      `Throughput: iperf3, one TCP stream, ${o.seconds} s (+1 s omitted), median of ${o.reps} interleaved rounds; a × is the median of the per-round ratios (the two paths ran back to back). RTT: median of ${tp[0]!.rttUs.length} pings. Container → container across two hosts.`,
      '',
      '| path | Gbit/s (median) | min–max | × by hand | by hand = | × underlay | RTT µs (median) | RTT × by hand |',
      '|---|---:|---:|---:|---|---:|---:|---:|',
    );
    const labels = new Map(tp.map((r) => [r.key, r.label]));
    for (const r of tp) {
      lines.push(
        `| ${r.label} | ${f2(r.gbpsMedian)} | ${f2(Math.min(...r.gbps))}–${f2(Math.max(...r.gbps))} | ${ratio(r.gbpsVsHand)} | ${r.handKey ? labels.get(r.handKey) : '—'} | ${r.key === 'underlay' ? '1' : ratio(r.gbpsVsUnderlay)} | ${f0(r.rttMedianUs)} | ${ratio(r.rttVsHand)} |`,
      );
    }
    lines.push(
      '',
      'Target: weft ≥ 0.98× the hand-made path with the same rules. A "by hand + …" row against the bare path by hand is the cost of those rules (anti-spoofing is a security feature weft keeps).',
      '',
    );
  }
  if (at) {
    lines.push(
      `Attach latency: ${at.n} serial attaches of a fresh namespace (made before timing), interleaved, timed inside the host namespace.`,
      '',
      '| attach | median ms | p90 ms | min ms | × reference |',
      '|---|---:|---:|---:|---:|',
      `| weft agent API (\`POST /attach\` on the unix socket) | ${f2(at.weft.medianMs)} | ${f2(at.weft.p90Ms)} | ${f2(at.weft.minMs)} | ${ratio(at.ratio)} |`,
      `| reference CNI \`bridge\` + \`host-local\` (exec, CNI_COMMAND=ADD) | ${f2(at.cni.medianMs)} | ${f2(at.cni.p90Ms)} | ${f2(at.cni.minMs)} | 1× |`,
    );
    if (at.cli) lines.push(`| \`weft attach\` CLI end to end (node spawn included), n=${at.cli.n} | ${f2(at.cli.medianMs)} | ${f2(at.cli.p90Ms)} | — | (info) |`);
    lines.push('', 'Target: weft API ≤ 0.5× the reference plugin (issue 16: no process spawned on the attach path).', '');
  }
  return lines.join('\n');
}

// ---------------------------------------------------------------- main

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  verbose = opts.verbose;
  if (process.getuid?.() !== 0) throw new Error('needs root (network namespaces)');
  const started = new Date();
  const onSignal = (sig: NodeJS.Signals) => {
    log(`${sig}: cleaning up`);
    cleanup().finally(() => process.exit(130));
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);

  // DNS, CNI and Docker rows come from their own files (each builds its own test bed)
  const sub = async (name: SubBench): Promise<string | undefined> => {
    if (opts.only !== undefined && opts.only !== name) return undefined;
    log(`${name}: ${SUB_BENCHES[name].what} (bench/${SUB_BENCHES[name].file})`);
    const r = await run(process.execPath, [path.join(HERE, SUB_BENCHES[name].file), ...(opts.json ? ['--json'] : [])], { allowFail: true });
    if (r.code !== 0) throw new Error(`bench/${SUB_BENCHES[name].file} failed: ${r.stderr.trim().split('\n').slice(-5).join('\n')}`);
    return r.stdout.trim();
  };
  const subs = async (): Promise<Partial<Record<SubBench, string>>> => {
    const out: Partial<Record<SubBench, string>> = {};
    for (const name of Object.keys(SUB_BENCHES) as SubBench[]) {
      const r = await sub(name);
      if (r !== undefined) out[name] = r;
    }
    return out;
  };
  if (isSubBench(opts.only)) {
    const r = await subs();
    process.stdout.write(`${r[opts.only]}\n`);
    return;
  }

  const tb = await createTestbed({});
  state.tb = tb;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `weft-bench-${tb.prefix}-`));
  state.dir = dir;
  log(`test bed prefix ${tb.prefix} (namespaces ${tb.prefix}-*), underlay ${tb.underlayCidr}, files in ${dir}`);
  const ctx: BuildCtx = { tb, dir, opts };

  let tp: PathResult[] | undefined;
  let at: AttachResult | undefined;
  try {
    if (opts.only !== 'attach') tp = await throughput(ctx);
    if (opts.only !== 'throughput') at = await attach(ctx);
  } finally {
    await cleanup();
    const left = (await run('ip', ['netns', 'list'])).stdout.split('\n').filter((l) => l.startsWith(tb.prefix + '-'));
    if (left.length) log(`warning: ${left.length} namespaces left behind: ${left.join(', ')}`);
  }

  const meta = {
    date: started.toISOString().replace(/\.\d+Z$/, 'Z'),
    command: `node dist/bench/main.js${process.argv.length > 2 ? ' ' + process.argv.slice(2).join(' ') : ''}`,
    machine: `${os.cpus().length} CPU (${os.cpus()[0]?.model.trim() ?? '?'}), Linux ${os.release()}, Node ${process.version}`,
  };
  const more = await subs();
  if (opts.json) {
    const parsed = Object.fromEntries(Object.entries(more).map(([k, v]) => [k, JSON.parse(v)]));
    process.stdout.write(JSON.stringify({ ...meta, options: opts, throughput: tp, attach: at, ...parsed }, null, 2) + '\n');
  } else {
    process.stdout.write([markdown(opts, tp, at, meta), ...Object.values(more)].join('\n\n') + '\n');
  }
}

main().catch(async (e: unknown) => {
  log(`failed: ${(e as Error).stack ?? e}`);
  await cleanup().catch(() => {});
  process.exit(1);
});
