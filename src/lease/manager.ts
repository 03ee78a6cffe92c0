import { getNetwork } from '../config/registry.js';
import { networkKeys, type NetworkKeys } from '../store/layout.js';
import type { Entry, Store, Watch } from '../store/types.js';
import { realClock, type Clock, type Timer } from '../util/clock.js';
import { WeftError } from '../util/errors.js';
import { log as rootLog, type Logger } from '../util/log.js';
import {
  differentHolderReason,
  holdersBySubnet,
  hostRecordFromEntry,
  hostRecordToJson,
  leaseFromEntry,
  leaseToJson,
  provablySameHolder,
  type HostRecord,
} from './codec.js';
import { describeHolders, leasesFrom, watchLeases, type LeaseChange } from './leases.js';
import { parseLeaseKey } from '../store/layout.js';
import { SubnetRange } from './subnets.js';
import { leaseIndex, type LeaseIndex } from './index-cache.js';
import type { Lease } from './types.js';

/** flannel's lease TTL. */
export const DEFAULT_LEASE_TTL_SECONDS = 24 * 60 * 60;
/** How long a subnet whose lease expired stays reserved for its holder. */
export const DEFAULT_GRACE_SECONDS = 60 * 60;
/** How long a host record outlives its lease's grace period before the store drops it (hosts/ must not grow forever). */
export const DEFAULT_HOST_RECORD_SECONDS = 7 * 24 * 60 * 60;
const MAX_ATTEMPTS = 200;
/** How long acquire waits for the lease index's first read before listing instead (ms). */
const INDEX_WAIT_MS = 2000;
/** Random probes before falling back to enumerating every free subnet (huge networks stay cheap). */
const RANDOM_PROBES = 64;

export interface LeaseManagerOptions {
  /** Stable identity of this host (becomes a key segment). */
  hostId: string;
  ttlSeconds?: number;
  graceSeconds?: number;
  /** How long this host's record stays after its lease and grace period ran out (default 7 days). */
  hostRecordSeconds?: number;
  log?: Logger;
  /** Time source for renewals and retry pauses (default: the real clock; tests pass a FakeClock). */
  clock?: Clock;
}

export interface AcquireRequest {
  publicIp: string;
  /** Defaults to the network's Backend.Type. */
  backendType?: string;
  /** Published to peers as flannel's BackendData, as given. */
  backendData?: Record<string, unknown>;
}

/**
 * One host's subnet lease in one network.
 *
 * The lease key is flannel's, with flannel's JSON value, written with a store TTL of ttl + grace: the key of
 * a holder that went away stays in the store for the grace period, so every client of the layout (weft or
 * flanneld) sees the subnet as taken and nobody else leases it meanwhile. The value is not marked as
 * "expired" because nobody is there to write the mark (the holder is gone; any other writer would race the
 * holder's return) and flannel's LeaseAttrs has no field for it; the limit is that during the grace period
 * peers still route the subnet to its gone holder — where it would be anyway, since nobody else holds it.
 *
 * acquire() reuses a live lease only when it provably is this host's: same PublicIP, BackendType and backend
 * identity (VtepMAC, PublicKey) — or, for the subnet this host's own record names, same PublicIP and
 * BackendType with no later holder on record (a VTEP recreated by a reboot; see oursByRecord). A live lease
 * with another PublicIP is never written, whatever this host's record says; the host then takes a free
 * subnet and logs why. An absent key named by this host's
 * record is taken back unless a later holder's record claims it.
 *
 * renew() extends the key's TTL with Store.refresh (no new revision, no watch event) and falls back to a full
 * acquire when the key changed. The host record `hosts/<id>` (holder's host id for peers, this host's
 * previous subnet) carries a TTL of ttl + grace + hostRecordSeconds and is refreshed with the lease.
 */
