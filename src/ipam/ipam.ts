import { networkKeys } from '../store/layout.js';
import type { Entry, Store } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { KeyedLock } from '../util/keyed-lock.js';
import { ipToInt } from '../net/ipv4.js';
import { AddressPool, type PoolRange } from './addresses.js';

/**
 * Container addresses inside a host's leased subnet. Each allocated address is one record
 * (networks/<name>/ipam/<a.b.c.d-len>/<ip>, value {"Owner":…,"AllocatedAt":…}) created only if absent
 * (compare-and-swap at revision 0): two callers never get the same address and a restart never hands out
 * one in use. Allocating again for the same owner returns its address (that is how restarts keep IPs).
 *
 * Next free address = the lowest one that is neither stored nor claimed by another call of this instance,
 * so concurrent calls in one process never race each other for the same address. After losing a race to
 * another process it tries free addresses from random starting points (re-reading every few losses), so
 * several writers spread out instead of all fighting over the lowest free address. (The agent owns its subnet's addresses, so
 * in practice one instance allocates per subnet.)
 */

/** After this many lost races, re-read the subnet's records instead of guessing on. */
const REREAD_AFTER = 16;

export interface Allocation {
  network: string;
  subnet: string;
  /** "10.5.72.2" */
  address: string;
  /** "10.5.72.2/24" */
  cidr: string;
  gateway: string;
  owner: string;
  /** The host that allocated it (records written before hosts were recorded have none). */
  host?: string;
}

export interface AllocateRequest {
  network: string;
  /** The host's leased subnet, e.g. "10.5.72.0/24". */
  subnet: string;
  /** Who holds the address (endpoint/container id). */
  owner: string;
  /** A specific address ("10.5.72.9" or "10.5.72.9/24"); the next free one when absent. */
  address?: string;
  /** The part of the pool this host hands out (a backend's address plan); default: the whole leased subnet. */
  range?: PoolRange;
  /**
   * The allocating host, kept in the record. In a pool shared by hosts (l2, bridge, macvlan) an owner key
   * such as "netns:c1" may exist on two hosts: an owner's address is only its own host's.
   */
  host?: string;
}

export interface ReleaseRequest {
  network: string;
  subnet: string;
  owner?: string;
  address?: string;
  /** Release only this host's records (a pool shared by hosts). */
  host?: string;
}

export class Ipam {
  /**
   * Record keys this instance is claiming or has won (until it releases them): later calls skip them
   * without a store round trip even when their snapshot predates the win.
   */
  private readonly claiming = new Set<string>();
  /** Allocations for one owner run one after the other. */
  private readonly ownerLocks = new KeyedLock();

  constructor(readonly store: Store) {}

  /**
   * The next free address or the requested one, for `owner`; the owner's existing address when it has one.
   * Calls for the same owner on this instance run one after the other, so they agree on one address.
   */
  async allocate(req: AllocateRequest): Promise<Allocation> {
    if (!req.owner) throw new WeftError('an address needs an owner');
    return this.ownerLocks.run(JSON.stringify([req.network, req.subnet, req.owner]), () => this.allocateNow(req));
  }

  private async allocateNow(req: AllocateRequest): Promise<Allocation> {
    const pool = new AddressPool(req.subnet, req.range);
    const keys = networkKeys(this.store, req.network);
    const wanted = req.address === undefined ? undefined : pool.check(req.address);
    const records = await this.records(req.network, req.subnet);
    const own = records.find((r) => r.owner === req.owner && sameHost(r, req.host));
    if (own) {
      if (wanted && wanted !== own.address) {
        throw new WeftError(`${req.owner} already has address ${own.address} in ${req.subnet}; release it first`);
      }
      return own;
    }
    const value = JSON.stringify({ Owner: req.owner, AllocatedAt: new Date().toISOString(), ...(req.host ? { Host: req.host } : {}) });
    const make = (address: string): Allocation => ({ ...allocation(req.network, pool, address, req.owner), ...(req.host ? { host: req.host } : {}) });

    if (wanted) {
      const taken = records.find((r) => r.address === wanted);
      if (!taken && (await this.store.compareAndSwap(keys.ipamAddress(req.subnet, wanted), 0, value))) return make(wanted);
      const holder = taken ?? (await this.read(req.network, req.subnet, wanted));
      if (holder?.owner === req.owner && sameHost(holder, req.host)) return holder;
      const by = holder ? ` by ${holder.owner}${holder.host && holder.host !== req.host ? ` on host ${holder.host}` : ''}` : '';
      throw new WeftError(`address ${wanted} in ${req.subnet} is already taken${by}`);
    }

    let used = new Set(records.map((r) => r.address));
    const keyOf = (address: string) => keys.ipamAddress(req.subnet, address);
    /** First free address scanning from index `from` (wrapping), or undefined. */
    const freeFrom = (from: number): string | undefined => {
      for (let k = 0; k < pool.size; k++) {
        const address = pool.at((from + k) % pool.size);
        if (!used.has(address) && !this.claiming.has(keyOf(address))) return address;
      }
      return undefined;
    };
    let lost = 0;
    let fresh = true;
    while (lost <= pool.size + REREAD_AFTER) {
      // Lowest free first; once another writer beat us, spread out from a random start instead.
      const address = freeFrom(lost === 0 ? 0 : Math.floor(Math.random() * pool.size));
      if (address === undefined) {
        if (fresh) break;
        used = new Set((await this.records(req.network, req.subnet)).map((r) => r.address));
        fresh = true;
        continue;
      }
      const key = keyOf(address);
      this.claiming.add(key);
      let won = false;
      try {
        won = (await this.store.compareAndSwap(key, 0, value)) !== undefined;
      } finally {
        if (!won) this.claiming.delete(key);
      }
      if (won) return make(address);
      used.add(address);
      fresh = false;
      if (++lost % REREAD_AFTER === 0) {
        used = new Set((await this.records(req.network, req.subnet)).map((r) => r.address));
        fresh = true;
      }
    }
    throw new WeftError(`no free address in ${req.subnet} of network "${req.network}": all ${pool.size} container addresses are allocated`);
  }

