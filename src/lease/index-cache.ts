import { networkKeys, parseLeaseKey } from '../store/layout.js';
import type { Entry, Store, Watch, WatchEvent } from '../store/types.js';

/**
 * Which subnets of a network are taken, kept current by a store watch, so that acquiring a fresh lease does
 * not list every lease of the network (issue 15: `acquire` re-listed everything, O(n) per call).
 *
 * It is a hint, never the authority: the lease is still written with compare-and-swap (revision 0 for a
 * free subnet, the seen revision for a reused one) and the dual-stack twin check runs against the store, so
 * a stale view costs at most a lost compare-and-swap and another pick — never two hosts on one subnet.
 *
 * One per store and network, shared by the LeaseManagers of a process; its watch closes itself after
 * IDLE_MS without a user (an agent acquires once, then only renews without it).
 */
export const LEASE_INDEX_IDLE_MS = 10_000;

interface Item {
  entry: Entry;
  subnet: string;
  /** PublicIP named by the value (undefined when it names none or does not parse). */
  publicIp: string | undefined;
}

export class LeaseIndex {
  private readonly items = new Map<string, Item>();
  /** Lease keys by the IPv4 subnet they occupy (a plain key and a dual-stack twin). */
  private readonly bySubnet = new Map<string, Set<string>>();
  private readonly byIp = new Map<string, Set<string>>();
  private watch: Watch | undefined;
  private users = 0;
  private idleTimer: NodeJS.Timeout | undefined;
  /** True once the first resync arrived (and while the watch is open). */
  ready = false;
  private waiters: Array<() => void> = [];

  constructor(
    private readonly store: Store,
    readonly prefix: string,
    private readonly onClosed: () => void,
  ) {}

  /** Marks a user; the returned function ends the use. Opens the watch when needed (false: it could not). */
  use(): () => void {
    this.users++;
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    if (!this.watch) {
      try {
        this.watch = this.store.watch(this.prefix, (ev) => this.apply(ev));
      } catch {
        this.watch = undefined; // a closed store: callers fall back to listing (which reports the error)
      }
    }
    let done = false;
    return () => {
      if (done) return;
      done = true;
      if (--this.users > 0) return;
      this.idleTimer = setTimeout(() => this.close(), LEASE_INDEX_IDLE_MS);
      this.idleTimer.unref?.();
    };
  }

  /**
   * Resolves when the first resync arrived, or after `ms` without one (a store that does not answer: the
   * caller then lists, and that reports the store's error).
   */
  async whenReady(ms: number): Promise<boolean> {
    if (this.ready || !this.watch) return this.ready;
    let timer: NodeJS.Timeout | undefined;
    await new Promise<void>((resolve) => {
      this.waiters.push(resolve);
      timer = setTimeout(resolve, ms);
    });
    clearTimeout(timer);
    return this.ready;
  }

  close(): void {
    clearTimeout(this.idleTimer);
    this.idleTimer = undefined;
    this.watch?.close();
    this.watch = undefined;
    this.ready = false;
    for (const w of this.waiters.splice(0)) w();
    this.items.clear();
    this.bySubnet.clear();
    this.byIp.clear();
    this.onClosed();
  }

  /** True when a key of the index occupies `subnet`. */
  taken(subnet: string): boolean {
    return this.bySubnet.has(subnet);
  }

  /** The entries occupying `subnet` (a plain key and/or a dual-stack twin). */
  entriesOf(subnet: string): Entry[] {
    return [...(this.bySubnet.get(subnet) ?? [])].map((k) => this.items.get(k)!.entry);
  }

  /** Subnets with a lease naming `publicIp`. */
  subnetsNaming(publicIp: string): string[] {
    return [...new Set([...(this.byIp.get(publicIp) ?? [])].map((k) => this.items.get(k)!.subnet))];
  }

  private apply(ev: WatchEvent): void {
    if (ev.type === 'resync') {
      this.items.clear();
      this.bySubnet.clear();
      this.byIp.clear();
      for (const e of ev.entries) this.set(e.key, e);
      this.ready = true;
      for (const w of this.waiters.splice(0)) w();
    } else if (ev.type === 'put') this.set(ev.entry.key, ev.entry);
    else this.set(ev.key, undefined);
  }

  private set(key: string, entry: Entry | undefined): void {
    const prev = this.items.get(key);
    if (prev) {
      this.items.delete(key);
      drop(this.bySubnet, prev.subnet, key);
      if (prev.publicIp !== undefined) drop(this.byIp, prev.publicIp, key);
    }
    if (!entry) return;
    const parsed = parseLeaseKey(key.slice(this.prefix.length));
    if (!parsed) return;
    let publicIp: string | undefined;
    try {
      const v = JSON.parse(entry.value) as { PublicIP?: unknown };
      if (typeof v.PublicIP === 'string') publicIp = v.PublicIP;
    } catch {
      // an unreadable value still occupies its subnet
    }
    this.items.set(key, { entry, subnet: parsed.subnet, publicIp });
    add(this.bySubnet, parsed.subnet, key);
    if (publicIp !== undefined) add(this.byIp, publicIp, key);
  }
}

function add(m: Map<string, Set<string>>, k: string, v: string): void {
  let s = m.get(k);
  if (!s) m.set(k, (s = new Set()));
  s.add(v);
}

function drop(m: Map<string, Set<string>>, k: string, v: string): void {
  const s = m.get(k);
  if (!s) return;
  s.delete(v);
  if (s.size === 0) m.delete(k);
}

const indexes = new WeakMap<Store, Map<string, LeaseIndex>>();

/** The shared index of a network's lease keys in this store (made on first use). */
export function leaseIndex(store: Store, network: string): LeaseIndex {
  let byNet = indexes.get(store);
  if (!byNet) indexes.set(store, (byNet = new Map()));
  const prefix = networkKeys(store, network).subnetsPrefix;
  let idx = byNet.get(prefix);
  if (!idx) {
    const m = byNet;
    const made: LeaseIndex = new LeaseIndex(store, prefix, () => {
      if (m.get(prefix) === made) m.delete(prefix);
    });
    idx = made;
    byNet.set(prefix, idx);
  }
  return idx;
}