export class LeaseManager {
  readonly store: Store;
  readonly network: string;
  readonly hostId: string;
  readonly ttlSeconds: number;
  readonly graceSeconds: number;
  readonly hostRecordSeconds: number;
  readonly clock: Clock;
  private readonly keys: NetworkKeys;
  private readonly log: Logger;
  private lastRequest: AcquireRequest | undefined;
  private held: Lease | undefined;
  /** The held lease's key and revision, and the host record's (what renew() refreshes). */
  private heldEntry: { key: string; revision: number } | undefined;
  private recordEntry: { revision: number; value: string } | undefined;
  /** The network's backend type, known after acquire (watchLeases filters peers by it). */
  private backendType: string | undefined;
  private timer: Timer | undefined;
  private inflight: Promise<unknown> | undefined;

  constructor(store: Store, network: string, opts: LeaseManagerOptions) {
    this.store = store;
    this.network = network;
    this.hostId = opts.hostId;
    this.ttlSeconds = opts.ttlSeconds ?? DEFAULT_LEASE_TTL_SECONDS;
    this.graceSeconds = opts.graceSeconds ?? DEFAULT_GRACE_SECONDS;
    this.hostRecordSeconds = opts.hostRecordSeconds ?? DEFAULT_HOST_RECORD_SECONDS;
    this.clock = opts.clock ?? realClock;
    this.keys = networkKeys(store, network);
    this.keys.host(opts.hostId); // validates the host id
    this.log = (opts.log ?? rootLog).child({ network, hostId: opts.hostId });
  }

  /** The lease this manager holds (after acquire), else undefined. */
  get lease(): Lease | undefined {
    return this.held;
  }

  /** Store TTL of a lease key: the lease's own TTL plus the grace period that reserves it for its holder. */
  private get keyTtl(): number {
    return this.ttlSeconds + this.graceSeconds;
  }

  private get recordTtl(): number {
    return this.ttlSeconds + this.graceSeconds + this.hostRecordSeconds;
  }

  async acquire(req: AcquireRequest): Promise<Lease> {
    const index = leaseIndex(this.store, this.network);
    const done = index.use();
    let config;
    let firstRecord: Entry | undefined;
    try {
      // This host's record is read once up front, beside the config (one round trip less on etcd).
      [config, firstRecord] = await Promise.all([
        getNetwork(this.store, this.network),
        this.store.get(this.keys.host(this.hostId)),
        index.whenReady(INDEX_WAIT_MS),
      ]);
    } catch (err) {
      done();
      throw err;
    }
    this.backendType = config.Backend.Type;
    const range = new SubnetRange({ ...config, SubnetLen: config.SubnetLen! });
    const want = { publicIp: req.publicIp, backendType: req.backendType ?? config.Backend.Type, backendData: req.backendData ?? {} };
    const value = leaseToJson(want);
    /** Subnets this call decided not to take (named in the log once each). */
    const refused = new Set<string>();
    /** Free-looking subnets of the index whose compare-and-swap found them taken (the index was behind). */
    const lost = new Set<string>();
    try {
      let backoff = false;
      for (let attempt = 0; attempt < MAX_ATTEMPTS; attempt++) {
        if (backoff) await this.clock.sleep(2 + Math.random() * Math.min(50, 5 * attempt));
        backoff = true;
        if (index.ready) {
          const step = await this.acquireFromIndex(index, range, want, value, req, refused, lost, attempt === 0 ? firstRecord : null);
          if (step === 'lost') {
            backoff = false; // only our view was behind: pick again at once
            continue;
          }
          if (step === 'retry') continue;
          if (step !== 'list') return step;
        }
        const got = await this.acquireFromLists(config.Network, range, want, value, req, refused);
        if (got) return got;
      }
    } finally {
      done();
    }
    throw new WeftError(`could not acquire a subnet in network "${this.network}": ${MAX_ATTEMPTS} attempts lost a race`);
  }

