import { networkKeys } from '../store/layout.js';
import type { Entry, Store, Watch } from '../store/types.js';
import { holdersBySubnet, hostRecordFromEntry, leaseFromEntry, type HostRecord } from './codec.js';
import type { Lease } from './types.js';

/** Reading a network's live leases: once, or continuously (full set on every change). */

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
  return leases.sort((a, b) => compareSubnets(a.subnet, b.subnet));
}

function compareSubnets(a: string, b: string): number {
  const n = (s: string) => s.split(/[./]/).map(Number);
  const x = n(a);
  const y = n(b);
  for (let i = 0; i < x.length; i++) if (x[i] !== y[i]) return x[i]! - y[i]!;
  return 0;
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

/**
 * Calls `onLeases` with the full set of live leases of the network once both watches have their first
 * resync, and again after every change to a lease or a host record.
 */
export function watchLeases(store: Store, network: string, onLeases: (leases: Lease[]) => void): Watch {
  const keys = networkKeys(store, network);
  const sets = { leases: new Map<string, Entry>(), hosts: new Map<string, Entry>() };
  const synced = { leases: false, hosts: false };
  let closed = false;
  const emit = () => {
    if (!closed && synced.leases && synced.hosts) onLeases(leasesFrom(network, sets.leases.values(), sets.hosts.values()));
  };
  const watchOne = (prefix: string, which: 'leases' | 'hosts') =>
    store.watch(prefix, (ev) => {
      const map = sets[which];
      if (ev.type === 'resync') {
        map.clear();
        for (const e of ev.entries) map.set(e.key, e);
        synced[which] = true;
      } else if (ev.type === 'put') {
        map.set(ev.entry.key, ev.entry);
      } else if (!map.delete(ev.key)) {
        return;
      }
      emit();
    });
  const watches = [watchOne(keys.subnetsPrefix, 'leases'), watchOne(keys.hostsPrefix, 'hosts')];
  return {
    close() {
      closed = true;
      for (const w of watches) w.close();
    },
  };
}
