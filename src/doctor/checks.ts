import type { NetworkStatus } from '../agent/types.js';
import { bad, ipv4, ok, peerName } from '../backends/findings.js';
import { canonicalCidr, cidrTextsOverlap, cidrWithin, networkAddress } from '../net/ipv4.js';
import { routeDst } from '../system/ops.js';
import type { DoctorFacts, Finding, StoreNetworkFacts } from './types.js';

/**
 * Checks that look across hosts (pure, from recorded facts): the store, lease timing and conflicts, kernel
 * entries the store does not explain, Docker bridges on weft's addresses, and the probed peer paths.
 */

/** "3h 5m", "42s", "2d 1h" */
export function formatDuration(ms: number): string {
  let s = Math.max(0, Math.round(ms / 1000));
  const d = Math.floor(s / 86400);
  s -= d * 86400;
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

/** The store as doctor reached it, and as the agent last reached it. */
export function judgeStore(f: DoctorFacts): Finding[] {
  const out: Finding[] = [];
  if (f.store?.error)
    out.push(bad('store', 'error', `the store ${f.store.url} is unreachable (${f.store.error}): leases are not renewed and new hosts cannot join (forwarding carries on)`, 'start the store or fix its URL (--store, $WEFT_STORE)'));
  else if (f.store) out.push(ok('store', `the store ${f.store.url} answers (${f.store.networks.length} network${f.store.networks.length === 1 ? '' : 's'})`));
  const agentView = f.agent.status?.store;
  if (agentView && !agentView.healthy)
    out.push(bad('store:agent', 'error', `the agent cannot reach its store ${agentView.url} (${agentView.error ?? 'no answer'}): its lease is not renewed and it stops seeing peers change`, 'start the store, or restart the agent with the right --store'));
  return out;
}

/** Lease conflicts and leases about to run out in one network (needs the store's leases). */
export function judgeLeaseHealth(f: DoctorFacts, n: NetworkStatus, sn: StoreNetworkFacts): Finding[] {
  const st = f.agent.status!;
  const out: Finding[] = [];
  const ttlMs = (n.leaseTtlSeconds ?? 0) * 1000;
  // a holder renews every TTL/3: less than that left means at least one renewal was missed
  const late = (expiresAt: number | undefined) => ttlMs > 0 && expiresAt !== undefined && expiresAt > f.now && expiresAt - f.now < ttlMs / 3;
  const own = sn.leases.find((l) => canonicalCidr(l.subnet) === canonicalCidr(n.subnet));
  if (own && late(own.expiresAt))
    out.push(bad(`lease-expiring:${n.name}`, 'warn', `lease ${n.subnet} of network ${n.name} expires in ${formatDuration(own.expiresAt! - f.now)} although it is renewed every ${formatDuration(ttlMs / 3)}: renewals are failing`, "check the agent's log and the store"));
  for (const p of n.peers) {
    const l = sn.leases.find((x) => canonicalCidr(x.subnet) === canonicalCidr(p.subnet));
    if (l && late(l.expiresAt))
      out.push(bad(`lease-expiring:${n.name}:${canonicalCidr(p.subnet)}`, 'warn', `${peerName(p)}'s lease ${p.subnet} expires in ${formatDuration(l.expiresAt! - f.now)}: its agent is not renewing it (down or cut off from the store)`, `check the agent on ${p.publicIp}`));
  }

  const conflicts: Finding[] = [];
  const leases = sn.leases;
  for (let i = 0; i < leases.length; i++) {
    for (let j = i + 1; j < leases.length; j++) {
      const a = leases[i]!;
      const b = leases[j]!;
      if (cidrTextsOverlap(a.subnet, b.subnet))
        conflicts.push(bad(`lease-conflict:${n.name}:${canonicalCidr(a.subnet)}`, 'error', `leases ${a.subnet} (${a.hostId ?? a.publicIp}) and ${b.subnet} (${b.hostId ?? b.publicIp}) of network ${n.name} overlap: two hosts on one subnet`, 'remove the stale one from the store; restart its agent'));
    }
    const l = leases[i]!;
    if (l.hostId === st.hostId && l.publicIp !== st.publicIp)
      conflicts.push(bad(`lease-conflict:${n.name}:${canonicalCidr(l.subnet)}`, 'error', `lease ${l.subnet} of network ${n.name} names this host (${st.hostId}) but PublicIP ${l.publicIp}, not ${st.publicIp}: peers send its traffic elsewhere`, 'restart the agent (it rewrites its lease), or check --public-ip'));
    else if (l.hostId !== st.hostId && l.publicIp === st.publicIp && canonicalCidr(l.subnet) !== canonicalCidr(n.subnet))
      conflicts.push(
        bad(
          `lease-conflict:${n.name}:${canonicalCidr(l.subnet)}`,
          'error',
          `lease ${l.subnet} of network ${n.name} is held by ${l.hostId ? `host ${l.hostId}` : 'another holder (no weft host id)'} but its PublicIP ${l.publicIp} is this host's: peers send ${l.subnet} here`,
          `remove it from the store (weft network inspect ${n.name}), and check --public-ip on its holder`,
        ),
      );
  }
  out.push(...conflicts);
  if (!conflicts.length) out.push(ok(`lease-conflict:${n.name}`, `no two leases of ${n.name} overlap and each PublicIP belongs to its holder`));
  return out;
}

/** Routes, neighbours and FDB entries for the network's addresses that no live lease explains (stale or made by hand). */
export function judgeExtras(f: DoctorFacts, n: NetworkStatus, sn: StoreNetworkFacts, pool?: string): Finding[] {
  const out: Finding[] = [];
  const subnets = [...new Set([canonicalCidr(n.subnet), ...sn.leases.map((l) => canonicalCidr(l.subnet))])];
  // the route to this host's address pool (l2: the whole network on the bridge) is the runner's own
  const explained = (dst: string) => subnets.some((s) => cidrWithin(dst, s)) || (pool !== undefined && dst === canonicalCidr(pool));
  for (const r of f.routes) {
    if (r.dst === 'default') continue;
    const dst = canonicalCidr(routeDst(r.dst));
    if (!cidrWithin(dst, sn.cidr) || explained(dst)) continue;
    out.push(bad(`extra:${n.name}:route:${dst}`, 'warn', `route to ${dst}${r.dev ? ` dev ${r.dev}` : ''} is inside network ${n.name} (${sn.cidr}) but no lease in the store has that subnet: stale, it blackholes that subnet when another host leases it`, `ip route del ${dst}${r.dev ? ` dev ${r.dev}` : ''}`));
  }
  const dev = typeof n.status?.device === 'string' ? n.status.device : undefined;
  if (dev) {
    const gws = new Set(subnets.map((s) => networkAddress(s)));
    const macs = new Set(sn.leases.map((l) => String(l.backendData?.VtepMAC ?? '').toLowerCase()).filter(Boolean));
    const ips = new Set(sn.leases.map((l) => l.publicIp));
    for (const e of f.neigh[dev] ?? []) {
      if (!e.lladdr || gws.has(e.dst) || !(e.state ?? []).includes('PERMANENT')) continue;
      out.push(bad(`extra:${n.name}:neigh:${e.dst}`, 'warn', `neighbour entry ${e.dst} → ${e.lladdr} on ${dev} matches no lease of ${n.name}: stale`, `ip neigh del ${e.dst} dev ${dev}`));
    }
    for (const e of f.fdb[dev] ?? []) {
      if (!e.dst || macs.has(e.mac.toLowerCase()) || ips.has(e.dst) || e.mac === '00:00:00:00:00:00') continue;
      out.push(bad(`extra:${n.name}:fdb:${e.mac}`, 'warn', `fdb entry ${e.mac} → ${e.dst} on ${dev} matches no lease of ${n.name}: stale`, `bridge fdb del ${e.mac} dev ${dev} dst ${e.dst} self`));
    }
  }
  if (!out.length) out.push(ok(`extra:${n.name}`, `every route${dev ? `, neighbour and fdb entry` : ''} for ${n.name}'s addresses matches a lease in the store`));
  return out;
}

/** A Docker bridge (docker0, br-…) with an address inside a weft network: the two fight over the routes. */
export function judgeDockerOverlap(f: DoctorFacts): Finding[] {
  const st = f.agent.status;
  const weft = [...(f.store?.networks ?? []).map((n) => ({ name: n.name, cidr: n.cidr })), ...(st?.networks ?? []).map((n) => ({ name: n.name, cidr: n.subnet }))];
  const out: Finding[] = [];
  for (const l of f.links.filter((x) => x.ifname === 'docker0' || /^br-[0-9a-f]{12}$/.test(x.ifname))) {
    for (const a of ipv4(l)) {
      const cidr = canonicalCidr(`${a.local}/${a.prefixlen}`);
      const hit = weft.find((w) => cidrTextsOverlap(cidr, w.cidr));
      if (hit)
        out.push(bad(`docker-overlap:${l.ifname}`, 'error', `Docker's bridge ${l.ifname} has ${a.local}/${a.prefixlen}, inside weft network ${hit.name} (${hit.cidr}): its route takes weft's traffic`, `give Docker another range ("bip" / "default-address-pools" in /etc/docker/daemon.json) and restart dockerd`));
    }
  }
  if (!out.length && weft.length) out.push(ok('docker-overlap', 'no Docker bridge uses a weft network\'s addresses'));
  return out;
}

/** The probed peer paths: underlay reachability, then a full-size packet with DF set across the overlay. */
export function judgePaths(f: DoctorFacts): Finding[] {
  const out: Finding[] = [];
  for (const p of f.paths ?? []) {
    const who = p.hostId ? `peer ${p.hostId} (${p.publicIp})` : `peer ${p.publicIp}`;
    const check = `path:${p.network}:${canonicalCidr(p.subnet)}`;
    if (!p.underlay) out.push(bad(`${check}:underlay`, 'error', `${who} does not answer on the underlay: this host cannot reach it at all (host down, cable, firewall)`, `ping ${p.publicIp}; check the host and any firewall between`));
    else if (!p.small && p.port !== undefined)
      out.push(
        bad(
          `${check}:port`,
          'error',
          `${who} answers on the underlay but not on the backend's port (${p.backend}, UDP ${p.port}): its gateway ${p.target} does not answer across the tunnel — a firewall on either host or between them drops UDP ${p.port}, unless a check above names a missing route or entry`,
          `allow UDP ${p.port} between the hosts (iptables -S INPUT on both shows what drops it), then: weft doctor --ping ${p.target}`,
        ),
      );
    else if (!p.small) out.push(bad(check, 'error', `${who} answers on the underlay, but its gateway ${p.target} does not answer across the ${p.backend} path: the overlay to ${p.subnet} is broken (see the checks above)`, `weft doctor --ping ${p.target}`));
    else if (!p.big)
      out.push(
        bad(
          `pmtu:${p.network}:${canonicalCidr(p.subnet)}`,
          'error',
          `path MTU to ${who} is below the network's MTU ${p.mtu}: a ${p.mtu}-byte packet with DF set does not cross (small ones do), so large packets are dropped`,
          `lower the network's MTU, or raise the MTU of the underlay between the hosts to ${p.mtu} + the ${p.backend} overhead`,
        ),
      );
    else out.push(ok(check, `${who}: answers on the underlay; ${p.mtu}-byte packets with DF set cross to ${p.target} over ${p.backend}`));
  }
  return out;
}