  /**
   * One attempt for a host without a usable record of its own (a new host: the common case at scale),
   * from the lease index instead of a listing: steps 2 and 3 of acquireFromLists. 'list' when the
   * attempt needs the full listing (a usable record of this host, or no free subnet in the index's view).
   */
  private async acquireFromIndex(
    index: LeaseIndex,
    range: SubnetRange,
    want: Pick<Lease, 'publicIp' | 'backendType' | 'backendData'>,
    value: string,
    req: AcquireRequest,
    refused: Set<string>,
    lost: Set<string>,
    /** This host's record as just read (null: read it now). */
    record: Entry | undefined | null,
  ): Promise<Lease | 'list' | 'retry' | 'lost'> {
    const recordEntry = record === null ? await this.store.get(this.keys.host(this.hostId)) : record;
    const mine = recordEntry && hostRecordFromEntry(recordEntry);
    if (recordEntry && !mine) return 'list'; // an unreadable record: the listing path decides as before
    if (mine && range.has(mine.subnet) && !refused.has(mine.subnet)) return 'list';
    // 2. A live plain lease in the range that provably is this host's (see acquireFromLists).
    for (const s of index.subnetsNaming(want.publicIp)) {
      const es = index.entriesOf(s);
      if (es.length !== 1 || es[0]!.key.includes('&') || !range.has(s) || refused.has(s) || lost.has(s)) continue;
      const entry = this.provablyOurs(es, want);
      if (!entry) continue;
      const got = await this.store.compareAndSwap(entry.key, entry.revision, value, { ttlSeconds: this.keyTtl });
      if (got) return this.took(got, req, s, mine);
      lost.add(s);
      return 'lost';
    }
    // 3. A free subnet (the store's compare-and-swap on an absent key decides).
    const subnet = pickFree(range, (s) => !index.taken(s) && !refused.has(s) && !lost.has(s));
    if (!subnet) return 'list';
    const got = await this.store.compareAndSwap(this.keys.subnet(subnet), 0, value, { ttlSeconds: this.keyTtl });
    if (!got) {
      lost.add(subnet);
      return 'lost';
    }
    if (!(await this.keepUnlessTwin(got))) {
      refused.add(subnet);
      return 'retry';
    }
    return this.took(got, req, subnet, mine);
  }

  /**
   * A dual-stack key for the same IPv4 subnet written just before ours (its writer cannot see our plain
   * key in one transaction): the earlier writer keeps it, we give ours back (false) and pick again.
   */
  private async keepUnlessTwin(got: Entry): Promise<boolean> {
    const twins = (await this.store.list(`${got.key}&`)).filter((e) => e.revision < got.revision);
    if (twins.length === 0) return true;
    await this.store.delete(got.key, got.revision);
    return false;
  }