  /** Frees the owner's address and/or the given address; returns what was freed. */
  async release(req: ReleaseRequest): Promise<Allocation[]> {
    if (req.owner === undefined && req.address === undefined) throw new WeftError('release needs an owner or an address');
    const address = req.address?.split('/')[0];
    const freed: Allocation[] = [];
    const keys = networkKeys(this.store, req.network);
    for (const r of await this.records(req.network, req.subnet)) {
      if (!sameHost(r, req.host)) continue;
      if ((req.owner !== undefined && r.owner === req.owner) || (address !== undefined && r.address === address)) {
        const key = keys.ipamAddress(req.subnet, r.address);
        this.claiming.delete(key);
        if (await this.store.delete(key)) freed.push(r);
      }
    }
    return freed;
  }

  /**
   * Frees the address `owner` holds, looked up by its key (detach knows the address: no listing of the
   * subnet). Falls back to `release` by owner when the record there is not the owner's.
   */
  async releaseHeld(req: { network: string; subnet: string; owner: string; address: string; host?: string }): Promise<Allocation[]> {
    const address = req.address.split('/')[0]!;
    const r = await this.read(req.network, req.subnet, address);
    if (!r || r.owner !== req.owner || !sameHost(r, req.host)) return this.release({ network: req.network, subnet: req.subnet, owner: req.owner, host: req.host });
    const key = networkKeys(this.store, req.network).ipamAddress(req.subnet, address);
    this.claiming.delete(key);
    return (await this.store.delete(key)) ? [r] : [];
  }

  /** Every allocated address of the subnet, in address order. */
  async list(req: { network: string; subnet: string; range?: PoolRange }): Promise<Allocation[]> {
    return (await this.records(req.network, req.subnet)).sort((a, b) => ipToInt(a.address) - ipToInt(b.address));
  }

  private async records(network: string, subnet: string): Promise<Allocation[]> {
    const pool = new AddressPool(subnet);
    const prefix = networkKeys(this.store, network).ipamSubnetPrefix(subnet);
    const out: Allocation[] = [];
    for (const e of await this.store.list(prefix)) {
      const r = fromEntry(network, pool, e.key.slice(prefix.length), e);
      if (r) out.push(r);
    }
    return out;
  }

  private async read(network: string, subnet: string, address: string): Promise<Allocation | undefined> {
    const e = await this.store.get(networkKeys(this.store, network).ipamAddress(subnet, address));
    return e ? fromEntry(network, new AddressPool(subnet), address, e) : undefined;
  }
}

function allocation(network: string, pool: AddressPool, address: string, owner: string): Allocation {
  return { network, subnet: pool.subnet, address, cidr: `${address}/${pool.cidr.len}`, gateway: pool.gateway ?? '', owner };
}

/** A record belongs to `host` when either side does not say (records and callers from before hosts were kept). */
function sameHost(r: Allocation, host: string | undefined): boolean {
  return host === undefined || r.host === undefined || r.host === host;
}

function fromEntry(network: string, pool: AddressPool, address: string, e: Entry): Allocation | undefined {
  try {
    const v = JSON.parse(e.value) as { Owner?: unknown; Host?: unknown };
    return { ...allocation(network, pool, address, typeof v.Owner === 'string' ? v.Owner : ''), ...(typeof v.Host === 'string' ? { host: v.Host } : {}) };
  } catch {
    return undefined;
  }
}
