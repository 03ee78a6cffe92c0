import { canonicalCidr } from '../../net/ipv4.js';
import { bad, findRoute, hostWords, isUp, ok, peerName, rpFinding } from '../findings.js';
import type { BackendCheckInput, Finding } from '../types.js';
import { UDP_OVERHEAD } from './table.js';
import { DEFAULT_RESYNC_SECONDS } from '../../config/network.js';

/** What the udp backend's status() reports (see UdpBackend.status). */
interface UdpStatus {
  device?: string;
  port?: number;
  pid?: number;
  healthy?: boolean;
  lastExit?: string;
  logFile?: string;
  peers?: Array<{ subnet: string; ip: string; port: number }>;
  drops?: Record<string, number>;
}

/**
 * udp's doctor checks, from the agent's status of the backend and the kernel's links and routes: weft-udpd
 * running, the TUN device up with MTU ≤ underlay − 28, datagrams dropped as not from a peer or spoofed (a
 * warning: something sends to the port that should not), and per peer: in weft-udpd's table, routed via the device.
 */
export function judgeUdp(f: BackendCheckInput): Finding[] {
  const n = f.network;
  const s = (n.status ?? {}) as UdpStatus;
  const out: Finding[] = [];
  if (!s.device) return [bad(`udp:${n.name}`, 'warn', `cannot check udp of ${n.name} without the agent's status`)];
  const dev = s.device;
  if (!s.healthy) out.push(bad(`udp:${dev}:process`, 'error', `weft-udpd for ${dev} is not running (${s.lastExit ?? 'never started'}): no traffic of ${n.name} reaches other hosts`, `the agent restarts it with backoff; see ${s.logFile ?? 'its log'}, or restart the agent`));
  else out.push(ok(`udp:${dev}:process`, `weft-udpd for ${dev} runs (pid ${s.pid}, UDP port ${s.port})`));
  const link = f.links.find((l) => l.ifname === dev);
  if (!link) {
    out.push(bad(`udp:${dev}`, 'error', `TUN device ${dev} is missing: no traffic of ${n.name} reaches other hosts`, 'restart the agent (weft-udpd makes the device)'));
    return out;
  }
  const maxMtu = (f.underlay?.mtu ?? link.mtu + UDP_OVERHEAD) - UDP_OVERHEAD;
  if (!isUp(link)) out.push(bad(`udp:${dev}`, 'error', `TUN device ${dev} is down: no traffic of ${n.name} reaches other hosts`, `ip link set ${dev} up`));
  else if (link.mtu > maxMtu) out.push(bad(`mtu:${dev}`, 'warn', `MTU of ${dev} (${link.mtu}) is larger than the underlay's (${f.underlay?.mtu}) minus ${UDP_OVERHEAD} bytes of IPv4+UDP: large packets fragment`, `ip link set ${dev} mtu ${maxMtu}`));
  else out.push(ok(`udp:${dev}`, `TUN device ${dev} is up (MTU ${link.mtu})`));
  const foreign = (s.drops?.unknownPeer ?? 0) + (s.drops?.spoofedSource ?? 0);
  if (foreign > 0) out.push(bad(`udp:${dev}:drops`, 'warn', `weft-udpd dropped ${s.drops?.unknownPeer ?? 0} datagrams from senders that are not peers and ${s.drops?.spoofedSource ?? 0} with an inner source outside the sender's lease`, `find who sends to UDP ${s.port} (tcpdump -ni ${f.underlayIface} udp port ${s.port}); a host that left recently explains a few`));

  const unrouted: string[] = [];
  for (const p of n.peers) {
    const subnet = canonicalCidr(p.subnet);
    const pc = `peer:${n.name}:${subnet}`;
    const problems: Finding[] = [];
    if (!findRoute(f.routes, subnet).some((r) => r.dev === dev)) {
      unrouted.push(subnet);
      problems.push(bad(`${pc}:route`, 'error', `no route to peer subnet ${subnet} (${hostWords(p)}) via ${dev}: the agent has not reconciled — check its log`, `ip route replace ${subnet} dev ${dev}   (the agent repairs it within ${DEFAULT_RESYNC_SECONDS} s)`));
    }
    const row = (s.peers ?? []).find((x) => x.subnet === subnet);
    if (!row) problems.push(bad(`${pc}:table`, 'error', `${peerName(p)} is not in weft-udpd's table for ${subnet}: its packets are dropped`, 'check its lease (weft doctor there; the agent log says why a lease is skipped)'));
    else if (row.ip !== p.publicIp) problems.push(bad(`${pc}:table`, 'error', `weft-udpd sends ${subnet} to ${row.ip}, but the lease says ${p.publicIp}`, 'the agent fixes it on its next reconcile; restart it if this stays'));
    if (problems.length) out.push(...problems);
    else out.push(ok(pc, `${peerName(p)}: ${subnet} via ${dev} to ${row!.ip}:${row!.port}`));
  }
  out.push(rpFinding(f, dev, unrouted));
  return out;
}
