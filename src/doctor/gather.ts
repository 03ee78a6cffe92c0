import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { callAgent } from '../agent/client.js';
import type { AgentStatus } from '../agent/types.js';
import { getNetwork } from '../config/registry.js';
import { listLeases } from '../lease/leases.js';
import { DEFAULT_STORE_URL, openStore, parseStoreUrl } from '../store/index.js';
import type { Store } from '../store/types.js';
import { listNetworkNames } from '../store/layout.js';
import { run } from '../system/exec.js';
import { bridgeJson, ipJson, type IpLink } from '../system/ip.js';
import { FORWARD_CHAIN, listChainRules } from '../system/iptables.js';
import { pingDf, pingOnce, routeGet } from '../system/ping.js';
import { gatewayCidr } from '../ipam/addresses.js';
import { backendModule } from '../backends/all.js';
import type { NetworkConfig } from '../config/types.js';
import { readSysctl } from '../system/sysctl.js';
import { inNetns, resolveNetns, type NsOpts } from '../system/netns.js';
import { readEndpointRecords } from './endpoints.js';
import type { DoctorFacts, EndpointFact, FdbFact, NeighFact, PathFact, RouteFact, StoreNetworkFacts } from './types.js';
import type { Endpoint } from '../agent/types.js';

/**
 * The kernel-facing half of `weft doctor`: reads (never changes) what the judging needs, on this host
 * (or in `netns`). Every part that cannot be read is recorded as such instead of failing the whole run.
 */

export interface GatherOptions extends NsOpts {
  api: string;
  /** Store URL; default $WEFT_STORE, else the default SQLite file when it exists here. */
  storeUrl?: string;
  /** Also ping this container address once from this host and explain a failure. */
  ping?: string;
  /** Give up on the agent / the store after this long (ms). */
  timeoutMs?: number;
  /** Skip the per-peer path probes (pings to each peer's underlay address and gateway). */
  noProbe?: boolean;
}

const msg = (e: unknown) => (e instanceof Error ? e.message : String(e));

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let t: NodeJS.Timeout | undefined;
  const timeout = new Promise<never>((_, reject) => {
    t = setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms);
  });
  return Promise.race([p, timeout]).finally(() => clearTimeout(t));
}

/**
 * Into `facts.store`: the networks' configs and leases. Then, once the agent answered (`status`), into
 * `facts.endpointRecords`: this host's endpoint and IPAM records in the networks it runs. Each part gives up after `ms`.
 */
async function readStore(url: string, status: Promise<AgentStatus | undefined>, facts: DoctorFacts, ms: number): Promise<void> {
  let store: Store | undefined;
  const networks = (async () => {
    store = await openStore(url);
    const out: StoreNetworkFacts[] = [];
    for (const name of await listNetworkNames(store)) {
      const config = await getNetwork(store, name);
      out.push({ name, cidr: config.Network, backend: config.Backend, leases: await listLeases(store, name) });
    }
    return out;
  })();
  try {
    facts.store = { url, networks: await withTimeout(networks, ms, `the store ${url}`) };
  } catch (e) {
    facts.store = { url, error: msg(e), networks: [] };
    void networks.catch(() => undefined).finally(() => store?.close().catch(() => undefined));
    return;
  }
  try {
    const st = await status;
    if (!st) return;
    try {
      facts.endpointRecords = { networks: await withTimeout(readEndpointRecords(store!, st.hostId, st.publicIp, st.networks, facts.store.networks), ms, `the store ${url}`) };
    } catch (e) {
      facts.endpointRecords = { error: `cannot read this host's endpoint records: ${msg(e)}`, networks: [] };
    }
  } finally {
    await store!.close().catch(() => undefined);
  }
}

/** Which store to read: the given URL, else $WEFT_STORE, else the default SQLite file if it exists here. */
export function pickStoreUrl(given?: string): string | undefined {
  const url = given || process.env.WEFT_STORE;
  if (url) return url;
  const p = parseStoreUrl(DEFAULT_STORE_URL);
  return p.kind === 'sqlite' && existsSync(p.path) ? DEFAULT_STORE_URL : undefined;
}

