import { createHash } from 'node:crypto';
import type { Lease } from '../../lease/types.js';
import { canonicalCidr, cidrsOverlap, cidrWithin, isIPv4, tryParseCidr } from '../../net/ipv4.js';
import { compareStrings } from '../../util/compare.js';

/**
 * The pure half of the udp backend: the device name, what a host publishes, the routing table the data path
 * (weft-udpd) forwards and filters by, and how its counters read. No kernel, no processes: unit-tested.
 */

export const DEFAULT_UDP_PORT = 8285;
/** IPv4 header (20) + UDP header (8) around each packet. */
export const UDP_OVERHEAD = 28;

/**
 * The TUN device: unique per (network, host) on the whole machine (test beds run many hosts on one kernel,
 * and TUN names are per namespace but the logs and PID files name them): "weft-tun" + 7 hex digits = 15.
 */
export function udpDeviceName(network: string, hostId: string): string {
  return `weft-tun${createHash('sha256').update(`${network}\0${hostId}`).digest('hex').slice(0, 7)}`;
}

/** What a host publishes in its lease. */
export interface UdpBackendData {
  Port: number;
}

/** One row of the routing table: packets to `subnet` go to ip:port, and only ip:port may send from `subnet`. */
export interface UdpPeer {
  subnet: string;
  ip: string;
  port: number;
}

export interface UdpPlan {
  peers: UdpPeer[];
  /** Leases that cannot be peers, with why (logged once each). */
  refused: Array<{ subnet: string; publicIp: string; why: string }>;
}

const isPort = (p: unknown): p is number => Number.isInteger(p) && (p as number) >= 1 && (p as number) <= 65535;

/**
 * Turns the network's leases (untrusted store values) into the routing table. A lease is refused when its
 * subnet or address is not valid, its subnet lies outside the network or overlaps another lease's, its Port
 * is not a port, or another lease claims the same ip:port (the data path tells senders apart by ip:port,
 * so two leases there would let either send from both subnets). Our own lease is left out.
 */
export function planUdpPeers(leases: readonly Lease[], o: { network: string; ownSubnet?: string; ownIp: string; defaultPort: number }): UdpPlan {
  const refused: UdpPlan['refused'] = [];
  const candidates: UdpPeer[] = [];
  const own = o.ownSubnet ? canonicalCidr(o.ownSubnet) : undefined;
  for (const l of leases) {
    const parsed = typeof l.subnet === 'string' ? tryParseCidr(l.subnet) : undefined;
    const publicIp = String(l.publicIp);
    const subnet = parsed ? canonicalCidr(l.subnet) : String(l.subnet);
    if (subnet === own || publicIp === o.ownIp) continue;
    const port = l.backendData?.Port ?? o.defaultPort;
    let why: string | undefined;
    if (!parsed) why = 'its subnet is not an IPv4 CIDR';
    else if (!isIPv4(publicIp)) why = 'its PublicIP is not an IPv4 address';
    else if (!isPort(port)) why = `its Port ${JSON.stringify(port)} is not a port`;
    else if (!cidrWithin(subnet, o.network)) why = `its subnet is outside the network ${o.network}`;
    else if (own && cidrsOverlap(parsed, tryParseCidr(own)!)) why = 'its subnet overlaps this host\'s lease';
    if (why) {
      refused.push({ subnet, publicIp, why });
      continue;
    }
    candidates.push({ subnet, ip: publicIp, port: port as number });
  }
  const peers: UdpPeer[] = [];
  for (const c of candidates) {
    const clash = candidates.find((d) => d !== c && ((d.ip === c.ip && d.port === c.port) || cidrsOverlap(tryParseCidr(d.subnet)!, tryParseCidr(c.subnet)!)));
    if (clash) refused.push({ subnet: c.subnet, publicIp: c.ip, why: clash.ip === c.ip && clash.port === c.port ? `another lease (${clash.subnet}) has the same endpoint ${c.ip}:${c.port}` : `its subnet overlaps another lease's (${clash.subnet})` });
    else peers.push(c);
  }
  peers.sort((a, b) => compareStrings(a.subnet, b.subnet));
  return { peers, refused };
}

/**
 * The table file weft-udpd reads (see its header): `own NET/LEN`, one `peer NET/LEN IP PORT` per peer, and one
 * `allow NET/LEN` per connected network (`weft network connect`): inner sources a peer may send from besides
 * its own lease (a container of the connected network on that host; which host is not checked).
 */
export function renderTable(ownSubnet: string | undefined, peers: readonly UdpPeer[], allow: readonly string[] = []): string {
  const lines = ['# written by the weft agent; weft-udpd reads it at start and on SIGHUP'];
  if (ownSubnet) lines.push(`own ${canonicalCidr(ownSubnet)}`);
  for (const p of peers) lines.push(`peer ${p.subnet} ${p.ip} ${p.port}`);
  for (const a of [...new Set(allow.filter((c) => tryParseCidr(c)).map(canonicalCidr))].sort()) lines.push(`allow ${a}`);
  return `${lines.join('\n')}\n`;
}

/** Counters of the data path, as weft-udpd writes them (every name a number). */
export const COUNTERS = ['txPackets', 'txBytes', 'rxPackets', 'rxBytes'] as const;
/** Why datagrams or packets were dropped. */
export const DROPS = ['unknownPeer', 'spoofedSource', 'notLocal', 'malformed', 'notIpv4', 'noRoute', 'tunWrite', 'send'] as const;

export interface UdpStats {
  pid: number;
  /** Unix seconds of the last write. */
  at: number;
  peers: number;
  counters: Record<(typeof COUNTERS)[number], number>;
  drops: Record<(typeof DROPS)[number], number> & { total: number };
  reloads: number;
}

/** Parses weft-udpd's stats file; undefined when it is not what weft-udpd writes (missing, torn, foreign). */
export function parseStats(text: string): UdpStats | undefined {
  let j: Record<string, unknown>;
  try {
    j = JSON.parse(text) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (!j || typeof j !== 'object') return undefined;
  const num = (k: string): number | undefined => (typeof j[k] === 'number' && Number.isFinite(j[k]) && (j[k] as number) >= 0 ? (j[k] as number) : undefined);
  const pid = num('pid');
  if (pid === undefined) return undefined;
  const counters = Object.fromEntries(COUNTERS.map((k) => [k, num(k) ?? 0])) as UdpStats['counters'];
  const drops = Object.fromEntries(DROPS.map((k) => [k, num(k) ?? 0])) as UdpStats['drops'];
  drops.total = DROPS.reduce((s, k) => s + drops[k], 0);
  return { pid, at: num('at') ?? 0, peers: num('peers') ?? 0, counters, drops, reloads: num('reloads') ?? 0 };
}
