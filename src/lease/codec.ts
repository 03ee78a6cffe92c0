import { keyToSubnet } from '../store/layout.js';
import type { Entry } from '../store/types.js';
import type { Lease } from './types.js';

/**
 * The JSON of lease values and host records — the one place that knows their shape.
 * A lease value is flannel's LeaseAttrs exactly, keys in flannel's order:
 *   {"PublicIP":"192.168.1.5","BackendType":"vxlan","BackendData":{"VNI":1,"VtepMAC":"…"}}
 */

/** flannel's lease JSON for a lease (BackendData as given, key order kept). */
export function leaseToJson(lease: Pick<Lease, 'publicIp' | 'backendType' | 'backendData'>): string {
  return JSON.stringify({ PublicIP: lease.publicIp, BackendType: lease.backendType, BackendData: lease.backendData });
}

/**
 * A lease from its store entry (key …/subnets/<a.b.c.d-len>), or undefined when the entry is not a lease
 * (wrong key or unreadable JSON — e.g. something another tool wrote).
 */
export function leaseFromEntry(network: string, entry: Entry, hostId?: string): Lease | undefined {
  const subnet = keyToSubnet(entry.key.slice(entry.key.lastIndexOf('/') + 1));
  if (!subnet) return undefined;
  let v: { PublicIP?: unknown; BackendType?: unknown; BackendData?: unknown };
  try {
    v = JSON.parse(entry.value);
  } catch {
    return undefined;
  }
  if (typeof v?.PublicIP !== 'string') return undefined;
  const lease: Lease = {
    network,
    subnet,
    publicIp: v.PublicIP,
    backendType: typeof v.BackendType === 'string' ? v.BackendType : '',
    backendData: v.BackendData && typeof v.BackendData === 'object' ? (v.BackendData as Record<string, unknown>) : {},
  };
  if (hostId !== undefined) lease.hostId = hostId;
  if (entry.expiresAt !== undefined) lease.expiresAt = entry.expiresAt;
  return lease;
}

/** networks/<name>/hosts/<hostId>: the subnet a host holds or held, and when that lease runs out. */
export interface HostRecord {
  hostId: string;
  subnet: string;
  publicIp: string;
  /** ms since epoch. */
  expiresAt: number;
}

export function hostRecordToJson(r: HostRecord): string {
  return JSON.stringify({ Subnet: r.subnet, PublicIP: r.publicIp, ExpiresAt: new Date(r.expiresAt).toISOString() });
}

export function hostRecordFromEntry(entry: Entry): HostRecord | undefined {
  try {
    const v = JSON.parse(entry.value) as { Subnet?: unknown; PublicIP?: unknown; ExpiresAt?: unknown };
    const expiresAt = typeof v.ExpiresAt === 'string' ? Date.parse(v.ExpiresAt) : NaN;
    if (typeof v.Subnet !== 'string' || Number.isNaN(expiresAt)) return undefined;
    return {
      hostId: entry.key.slice(entry.key.lastIndexOf('/') + 1),
      subnet: v.Subnet,
      publicIp: typeof v.PublicIP === 'string' ? v.PublicIP : '',
      expiresAt,
    };
  } catch {
    return undefined;
  }
}

/** For each subnet, the host whose record names it with the latest expiry (its current or last holder). */
export function holdersBySubnet(records: Iterable<HostRecord>): Map<string, HostRecord> {
  const out = new Map<string, HostRecord>();
  for (const r of records) {
    const prev = out.get(r.subnet);
    if (!prev || r.expiresAt > prev.expiresAt) out.set(r.subnet, r);
  }
  return out;
}
