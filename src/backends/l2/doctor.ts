import { bad, isUp, ok, peerName } from '../findings.js';
import type { BackendCheckInput, Finding } from '../types.js';

/**
 * l2's doctor checks: the VXLAN port exists, is up and is a port of the network's bridge, and every peer
 * host has its all-zeros FDB entry (without it broadcasts and ARP never reach that host's containers).
 */
export function judgeL2(f: BackendCheckInput, devName: string): Finding[] {
  const n = f.network;
  const check = `l2:${devName}`;
  const dev = f.links.find((l) => l.ifname === devName);
  if (!dev) return [bad(check, 'error', `l2 device ${devName} is missing: containers of ${n.name} reach no other host`, 'restart the agent (it recreates the device)')];
  const out: Finding[] = [];
  if (!isUp(dev)) out.push(bad(check, 'error', `l2 device ${devName} is down: containers of ${n.name} reach no other host`, `ip link set ${devName} up`));
  else if (n.bridge && dev.master !== n.bridge)
    out.push(bad(check, 'error', `l2 device ${devName} is not a port of ${n.bridge}${dev.master ? ` (it is on ${dev.master})` : ''}: nothing is forwarded to other hosts`, `ip link set ${devName} master ${n.bridge}`));
  else out.push(ok(check, `l2 device ${devName} is up on ${n.bridge || '?'}`));
  const fdb = f.fdb[devName] ?? [];
  for (const p of n.peers) {
    const pc = `peer:${n.name}:${p.publicIp}`;
    if (fdb.some((e) => e.mac === '00:00:00:00:00:00' && e.dst === p.publicIp)) out.push(ok(pc, `${peerName(p)}: flood entry in place`));
    else
      out.push(bad(pc, 'error', `l2: no flood entry for ${peerName(p)} on ${devName}: ARP and broadcasts never reach its containers`, `bridge fdb append 00:00:00:00:00:00 dev ${devName} dst ${p.publicIp} self permanent`));
  }
  return out;
}