  /** One attempt from full listings of leases and host records; undefined: lost a race, try again. */
  private async acquireFromLists(
    network: string,
    range: SubnetRange,
    want: Pick<Lease, 'publicIp' | 'backendType' | 'backendData'>,
    value: string,
    req: AcquireRequest,
    refused: Set<string>,
  ): Promise<Lease | undefined> {
    {
      const [leaseEntries, hostEntries] = await Promise.all([
        this.store.list(this.keys.subnetsPrefix),
        this.store.list(this.keys.hostsPrefix),
      ]);
      /** Live lease keys by the IPv4 subnet they occupy (a dual-stack key occupies its IPv4 subnet too). */
      const live = new Map<string, Entry[]>();
      for (const e of leaseEntries) {
        const k = parseLeaseKey(e.key.slice(this.keys.subnetsPrefix.length));
        if (!k) continue;
        const list = live.get(k.subnet);
        if (list) list.push(e);
        else live.set(k.subnet, [e]);
      }
      const records = hostEntries.map(hostRecordFromEntry).filter((r): r is HostRecord => r !== undefined);
      const mine = records.find((r) => r.hostId === this.hostId);
      const holders = holdersBySubnet(records.filter((r) => r.hostId !== this.hostId));

      // 1. The subnet this host's record names, when it is still this host's to take.
      if (mine && range.has(mine.subnet) && !refused.has(mine.subnet)) {
        const entries = live.get(mine.subnet) ?? [];
        const other = holders.get(mine.subnet);
        if (entries.length === 0 && other && other.expiresAt > mine.expiresAt) {
          refused.add(mine.subnet);
          this.log.warn(
            { oldSubnet: mine.subnet, takenBy: other.hostId, takenByIp: other.publicIp },
            `!!! SUBNET CHANGED: this host's previous subnet ${mine.subnet} in network "${this.network}" was leased to host ` +
              `${other.hostId} (${other.publicIp}) after our lease expired; acquiring a NEW subnet — containers keep no addresses from ${mine.subnet}`,
          );
        } else if (entries.length === 0) {
          const got = await this.store.compareAndSwap(this.keys.subnet(mine.subnet), 0, value, { ttlSeconds: this.keyTtl });
          if (got) return this.took(got, req, mine.subnet, mine);
          return undefined;
        } else {
          const ours = this.provablyOurs(entries, want) ?? this.oursByRecord(entries, want, mine, other);
          if (ours) {
            const got = await this.store.compareAndSwap(ours.key, ours.revision, value, { ttlSeconds: this.keyTtl });
            if (got) return this.took(got, req, mine.subnet, mine);
            return undefined;
          }
          refused.add(mine.subnet);
          const l = leaseFromEntry(this.network, entries[0]!);
          this.log.warn(
            { oldSubnet: mine.subnet, holderIp: l?.publicIp },
            `!!! SUBNET CHANGED: this host's previous subnet ${mine.subnet} in network "${this.network}" is held by a live lease that is ` +
              `not provably this host's (${l ? differentHolderReason(l, want) : 'its value is unreadable'}); it is not overwritten. ` +
              `Acquiring a NEW subnet — containers keep no addresses from ${mine.subnet}`,
          );
        }
      }

      // 2. Without a usable record: a live lease in the range that provably is this host's (flannel's reuse
      //    by PublicIP, e.g. a host moving from flanneld to weft on host-gw). Plain keys only: rewriting a
      //    dual-stack key with weft's IPv4-only value would drop its IPv6 half.
      if (!mine || refused.has(mine.subnet) || !range.has(mine.subnet)) {
        // (a substring test first: only leases naming this address are parsed)
        const ipText = JSON.stringify(want.publicIp);
        const found = [...live.entries()].find(
          ([s, es]) =>
            es.length === 1 && es[0]!.value.includes(ipText) && !es[0]!.key.includes('&') && range.has(s) && !refused.has(s) && this.provablyOurs(es, want),
        );
        if (found) {
          const [subnet, [entry]] = found;
          const got = await this.store.compareAndSwap(entry!.key, entry!.revision, value, { ttlSeconds: this.keyTtl });
          if (got) return this.took(got, req, subnet, mine);
          return undefined;
        }
      }

      // 3. A free subnet: no live key names it (keys in their grace period included), and not one refused above.
      const isFree = (s: string) => !live.has(s) && !refused.has(s);
      const subnet = pickFree(range, isFree);
      if (!subnet) throw this.exhausted(network, range, leasesFrom(this.network, leaseEntries, hostEntries));
      const got = await this.store.compareAndSwap(this.keys.subnet(subnet), 0, value, { ttlSeconds: this.keyTtl });
      if (!got) return undefined;
      if (!(await this.keepUnlessTwin(got))) {
        refused.add(subnet);
        return undefined;
      }
      return this.took(got, req, subnet, mine);
    }
  }

  /**
   * Keeps the held lease alive. Without any write when the store can (Store.refresh: the lease and the host
   * record keep their revisions, no watcher wakes up); otherwise, or when the lease changed under us, through
   * acquire (an expired or taken lease is handled there).
   */
  async renew(): Promise<Lease> {
    if (!this.lastRequest) throw new WeftError(`no lease to renew in network "${this.network}": acquire one first`);
    const held = this.held;
    const entry = this.heldEntry;
    if (held && entry) {
      const got = await this.store.refresh(entry.key, entry.revision, this.keyTtl);
      if (got) {
        await this.refreshRecord(held.subnet);
        held.expiresAt = got.expiresAt ?? this.clock.now() + this.keyTtl * 1000;
        return held;
      }
    }
    return this.acquire(this.lastRequest);
  }

