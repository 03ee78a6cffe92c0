import { networkKeys } from '../store/layout.js';
import type { Entry, Store, Watch } from '../store/types.js';
import { log as rootLog, type Logger } from '../util/log.js';
import { holdersBySubnet, hostRecordFromEntry, leaseFromEntry, type HostRecord } from './codec.js';
import { ipToInt } from '../net/ipv4.js';
import type { Lease } from './types.js';
import { compareStrings } from '../util/compare.js';

/** Reading a network's live leases: once, or continuously (the full set, kept up to date by deltas). */

/** Live leases from lease entries and host records, sorted by subnet, each with its holder's host id where known. */
export function leasesFrom(network: string, leaseEntries: Iterable<Entry>, hostEntries: Iterable<Entry>): Lease[] {
  const records = [...hostEntries].map(hostRecordFromEntry).filter((r): r is HostRecord => r !== undefined);
  const holders = holdersBySubnet(records);
  const leases: Lease[] = [];
  for (const e of leaseEntries) {
    const lease = leaseFromEntry(network, e);
    if (!lease) continue;
    const holder = holders.get(lease.subnet);
    if (holder) lease.hostId = holder.hostId;
    leases.push(lease);
  }
  return leases.sort((a, b) => sortKey(a) - sortKey(b) || compareStrings(a.subnetV6 ?? '', b.subnetV6 ?? ''));
}

/** Leases sort by subnet address, then prefix length (a plain key before its dual-stack twin). */
function sortKey(l: Lease): number {
  const slash = l.subnet.indexOf('/');
  return ipToInt(l.subnet.slice(0, slash)) * 64 + Number(l.subnet.slice(slash + 1));
}

/** "10.5.1.0/24 by 192.168.1.5 (host-a), …" for messages (at most `max` named). */
export function describeHolders(leases: Lease[], max = 10): string {
  const shown = leases.slice(0, max).map((l) => `${l.subnet} by ${l.publicIp}${l.hostId ? ` (${l.hostId})` : ''}`);
  if (leases.length > max) shown.push(`… and ${leases.length - max} more`);
  return shown.join(', ');
}

export async function listLeases(store: Store, network: string): Promise<Lease[]> {
  const keys = networkKeys(store, network);
  const [leaseEntries, hostEntries] = await Promise.all([store.list(keys.subnetsPrefix), store.list(keys.hostsPrefix)]);
  return leasesFrom(network, leaseEntries, hostEntries);
}

/** What changed since the previous call of a watchLeases callback. */
export type LeaseChange =
  /** The whole set was (re)read: the first call, and after a store resync. */
  | { type: 'resync' }
  /** A lease appeared or changed (a changed holder record also counts). */
  | { type: 'put'; lease: Lease }
  | { type: 'delete'; lease: Lease };

export interface WatchLeasesOptions {
  /**
   * The network's backend type: leases of another type are left out (peers on another data plane
   * cannot be reached by this one), each logged once with the reason.
   */
  backendType?: string;
  log?: Logger;
}

/** One lease in the watch's sorted list, with what it sorts by and which store key it came from. */
interface Item {
  key: string;
  order: number;
  v6: string;
  lease: Lease;
}

/**
 * Calls `onLeases` with the full set of live leases of the network (sorted by subnet, each with its
 * holder's host id where known) once both watches have their first resync, and again after every change to
 * a lease or a host record, with that change. Each store event is applied to the kept set as a delta:
 * a binary search and one splice, no re-parse or re-sort of the others. The array passed is a snapshot the
 * callee may keep: it is never changed after the call.
 */