export async function gatherFacts(o: GatherOptions): Promise<DoctorFacts> {
  const timeoutMs = o.timeoutMs ?? 5000;
  const sys: NsOpts = o.netns === undefined ? {} : { netns: o.netns };
  const facts: DoctorFacts = {
    now: Date.now(),
    api: o.api,
    agent: {},
    links: [],
    routes: [],
    neigh: {},
    fdb: {},
    rpFilter: {},
    iptables: {},
  };

  const agent = withTimeout(callAgent<AgentStatus>(o.api, 'GET', '/status'), timeoutMs, `the agent at ${o.api}`)
    .then((status) => void (facts.agent = { status }))
    .catch((e) => void (facts.agent = { error: msg(e) }));

  const storeUrl = pickStoreUrl(o.storeUrl);
  const store = storeUrl
    ? (() => {
        // never create a SQLite file by looking at it
        const loc = (() => {
          try {
            return parseStoreUrl(storeUrl);
          } catch {
            return undefined;
          }
        })();
        if (loc?.kind === 'sqlite' && !existsSync(loc.path)) {
          facts.store = { url: storeUrl, error: `${loc.path} does not exist`, networks: [] };
          return Promise.resolve();
        }
        return readStore(storeUrl, agent.then(() => facts.agent.status), facts, timeoutMs);
      })()
    : Promise.resolve();

  const kernel = (async () => {
    facts.links = await ipJson<IpLink[]>(['-details', 'addr', 'show'], sys);
    facts.routes = await ipJson<RouteFact[]>(['-4', 'route', 'show'], sys);
    facts.ipForward = await readSysctl('net.ipv4.ip_forward', sys);
    try {
      facts.iptables.forward = await listChainRules('FORWARD', sys);
    } catch (e) {
      facts.iptables.error = msg(e);
    }
    if (!facts.iptables.error) {
      // a chain iptables cannot show (e.g. made by nft directly) is recorded as unreadable, not fatal
      for (const [key, chain] of [['dockerUser', 'DOCKER-USER'], ['weftChain', FORWARD_CHAIN]] as const) {
        try {
          facts.iptables[key] = await listChainRules(chain, sys);
        } catch {
          (facts.iptables.unreadable ??= []).push(chain);
        }
      }
    }
  })();

  await Promise.all([agent, store, kernel]);
  // neighbours and FDB of the devices each network's backend module names (known once agent and store answered)
  for (const dev of neighDevices(facts)) {
    facts.neigh[dev] = await ipJson<NeighFact[]>(['-4', 'neigh', 'show', 'dev', dev], sys);
    facts.fdb[dev] = await bridgeJson<FdbFact[]>(['fdb', 'show', 'dev', dev], sys);
  }
  if (facts.agent.status) facts.endpoints = await endpointFacts(o.api, timeoutMs);
  if (!o.noProbe && facts.agent.status) facts.paths = await probePaths(facts.agent.status, sys);
  if (o.ping) facts.ping = await pingFacts(o.ping, o.api, facts.agent.status !== undefined, sys);

  // rp_filter of conf.all and of the devices traffic from peers arrives on
  const devs = new Set<string>(['all']);
  const st = facts.agent.status;
  if (st) devs.add(st.iface);
  for (const l of facts.links) if (l.linkinfo?.info_kind === 'vxlan' && l.ifname.startsWith('weft.')) devs.add(l.ifname);
  for (const d of devs) {
    if (!/^[\w.@-]+$/.test(d)) continue;
    const v = await readSysctl(`net.ipv4.conf.${d.replace(/\./g, '/')}.rp_filter`, sys);
    if (v !== undefined && /^\d+$/.test(v)) facts.rpFilter[d] = Number(v);
  }
  return facts;
}

/**
 * The devices whose neighbours and FDB doctor reads: for every network the agent runs or the store holds,
 * the names its backend module gives (`deviceNames`, e.g. vxlan's weft.<VNI>, l2's wl2.<VNI>), plus a
 * device the backend's status names; only those present on this host. The config is the store's when
 * readable, else what the agent's status says (backend type, default ids).
 */
