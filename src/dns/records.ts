import { z } from 'zod';
import { isIPv4 } from '../net/ipv4.js';
import type { NetworkKeys } from '../store/layout.js';
import type { Entry, WatchEvent } from '../store/types.js';
import { WeftError } from '../util/errors.js';

/**
 * DNS records of one network as the store holds them (`networks/<n>/dns/<name>/<ip>`, see layout.ts) and
 * the in-memory cache a DNS server answers from. Everything read from the store is validated: another
 * client may have written anything there.
 */

/** Who made a record: an attach with --name (owned by a host), a Docker container, or `weft dns-add`. */
export const RecordSource = z.enum(['endpoint', 'docker', 'manual']);

/** The value of a record key. hostId: the host that owns it (absent for manual records). */
export const DnsRecordValue = z.object({
  name: z.string(),
  ip: z.string().refine(isIPv4),
  source: RecordSource,
  hostId: z.string().max(63).optional(),
  /** The container the name belongs to (for `weft dns-lookup`). */
  container: z.string().max(256).optional(),
});
export type DnsRecord = z.infer<typeof DnsRecordValue>;

// Labels as RFC 1035 allows in practice plus '_' (Docker container names have it); dots join labels.
const LABEL_RE = /^[A-Za-z0-9_](?:[A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?$/;
/** Longest name weft registers (a full name with the domain must stay within DNS's 253). */
export const MAX_DNS_NAME = 200;

/** Why `name` cannot be a container's DNS name, or undefined (the one rule: API, CLI, store records). */
export function dnsNameProblem(name: string): string | undefined {
  const bare = name.endsWith('.') ? name.slice(0, -1) : name;
  if (!bare) return 'empty';
  if (bare.length > MAX_DNS_NAME) return `longer than ${MAX_DNS_NAME} characters (${bare.length})`;
  for (const label of bare.split('.')) {
    if (label.length > 63) return `label "${label.slice(0, 20)}…" is longer than 63 characters`;
    if (!LABEL_RE.test(label)) return `label ${JSON.stringify(label)}: use letters, digits, '-' and '_' (not '-' first or last)`;
  }
  return undefined;
}

/** A DNS name as weft stores it: lower case, no trailing dot, valid labels (dnsNameProblem). */
export function normalizeName(name: string): string {
  const n = name.trim().toLowerCase().replace(/\.$/, '');
  const why = dnsNameProblem(n);
  if (why) throw new WeftError(`invalid DNS name ${JSON.stringify(name)}: ${why}`);
  return n;
}

export function isValidName(name: string): boolean {
  try {
    return normalizeName(name) === name;
  } catch {
    return false;
  }
}

/** The record a store entry holds, or undefined when the key or value is not a valid record. */
export function recordFromEntry(keys: NetworkKeys, e: Entry): DnsRecord | undefined {
  const parts = keys.dnsRecordOfKey(e.key);
  if (!parts) return undefined;
  let raw: unknown;
  try {
    raw = JSON.parse(e.value);
  } catch {
    return undefined;
  }
  const r = DnsRecordValue.safeParse(raw);
  // The key is what the registry writes and deletes by: a value that disagrees with it is not trusted.
  if (!r.success || r.data.name !== parts[0] || r.data.ip !== parts[1] || !isValidName(r.data.name)) return undefined;
  return r.data;
}

/**
 * The records of one network in memory, fed by the store's watch of the network's dns/ prefix. Records of
 * hosts that hold no live lease (a dead host) are not served; manual records always are.
 */
export class RecordCache {
  private readonly byKey = new Map<string, DnsRecord>();
  /** undefined until the lease watch has reported once: until then nothing is hidden. */
  private liveHosts?: ReadonlySet<string>;
  private index?: { byName: Map<string, string[]>; byIp: Map<string, string[]> };
  /** Bumped on every change: whoever keeps answers derived from the cache (the server's reply cache) drops them. */
  version = 0;

  constructor(private readonly keys: NetworkKeys) {}

  apply(ev: WatchEvent): void {
    if (ev.type === 'resync') {
      this.byKey.clear();
      for (const e of ev.entries) this.put(e);
    } else if (ev.type === 'put') {
      this.byKey.delete(ev.entry.key);
      this.put(ev.entry);
    } else {
      this.byKey.delete(ev.key);
    }
    this.index = undefined;
    this.version++;
  }

  setLiveHosts(hosts: ReadonlySet<string> | undefined): void {
    this.liveHosts = hosts;
    this.index = undefined;
    this.version++;
  }

  /** Addresses of `name` (lower case, without the domain), sorted; empty when unknown. */
  addresses(name: string): readonly string[] {
    return this.built().byName.get(name) ?? [];
  }

  /** Names (without the domain) that have a record for `ip`, sorted. */
  names(ip: string): readonly string[] {
    return this.built().byIp.get(ip) ?? [];
  }

  /** Every served record. */
  records(): DnsRecord[] {
    return [...this.byKey.values()].filter((r) => this.served(r));
  }

  private put(e: Entry): void {
    const r = recordFromEntry(this.keys, e);
    if (r) this.byKey.set(e.key, r);
  }

  private served(r: DnsRecord): boolean {
    return !r.hostId || !this.liveHosts || this.liveHosts.has(r.hostId);
  }

  // Rebuilt lazily after a change: a burst of store events costs one rebuild at the next query.
  private built(): { byName: Map<string, string[]>; byIp: Map<string, string[]> } {
    if (this.index) return this.index;
    const byName = new Map<string, string[]>();
    const byIp = new Map<string, string[]>();
    const add = (m: Map<string, string[]>, k: string, v: string) => {
      const list = m.get(k);
      if (!list) m.set(k, [v]);
      else if (!list.includes(v)) list.push(v);
    };
    for (const r of this.byKey.values()) {
      if (!this.served(r)) continue;
      add(byName, r.name, r.ip);
      add(byIp, r.ip, r.name);
    }
    for (const list of [...byName.values(), ...byIp.values()]) list.sort();
    this.index = { byName, byIp };
    return this.index;
  }
}