  /** Renews every ttl/3 until stop(); `onChange` hears about a lease whose subnet changed on renewal. */
  start(onChange?: (lease: Lease) => void): void {
    void this.stop();
    this.timer = this.clock.setInterval(() => {
      if (this.inflight) return; // the previous renewal is still running (slow store): skip a beat
      const before = this.held?.subnet;
      this.inflight = this.renew()
        .then(
          (lease) => {
            if (lease.subnet !== before) onChange?.(lease);
          },
          (err: unknown) => this.log.error({ err }, `lease renewal failed in network "${this.network}"`),
        )
        .finally(() => (this.inflight = undefined));
    }, (this.ttlSeconds * 1000) / 3);
  }

  /** Stops renewing; resolves once a renewal already under way has finished (await it before closing the store). */
  stop(): Promise<void> {
    this.timer?.cancel();
    this.timer = undefined;
    return this.idle();
  }

  /** Resolves when no renewal is running. */
  async idle(): Promise<void> {
    await this.inflight;
  }

  /** Gives the subnet up for good: deletes the lease, this host's record and its address records. */
  async release(): Promise<void> {
    await this.stop();
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
    this.heldEntry = undefined;
    this.recordEntry = undefined;
    this.lastRequest = undefined;
  }

  /**
   * The network's live leases on every change (see watchLeases). After acquire, leases of another backend
   * type than the network's are left out, each with a logged reason.
   */
  watchLeases(onLeases: (leases: Lease[], change: LeaseChange) => void): Watch {
    return watchLeases(this.store, this.network, onLeases, {
      log: this.log,
      ...(this.backendType !== undefined ? { backendType: this.backendType } : {}),
    });
  }

  /**
   * A live lease whose backend identity changed but that is still this host's: it names this host's
   * PublicIP and BackendType, and this host's record (host id = machine id) names the subnet with that same
   * address, with no later record of another host for it. That is a host whose VTEP was recreated (a reboot
   * within ttl + grace gives a new VtepMAC): without this it would lose its subnet on every reboot.
   * A lease another machine wrote never qualifies: flanneld writes no record, and another weft host's later
   * record for the subnet rules it out.
   */
  private oursByRecord(entries: Entry[], want: Pick<Lease, 'publicIp' | 'backendType'>, mine: HostRecord, other: HostRecord | undefined): Entry | undefined {
    if (entries.length !== 1 || (other && other.expiresAt > mine.expiresAt) || mine.publicIp !== want.publicIp) return undefined;
    const l = leaseFromEntry(this.network, entries[0]!);
    if (!l || l.publicIp !== want.publicIp || l.backendType !== want.backendType) return undefined;
    this.log.info({ subnet: l.subnet }, `reusing this host's lease ${l.subnet}: same PublicIP and host record, new backend identity`);
    return entries[0];
  }

  /** The one entry among a subnet's live keys that provably is this host's lease, if any. */
  private provablyOurs(entries: Entry[], want: Pick<Lease, 'publicIp' | 'backendType' | 'backendData'>): Entry | undefined {
    if (entries.length !== 1) return undefined; // a plain and a dual-stack key: not ours to sort out
    const l = leaseFromEntry(this.network, entries[0]!);
    return l && provablySameHolder(l, want) ? entries[0] : undefined;
  }

