import { canonicalCidr } from '../../net/ipv4.js';
import { bad, findRoute, ok } from '../findings.js';
import type { BackendCheckInput, Finding } from '../types.js';

interface SessionView {
  peer: string;
  kind?: string;
  state: string;
  info?: string;
  lastError?: string;
}

function sessionsOf(f: BackendCheckInput): SessionView[] | undefined {
  const s = f.network.status?.sessions;
  if (!Array.isArray(s)) return undefined;
  return s.filter((x): x is SessionView => !!x && typeof x === 'object' && typeof (x as SessionView).peer === 'string' && typeof (x as SessionView).state === 'string');
}

/** The likely cause of a BGP session that is not Established, from bird's state and its last error. */
export function sessionCause(s: SessionView, asn?: number): { message: string; fix: string } {
  const text = `${s.info ?? ''} ${s.lastError ?? ''}`;
  const who = `${s.kind === 'external' ? 'external peer' : 'peer'} ${s.peer}`;
  if (/Bad peer AS/i.test(text)) {
    return {
      message: `BGP session with ${who} is ${s.state}: AS mismatch (bird: "${(s.lastError ?? s.info ?? '').trim()}") — the two sides disagree on the AS numbers`,
      fix: s.kind === 'external' ? `weft bgp peer add ${s.peer} <the AS the router really uses>` + (asn ? ` (and the router must expect AS ${asn} from this host)` : '') : 'give every host of the network the same ASN (weft network inspect NAME)',
    };
  }
  if (/Hold timer expired/i.test(text)) {
    return { message: `BGP session with ${who} is ${s.state}: hold timer expired — the peer stopped answering (host down, link cut or packets dropped)`, fix: `ping ${s.peer}; check the peer's agent and bird (weft status there)` };
  }
  if (s.state === 'Down' && /not running/.test(text)) {
    return { message: `BGP session with ${who} is down: bird is not running on this host`, fix: "check the agent's log and <state-dir>/<network>/bird.log; the agent restarts bird" };
  }
  if (/^(Connect|Active)$/.test(s.state) || /Connection refused|No route to host|timed out|Network is unreachable/i.test(text)) {
    return {
      message: `BGP session with ${who} is ${s.state}: TCP port 179 at ${s.peer} is unreachable${/refused/i.test(text) ? ' (connection refused: no BGP speaker there)' : ''}${s.lastError ? ` — bird: "${s.lastError}"` : ''}`,
      fix: `check that bird runs on ${s.peer} and that nothing filters TCP 179 between the hosts (iptables -S INPUT there)`,
    };
  }
  return { message: `BGP session with ${who} is ${s.state}${s.info ? ` (${s.info})` : ''}${s.lastError ? `; last error: ${s.lastError}` : ''}`, fix: 'weft status --json (backend sessions); birdc -s <state-dir>/<network>/bird.ctl show protocols all' };
}

/** bgp's doctor checks: bird runs, every session is Established (else why not), every peer subnet has a `proto bird` route. */
export function judgeBgp(f: BackendCheckInput): Finding[] {
  const out: Finding[] = [];
  const n = f.network;
  const st = n.status;
  const asn = typeof st?.asn === 'number' ? st.asn : undefined;
  const bird = st?.bird as { running?: boolean; log?: string; error?: string } | undefined;
  if (!st) out.push(bad(`bird:${n.name}`, 'warn', `bgp checks of ${n.name} need the agent's status (is the agent running?)`));
  else if (bird && bird.running === false)
    out.push(bad(`bird:${n.name}`, 'error', `bird is not running for ${n.name}${bird.error ? `: ${bird.error}` : ''}: this host's subnet is withdrawn from its peers`, `see ${bird.log ?? 'bird.log in the network state dir'}; the agent restarts bird with backoff`));
  else if (bird) out.push(ok(`bird:${n.name}`, String(st.detail ?? 'bird is running')));

  const sessions = sessionsOf(f) ?? [];
  for (const s of sessions) {
    const check = `bgp:${n.name}:${s.peer}`;
    if (s.state === 'Established') out.push(ok(check, `BGP session with ${s.kind === 'external' ? 'external peer' : 'peer'} ${s.peer} is Established`));
    else {
      const why = sessionCause(s, asn);
      out.push(bad(check, 'error', why.message, why.fix));
    }
  }

  // AS numbers other hosts published in their leases
  const ownAsn = asn;
  for (const l of f.store?.leases ?? []) {
    const theirs = l.backendData?.ASN;
    if (ownAsn !== undefined && theirs !== undefined && Number(theirs) !== ownAsn && l.publicIp !== f.publicIp) {
      out.push(bad(`bgp-asn:${n.name}:${l.publicIp}`, 'error', `host ${l.hostId ?? l.publicIp} announces AS ${theirs}, this host AS ${ownAsn}: their session fails with "Bad peer AS"`, 'restart the agents after fixing the network config so that all use one ASN'));
    }
  }

  // routes: each peer subnet learned by BGP
  for (const p of n.peers) {
    const subnet = canonicalCidr(p.subnet);
    const routes = findRoute(f.routes, subnet);
    const check = `route:${n.name}:${subnet}`;
    const byBird = routes.find((r) => r.protocol === 'bird');
    if (byBird) out.push(ok(check, `route to ${subnet} via ${byBird.gateway ?? byBird.dev} learned by BGP (proto bird)`));
    else if (routes.length) out.push(bad(check, 'warn', `route to ${subnet} is not from BGP (proto ${routes[0]!.protocol ?? '?'}): someone else put it there`, `ip route del ${subnet}   (bird puts its own back)`));
    else {
      const sess = sessions.find((s) => s.peer === p.publicIp);
      const why = sess && sess.state !== 'Established' ? ` — its session is ${sess.state}` : '';
      out.push(bad(check, 'error', `no route to peer subnet ${subnet} (host ${p.hostId ?? p.publicIp}): BGP has not learned it${why}`, `birdc -s <state-dir>/${n.name}/bird.ctl show route all ${subnet}`));
    }
  }
  return out;
}
