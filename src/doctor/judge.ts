import { canonicalCidr, cidrContains, cidrWithin, networkAddress } from '../net/ipv4.js';
import type { NetworkStatus } from '../agent/types.js';
import { gatewayCidr } from '../ipam/addresses.js';
import { backendModule } from '../backends/all.js';
import { bad, ipv4, isUp, ok } from '../backends/findings.js';
import type { BackendCheckInput } from '../backends/types.js';
import { FORWARD_CHAIN } from '../system/iptables.js';
import type { IpLink } from '../system/ip.js';
import { formatDuration, judgeDockerOverlap, judgeExtras, judgeLeaseHealth, judgePaths, judgeStore } from './checks.js';
import { hostPlan, judgeEndpoints } from './endpoints.js';
import type { DoctorFacts, Finding, RouteFact, StoreNetworkFacts } from './types.js';

export { formatDuration } from './checks.js';

/**
 * The judging half of `weft doctor`: pure, from recorded facts to findings. Every failing finding names
 * the cause as the user would put it ("bridge weft0 is down") and, where there is one, the fix.
 */


/** All findings for the host the facts were gathered on, in a stable order. */
export function judge(f: DoctorFacts): Finding[] {
  const out: Finding[] = [];
  const st = f.agent.status;

  // 1. the agent
  if (st) out.push(ok('agent', `agent answers at ${f.api} (host ${st.hostId}, underlay ${st.iface} ${st.publicIp})`));
  else
    out.push(
      bad(
        'agent',
        'error',
        `no agent answers at ${f.api}${f.agent.error && !/^no weft agent at/.test(f.agent.error) ? ` (${f.agent.error})` : ''}: nothing follows peers or renews this host's lease`,
        `start it (weft agent --api ${f.api} …), or pass --api SOCK if it listens elsewhere`,
      ),
    );

  // 2. IP forwarding
  if (f.ipForward === undefined) out.push(bad('ip_forward', 'warn', 'cannot read net.ipv4.ip_forward'));
  else if (f.ipForward.trim() !== '1')
    out.push(
      bad(
        'ip_forward',
        'error',
        `IP forwarding is off (net.ipv4.ip_forward=${f.ipForward.trim()}): containers cannot reach other hosts`,
        'sysctl -w net.ipv4.ip_forward=1',
      ),
    );
  else out.push(ok('ip_forward', 'IP forwarding is on (net.ipv4.ip_forward=1)'));

  // 3. iptables FORWARD
  out.push(...judgeForward(f));
  // 3b. the store, and Docker bridges on weft's addresses
  out.push(...judgeStore(f));
  out.push(...judgeDockerOverlap(f));

  if (!st) {
    out.push(bad('networks', 'warn', 'network checks (bridge, routes, peers) skipped: they need the agent\'s status'));
    return out;
  }

  // 4. the underlay
  const underlay = f.links.find((l) => l.ifname === st.iface);
  if (!underlay) out.push(bad(`underlay:${st.iface}`, 'error', `underlay interface ${st.iface} is missing: no traffic leaves this host`));
  else if (!isUp(underlay)) out.push(bad(`underlay:${st.iface}`, 'error', `underlay interface ${st.iface} is down: no traffic leaves this host`, `ip link set ${st.iface} up`));
  else out.push(ok(`underlay:${st.iface}`, `underlay ${st.iface} is up (MTU ${underlay.mtu})`));

  // 5. networks this host could not join
  for (const [name, why] of Object.entries(st.failed ?? {})) {
    out.push(bad(`network:${name}`, 'error', `network ${name} is not running on this host: ${why}`, "fix the cause, then restart the agent (see its log)"));
  }
  if (st.networks.length === 0 && Object.keys(st.failed ?? {}).length === 0) {
    out.push(bad('networks', 'warn', 'this host runs no network yet', 'weft network create NAME --subnet CIDR'));
  }

  // 6. each network, then the probed paths to the peers
  for (const n of st.networks) out.push(...judgeNetwork(f, n, underlay));
  // 6b. endpoint records against interfaces and IPAM
  out.push(...judgeEndpoints(f));
  out.push(...judgePaths(f));
  // 7. --ping
  if (f.ping) out.push(judgePing(f, out));
  return out;
}

