import { watchLeases } from '../lease/leases.js';
import { networkKeys } from '../store/layout.js';
import type { Store, Watch } from '../store/types.js';
import type { Logger } from '../util/log.js';
import { normalizeName, RecordCache } from './records.js';
import { containerNames, registerEndpointName, syncHostRecords, unregisterEndpointName, type NamedEndpoint } from './registry.js';
import { pruneNetnsResolvConfs, removeNetnsResolvConf, writeNetnsResolvConf } from './resolv-conf.js';
// The server and the upstream client (dns-packet, ~8 MB) load with the first network's server: an agent
// with --no-dns or without networks never loads them.
import type { DnsServer, DnsServerStats } from './server.js';
import type { Upstream } from './upstream.js';

/**
 * weft's name service on one host, as the agent drives it: one DNS server per joined network on that
 * network's gateway address (port 53), answering from the network's records in the store (followed by
 * a watch), plus the attach/detach hooks that register names and write containers' resolv.conf.
 */

export const DEFAULT_DNS_DOMAIN = 'weft.local';
export const DEFAULT_DNS_TTL = 30;

export interface DnsServiceOptions {
  store: Store;
  hostId: string;
  log: Logger;
  /** false: no servers and no resolv.conf files (names are still registered). Default true. */
  enabled?: boolean;
  domain?: string;
  ttl?: number;
  port?: number;
  /** Upstream resolvers; default the IPv4 nameservers of `resolvConf`. */
  upstreams?: Upstream[];
  resolvConf?: string;
  forwardTimeoutMs?: number;
  /** Where per-namespace resolv.conf files go (default /etc/netns). */
  netnsEtc?: string;
}

/** What the hooks need of an endpoint (the agent's Endpoint record fits). */
export interface EndpointLike {
  network: string;
  address: string;
  /** Absent when the backend gives containers no gateway (then no resolv.conf is written). */
  gateway?: string;
  ifname: string;
  name?: string;
  /** Further names of the same container (CNI runtimeConfig.aliases). */
  aliases?: string[];
  container?: string;
  /** "netns:NAME", "pid:PID", "docker:ID". */
  owner?: string;
}

interface Running {
  server: DnsServer;
  cache: RecordCache;
  watches: Watch[];
  gateway: string;
}

export class DnsService {
  readonly domain: string;
  private readonly servers = new Map<string, Running>();
  private readonly log: Logger;
  /** Counts of servers already stopped, by network: a restarted server's counts add to them (metrics only grow). */
  private readonly retired = new Map<string, DnsServerStats>();

  /** The networks whose gateway this service answers on now. */
  serving(): string[] {
    return [...this.servers.keys()];
  }

  constructor(private readonly o: DnsServiceOptions) {
    this.domain = normalizeName(o.domain ?? DEFAULT_DNS_DOMAIN);
    this.log = o.log.child({ component: 'dns' });
  }

  /**
   * Starts the network's server on its gateway. Never throws: a port already taken (another resolver on
   * 0.0.0.0:53) is logged and the network runs without weft's DNS.
   */
  async startNetwork(network: string, gateway: string, cidr?: string): Promise<void> {
    await this.resyncOwnRecords(network).catch((err) => this.log.warn({ err, network }, 'cannot resync this host\'s DNS records'));
    if (this.o.enabled === false || this.servers.has(network)) return;
    if (this.servers.size === 0) {
      try {
        const pruned = pruneNetnsResolvConfs({ dir: this.o.netnsEtc });
        if (pruned.length) this.log.info({ netns: pruned }, 'removed resolv.conf files of namespaces that are gone');
      } catch (err) {
        this.log.warn({ err }, 'cannot prune stale resolv.conf files');
      }
    }
    const keys = networkKeys(this.o.store, network);
    const cache = new RecordCache(keys);
    const [{ DnsServer }, { readResolvConf }] = await Promise.all([import('./server.js'), import('./upstream.js')]);
    if (this.servers.has(network)) return; // started meanwhile by a concurrent call
    const upstreams = this.o.upstreams ?? readResolvConf(this.o.resolvConf, [gateway]);
    const server = new DnsServer(cache, {
      host: gateway,
      port: this.o.port ?? 53,
      domain: this.domain,
      ttl: this.o.ttl ?? DEFAULT_DNS_TTL,
      network: cidr,
      upstreams,
      forwardTimeoutMs: this.o.forwardTimeoutMs,
      log: this.log,
    });
    try {
      await server.start();
    } catch (err) {
      this.log.error({ err: (err as Error).message, network, gateway }, 'cannot start the DNS server: containers of this network get no weft names');
      return;
    }
    const watches = [
      this.o.store.watch(keys.dnsPrefix, (ev) => cache.apply(ev)),
      watchLeases(this.o.store, network, (leases) => cache.setLiveHosts(new Set(leases.flatMap((l) => (l.hostId ? [l.hostId] : []))))),
    ];
    this.servers.set(network, { server, cache, watches, gateway });
    this.log.info({ network, listen: `${gateway}:${server.port}`, domain: this.domain, upstreams: upstreams.map((u) => `${u.ip}:${u.port}`) }, 'DNS server started');
  }

