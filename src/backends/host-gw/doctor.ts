import { canonicalCidr, cidrContains, cidrWithin } from '../../net/ipv4.js';
import { bad, findRoute, hostWords, ipv4, ok, peerName, rpFinding } from '../findings.js';
import type { BackendCheckInput, Finding } from '../types.js';
import { DEFAULT_RESYNC_SECONDS } from '../../config/network.js';

/** host-gw's doctor checks: every peer on this host's L2 segment, and a route via its underlay address. */
export function judgeHostGw(f: BackendCheckInput): Finding[] {
  const out: Finding[] = [];
  const n = f.network;
  const prefixes = f.underlay ? ipv4(f.underlay).map((a) => canonicalCidr(`${a.local}/${a.prefixlen}`)) : [];
  const unrouted: string[] = [];
  const cidr = f.store?.config.Network;
  for (const p of n.peers) {
    const subnet = canonicalCidr(p.subnet);
    const pc = `peer:${n.name}:${subnet}`;
    if (cidr && !cidrWithin(subnet, cidr)) {
      out.push(bad(pc, 'warn', `${peerName(p)} holds ${subnet}, outside the network ${cidr}: ignored`));
      continue;
    }
    if (!prefixes.some((pre) => cidrContains(pre, p.publicIp))) {
      unrouted.push(subnet);
      out.push(bad(pc, 'error', `${peerName(p)} is not on this host's L2 segment (${prefixes.join(', ') || `no IPv4 on ${f.underlayIface}`}): host-gw cannot route to it — use vxlan`, `weft network create NAME --subnet CIDR --backend vxlan`));
      continue;
    }
    const routes = findRoute(f.routes, subnet);
    const good = routes.find((r) => r.gateway === p.publicIp && r.dev === f.underlayIface);
    if (good) out.push(ok(pc, `${peerName(p)}: route to ${subnet} via ${p.publicIp} dev ${f.underlayIface}`));
    else {
      unrouted.push(subnet);
      const other = routes.length ? ` (the route there goes ${routes.map((r) => `${r.gateway ? `via ${r.gateway} ` : ''}dev ${r.dev}`).join(', ')})` : '';
      out.push(bad(pc, 'error', `no route to peer subnet ${subnet} (${hostWords(p)})${other}: the agent has not reconciled — check its log`, `ip route replace ${subnet} via ${p.publicIp} dev ${f.underlayIface}   (the agent repairs it within ${DEFAULT_RESYNC_SECONDS} s)`));
    }
  }
  out.push(rpFinding(f, f.underlayIface, unrouted));
  return out;
}