/** Explains a ping from this host to a container address with what the other checks found. */
function judgePing(f: DoctorFacts, found: Finding[]): Finding {
  const p = f.ping!;
  const st = f.agent.status;
  const check = `ping:${p.target}`;
  if (p.error && !p.route) return bad(check, 'error', `cannot ping ${p.target}: ${p.error}`);
  const inside = (cidr: string) => cidrContains(cidr, p.target);
  const net = st?.networks.find((n) => inside(n.subnet) || n.peers.some((x) => inside(x.subnet)) || (storeNetwork(f, n.name)?.cidr !== undefined && inside(storeNetwork(f, n.name)!.cidr)));
  const local = net && inside(net.subnet) ? net : undefined;
  const peer = net?.peers.find((x) => inside(x.subnet));
  const where = local ? `a container on this host, bridge ${local.bridge}` : peer ? `a container on host ${peer.hostId ?? peer.publicIp}` : undefined;
  const via = p.route ? `${p.route.gateway ? `via ${p.route.gateway} ` : ''}dev ${p.route.dev}` : 'no route';
  if (p.answered) return ok(check, `${p.target}${where ? ` (${where})` : ''} answers a ping from this host (${via})`);
  const what = `${p.target}${where ? ` (${where})` : ''} does not answer a ping from this host`;
  if (!st) return bad(check, 'error', `${what}; no agent answers, see above`);
  if (!net) return bad(check, 'error', `${what}: it is in none of this host's networks or their subnets (${st.networks.map((n) => n.subnet).join(', ') || 'none'})`, 'check the address (weft ps on its host)');
  if (local) {
    const ep = p.endpoints?.find((e) => e.address.split('/')[0] === p.target);
    if (p.endpoints && !ep) return bad(check, 'error', `${what}: no container on this host has that address`, 'weft ps lists the containers attached here');
    const broken = found.filter((x) => !x.ok && x.severity === 'error' && (x.check === `bridge:${local.bridge}` || x.check.startsWith('mtu:')));
    return bad(check, 'error', `${what}${ep ? ` (container ${ep.container})` : ''}: ${broken.length ? broken.map((b) => b.message).join('; ') : "this host's side looks right — check the container's interface and firewall"}`);
  }
  const subnet = canonicalCidr(peer!.subnet);
  const broken = found.filter((x) => !x.ok && x.severity === 'error' && (x.check.startsWith(`peer:${net.name}:${subnet}`) || x.check.startsWith('vxlan:') || x.check === 'ip_forward' || x.check === 'iptables' || x.check.startsWith('underlay:')));
  if (broken.length) return bad(check, 'error', `${what}: ${broken.map((b) => b.message).join('; ')}`, broken.find((b) => b.fix)?.fix);
  return bad(check, 'error', `${what}, though this host's side looks right (${via}): run weft doctor on host ${peer!.hostId ?? peer!.publicIp} (${peer!.publicIp})`, `on ${peer!.publicIp}: weft doctor --ping ${p.target}`);
}

function storeNetwork(f: DoctorFacts, name: string): StoreNetworkFacts | undefined {
  return f.store?.networks.find((s) => s.name === name) ?? (f.store?.networks.length === 1 && f.agent.status?.networks.length === 1 ? f.store.networks[0] : undefined);
}

/** Networks' CIDRs as far as known: the store's configs, else what weft's accept chain names. */
function networkCidrs(f: DoctorFacts): string[] {
  const fromStore = (f.store?.networks ?? []).map((n) => n.cidr);
  if (fromStore.length) return fromStore;
  const fromChain = (f.iptables.weftChain ?? []).map((r) => /-[sd] (\S+)/.exec(r)?.[1]).filter((c): c is string => !!c);
  return [...new Set(fromChain)];
}

