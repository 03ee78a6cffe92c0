import { z } from 'zod';
import { isIPv4 } from '../../net/ipv4.js';
import { BGP_PEERS_PREFIX, bgpPeerKey, checkName } from '../../store/layout.js';
import type { Entry, Store } from '../../store/types.js';
import { WeftError } from '../../util/errors.js';

/** External BGP peers (a top-of-rack router) as the store holds them; every agent follows them. */

export const MAX_ASN = 4294967295;

export const externalPeerSchema = z.object({
  ip: z.string().refine(isIPv4, { message: 'not an IPv4 address' }),
  asn: z.number().int().min(1).max(MAX_ASN),
  /** Only this network; absent: every bgp network. */
  network: z.string().optional(),
});
export type ExternalPeerRecord = z.infer<typeof externalPeerSchema>;

/** Parses one store entry; undefined (ignored) when another client wrote something that is not a peer. */
export function parsePeerEntry(e: Entry): ExternalPeerRecord | undefined {
  if (!e.key.startsWith(BGP_PEERS_PREFIX)) return undefined;
  try {
    const r = externalPeerSchema.safeParse(JSON.parse(e.value));
    if (!r.success || `${BGP_PEERS_PREFIX}${r.data.ip}` !== e.key) return undefined;
    return r.data;
  } catch {
    return undefined;
  }
}

export function parseAsn(text: string): number {
  const n = /^\d{1,10}$/.test(text) ? Number(text) : NaN;
  if (!Number.isInteger(n) || n < 1 || n > MAX_ASN) throw new WeftError(`AS number must be 1–${MAX_ASN}, got ${JSON.stringify(text)}`);
  return n;
}

export async function addPeer(store: Store, p: ExternalPeerRecord): Promise<ExternalPeerRecord> {
  if (!isIPv4(p.ip)) throw new WeftError(`invalid BGP peer address ${JSON.stringify(p.ip)}`);
  if (p.network !== undefined) checkName('network name', p.network);
  const rec = externalPeerSchema.parse(p);
  await store.put(bgpPeerKey(rec.ip), JSON.stringify(rec));
  return rec;
}

/** True when there was such a peer. */
export async function removePeer(store: Store, ip: string): Promise<boolean> {
  if (!isIPv4(ip)) throw new WeftError(`invalid BGP peer address ${JSON.stringify(ip)}`);
  return store.delete(bgpPeerKey(ip));
}

export async function listPeers(store: Store): Promise<ExternalPeerRecord[]> {
  return (await store.list(BGP_PEERS_PREFIX)).map(parsePeerEntry).filter((p): p is ExternalPeerRecord => p !== undefined);
}