export function neighDevices(f: Pick<DoctorFacts, 'links' | 'agent' | 'store'>): string[] {
  const configs = new Map<string, NetworkConfig>();
  for (const n of f.store?.networks ?? []) configs.set(n.name, { Network: n.cidr, Backend: n.backend });
  const names = new Set<string>();
  for (const n of f.agent.status?.networks ?? []) {
    if (!configs.has(n.name)) configs.set(n.name, { Network: n.subnet, Backend: { Type: n.backend } });
    if (typeof n.status?.device === 'string') names.add(n.status.device);
  }
  for (const config of configs.values()) {
    let mod;
    try {
      mod = backendModule(config.Backend.Type);
    } catch {
      continue; // a backend this weft does not know: nothing to read for it
    }
    for (const d of mod.deviceNames?.(config) ?? []) names.add(d);
  }
  const present = new Set(f.links.map((l) => l.ifname));
  return [...names].filter((d) => present.has(d) && /^[\w.@-]+$/.test(d)).sort();
}

async function pingFacts(target: string, api: string, agentUp: boolean, sys: NsOpts): Promise<NonNullable<DoctorFacts['ping']>> {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(target)) return { target, answered: false, error: `"${target}" is not an IPv4 address` };
  const out: NonNullable<DoctorFacts['ping']> = { target, answered: false };
  try {
    out.route = await routeGet(target, sys);
  } catch (e) {
    out.error = msg(e);
  }
  out.answered = await pingOnce(target, sys);
  if (agentUp) {
    try {
      out.endpoints = (await callAgent<Array<{ address: string; container: string; network: string }>>(api, 'GET', '/endpoints')).map((e) => ({
        address: e.address,
        container: e.container,
        network: e.network,
      }));
    } catch {
      /* the ping verdict does without */
    }
  }
  return out;
}

/** Containers' interfaces are read this many at a time (one `ip` each). */
const ENDPOINT_PROBES = 8;

/** This host's endpoints, each with the MTU of its interface inside the container where that namespace can be entered. */
async function endpointFacts(api: string, timeoutMs: number): Promise<EndpointFact[] | undefined> {
  let eps: Endpoint[];
  try {
    eps = await withTimeout(callAgent<Endpoint[]>(api, 'GET', '/endpoints'), timeoutMs, `the agent at ${api}`);
  } catch {
    return undefined;
  }
  const out: EndpointFact[] = eps.map((e) => ({ container: e.container, network: e.network, ifname: e.ifname, hostIf: e.hostIf }));
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < out.length; i = next++) {
      const e = out[i]!;
      try {
        const [l] = await ipJson<IpLink[]>(['link', 'show', 'dev', e.ifname], { netns: resolveNetns(e.container) });
        if (l) e.mtu = l.mtu;
      } catch {
        /* a Docker container by id, a namespace gone: its MTU is not known */
      }
    }
  };
  await Promise.all(Array.from({ length: Math.min(ENDPOINT_PROBES, out.length) }, worker));
  return out;
}

/** The UDP port of the backend's tunnel to a peer: the peer's own (udp: Port, wireguard: ListenPort), else this host's. */
function tunnelPort(n: AgentStatus['networks'][number], p: AgentStatus['networks'][number]['peers'][number]): number | undefined {
  const num = (v: unknown) => (typeof v === 'number' && Number.isInteger(v) && v > 0 && v < 65536 ? v : undefined);
  const own = num(n.status?.port) ?? num(n.status?.listenPort);
  if (own === undefined) return undefined; // a routed backend (host-gw, bgp …): no port to be blocked
  return num(p.backendData?.Port) ?? num(p.backendData?.ListenPort) ?? own;
}

/** Per peer (in parallel): its underlay address, then its gateway across the overlay small and full-size with DF set. */
export async function probePaths(st: AgentStatus, sys: NsOpts): Promise<PathFact[]> {
  const probes = st.networks.flatMap((n) =>
    n.peers.map(async (p): Promise<PathFact> => {
      const target = gatewayCidr(p.subnet).split('/')[0]!;
      const [underlay, small] = await Promise.all([pingOnce(p.publicIp, sys), pingOnce(target, sys)]);
      const big = small ? await pingDf(target, n.mtu - 28, sys) : false;
      const port = tunnelPort(n, p);
      return { network: n.name, backend: n.backend, subnet: p.subnet, ...(p.hostId ? { hostId: p.hostId } : {}), publicIp: p.publicIp, target, mtu: n.mtu, underlay, small, big, ...(port ? { port } : {}) };
    }),
  );
  return Promise.all(probes);
}
