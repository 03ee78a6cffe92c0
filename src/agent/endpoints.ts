import { createHash } from 'node:crypto';
import { endpointDriver } from '../backends/endpoints/registry.js';
import type { EndpointDriver } from '../backends/endpoints/types.js';
import type { DnsService } from '../dns/service.js';
import { normalizeName } from '../dns/records.js';
import { AddressPool, type PoolRange } from '../ipam/addresses.js';
import { Ipam } from '../ipam/ipam.js';
import type { AddressPlan } from '../backends/types.js';
import { cidrWithin, formatCidr, networkOf, parseCidrLoose } from '../net/ipv4.js';
import { networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { kernelFailure } from '../system/exec.js';
import { getLink, listInterfaces } from '../system/ip.js';
import { resolveNetns, type NetnsRef } from '../system/netns.js';
import { hostIfName, listNetnsInterfaces, netnsAlive, nextIfName } from '../system/veth.js';
import { WeftError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { KeyedLock } from '../util/keyed-lock.js';
import type { NetworkRunner } from './network-runner.js';
import { NO_KERNEL_WATCH, type KernelTokens } from '../system/kernel-watch.js';
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
  /** The named network, or the default one when no name is given; WeftError when unknown. */
  get(name?: string): NetworkRunner;
  all(): NetworkRunner[];
}

/** An endpoint record as stored: the API's Endpoint plus the owner key it was made for. */
export type StoredEndpoint = Endpoint & { owner: string };

export function resolveBuiltin(container: string): ResolvedContainer {
  const netns = resolveNetns(container);
  return { netns, key: 'name' in netns ? `netns:${netns.name}` : `pid:${netns.pid}` };
}

/** The namespace an owner key names, when it names one weft can reach again (netns names and PIDs). */
function netnsOfOwner(owner: string): NetnsRef | undefined {
  const m = /^(netns|pid):(.+)$/.exec(owner);
  if (!m) return undefined;
  return m[1] === 'netns' ? { name: m[2]! } : { pid: Number(m[2]) };
}

/** What a reconcile of endpoint records against the kernel did (logged, and returned for tests). */
export interface EndpointRepair {
  recreated: string[];
  released: string[];
  removedInterfaces: string[];
  releasedAddresses: string[];
  /** Ports whose source filter was repaired. */
  filters?: string[];
}

/**
 * Attaching containers to networks on this host: address from IPAM, the container's interface from the
 * network's endpoint driver, and an endpoint record in the store so `weft ps`, detach and restarts find it.
 * Calls for one (container, network) run one after the other, so a repeated or concurrent attach returns
 * the same endpoint and never tears down another call's work.
 */
export class Endpoints {
  private readonly ipam: Ipam;
  private readonly locks = new KeyedLock();
  /**
   * Owner keys whose attach is under way: their address and veth exist before their record does, so the
   * reconcile's sweep of orphans must not take them.
   */
  private readonly inFlight = new Set<string>();
  /** Name service hooks (src/dns): register --name and write resolv.conf after attach, undo after detach. */
  dns?: Pick<DnsService, 'attached' | 'detached'>;
  /**
   * What changed in the kernel (src/system/kernel-watch.ts; the agent sets it): reconcile() skips listing
   * interfaces and source filters when neither they nor the records changed since a pass that found
   * nothing to repair. Default: always list.
   */
  kernel: KernelTokens = NO_KERNEL_WATCH;
  /** Per network: the kernel-watch token and records of the last pass that found no stray interface / no filter to fix. */
  private readonly clean = new Map<string, { ifaces?: string; sources?: string }>();
  /** Kernel listings reconcile() skipped (tests). */
  listingsSkipped = 0;

  constructor(
    private readonly store: Store,
    private readonly hostId: string,
    private readonly networks: NetworkDirectory,
    private readonly resolvers: ContainerResolver[] = [],
    private readonly log?: Logger,
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

  private driver(net: NetworkRunner): EndpointDriver {
    return endpointDriver(net.module.endpointDriver);
  }

  async attach(req: AttachRequest): Promise<Endpoint> {
    // an invalid DNS name fails before anything is made
    for (const n of [...(req.name ? [req.name] : []), ...(req.aliases ?? [])]) normalizeName(n);
    const net = this.networks.get(req.network);
    const target = await this.resolve(req.container);
    const id = endpointId(target.key, net.name);
    return this.locks.run(id, () => this.attachLocked(req, net, target, id));
  }

  private async attachLocked(req: AttachRequest, net: NetworkRunner, target: ResolvedContainer, id: string): Promise<Endpoint> {
    const key = networkKeys(this.store, net.name).endpoint(this.hostId, id);
    const existing = await this.store.get(key);
    if (existing) {
      const ep = parseEndpoint(existing.value);
      if (ep) {
        if (req.address && stripLen(req.address) !== stripLen(ep.address)) {
          throw new WeftError(`${req.container} is already attached to ${net.name} with ${ep.address}; detach it first`);
        }
        const driver = this.driver(net);
        if (await driver.exists({ hostIf: ep.hostIf, ifname: ep.ifname, netns: target.netns })) return publicView(ep);
        // The record outlived its interface (a crash mid-attach, an interface deleted by hand): make it again.
        this.log?.warn({ network: net.name, container: req.container, address: ep.address }, 'endpoint record without its interface: re-creating the interface');
        return publicView(await this.create(net, target, id, { ...req, address: ep.address, ifname: req.ifname ?? ep.ifname }, ep.address));
      }
    }
    return publicView(await this.create(net, target, id, req));
  }

  /** Allocates, creates the interface and writes the record; on failure undoes exactly what it did. */
  private async create(net: NetworkRunner, target: ResolvedContainer, id: string, req: AttachRequest, keepAddress?: string): Promise<StoredEndpoint> {
    this.inFlight.add(target.key);
    try {
      return await this.createNow(net, target, id, req, keepAddress);
    } finally {
      this.inFlight.delete(target.key);
    }
  }

  private async createNow(net: NetworkRunner, target: ResolvedContainer, id: string, req: AttachRequest, keepAddress?: string, again = false): Promise<StoredEndpoint> {
    const plan = net.plan;
    const alloc = await this.ipam.allocate({ network: net.name, subnet: plan.pool, range: poolRange(plan), host: this.hostId, owner: target.key, address: keepAddress ?? req.address });
    // `weft docker-opts` may have narrowed the range while this allocated (docker0 mode: Docker's IPAM takes
    // the upper half): an address outside the range now is given back and the attach allocates again
    if (!keepAddress && !again && !inPlan(net.plan, alloc.address)) {
      await this.ipam.release({ network: net.name, subnet: plan.pool, owner: target.key, host: this.hostId });
      return this.createNow(net, target, id, req, keepAddress, true);
    }
    const hostIf = hostIfName(target.key, net.name);
    const driver = this.driver(net);
    let made = false;
    // A further network whose whole range is on-link on its interface (l2: the address carries the network's
    // prefix) needs no route via the gateway: the kernel's prefix route is that route already.
    const onLink = cidrWithin(net.config.Network, networkOfAddress(alloc.cidr));
    try {
      const join = (ifname: string) =>
        driver.join({
          netns: target.netns,
          ifname,
          hostIf,
          address: alloc.cidr,
          // eth0 carries the default route; a further network's interface (ethweN) only routes that network
          gateway: ifname !== 'eth0' && onLink ? undefined : plan.gateway,
          routeTo: ifname === 'eth0' ? 'default' : net.config.Network,
          mtu: net.backend.mtu,
          // The MAC follows the address: whoever gets an address next has the MAC that neighbours cached for it.
          mac: macForAddress(alloc.address),
          pinMac: req.pinMac !== false,
          bridge: net.bridge,
          parent: net.backend.parent,
        });
      // Listing a named namespace's interfaces costs an `ip` process (~4–6 ms, a third of an attach): guess
      // eth0 (a fresh container has none) and list only when the kernel says the name exists.
      const guess = req.ifname ?? ('name' in target.netns ? 'eth0' : await this.freeIfname(target.netns));
      let ifname = guess;
      let mac: string;
      try {
        ({ mac } = await join(guess));
      } catch (err) {
        if (req.ifname || kernelFailure(err) !== 'exists') throw err;
        ifname = await this.freeIfname(target.netns);
        if (ifname === guess) throw err; // the name was free: the clash was the host side
        ({ mac } = await join(ifname));
      }
      made = true;
      const ep: StoredEndpoint = {
        id,
        container: req.container,
        network: net.name,
        hostId: this.hostId,
        ifname,
        hostIf,
        address: alloc.cidr,
        mac,
        ...(req.pinMac === false ? { pinMac: false as const } : {}),
        ...(plan.gateway ? { gateway: plan.gateway } : {}),
        ...(req.name ? { name: req.name } : {}),
        ...(req.aliases?.length ? { aliases: [...req.aliases] } : {}),
        owner: target.key,
      };
      await this.store.put(networkKeys(this.store, net.name).endpoint(this.hostId, id), JSON.stringify(ep));
      await this.dns?.attached(ep); // never throws
      return ep;
    } catch (err) {
      if (made) await driver.leave({ hostIf, ifname: req.ifname ?? 'eth0', netns: target.netns }).catch(() => false);
      if (!keepAddress) await this.ipam.release({ network: net.name, subnet: plan.pool, owner: target.key, host: this.hostId }).catch(() => []);
      if (kernelFailure(err) === 'exists') {
        throw new WeftError(`cannot attach ${req.container}: an interface of that name already exists (${(err as Error).message.trim()})`);
      }
      throw err;
    }
  }

  async detach(req: DetachRequest): Promise<Endpoint[]> {
    let mine = (await this.list()).filter((e) => (e.container === req.container || e.owner === req.container) && (!req.network || e.network === req.network));
    if (mine.length === 0) {
      // The user may name the container differently than at attach time (a PID for a netns, say).
      let key: string | undefined;
      try {
        key = (await this.resolve(req.container)).key;
      } catch {
        /* unknown container: reported below */
      }
      mine = (await this.list()).filter((e) => e.owner === key && (!req.network || e.network === req.network));
    }
    if (mine.length === 0) {
      throw new WeftError(`${req.container} is not attached${req.network ? ` to ${req.network}` : ''} on this host`);
    }
    const out: Endpoint[] = [];
    for (const ep of mine) out.push(await this.locks.run(ep.id, () => this.remove(ep)));
    return out;
  }

  /**
   * Detaches the endpoint whose record is at `key` (a CNI DEL kept it): a look-up by key, no listing of the
   * host's endpoints. Undefined when there is no such record (detached already).
   */
  async detachKey(key: string): Promise<Endpoint | undefined> {
    const first = await this.store.get(key);
    const ep = first && parseEndpoint(first.value);
    if (!ep) return undefined;
    return this.locks.run(ep.id, async () => {
      // another call may have removed (or re-made) it while this one waited
      const now = await this.store.get(key);
      const cur = now && parseEndpoint(now.value);
      return cur ? this.remove(cur) : undefined;
    });
  }

  /** Removes one endpoint: interface, address, record (in that order: a failure leaves a record to retry). */
  private async remove(ep: StoredEndpoint): Promise<Endpoint> {
    const net = this.networks.all().find((n) => n.name === ep.network);
    const driver = net ? this.driver(net) : endpointDriver();
    await driver.leave({ hostIf: ep.hostIf, ifname: ep.ifname, netns: netnsOfOwner(ep.owner) });
    if (net) await this.ipam.releaseHeld({ network: ep.network, subnet: net.plan.pool, owner: ep.owner, address: ep.address, host: this.hostId });
    await this.store.delete(networkKeys(this.store, ep.network).endpoint(this.hostId, ep.id));
    await this.dns?.detached(ep); // never throws
    return publicView(ep);
  }

  /** This host's endpoints in every network it runs (or the named ones). Unreadable records are skipped. */
  async list(networks?: string[]): Promise<StoredEndpoint[]> {
    const names = networks ?? this.networks.all().map((n) => n.name);
    const out: StoredEndpoint[] = [];
    for (const n of names) {
      for (const e of await this.store.list(networkKeys(this.store, n).endpointsPrefix(this.hostId))) {
        const ep = parseEndpoint(e.value);
        if (ep) out.push(ep);
      }
    }
    return out;
  }

  /**
   * Makes store and kernel agree for one network: a record whose interface is gone is re-created when its
   * container still exists and released otherwise; an address no record owns is released; a host-side
   * interface of this network that no record names is deleted. Runs at start and on every resync.
   */
  async reconcile(net: NetworkRunner): Promise<EndpointRepair> {
    const repair: EndpointRepair = { recreated: [], released: [], removedInterfaces: [], releasedAddresses: [] };
    const driver = this.driver(net);
    const records = await this.list([net.name]);
    for (const ep of records) {
      await this.locks.run(ep.id, async () => {
        const netns = netnsOfOwner(ep.owner);
        if (await driver.exists({ hostIf: ep.hostIf, ifname: ep.ifname, netns })) return;
        if (netns && (await netnsAlive(netns))) {
          try {
            await this.create(net, { netns, key: ep.owner }, ep.id, { container: ep.container, network: ep.network, ifname: ep.ifname, ...(ep.name ? { name: ep.name } : {}) }, ep.address);
            repair.recreated.push(`${ep.container} ${ep.address}`);
            return;
          } catch (err) {
            this.log?.warn({ err, container: ep.container }, 'could not re-create a lost endpoint interface; releasing it');
          }
        }
        await this.remove(ep).catch(() => undefined);
        repair.released.push(`${ep.container} ${ep.address}`);
      });
    }
    // addresses allocated by a crash between IPAM and the record. Read the addresses first, then the records,
    // then skip attaches under way: an address whose record is written in between is either in the records
    // or still in flight, never taken for an orphan.
    const allocated = await this.ipam.list({ network: net.name, subnet: net.plan.pool });
    const owners = new Set((await this.list([net.name])).map((e) => e.owner));
    for (const a of allocated) {
      if (a.host && a.host !== this.hostId) continue; // a pool shared by hosts (l2, bridge, macvlan): not ours
      if (this.inFlight.has(a.owner)) continue;
      if (a.owner && !owners.has(a.owner) && !a.owner.startsWith('docker:') && !a.owner.startsWith('cni:') && /^(netns|pid):/.test(a.owner)) {
        await this.ipam.release({ network: net.name, subnet: net.plan.pool, owner: a.owner, host: this.hostId });
        repair.releasedAddresses.push(a.address);
      }
    }
    // host ends of this network's veths that no record names (vw + 8 hex of (container, network)); interfaces
    // first, then records, then the attaches under way (as for the addresses above)
    const clean = this.clean.get(net.name) ?? {};
    this.clean.set(net.name, clean);
    if (net.bridge) {
      // unchanged links, the same records and no attach under way as in a pass that found no stray: skip the listing
      const before = this.kernel.token(['link']);
      const recorded = before === undefined ? '' : (await this.list([net.name])).map((e) => e.hostIf).sort().join(',');
      const key = before === undefined || this.inFlight.size ? undefined : `${before} ${recorded}`;
      const skip = key !== undefined && key === clean.ifaces;
      clean.ifaces = undefined;
      if (skip) this.listingsSkipped++;
      const present = skip ? [] : (await listInterfaces()).filter((n) => /^vw[0-9a-f]{8}$/.test(n));
      const named = new Set(skip ? [] : (await this.list([net.name])).map((e) => e.hostIf));
      const busy = new Set([...this.inFlight].map((owner) => hostIfName(owner, net.name)));
      const removedBefore = repair.removedInterfaces.length;
      for (const ifname of present) {
        if (named.has(ifname) || busy.has(ifname)) continue;
        const link = await getLink(ifname);
        if (link?.master === net.bridge) {
          await driver.leave({ hostIf: ifname, ifname: 'eth0' }).catch(() => false);
          repair.removedInterfaces.push(ifname);
        }
      }
      if (repair.removedInterfaces.length === removedBefore) clean.ifaces = key;
    }
    // every port's source filter matches its record (a rule deleted by hand, an agent crash mid-attach)
    if (driver.reconcileSources) {
      const before = this.kernel.token(['nft', 'link']);
      // every port on this host, whatever its network: the source filters live in one chain per host
      const sourceBindings = async () =>
        (await this.list()).filter((e) => e.mac).map((e) => ({ hostIf: e.hostIf, ip: stripLen(e.address), ...(e.pinMac === false ? {} : { mac: e.mac }) }));
      const bindings = await sourceBindings();
      // the same bindings, no rule or link changed since a pass that fixed nothing: skip the listings
      const key = before === undefined || this.inFlight.size ? undefined : `${before} ${JSON.stringify(bindings)}`;
      if (key !== undefined && key === clean.sources) this.listingsSkipped++;
      else {
        clean.sources = undefined;
        // the records are read again after the kernel listing, and the ports of attaches under way after
        // that (an attach binds its port before it writes its record: the records alone would call it a stray)
        const names = this.networks.all().map((n) => n.name);
        const busy = (hostIf: string) => [...this.inFlight].some((owner) => names.some((n) => hostIfName(owner, n) === hostIf));
        const fixed = await driver.reconcileSources(sourceBindings, /^vw[0-9a-f]{8}$/, busy);
        if (fixed.length) repair.filters = fixed;
        else clean.sources = key;
      }
    }
    const changed = repair.recreated.length + repair.released.length + repair.removedInterfaces.length + repair.releasedAddresses.length + (repair.filters?.length ?? 0);
    if (changed) this.log?.warn({ network: net.name, ...repair }, 'endpoints reconciled with the kernel');
    return repair;
  }

  /** After the lease changed: every container of the network gets a new address in the new subnet. */
  async readdress(net: NetworkRunner, oldPool: string): Promise<void> {
    for (const ep of await this.list([net.name])) {
      await this.locks.run(ep.id, async () => {
        const netns = netnsOfOwner(ep.owner);
        await this.driver(net).leave({ hostIf: ep.hostIf, ifname: ep.ifname, netns });
        await this.ipam.release({ network: net.name, subnet: oldPool, owner: ep.owner, host: this.hostId }).catch(() => []);
        await this.store.delete(networkKeys(this.store, net.name).endpoint(this.hostId, ep.id));
        if (!netns) return;
        const made = await this.create(net, { netns, key: ep.owner }, ep.id, { container: ep.container, network: net.name, ifname: ep.ifname, ...(ep.name ? { name: ep.name } : {}) });
        this.log?.warn({ network: net.name, container: ep.container, was: ep.address, now: made.address }, 'container re-addressed after the lease changed');
      });
    }
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

/** Whether containers of this host may (still) have `address` under the plan (docker0 mode narrows it). */
export function inPlan(plan: AddressPlan, address: string): boolean {
  try {
    new AddressPool(plan.pool, poolRange(plan)).check(address);
    return true;
  } catch {
    return false;
  }
}

/** The part of the plan's pool containers of this host may take. */
export function poolRange(plan: AddressPlan): PoolRange {
  return { ...(plan.first ? { first: plan.first } : {}), ...(plan.last ? { last: plan.last } : {}), ...(plan.gateway ? { gateway: plan.gateway } : {}) };
}

function stripLen(a: string): string {
  return a.split('/')[0]!;
}

function publicView(ep: StoredEndpoint): Endpoint {
  const { owner: _owner, ...rest } = ep;
  return rest;
}

/** A stored endpoint record, or undefined when the value is not one (rot, another tool). */
export function parseEndpoint(value: string): StoredEndpoint | undefined {
  try {
    const v = JSON.parse(value) as Partial<StoredEndpoint>;
    if (typeof v.id !== 'string' || typeof v.hostIf !== 'string' || typeof v.address !== 'string' || typeof v.owner !== 'string' || typeof v.network !== 'string') return undefined;
    return { ifname: 'eth0', mac: '', container: v.owner, hostId: '', ...v } as StoredEndpoint;
  } catch {
    return undefined;
  }
}

/** "10.61.3.7/16" → "10.61.0.0/16" (the prefix route an address makes on its interface). */
function networkOfAddress(cidr: string): string {
  const c = parseCidrLoose(cidr);
  if (!c) return cidr;
  return formatCidr({ base: networkOf(c.ip, c.len), len: c.len });
}