function judgeForward(f: DoctorFacts): Finding[] {
  const ipt = f.iptables;
  if (ipt.error || !ipt.forward) return [bad('iptables', 'warn', `cannot read iptables (${ipt.error ?? 'no FORWARD chain'}): forwarding rules not checked`)];
  const policy = /^-P FORWARD (\S+)/m.exec(ipt.forward.join('\n'))?.[1] ?? 'ACCEPT';
  const jump = (lines: string[] | undefined, chain: string) => (lines ?? []).findIndex((r) => r.trim() === `-A ${chain} -j ${FORWARD_CHAIN}`);
  const inForward = jump(ipt.forward, 'FORWARD');
  const viaDockerUser = jump(ipt.dockerUser, 'DOCKER-USER') >= 0 && (ipt.forward ?? []).some((r) => r.trim() === '-A FORWARD -j DOCKER-USER');
  const jumped = inForward >= 0 || viaDockerUser;
  const cidrs = networkCidrs(f);
  const what = cidrs.length ? cidrs.join(', ') : "weft's networks";
  const dropsAll = policy === 'DROP' || policy === 'REJECT';

  if (!jumped) {
    if (dropsAll) {
      return [
        bad(
          'iptables',
          'error',
          `FORWARD policy is ${policy} and weft's accept rules are not in FORWARD (Docker does this): traffic to ${what} is dropped`,
          ipt.weftChain ? `iptables -I FORWARD 1 -j ${FORWARD_CHAIN}   (or restart the agent)` : 'restart the agent (it adds its accept rules)',
        ),
      ];
    }
    const rules = ipt.forward.filter((r) => r.trim().startsWith('-A '));
    // a pristine FORWARD (policy ACCEPT, no rules) forwards everything: the agent adds nothing there
    if (rules.length === 0) return [ok('iptables', `FORWARD accepts everything (policy ${policy}, no rules): weft's accept rules are not needed`)];
    const hidden = (ipt.unreadable ?? []).includes('DOCKER-USER') && rules.some((r) => r.trim() === '-A FORWARD -j DOCKER-USER');
    const unread = hidden ? ' (iptables cannot show DOCKER-USER, which FORWARD jumps to)' : '';
    return [bad('iptables', 'warn', `FORWARD has ${rules.length} rule(s) but weft's accept rules are not in it${unread}: traffic to ${what} passes only while none of them drops it (policy ${policy})`, `iptables -I FORWARD 1 -j ${FORWARD_CHAIN}   (or restart the agent)`)];
  }
  // a blanket DROP/REJECT ahead of the jump
  if (inForward >= 0 && !viaDockerUser) {
    const blanket = ipt.forward.slice(0, inForward).find((r) => /^-A FORWARD -j (DROP|REJECT)\b/.test(r.trim()));
    if (blanket) {
      return [bad('iptables', 'error', `FORWARD drops everything ("${blanket.trim()}") before weft's accept rules: traffic to ${what} is dropped`, `iptables -D FORWARD -j ${FORWARD_CHAIN}; iptables -I FORWARD 1 -j ${FORWARD_CHAIN}`)];
    }
  }
  if (dropsAll) {
    const chain = ipt.weftChain ?? [];
    const missing = (f.store?.networks ?? []).map((n) => n.cidr).filter((c) => !chain.some((r) => r.includes(`-s ${c} `)) || !chain.some((r) => r.includes(`-d ${c} `)));
    if (missing.length) {
      return [
        bad(
          'iptables',
          'error',
          `FORWARD policy is ${policy} and ${FORWARD_CHAIN} has no accept rules for ${missing.join(', ')}: traffic to ${missing.join(', ')} is dropped`,
          'restart the agent (it adds its accept rules)',
        ),
      ];
    }
  }
  return [ok('iptables', `weft's accept rules are in FORWARD${viaDockerUser && inForward < 0 ? ' (via DOCKER-USER)' : ''} (policy ${policy})`)];
}