  async stopNetwork(network: string): Promise<void> {
    const r = this.servers.get(network);
    if (!r) return;
    this.servers.delete(network);
    this.retired.set(network, addStats(this.retired.get(network), r.server.stats));
    for (const w of r.watches) w.close();
    await r.server.stop();
  }

  async stop(): Promise<void> {
    for (const n of [...this.servers.keys()]) await this.stopNetwork(n);
  }

  /** Queries received, answered, forwarded and malformed by network since the agent started (/metrics). */
  stats(): Record<string, DnsServerStats> {
    const out: Record<string, DnsServerStats> = {};
    for (const [n, s] of this.retired) out[n] = { ...s };
    for (const [n, r] of this.servers) out[n] = addStats(out[n], r.server.stats);
    return out;
  }

  /** The running server of a network (tests, status). */
  server(network: string): DnsServer | undefined {
    return this.servers.get(network)?.server;
  }

  /** After a successful attach: registers the name and points a named namespace's resolv.conf at the gateway. */
  async attached(ep: EndpointLike): Promise<void> {
    for (const name of namesOf(ep)) {
      await registerEndpointName(this.o.store, ep.network, name, ep.address, this.o.hostId, ep.container).catch((err) =>
        // the endpoint stays attached; the record is added again by the next resync (agent start)
        this.log.warn({ err, name, network: ep.network }, 'cannot register the DNS name'),
      );
    }
    const ns = netnsNameOf(ep.owner);
    if (ns && ep.gateway && this.servers.has(ep.network)) {
      try {
        // The default-route network's DNS wins; a further network writes only when nothing is there yet.
        writeNetnsResolvConf(ns, ep.gateway, this.domain, { replace: ep.ifname === 'eth0', dir: this.o.netnsEtc });
      } catch (err) {
        this.log.warn({ err, netns: ns }, 'cannot write the container\'s resolv.conf');
      }
    }
  }

  /** After a successful detach: removes the name and the resolv.conf weft wrote for that network. */
  async detached(ep: EndpointLike): Promise<void> {
    for (const name of namesOf(ep)) {
      await unregisterEndpointName(this.o.store, ep.network, name, ep.address, this.o.hostId).catch((err) =>
        this.log.warn({ err, name, network: ep.network }, 'cannot remove the DNS name'),
      );
    }
    const ns = netnsNameOf(ep.owner);
    if (ns && ep.gateway) {
      try {
        removeNetnsResolvConf(ns, ep.gateway, { dir: this.o.netnsEtc });
      } catch (err) {
        this.log.warn({ err, netns: ns }, 'cannot remove the container\'s resolv.conf');
      }
    }
  }

  /** This host's records of the network follow its endpoint records (the source of truth). */
  private async resyncOwnRecords(network: string): Promise<void> {
    const keys = networkKeys(this.o.store, network);
    const wanted: NamedEndpoint[] = [];
    for (const e of await this.o.store.list(keys.endpointsPrefix(this.o.hostId))) {
      try {
        const ep = JSON.parse(e.value) as Partial<EndpointLike>;
        if (typeof ep.address !== 'string') continue;
        const ip = ep.address.split('/')[0]!;
        for (const name of namesOf(ep)) wanted.push({ name, ip, ...(typeof ep.container === 'string' ? { container: ep.container } : {}) });
      } catch {
        /* a rotten endpoint record: nothing to register */
      }
    }
    const { added, removed } = await syncHostRecords(this.o.store, network, this.o.hostId, wanted);
    if (added || removed) this.log.info({ network, added, removed }, 'DNS records of this host resynced');
  }
}

function addStats(a: DnsServerStats | undefined, b: DnsServerStats): DnsServerStats {
  return { queries: (a?.queries ?? 0) + b.queries, answered: (a?.answered ?? 0) + b.answered, forwarded: (a?.forwarded ?? 0) + b.forwarded, malformed: (a?.malformed ?? 0) + b.malformed };
}

/** An endpoint's valid DNS names: its name, then its aliases (a record read from the store may hold anything). */
function namesOf(ep: Partial<EndpointLike>): string[] {
  const all = [ep.name, ...(Array.isArray(ep.aliases) ? ep.aliases : [])].filter((n): n is string => typeof n === 'string');
  return containerNames(all).names;
}

/** "netns:NAME" → NAME. */
function netnsNameOf(owner: string | undefined): string | undefined {
  return owner?.startsWith('netns:') ? owner.slice('netns:'.length) : undefined;
}
