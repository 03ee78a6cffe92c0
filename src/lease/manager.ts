import { keyToSubnet } from '../store/layout.js';
import { SubnetRange } from './subnets.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { getNetwork } from '../config/registry.js';
import { networkKeys, type NetworkKeys } from '../store/layout.js';
import type { Entry, Store, Watch } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { log as rootLog, type Logger } from '../util/log.js';
import { holdersBySubnet, hostRecordFromEntry, hostRecordToJson, leaseFromEntry, leaseToJson, type HostRecord } from './codec.js';
import { describeHolders, leasesFrom, watchLeases } from './leases.js';
import type { Lease } from './types.js';

/** flannel's lease TTL. */
export const DEFAULT_LEASE_TTL_SECONDS = 24 * 60 * 60;
/** How long a subnet whose lease expired stays reserved for its holder. */
export const DEFAULT_GRACE_SECONDS = 60 * 60;
const MAX_ATTEMPTS = 200;
/** Random probes before falling back to enumerating every free subnet (huge networks stay cheap). */
const RANDOM_PROBES = 64;
/** How long to wait before re-reading a lease whose holder is unclear (see acquire). */
const RECHECK_MS = 300;

export interface LeaseManagerOptions {
  /** Stable identity of this host (becomes a key segment). */
  hostId: string;
  ttlSeconds?: number;
  graceSeconds?: number;
  log?: Logger;
}

export interface AcquireRequest {
  publicIp: string;
  /** Defaults to the network's Backend.Type. */
  backendType?: string;
  /** Published to peers as flannel's BackendData, as given. */
  backendData?: Record<string, unknown>;
}


/**
 * One host's subnet lease in one network. acquire() gives a host the subnet its host record names (even
 * while that lease is still live: a restart reclaims it), else a random free subnet; subnets whose holder
 * went away less than the grace period ago are not given to others. renew() rewrites the lease with its
 * TTL; start() renews every ttl/3.
 */
export class LeaseManager {
  readonly store: Store;
  readonly network: string;
  readonly hostId: string;
  readonly ttlSeconds: number;
  readonly graceSeconds: number;
  private readonly keys: NetworkKeys;
  private readonly log: Logger;
  private lastRequest: AcquireRequest | undefined;
  private held: Lease | undefined;
  private timer: NodeJS.Timeout | undefined;

  constructor(store: Store, network: string, opts: LeaseManagerOptions) {
    this.store = store;
    this.network = network;
    this.hostId = opts.hostId;
    this.ttlSeconds = opts.ttlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    this.graceSeconds = opts.graceSeconds ?? DEFAULT_GRACE_SECONDS;
    this.keys = networkKeys(store, network);
    this.keys.host(opts.hostId); // validates the host id
    this.log = (opts.log ?? rootLog).child({ network, hostId: opts.hostId });
  }

  /** The lease this manager holds (after acquire), else undefined. */
  get lease(): Lease | undefined {
    return this.held;
  }

