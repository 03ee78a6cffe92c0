import { createHash } from 'node:crypto';
import type { DnsService } from '../dns/service.js';
import { normalizeName } from '../dns/records.js';
import { Ipam } from '../ipam/ipam.js';
import { networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { ExecError } from '../system/exec.js';
import { resolveNetns, type NetnsRef } from '../system/netns.js';
import { attachVeth, detachVeth, hostIfName, listNetnsInterfaces, nextIfName } from '../system/veth.js';
import { WeftError } from '../util/errors.js';
import type { NetworkRunner } from './network-runner.js';
import type { AttachRequest, DetachRequest, Endpoint } from './types.js';

/** A container as the kernel knows it, plus a stable key that names it in the store. */
export interface ResolvedContainer {
  netns: NetnsRef;
  /** "netns:NAME", "pid:PID", "docker:ID" — owner of its addresses and part of its endpoint id. */
  key: string;
}

/** Turns what the user typed into a namespace; the Docker adapter adds one for container ids/names. */
export type ContainerResolver = (container: string) => Promise<ResolvedContainer | undefined>;

/** The networks running on this host, as the agent holds them. */
export interface NetworkDirectory {
  /** The named network, or the only/first one when no name is given; WeftError when unknown. */
  get(name?: string): NetworkRunner;
  all(): NetworkRunner[];
}

export function resolveBuiltin(container: string): ResolvedContainer {
  const netns = resolveNetns(container);
  return { netns, key: 'name' in netns ? `netns:${netns.name}` : `pid:${netns.pid}` };
}

/**
 * Attaching containers to networks on this host: address from IPAM, a veth made in place (two `ip -batch`
 * processes), and an endpoint record in the store so `weft ps`, detach and restarts find it again.
 */
export class Endpoints {
  private readonly ipam: Ipam;
  /** Name service hooks (src/dns): register --name and write resolv.conf after attach, undo after detach. */
  dns?: Pick<DnsService, 'attached' | 'detached'>;

  constructor(
    private readonly store: Store,
    private readonly hostId: string,
    private readonly networks: NetworkDirectory,
    private readonly resolvers: ContainerResolver[] = [],
  ) {
    this.ipam = new Ipam(store);
  }

  async resolve(container: string): Promise<ResolvedContainer> {
    try {
      return resolveBuiltin(container);
    } catch (err) {
      for (const r of this.resolvers) {
        const found = await r(container);
        if (found) return found;
      }
      throw err;
    }
  }

  async attach(req: AttachRequest): Promise<Endpoint> {
    if (!req.container) throw new WeftError('attach needs a container');
    if (req.name) normalizeName(req.name); // an invalid DNS name fails before anything is made
    const net = this.networks.get(req.network);
    const target = await this.resolve(req.container);
    const id = endpointId(target.key, net.name);
    const key = networkKeys(this.store, net.name).endpoint(this.hostId, id);
    const existing = await this.store.get(key);
    if (existing) {
      const ep = JSON.parse(existing.value) as Endpoint;
      if (req.address && stripLen(req.address) !== stripLen(ep.address)) {
        throw new WeftError(`${req.container} is already attached to ${net.name} with ${ep.address}; detach it first`);
      }
      return ep;
    }
    const alloc = await this.ipam.allocate({ network: net.name, subnet: net.lease.subnet, owner: target.key, address: req.address });
    const hostIf = hostIfName(target.key, net.name);
    try {
      const veth = (ifname: string) =>
        attachVeth({
          netns: target.netns,
          ifname,
          address: alloc.cidr,
          gateway: alloc.gateway,
          // eth0 carries the default route; a further network's interface (ethweN) only routes that network
          routeTo: ifname === 'eth0' ? 'default' : net.config.Network,
          mtu: net.backend.mtu,
          // The MAC follows the address: whoever gets an address next has the MAC that neighbours cached for it.
          mac: macForAddress(alloc.address),
          bridge: net.status().bridge,
          hostIf,
        });
      // Listing a named namespace's interfaces costs an `ip` process (~4–6 ms, a third of an attach): guess
      // eth0 (a fresh container has none) and list only when the kernel says the name exists.
      const guess = req.ifname ?? ('name' in target.netns ? 'eth0' : await this.freeIfname(target.netns));
      let ifname = guess;
      let mac: string;
      try {
        ({ mac } = await veth(guess));
      } catch (err) {
        if (req.ifname || !(err instanceof ExecError && /File exists/.test(err.stderr))) throw err;
        ifname = await this.freeIfname(target.netns);
        if (ifname === guess) throw err; // the name was free: the clash was the host side
        ({ mac } = await veth(ifname));
      }
      const ep: Endpoint = {
        id,
        container: req.container,
        network: net.name,
        hostId: this.hostId,
        ifname,
        hostIf,
        address: alloc.cidr,
        mac,
        gateway: alloc.gateway,
        ...(req.name ? { name: req.name } : {}),
      };
      await this.store.put(key, JSON.stringify({ ...ep, owner: target.key }));
      await this.dns?.attached({ ...ep, owner: target.key }); // never throws
      return ep;
    } catch (err) {
      await this.ipam.release({ network: net.name, subnet: net.lease.subnet, owner: target.key });
      if (err instanceof ExecError && /File exists/.test(err.stderr)) {
        throw new WeftError(`cannot attach ${req.container}: an interface of that name already exists (${err.stderr.trim()})`);
      }
      throw err;
    }
  }

  async detach(req: DetachRequest): Promise<Endpoint[]> {
    const mine = (await this.list()).filter(
      (e) => (e.container === req.container || e.owner === req.container) && (!req.network || e.network === req.network),
    );
    if (mine.length === 0) {
      // The user may name the container differently than at attach time (a PID for a netns, say).
      let key: string | undefined;
      try {
        key = (await this.resolve(req.container)).key;
      } catch {
        /* unknown container: reported below */
      }
      mine.push(...(await this.list()).filter((e) => e.owner === key && (!req.network || e.network === req.network)));
    }
    if (mine.length === 0) {
      throw new WeftError(`${req.container} is not attached${req.network ? ` to ${req.network}` : ''} on this host`);
    }
    for (const ep of mine) {
      await detachVeth(ep.hostIf);
      const net = this.networks.get(ep.network);
      await this.ipam.release({ network: ep.network, subnet: net.lease.subnet, owner: ep.owner });
      await this.store.delete(networkKeys(this.store, ep.network).endpoint(this.hostId, ep.id));
      await this.dns?.detached(ep); // never throws
    }
    return mine.map(({ owner: _owner, ...ep }) => ep);
  }

  /** This host's endpoints in every network it runs. */
  async list(networks?: string[]): Promise<Array<Endpoint & { owner: string }>> {
    const names = networks ?? this.networks.all().map((n) => n.name);
    const out: Array<Endpoint & { owner: string }> = [];
    for (const n of names) {
      for (const e of await this.store.list(networkKeys(this.store, n).endpointsPrefix(this.hostId))) {
        out.push(JSON.parse(e.value) as Endpoint & { owner: string });
      }
    }
    return out;
  }

  private async freeIfname(netns: NetnsRef): Promise<string> {
    return nextIfName(await listNetnsInterfaces(netns));
  }
}

/** Stable per (container, network): attach is idempotent and a restarted agent finds the same record. */
export function endpointId(containerKey: string, network: string): string {
  return createHash('sha256').update(`${containerKey}\0${network}`).digest('hex').slice(0, 12);
}

/**
 * A locally administered MAC made from the IPv4 address (Docker's 02:42:a:b:c:d scheme). With random MACs a
 * container that takes a freed address stays unreachable from neighbours that cached the old MAC.
 */
export function macForAddress(ip: string): string {
  return ['02', '42', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

function stripLen(a: string): string {
  return a.split('/')[0]!;
}
