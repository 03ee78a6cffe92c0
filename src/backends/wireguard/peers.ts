import { createHash } from 'node:crypto';
import type { Lease } from '../../lease/types.js';
import { canonicalCidr, cidrTextsOverlap, cidrWithin } from '../../net/ipv4.js';
import { isWgKey, type WgPeerState } from '../../system/wireguard.js';

/** The pure half of the wireguard backend: names, lease data, and which `wg set` arguments make a device match the leases. */

export const DEFAULT_WG_PORT = 51820;
/** IPv6 outer header (40) + UDP (8) + WireGuard header and tag (32): the same MTU works over either IP version. */
export const WG_OVERHEAD = 80;

/**
 * The device name: unique per (network, host) on the whole machine, because wireguard-go's control socket
 * /var/run/wireguard/NAME.sock is shared by every network namespace (test beds run many hosts on one machine).
 * 15 characters: "weftwg-" + 8 hex digits of sha256(network, host id).
 */
export function wgDeviceName(network: string, hostId: string): string {
  return `weftwg-${createHash('sha256').update(`${network}\0${hostId}`).digest('hex').slice(0, 8)}`;
}

/** What a host publishes in its lease (flannel's wireguard backend publishes PublicKey too). */
export interface WgBackendData {
  PublicKey: string;
  ListenPort: number;
}

/** A peer as the device should have it. */
export interface WantedPeer {
  publicKey: string;
  endpoint: string;
  allowedIps: string[];
  keepalive: number;
  subnet: string;
  publicIp: string;
  /** The lease it came from (only while planning). */
  lease?: Lease;
}

export interface PeerPlan {
  peers: WantedPeer[];
  /** Leases that cannot be peers, with why (logged once each). */
  refused: Array<{ subnet: string; publicIp: string; why: string }>;
}

/** A network connected to this one (`weft network connect`) with its leases on every host. */
export interface ConnectedLeases {
  name: string;
  cidr: string;
  leases?: readonly Lease[];
}

/** Two leases (of different networks) held by one host: by host id where both name one, else by underlay address. */
function sameHost(a: Lease, b: Lease): boolean {
  return a.hostId !== undefined && b.hostId !== undefined ? a.hostId === b.hostId : a.publicIp === b.publicIp;
}

/**
 * Turns the network's leases into peers: allowed-ips = the peer's subnet, endpoint = publicIp:ListenPort.
 * Refuses leases without a valid key, outside the network, using our own key, or sharing a key with another
 * lease (WireGuard keys a peer by its public key: two hosts with one key would steal each other's subnet).
 *
 * Connected networks (`weft network connect`): a peer's allowed-ips also hold its host's subnets in every
 * network connected to this one. Traffic between two connected networks leaves a host through the device
 * of the destination's network and comes back through the device of the source's network (a route per
 * network), so each device receives packets whose source is in the other network; WireGuard drops a packet
 * whose source is not among the sending peer's allowed-ips. Only the sending host's own subnets are added,
 * so a peer still cannot forge sources of another host. allowed-ips never overlap within one device (a
 * subnet claimed twice would silently move to the last peer): a connected subnet that overlaps this network
 * or one already given, or that matches no single peer, is left out (and refused with the reason when
 * that is not simply "the host is not a peer here").
 */