  async acquire(req: AcquireRequest): Promise<Lease> {
    const config = await getNetwork(this.store, this.network);
    const range = new SubnetRange({ ...config, SubnetLen: config.SubnetLen! });
    const value = leaseToJson({
      publicIp: req.publicIp,
      backendType: req.backendType ?? config.Backend.Type,
      backendData: req.backendData ?? {},
    });
    let lost: string | undefined;
    let rechecked = false;
    for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
      if (attempt > 0) await sleep(2 + Math.random() * Math.min(50, 5 * attempt));
      const [leaseEntries, hostEntries] = await Promise.all([
        this.store.list(this.keys.subnetsPrefix),
        this.store.list(this.keys.hostsPrefix),
      ]);
      const live = new Map<string, Entry>();
      for (const e of leaseEntries) {
        const s = keyToSubnet(e.key.slice(this.keys.subnetsPrefix.length));
        if (s) live.set(s, e);
      }
      const records = hostEntries.map(hostRecordFromEntry).filter((r): r is HostRecord => r !== undefined);
      const mine = records.find((r) => r.hostId === this.hostId);
      const others = records.filter((r) => r.hostId !== this.hostId);
      const holders = holdersBySubnet(others);

      if (mine && range.has(mine.subnet) && lost !== mine.subnet) {
        const entry = live.get(mine.subnet);
        const other = holders.get(mine.subnet);
        if (!other || other.expiresAt <= mine.expiresAt) {
          // A live lease with another address and no newer host record is ours from before a change of
          // address — or another host's between its lease write and its record write: look once more.
          if (entry && !rechecked && leaseFromEntry(this.network, entry)?.publicIp !== mine.publicIp) {
            rechecked = true;
            await sleep(RECHECK_MS);
            attempt--;
            continue;
          }
          const got = await this.store.compareAndSwap(this.keys.subnet(mine.subnet), entry?.revision ?? 0, value, {
            ttlSeconds: this.ttlSeconds,
          });
          if (got) return this.took(got, req, mine.subnet, mine);
          continue;
        }
        lost = mine.subnet;
        this.log.warn(
          { oldSubnet: mine.subnet, takenBy: other.hostId, takenByIp: other.publicIp },
          `!!! SUBNET CHANGED: this host's previous subnet ${mine.subnet} in network "${this.network}" was leased to host ` +
            `${other.hostId} (${other.publicIp}) after our lease expired; acquiring a NEW subnet — containers keep no addresses from ${mine.subnet}`,
        );
      }

      const now = Date.now();
      const graceMs = this.graceSeconds * 1000;
      const reserved = new Map<string, HostRecord>();
      for (const r of holders.values()) if (!live.has(r.subnet) && r.expiresAt + graceMs > now) reserved.set(r.subnet, r);
      const isFree = (s: string) => !live.has(s) && !reserved.has(s) && s !== lost;
      const subnet = pickFree(range, isFree);
      if (!subnet) throw this.exhausted(config.Network, range, leasesFrom(this.network, leaseEntries, hostEntries), reserved);
      const got = await this.store.compareAndSwap(this.keys.subnet(subnet), 0, value, { ttlSeconds: this.ttlSeconds });
      if (got) return this.took(got, req, subnet, mine);
    }
    throw new WeftError(`could not acquire a subnet in network "${this.network}": ${MAX_ATTEMPTS} attempts lost a race`);
  }

  /** Rewrites the lease with a fresh TTL (through acquire: an expired or taken lease is handled there). */
  async renew(): Promise<Lease> {
    if (!this.lastRequest) throw new WeftError(`no lease to renew in network "${this.network}": acquire one first`);
    return this.acquire(this.lastRequest);
  }

  /** Renews every ttl/3 until stop(); `onChange` hears about a lease whose subnet changed on renewal. */
  start(onChange?: (lease: Lease) => void): void {
    this.stop();
    this.timer = setInterval(() => {
      const before = this.held?.subnet;
      this.renew().then(
        (lease) => {
          if (lease.subnet !== before) onChange?.(lease);
        },
        (err: unknown) => this.log.error({ err }, `lease renewal failed in network "${this.network}"`),
      );
    }, (this.ttlSeconds * 1000) / 3);
    this.timer.unref();
  }

  stop(): void {
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Gives the subnet up for good: deletes the lease, this host's record and its address records. */
  async release(): Promise<void> {
    this.stop();
    const records = (await this.store.list(this.keys.hostsPrefix)).map(hostRecordFromEntry).filter((r): r is HostRecord => r !== undefined);
    const mine = records.find((r) => r.hostId === this.hostId);
    // Only a subnet we still hold is given back: not one another host was given after ours expired.
    if (mine && holdersBySubnet(records).get(mine.subnet)?.hostId === this.hostId) {
      const entry = await this.store.get(this.keys.subnet(mine.subnet));
      if (entry) await this.store.delete(entry.key, entry.revision);
      await deletePrefix(this.store, this.keys.ipamSubnetPrefix(mine.subnet));
    }
    await this.store.delete(this.keys.host(this.hostId));
    this.held = undefined;
    this.lastRequest = undefined;
  }

  /** Full set of live leases of the network on every change (see watchLeases). */
  watchLeases(onLeases: (leases: Lease[]) => void): Watch {
    return watchLeases(this.store, this.network, onLeases);
  }

  private async took(entry: Entry, req: AcquireRequest, subnet: string, mine: HostRecord | undefined): Promise<Lease> {
    const expiresAt = entry.expiresAt ?? Date.now() + this.ttlSeconds * 1000;
    if (mine?.subnet !== subnet) {
      // Address records left by a previous holder of this subnet are not ours.
      await deletePrefix(this.store, this.keys.ipamSubnetPrefix(subnet));
      this.log.info({ subnet }, `leased subnet ${subnet} in network "${this.network}"`);
    }
    await this.store.put(this.keys.host(this.hostId), hostRecordToJson({ hostId: this.hostId, subnet, publicIp: req.publicIp, expiresAt }));
    this.lastRequest = req;
    this.held = leaseFromEntry(this.network, entry, this.hostId)!;
    this.held.expiresAt = expiresAt;
    return this.held;
  }

  private exhausted(network: string, range: SubnetRange, leases: Lease[], reserved: Map<string, HostRecord>): WeftError {
    const graced = [...reserved.values()].map((r) => `${r.subnet} (${r.hostId}, ${r.publicIp})`);
    return new WeftError(
      `network "${this.network}" (${network}) is full: all ${range.count} /${range.len} subnet${range.count === 1 ? '' : 's'} are taken` +
        (leases.length ? ` — held by ${describeHolders(leases)}` : '') +
        (graced.length ? `; in their grace period: ${graced.slice(0, 10).join(', ')}${graced.length > 10 ? ` … and ${graced.length - 10} more` : ''}` : ''),
    );
  }
}

/** A random free subnet (like flannel), or undefined when none is free. */
function pickFree(range: SubnetRange, isFree: (s: string) => boolean): string | undefined {
  for (let i = 0; i < RANDOM_PROBES && range.count > 0; i++) {
    const s = range.at(Math.floor(Math.random() * range.count));
    if (isFree(s)) return s;
  }
  const free: string[] = [];
  for (const s of range.all()) if (isFree(s)) free.push(s);
  return free.length ? free[Math.floor(Math.random() * free.length)] : undefined;
}

async function deletePrefix(store: Store, prefix: string): Promise<void> {
  for (const e of await store.list(prefix)) await store.delete(e.key);
}