function judgeNetwork(f: DoctorFacts, n: NetworkStatus, underlay: IpLink | undefined): Finding[] {
  const out: Finding[] = [];
  const sn = storeNetwork(f, n.name);
  const st = f.agent.status!;
  const plan = hostPlan(n, sn, st.publicIp);

  // lease
  if (f.store?.error) out.push(bad(`lease:${n.name}`, 'warn', `lease of ${n.name} not checked: cannot read the store ${f.store.url} (${f.store.error})`));
  else if (!f.store) out.push(bad(`lease:${n.name}`, 'warn', `lease of ${n.name} not checked: no store here (pass --store URL)`));
  else if (!sn) out.push(bad(`lease:${n.name}`, 'error', `network ${n.name} is no longer in the store ${f.store.url}: the agent will leave it`));
  else {
    const own = sn.leases.find((l) => canonicalCidr(l.subnet) === canonicalCidr(n.subnet));
    if (!own)
      out.push(
        bad(
          `lease:${n.name}`,
          'error',
          `lease ${n.subnet} of network ${n.name} has expired (it is gone from the store): peers drop their routes to this host`,
          "the agent renews it unless it is stuck: check its log, or restart it",
        ),
      );
    else if (own.publicIp !== st.publicIp)
      out.push(bad(`lease:${n.name}`, 'error', `lease ${n.subnet} of network ${n.name} is now held by ${own.publicIp}${own.hostId ? ` (${own.hostId})` : ''}, not this host (${st.publicIp}): its subnet was given away`, 'restart the agent: it gets a new subnet'));
    else if (own.expiresAt !== undefined && own.expiresAt <= f.now)
      out.push(bad(`lease:${n.name}`, 'error', `lease ${n.subnet} of network ${n.name} expired ${formatDuration(f.now - own.expiresAt)} ago`, "check the agent's log, or restart it"));
    else out.push(ok(`lease:${n.name}`, `lease ${n.subnet} of network ${n.name}${own.expiresAt !== undefined ? ` expires in ${formatDuration(own.expiresAt - f.now)} (the agent renews it)` : ' is live'}`));
    out.push(...judgeLeaseHealth(f, n, sn), ...judgeExtras(f, n, sn, plan.pool));
  }

  // bridge
  const br = f.links.find((l) => l.ifname === n.bridge);
  // the gateway address the runner puts on the bridge: the backend's address plan (l2: the network's first address)
  const gw = plan.gateway && plan.bridgeAddress !== false ? `${plan.gateway}/${plan.prefixLen ?? Number(plan.pool.split('/')[1])}` : undefined;
  if (!br) out.push(bad(`bridge:${n.bridge}`, 'error', `bridge ${n.bridge} is missing: containers of ${n.name} on this host are cut off`, 'restart the agent (it recreates the bridge), then re-attach the containers'));
  else if (!isUp(br)) out.push(bad(`bridge:${n.bridge}`, 'error', `bridge ${n.bridge} is down: containers of ${n.name} on this host are cut off`, `ip link set ${n.bridge} up`));
  else if (gw && !ipv4(br).some((a) => `${a.local}/${a.prefixlen}` === gw))
    out.push(bad(`bridge:${n.bridge}`, 'error', `bridge ${n.bridge} lacks the gateway address ${gw}: containers of ${n.name} have no way out`, `ip addr add ${gw} dev ${n.bridge}`));
  else out.push(ok(`bridge:${n.bridge}`, `bridge ${n.bridge} is up${gw ? ` with ${gw}` : ''}`));

  // MTU of the bridge and its ports
  if (br) {
    const tooBig = [br, ...f.links.filter((l) => l.master === n.bridge)].filter((l) => l.mtu > n.mtu);
    for (const l of tooBig) {
      const what = l === br ? l.ifname : `${l.ifname} (a container's port on ${n.bridge})`;
      out.push(bad(`mtu:${l.ifname}`, 'error', `MTU of ${what} (${l.mtu}) is larger than the backend's (${n.mtu}): large packets are dropped`, `ip link set ${l.ifname} mtu ${n.mtu}`));
    }
    // each container's interface against its port: a pair that disagrees drops what is larger than the smaller end
    const mismatched = (f.endpoints ?? []).flatMap((e) => {
      const port = f.links.find((l) => l.ifname === e.hostIf && l.master === n.bridge);
      if (e.network !== n.name || e.mtu === undefined || !port || port.mtu === e.mtu || tooBig.includes(port)) return [];
      const low = Math.min(port.mtu, e.mtu);
      // the container's end lower: what the bridge sends it is too big; its port lower: both ways are
      const dropped = e.mtu < port.mtu ? 'to the container' : 'to and from the container';
      out.push(
        bad(
          `mtu:${e.hostIf}`,
          'error',
          `MTU of container ${e.container}'s ${e.ifname} (${e.mtu}) differs from its port ${e.hostIf} on ${n.bridge} (${port.mtu}): packets larger than ${low} bytes ${dropped} are dropped`,
          e.mtu < port.mtu ? `ip -n ${e.container} link set ${e.ifname} mtu ${port.mtu}  (or weft detach/attach the container)` : `ip link set ${e.hostIf} mtu ${e.mtu}`,
        ),
      );
      return [e];
    });
    if (!tooBig.length && !mismatched.length)
      out.push(ok(`mtu:${n.bridge}`, `MTU of ${n.bridge} and its ports is at most the backend's (${n.mtu})${f.endpoints?.some((e) => e.network === n.name && e.mtu !== undefined) ? "; containers' interfaces match their ports" : ''}`));
  }

  const checks = backendChecks(n.backend);
  if (checks) out.push(...checks(backendInput(f, n, sn, underlay)));
  else out.push(ok(`backend:${n.name}`, `backend ${n.backend}: no kernel checks for it`));
  return out;
}






/** The backend module's doctor checks, or undefined when it has none (or this weft does not know the type). */
function backendChecks(type: string): ((input: BackendCheckInput) => Finding[]) | undefined {
  try {
    return backendModule(type).doctor;
  } catch {
    return undefined;
  }
}

/** What a backend module's checks see of one network. */
function backendInput(f: DoctorFacts, n: NetworkStatus, sn: StoreNetworkFacts | undefined, underlay: IpLink | undefined): BackendCheckInput {
  const st = f.agent.status!;
  return {
    network: n,
    ...(sn ? { store: { config: { Network: sn.cidr, Backend: sn.backend }, leases: sn.leases } } : {}),
    publicIp: st.publicIp,
    underlayIface: st.iface,
    links: f.links,
    underlay,
    routes: f.routes,
    neigh: f.neigh,
    fdb: f.fdb,
    rpFilter: f.rpFilter,
  };
}