  private async took(entry: Entry, req: AcquireRequest, subnet: string, mine: HostRecord | undefined): Promise<Lease> {
    const expiresAt = entry.expiresAt ?? this.clock.now() + this.keyTtl * 1000;
    // Logged the moment the lease is in the store (bench:scale times a join from this line).
    if (mine?.subnet !== subnet) this.log.info({ subnet }, `leased subnet ${subnet} in network "${this.network}"`);
    // ExpiresAt: when the lease runs out as of this acquisition (orders holders of one subnet by recency).
    const record = hostRecordToJson({ hostId: this.hostId, subnet, publicIp: req.publicIp, expiresAt: this.clock.now() + this.ttlSeconds * 1000 });
    // Independent writes, side by side (one round trip instead of three on etcd): the previous holder's
    // address records, this host's record, and the endpoints of hosts gone for good.
    const [, written] = await Promise.all([
      // Address records left by a previous holder of this subnet are not ours.
      mine?.subnet !== subnet ? deletePrefix(this.store, this.keys.ipamSubnetPrefix(subnet)) : undefined,
      this.store.put(this.keys.host(this.hostId), record, { ttlSeconds: this.recordTtl }),
      this.collectOrphanEndpoints(),
    ]);
    this.recordEntry = { revision: written.revision, value: record };
    this.lastRequest = req;
    this.heldEntry = { key: entry.key, revision: entry.revision };
    this.held = leaseFromEntry(this.network, entry, this.hostId)!;
    this.held.expiresAt = expiresAt;
    return this.held;
  }

  /** Extends the host record's TTL with the lease's; rewrites it when it changed or vanished. */
  private async refreshRecord(subnet: string): Promise<void> {
    const rec = this.recordEntry;
    if (rec && (await this.store.refresh(this.keys.host(this.hostId), rec.revision, this.recordTtl))) return;
    const value =
      rec?.value ??
      hostRecordToJson({ hostId: this.hostId, subnet, publicIp: this.held!.publicIp, expiresAt: this.clock.now() + this.ttlSeconds * 1000 });
    const written = await this.store.put(this.keys.host(this.hostId), value, { ttlSeconds: this.recordTtl });
    this.recordEntry = { revision: written.revision, value };
  }

  /**
   * Deletes `endpoints/<host>/…` of hosts that have no host record any more: their record ran out
   * (hostRecordSeconds after their lease and grace), so they are gone for good. Runs when this host takes a
   * subnet, not on renewals.
   */
  private async collectOrphanEndpoints(): Promise<void> {
    const prefix = `${this.keys.root}endpoints/`;
    // Endpoints first, then hosts: a host writes its record before any endpoint, so every endpoint listed
    // here has its record in the later hosts listing unless that record really expired.
    const endpoints = await this.store.list(prefix);
    if (endpoints.length === 0) return;
    const hosts = await this.store.list(this.keys.hostsPrefix);
    const known = new Set(hosts.map((e) => e.key.slice(this.keys.hostsPrefix.length)));
    known.add(this.hostId);
    const gone = new Set<string>();
    for (const e of endpoints) {
      const host = e.key.slice(prefix.length).split('/')[0]!;
      if (known.has(host)) continue;
      gone.add(host);
      await this.store.delete(e.key, e.revision);
    }
    if (gone.size) this.log.info({ hosts: [...gone] }, `removed the endpoint records of ${gone.size} host(s) whose host record expired`);
  }

  private exhausted(network: string, range: SubnetRange, leases: Lease[]): WeftError {
    const now = this.clock.now();
    const graceMs = this.graceSeconds * 1000;
    // Where the store tells a key's expiry, a key within its last grace period is a gone holder's reservation.
    const graced = leases.filter((l) => l.expiresAt !== undefined && l.expiresAt - graceMs <= now);
    const held = leases.filter((l) => !graced.includes(l));
    return new WeftError(
      `network "${this.network}" (${network}) is full: all ${range.count} /${range.len} subnet${range.count === 1 ? '' : 's'} are taken` +
        (held.length ? ` — held by ${describeHolders(held)}` : '') +
        (graced.length ? `; in their grace period: ${describeHolders(graced)}` : ''),
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