export function watchLeases(
  store: Store,
  network: string,
  onLeases: (leases: Lease[], change: LeaseChange) => void,
  opts: WatchLeasesOptions = {},
): Watch {
  const log = opts.log ?? rootLog;
  const keys = networkKeys(store, network);
  /** Sorted by (order, v6); `out` holds the same leases in the same order (what callers get). */
  let items: Item[] = [];
  let out: Lease[] = [];
  /** True once `out` was handed to a callback: the next change copies it first. */
  let shared = false;
  const raw = new Map<string, Lease>(); // every parseable lease by key, filtered or not
  const keysOf = new Map<string, Set<string>>(); // lease keys by IPv4 subnet (a plain and a dual-stack key)
  const setRaw = (key: string, l: Lease | undefined) => {
    const prev = raw.get(key);
    if (prev) {
      keysOf.get(prev.subnet)?.delete(key);
      if (keysOf.get(prev.subnet)?.size === 0) keysOf.delete(prev.subnet);
      raw.delete(key);
    }
    if (!l) return;
    raw.set(key, l);
    let set = keysOf.get(l.subnet);
    if (!set) keysOf.set(l.subnet, (set = new Set()));
    set.add(key);
  };
  const records = new Map<string, HostRecord>(); // host records by key
  const bySubnet = new Map<string, Set<HostRecord>>();
  const skipped = new Set<string>(); // keys already logged as of another backend type
  const synced = { leases: false, hosts: false };
  let closed = false;

  const holderOf = (subnet: string): string | undefined => {
    let best: HostRecord | undefined;
    for (const r of bySubnet.get(subnet) ?? []) if (!best || r.expiresAt > best.expiresAt) best = r;
    return best?.hostId;
  };
  const withHolder = (l: Lease): Lease => {
    const hostId = holderOf(l.subnet);
    if (hostId === l.hostId) return l;
    const copy = { ...l };
    if (hostId === undefined) delete copy.hostId;
    else copy.hostId = hostId;
    return copy;
  };
  const admitted = (key: string, l: Lease): boolean => {
    if (opts.backendType === undefined || l.backendType === opts.backendType) {
      skipped.delete(key);
      return true;
    }
    if (!skipped.has(key)) {
      skipped.add(key);
      log.warn(
        { network, subnet: l.subnet, publicIp: l.publicIp, backendType: l.backendType },
        `skipping lease ${l.subnet} of ${l.publicIp} in network "${network}": its BackendType ${JSON.stringify(l.backendType)} is not the network's ${JSON.stringify(opts.backendType)}`,
      );
    }
    return false;
  };
  const find = (order: number, v6: string, key: string): { at: number; found: boolean } => {
    let lo = 0;
    let hi = items.length;
    while (lo < hi) {
      const mid = (lo + hi) >>> 1;
      const it = items[mid]!;
      const c = it.order - order || compareStrings(it.v6, v6) || compareStrings(it.key, key);
      if (c < 0) lo = mid + 1;
      else hi = mid;
    }
    return { at: lo, found: lo < items.length && items[lo]!.key === key };
  };
  const writable = () => {
    if (shared) {
      items = items.slice();
      out = out.slice();
      shared = false;
    }
  };
  const setItem = (key: string, lease: Lease | undefined): Lease | undefined => {
    const prev = raw.get(key);
    const old = prev && find(sortKey(prev), prev.subnetV6 ?? '', key);
    let removed: Lease | undefined;
    if (old?.found) {
      writable();
      removed = items[old.at]!.lease;
      items.splice(old.at, 1);
      out.splice(old.at, 1);
    }
    setRaw(key, lease);
    if (lease && admitted(key, lease)) {
      const item = { key, order: sortKey(lease), v6: lease.subnetV6 ?? '', lease: withHolder(lease) };
      const pos = find(item.order, item.v6, key);
      writable();
      items.splice(pos.at, 0, item);
      out.splice(pos.at, 0, item.lease);
    }
    return removed;
  };
  const relabel = (subnet: string): Lease | undefined => {
    let changed: Lease | undefined;
    for (const key of keysOf.get(subnet) ?? []) {
      const l = raw.get(key)!;
      const pos = find(sortKey(l), l.subnetV6 ?? '', key);
      if (!pos.found) continue;
      const relabelled = withHolder(l);
      if (relabelled.hostId === items[pos.at]!.lease.hostId) continue;
      writable();
      items[pos.at] = { ...items[pos.at]!, lease: relabelled };
      out[pos.at] = relabelled;
      changed = relabelled;
    }
    return changed;
  };
  const addRecord = (key: string, r: HostRecord | undefined): string[] => {
    const touched: string[] = [];
    const prev = records.get(key);
    if (prev) {
      bySubnet.get(prev.subnet)?.delete(prev);
      if (bySubnet.get(prev.subnet)?.size === 0) bySubnet.delete(prev.subnet);
      records.delete(key);
      touched.push(prev.subnet);
    }
    if (r) {
      records.set(key, r);
      let set = bySubnet.get(r.subnet);
      if (!set) bySubnet.set(r.subnet, (set = new Set()));
      set.add(r);
      if (r.subnet !== prev?.subnet) touched.push(r.subnet);
    }
    return touched;
  };
  const rebuild = () => {
    items = [];
    out = [];
    shared = false;
    const all: Item[] = [];
    for (const [key, l] of raw) {
      if (admitted(key, l)) all.push({ key, order: sortKey(l), v6: l.subnetV6 ?? '', lease: withHolder(l) });
    }
    all.sort((a, b) => a.order - b.order || compareStrings(a.v6, b.v6) || compareStrings(a.key, b.key));
    items = all;
    out = all.map((i) => i.lease);
  };
  const emit = (change: LeaseChange) => {
    if (closed || !synced.leases || !synced.hosts) return;
    shared = true;
    onLeases(out, change);
  };

  const leaseWatch = store.watch(keys.subnetsPrefix, (ev) => {
    if (ev.type === 'resync') {
      raw.clear();
      keysOf.clear();
      for (const e of ev.entries) setRaw(e.key, leaseFromEntry(network, e));
      synced.leases = true;
      if (synced.hosts) rebuild();
      emit({ type: 'resync' });
      return;
    }
    if (!synced.hosts) {
      // Not listing yet: keep the raw set current, the hosts resync rebuilds the list.
      if (ev.type === 'put') setRaw(ev.entry.key, leaseFromEntry(network, ev.entry));
      else setRaw(ev.key, undefined);
      return;
    }
    if (ev.type === 'put') {
      const l = leaseFromEntry(network, ev.entry);
      const removed = setItem(ev.entry.key, l);
      const now = l && find(sortKey(l), l.subnetV6 ?? '', ev.entry.key);
      if (now?.found) emit({ type: 'put', lease: items[now.at]!.lease });
      else if (removed) emit({ type: 'delete', lease: removed });
    } else {
      const removed = setItem(ev.key, undefined);
      skipped.delete(ev.key);
      if (removed) emit({ type: 'delete', lease: removed });
    }
  });
  const hostWatch = store.watch(keys.hostsPrefix, (ev) => {
    if (ev.type === 'resync') {
      records.clear();
      bySubnet.clear();
      for (const e of ev.entries) addRecord(e.key, hostRecordFromEntry(e));
      synced.hosts = true;
      if (synced.leases) rebuild();
      emit({ type: 'resync' });
      return;
    }
    const touched = addRecord(ev.type === 'put' ? ev.entry.key : ev.key, ev.type === 'put' ? hostRecordFromEntry(ev.entry) : undefined);
    if (!synced.leases || !synced.hosts) return;
    for (const subnet of touched) {
      const changed = relabel(subnet);
      if (changed) emit({ type: 'put', lease: changed });
    }
  });
  return {
    close() {
      closed = true;
      leaseWatch.close();
      hostWatch.close();
    },
  };
}
