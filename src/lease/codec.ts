import type { Entry } from '../store/types.js';
import { parseLeaseKey } from '../store/layout.js';
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
 * A lease from its store entry (key …/subnets/<a.b.c.d-len>, or flannel's dual-stack
 * …/subnets/<a.b.c.d-len>&<v6addr-len>), or undefined when the entry is not a lease (wrong key or
 * unreadable JSON — e.g. something another tool wrote).
 */
export function leaseFromEntry(network: string, entry: Entry, hostId?: string): Lease | undefined {
  const parsed = parseLeaseKey(entry.key.slice(entry.key.lastIndexOf('/') + 1));
  if (!parsed) return undefined;
  const { subnet, subnetV6 } = parsed;
  let v: { PublicIP?: unknown; PublicIPv6?: unknown; BackendType?: unknown; BackendData?: unknown };
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
  if (subnetV6 !== undefined) lease.subnetV6 = subnetV6;
  if (typeof v.PublicIPv6 === 'string') lease.publicIpV6 = v.PublicIPv6;
  if (hostId !== undefined) lease.hostId = hostId;
  if (entry.expiresAt !== undefined) lease.expiresAt = entry.expiresAt;
  return lease;
}

/** BackendData fields that name one machine's data plane: a VTEP's MAC, a WireGuard key. */
const IDENTITY_FIELDS = ['VtepMAC', 'PublicKey'] as const;

/**
 * True when a stored lease provably belongs to the host asking for `want`: same PublicIP, same backend type
 * and the same backend identity (VtepMAC, PublicKey) — what flannel checks before it reuses a lease. Anything
 * less (the same host id in a weft host record, an address that merely matches) does not prove it: a lease
 * that is live is never taken from another writer.
 */
export function provablySameHolder(stored: Lease, want: Pick<Lease, 'publicIp' | 'backendType' | 'backendData'>): boolean {
  if (stored.publicIp !== want.publicIp || stored.backendType !== want.backendType) return false;
  return IDENTITY_FIELDS.every((f) => String(stored.backendData[f] ?? '').toLowerCase() === String(want.backendData[f] ?? '').toLowerCase());
}

/** Why `stored` is not the lease of the host asking for `want` (for the log line). */
export function differentHolderReason(stored: Lease, want: Pick<Lease, 'publicIp' | 'backendType' | 'backendData'>): string {
  if (stored.publicIp !== want.publicIp) return `it names PublicIP ${stored.publicIp}, this host is ${want.publicIp}`;
  if (stored.backendType !== want.backendType) return `its BackendType is ${JSON.stringify(stored.backendType)}, this host's ${JSON.stringify(want.backendType)}`;
  const f = IDENTITY_FIELDS.find((k) => String(stored.backendData[k] ?? '').toLowerCase() !== String(want.backendData[k] ?? '').toLowerCase());
  return `its ${f} is ${JSON.stringify(stored.backendData[f!] ?? null)}, this host's ${JSON.stringify(want.backendData[f!] ?? null)}`;
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
