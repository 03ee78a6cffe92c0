import { canonicalCidr, networkAddress } from '../../net/ipv4.js';
import type { IpLink } from '../../system/ip.js';
import { bad, findRoute, hostWords, isUp, ok, peerName, rpFinding } from '../findings.js';
import type { BackendCheckInput, Finding } from '../types.js';
import { VXLAN_OVERHEAD as OVERHEAD, vxlanDevice } from './device.js';
import { DEFAULT_RESYNC_SECONDS } from '../../config/network.js';


/** vxlan's doctor checks: the device (up, right local address, MTU) and per peer its route, neighbour and FDB entry. */
export function judgeVxlan(f: BackendCheckInput): Finding[] {
  const out: Finding[] = [];
  const n = f.network;
  // the device: from the store's config, else as the agent reports it, else the only weft vxlan device here
  const only = f.links.filter((l) => l.linkinfo?.info_kind === 'vxlan' && l.ifname.startsWith('weft.'));
  const devName = f.store ? vxlanDevice(f.store.config.Backend) : typeof n.status?.device === 'string' ? n.status.device : only.length === 1 ? only[0]!.ifname : undefined;
  if (!devName) {
    out.push(bad(`vxlan:${n.name}`, 'warn', `cannot tell which vxlan device serves ${n.name} without the store (pass --store URL)`));
    return out;
  }
  const dev: IpLink | undefined = f.links.find((l) => l.ifname === devName);
  const check = `vxlan:${devName}`;
  if (!dev) {
    out.push(bad(check, 'error', `vxlan device ${devName} is missing: no traffic of ${n.name} reaches other hosts`, 'restart the agent (it recreates the device)'));
    return out;
  }
  const d = dev.linkinfo?.info_data ?? {};
  const maxMtu = (f.underlay?.mtu ?? dev.mtu + OVERHEAD) - OVERHEAD;
  let devOk = true;
  if (!isUp(dev)) {
    out.push(bad(check, 'error', `vxlan device ${devName} is down: no traffic of ${n.name} reaches other hosts`, `ip link set ${devName} up`));
    devOk = false;
  }
  if (d.local !== undefined && d.local !== f.publicIp) {
    out.push(bad(`${check}:local`, 'error', `vxlan device ${devName} sends from ${d.local}, but this host's address is ${f.publicIp}: peers drop its packets`, 'restart the agent (it recreates the device)'));
    devOk = false;
  }
  if (dev.mtu > maxMtu) {
    out.push(bad(`mtu:${devName}`, 'error', `MTU of ${devName} (${dev.mtu}) is larger than the underlay's (${f.underlay?.mtu}) minus VXLAN's ${OVERHEAD} bytes: large packets are dropped`, `ip link set ${devName} mtu ${maxMtu}`));
    devOk = false;
  }
  if (devOk) out.push(ok(check, `vxlan device ${devName} is up (VNI ${d.id ?? '?'}, local ${d.local ?? '?'}, MTU ${dev.mtu})`));

  const neigh = f.neigh[devName] ?? [];
  const fdb = f.fdb[devName] ?? [];
  const unrouted: string[] = [];
  for (const p of n.peers) {
    const subnet = canonicalCidr(p.subnet);
    const gw = networkAddress(subnet);
    const pc = `peer:${n.name}:${subnet}`;
    const lease = f.store?.leases.find((l) => canonicalCidr(l.subnet) === subnet);
    const leaseMac = lease ? String(lease.backendData?.VtepMAC ?? '').toLowerCase() : undefined;
    const nb = neigh.find((x) => x.dst === gw);
    const mac = leaseMac || nb?.lladdr?.toLowerCase();
    const problems: Finding[] = [];
    const routes = findRoute(f.routes, subnet);
    const good = routes.find((r) => r.dev === devName && r.gateway === gw);
    if (!good) {
      unrouted.push(subnet);
      if (routes.length)
        problems.push(bad(`${pc}:route`, 'error', `route to peer subnet ${subnet} (${hostWords(p)}) goes ${routes.map((r) => `${r.gateway ? `via ${r.gateway} ` : ''}dev ${r.dev}`).join(', ')}, not via ${gw} dev ${devName}: the agent has not reconciled — check its log`, `ip route replace ${subnet} via ${gw} dev ${devName} onlink`));
      else problems.push(bad(`${pc}:route`, 'error', `no route to peer subnet ${subnet} (${hostWords(p)}): the agent has not reconciled — check its log`, `ip route replace ${subnet} via ${gw} dev ${devName} onlink   (the agent repairs it within ${DEFAULT_RESYNC_SECONDS} s)`));
    }
    if (!nb || (mac && nb.lladdr?.toLowerCase() !== mac))
      problems.push(bad(`${pc}:neigh`, 'error', `vxlan: neighbour entry for peer ${p.hostId ?? p.publicIp}'s gateway ${gw}${mac ? ` (→ ${mac})` : ''} missing on ${devName}: packets to ${subnet} cannot be addressed`, mac ? `ip neigh replace ${gw} lladdr ${mac} dev ${devName} nud permanent` : 'restart the agent'));
    if (mac && !fdb.some((e) => e.mac.toLowerCase() === mac && e.dst === p.publicIp))
      problems.push(bad(`${pc}:fdb`, 'error', `vxlan: fdb entry for peer ${p.hostId ?? p.publicIp}'s VtepMAC (${mac} → ${p.publicIp}) missing on ${devName}: packets to ${subnet} are not sent to ${p.publicIp}`, `bridge fdb replace ${mac} dev ${devName} dst ${p.publicIp} self permanent`));
    if (leaseMac === '') problems.push(bad(`${pc}:lease`, 'error', `${peerName(p)} publishes no VtepMAC in its lease: it cannot be reached over vxlan`, 'check the agent on that host'));
    if (problems.length) out.push(...problems);
    else out.push(ok(pc, `${peerName(p)}: route to ${subnet} via ${devName}, neighbour and fdb entry in place`));
  }
  out.push(rpFinding(f, devName, unrouted));
  return out;
}
