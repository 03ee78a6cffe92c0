import { isIPv4 } from '../net/ipv4.js';
import { networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { normalizeName, recordFromEntry, type DnsRecord } from './records.js';

/**
 * Writing and reading a network's DNS records in the store. A record of an attached container is owned
 * by its host (hostId in the value): detach removes only its own host's record of that name and address,
 * and removeHostRecords() clears what a dead host left.
 */

export async function putRecord(store: Store, network: string, rec: DnsRecord): Promise<DnsRecord> {
  const name = normalizeName(rec.name);
  if (!isIPv4(rec.ip)) throw new WeftError(`invalid address "${rec.ip}" for DNS name ${name}: expected IPv4`);
  const value: DnsRecord = { ...rec, name };
  await store.put(networkKeys(store, network).dnsRecord(name, rec.ip), JSON.stringify(value));
  return value;
}

/** Who registers names owned by a host: an attached endpoint (attach --name, CNI) or a Docker container. */
export type HostRecordSource = 'endpoint' | 'docker';

/** The name of an attached container → its address (owned by `hostId`). */
export function registerEndpointName(
  store: Store,
  network: string,
  name: string,
  ip: string,
  hostId: string,
  container?: string,
  source: HostRecordSource = 'endpoint',
): Promise<DnsRecord> {
  return putRecord(store, network, { name, ip: ip.split('/')[0]!, source, hostId, ...(container ? { container } : {}) });
}

/**
 * The names a container should be known by: valid ones normalised (lower case), duplicates dropped, in
 * the order given; `invalid` lists the others with the reason (for a log line, not an error: a container
 * runs whatever its runtime allowed as a name).
 */
export function containerNames(names: readonly string[]): { names: string[]; invalid: string[] } {
  const out: string[] = [];
  const invalid: string[] = [];
  for (const n of names) {
    try {
      const v = normalizeName(n);
      if (!out.includes(v)) out.push(v);
    } catch (err) {
      invalid.push((err as Error).message);
    }
  }
  return { names: out, invalid };
}

/** Removes the record of `name` → `ip` when `hostId` owns it (another host's or a manual record stays). */
export async function unregisterEndpointName(store: Store, network: string, name: string, ip: string, hostId: string): Promise<boolean> {
  const keys = networkKeys(store, network);
  const key = keys.dnsRecord(normalizeName(name), ip.split('/')[0]!);
  const e = await store.get(key);
  if (!e) return false;
  const rec = recordFromEntry(keys, e);
  if (rec && rec.hostId !== hostId) return false;
  return store.delete(key, e.revision);
}

/** Every valid record of the network (of one name when given), sorted by name then address. */
export async function listRecords(store: Store, network: string, name?: string): Promise<DnsRecord[]> {
  const keys = networkKeys(store, network);
  const prefix = name === undefined ? keys.dnsPrefix : keys.dnsNamePrefix(normalizeName(name));
  const out: DnsRecord[] = [];
  for (const e of await store.list(prefix)) {
    const r = recordFromEntry(keys, e);
    if (r) out.push(r);
  }
  return out;
}

/** `weft dns-remove NAME [IP]`: every record of the name (or just NAME → IP), whoever owns it. */
export async function removeRecords(store: Store, network: string, name: string, ip?: string): Promise<DnsRecord[]> {
  const keys = networkKeys(store, network);
  const gone: DnsRecord[] = [];
  for (const r of await listRecords(store, network, name)) {
    if (ip !== undefined && r.ip !== ip) continue;
    if (await store.delete(keys.dnsRecord(r.name, r.ip))) gone.push(r);
  }
  return gone;
}

/** Removes every record `hostId` owns in the network (a host that is gone for good). */
export async function removeHostRecords(store: Store, network: string, hostId: string): Promise<number> {
  const keys = networkKeys(store, network);
  let n = 0;
  for (const r of await listRecords(store, network)) {
    if (r.hostId === hostId && (await store.delete(keys.dnsRecord(r.name, r.ip)))) n++;
  }
  return n;
}

/** What the host's endpoint records say should be registered: one (name, ip, container) each. */
export interface NamedEndpoint {
  name: string;
  ip: string;
  container?: string;
}

/**
 * Makes the records `hostId` owns in the network exactly `wanted` (attach-time registrations that failed,
 * or records left by a detach while the agent was down). Returns how many records it added and removed.
 */
export async function syncHostRecords(
  store: Store,
  network: string,
  hostId: string,
  wanted: NamedEndpoint[],
  source: HostRecordSource = 'endpoint',
): Promise<{ added: number; removed: number }> {
  const keys = networkKeys(store, network);
  const want = new Map(wanted.map((w) => [`${normalizeName(w.name)}/${w.ip}`, w]));
  let removed = 0;
  let added = 0;
  for (const r of await listRecords(store, network)) {
    if (r.hostId !== hostId || r.source !== source) continue;
    if (want.delete(`${r.name}/${r.ip}`)) continue;
    if (await store.delete(keys.dnsRecord(r.name, r.ip))) removed++;
  }
  for (const w of want.values()) {
    await registerEndpointName(store, network, w.name, w.ip, hostId, w.container, source);
    added++;
  }
  return { added, removed };
}