export function planPeers(
  leases: readonly Lease[],
  o: { network: string; ownSubnet?: string; ownIp: string; ownHostId?: string; ownKey?: string; defaultPort: number; keepalive: number; connected?: readonly ConnectedLeases[] },
): PeerPlan {
  const refused: PeerPlan['refused'] = [];
  const candidates: WantedPeer[] = [];
  const own = o.ownSubnet ? canonicalCidr(o.ownSubnet) : undefined;
  for (const l of leases) {
    const subnet = canonicalCidr(l.subnet);
    if (subnet === own || l.publicIp === o.ownIp) continue;
    const key = l.backendData?.PublicKey;
    const port = l.backendData?.ListenPort ?? o.defaultPort;
    let why: string | undefined;
    if (!isWgKey(key)) why = 'its lease has no valid WireGuard PublicKey';
    else if (key === o.ownKey) why = 'it publishes this host\'s own public key (a copied state dir?)';
    else if (!Number.isInteger(port) || (port as number) < 1 || (port as number) > 65535) why = `its ListenPort ${JSON.stringify(port)} is not a port`;
    else if (!cidrWithin(subnet, o.network)) why = `its subnet is outside the network ${o.network}`;
    if (why) {
      refused.push({ subnet, publicIp: l.publicIp, why });
      continue;
    }
    candidates.push({ publicKey: key as string, endpoint: `${l.publicIp}:${port}`, allowedIps: [subnet], keepalive: o.keepalive, subnet, publicIp: l.publicIp, lease: l });
  }
  const count = new Map<string, number>();
  for (const c of candidates) count.set(c.publicKey, (count.get(c.publicKey) ?? 0) + 1);
  const peers: WantedPeer[] = [];
  for (const c of candidates) {
    if (count.get(c.publicKey)! > 1) refused.push({ subnet: c.subnet, publicIp: c.publicIp, why: 'another lease publishes the same public key' });
    else peers.push(c);
  }
  if (o.connected?.length) addConnected(peers, refused, o);
  for (const p of peers) delete p.lease;
  return { peers, refused };
}

/** Adds each peer's host's subnets in the connected networks to its allowed-ips (see planPeers). */
function addConnected(peers: WantedPeer[], refused: PeerPlan['refused'], o: { network: string; ownIp: string; ownHostId?: string; connected?: readonly ConnectedLeases[] }): void {
  const given: string[] = [o.network];
  for (const net of o.connected ?? []) {
    for (const l of net.leases ?? []) {
      const subnet = canonicalCidr(l.subnet);
      if (l.publicIp === o.ownIp || (o.ownHostId !== undefined && l.hostId === o.ownHostId)) continue; // this host's own
      const holders = peers.filter((p) => sameHost(p.lease!, l));
      if (holders.length === 0) continue; // not a peer in this network: nothing of it arrives here
      if (holders.length === 1 && holders[0]!.allowedIps.includes(subnet)) continue; // a dual-stack twin of a lease already taken
      let why: string | undefined;
      if (!cidrWithin(subnet, net.cidr)) why = `its subnet is outside the connected network ${net.name} (${net.cidr})`;
      else if (holders.length > 1) why = `connected network ${net.name}: ${holders.length} peers of this network are on its host (${holders.map((h) => h.subnet).join(', ')})`;
      else if (given.some((g) => cidrTextsOverlap(g, subnet))) why = `connected network ${net.name}: its subnet overlaps another allowed-ip of this device`;
      if (why) {
        refused.push({ subnet, publicIp: l.publicIp, why });
        continue;
      }
      holders[0]!.allowedIps.push(subnet);
      given.push(subnet);
    }
  }
}

const sameSet = (a: readonly string[], b: readonly string[]) => a.length === b.length && [...a].sort().join(',') === [...b].sort().join(',');

/**
 * `wg set` arguments that turn the device's peers (`have`) into `want`: removes, then adds/updates.
 * An unchanged peer is left alone (its session survives). The endpoint is compared with what we set last
 * (`lastSet`), not with what the device shows, so a peer that roamed (NAT) is not pulled back every resync;
 * without a memory (a fresh agent) it is compared with the device.
 */
export function peerChanges(have: readonly WgPeerState[], want: readonly WantedPeer[], lastSet?: ReadonlyMap<string, string>): string[] {
  const args: string[] = [];
  const wanted = new Map(want.map((w) => [w.publicKey, w]));
  for (const h of have) if (!wanted.has(h.publicKey)) args.push('peer', h.publicKey, 'remove');
  for (const w of want) {
    const h = have.find((x) => x.publicKey === w.publicKey);
    const endpointOk = h !== undefined && (lastSet?.has(w.publicKey) ? lastSet.get(w.publicKey) === w.endpoint : h.endpoint === w.endpoint);
    if (h && endpointOk && sameSet(h.allowedIps.map(canonicalCidr), w.allowedIps) && h.keepalive === w.keepalive) continue;
    args.push('peer', w.publicKey, 'endpoint', w.endpoint, 'allowed-ips', w.allowedIps.join(','), 'persistent-keepalive', w.keepalive ? String(w.keepalive) : 'off');
  }
  return args;
}
