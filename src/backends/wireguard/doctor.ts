import { canonicalCidr } from '../../net/ipv4.js';
import { bad, findRoute, hostWords, isUp, ok, peerName, rpFinding } from '../findings.js';
import type { BackendCheckInput, Finding } from '../types.js';
import { WG_OVERHEAD } from './peers.js';
import { DEFAULT_RESYNC_SECONDS } from '../../config/network.js';

/** What the wireguard backend's status() reports (see WireguardBackend.status). */
interface WgStatus {
  implementation?: 'kernel' | 'wireguard-go';
  device?: string;
  pid?: number;
  lastExit?: string;
  logFile?: string;
  keyFile?: string;
  keyFileMode?: number;
  healthy?: boolean;
  peers?: Array<{ publicKey: string; endpoint?: string; allowedIps: string[]; latestHandshake: number }>;
}

/**
 * wireguard's doctor checks, from the agent's status of the backend and the kernel's links and routes:
 * wireguard-go running, device up with a safe MTU, the private key file's mode, and per peer: configured on
 * the device with its subnet, a handshake seen, a route via the device.
 */
export function judgeWireguard(f: BackendCheckInput): Finding[] {
  const n = f.network;
  const s = (n.status ?? {}) as WgStatus;
  const out: Finding[] = [];
  if (!s.device) {
    out.push(bad(`wireguard:${n.name}`, 'warn', `cannot check wireguard of ${n.name} without the agent's status`));
    return out;
  }
  const dev = s.device;
  const check = `wireguard:${dev}`;
  if (s.implementation === 'wireguard-go' && !s.healthy) {
    out.push(bad(`${check}:process`, 'error', `wireguard-go for ${dev} is not running (${s.lastExit ?? 'never started'}): no traffic of ${n.name} reaches other hosts`, `the agent restarts it with backoff; see ${s.logFile ?? 'its log'}, or restart the agent`));
  } else if (s.implementation === 'wireguard-go') out.push(ok(`${check}:process`, `wireguard-go for ${dev} runs (pid ${s.pid})`));
  const link = f.links.find((l) => l.ifname === dev);
  if (!link) {
    out.push(bad(check, 'error', `WireGuard device ${dev} is missing: no traffic of ${n.name} reaches other hosts`, 'restart the agent (it recreates the device)'));
    return out;
  }
  const maxMtu = (f.underlay?.mtu ?? link.mtu + WG_OVERHEAD) - WG_OVERHEAD;
  if (!isUp(link)) out.push(bad(check, 'error', `WireGuard device ${dev} is down: no traffic of ${n.name} reaches other hosts`, `ip link set ${dev} up`));
  else if (link.mtu > maxMtu) out.push(bad(`mtu:${dev}`, 'warn', `MTU of ${dev} (${link.mtu}) is larger than the underlay's (${f.underlay?.mtu}) minus WireGuard's ${WG_OVERHEAD} bytes: large packets may be dropped`, `ip link set ${dev} mtu ${maxMtu}`));
  else out.push(ok(check, `WireGuard device ${dev} is up (${s.implementation}, MTU ${link.mtu})`));

  if (s.keyFileMode === undefined) out.push(bad('wireguard:key', 'error', `the private key file ${s.keyFile ?? ''} is missing or unreadable: a restart makes a new key pair`, 'restart the agent (it writes a new key and publishes it)'));
  else if (s.keyFileMode !== 0o600) out.push(bad('wireguard:key', 'error', `the private key file ${s.keyFile} has mode 0${s.keyFileMode.toString(8)}: others may read this host's WireGuard key`, `chmod 600 ${s.keyFile}   (then consider: weft rotate-keys --network ${n.name})`));
  else out.push(ok('wireguard:key', `the private key file ${s.keyFile} has mode 0600`));

  const unrouted: string[] = [];
  for (const p of n.peers) {
    const subnet = canonicalCidr(p.subnet);
    const pc = `peer:${n.name}:${subnet}`;
    const wp = (s.peers ?? []).find((x) => x.allowedIps.some((a) => canonicalCidr(a) === subnet));
    const problems: Finding[] = [];
    if (!findRoute(f.routes, subnet).some((r) => r.dev === dev)) {
      unrouted.push(subnet);
      problems.push(bad(`${pc}:route`, 'error', `no route to peer subnet ${subnet} (${hostWords(p)}) via ${dev}: the agent has not reconciled — check its log`, `ip route replace ${subnet} dev ${dev}   (the agent repairs it within ${DEFAULT_RESYNC_SECONDS} s)`));
    }
    if (!wp) problems.push(bad(`${pc}:wg`, 'error', `${peerName(p)} is not a WireGuard peer of ${dev} with allowed-ips ${subnet}: its packets are dropped`, 'check that its lease publishes a PublicKey (weft doctor there); the agent adds it on its next reconcile'));
    else if (!wp.latestHandshake)
      problems.push(bad(`${pc}:handshake`, 'warn', `no WireGuard handshake with ${peerName(p)} at ${wp.endpoint ?? '?'} yet: either nothing was sent there, or its key, address or UDP port is wrong or blocked`, `weft doctor --ping <a container of ${p.publicIp}>; check UDP ${wp.endpoint ?? ''} is reachable`));
    if (problems.length) out.push(...problems);
    else out.push(ok(pc, `${peerName(p)}: WireGuard peer with a handshake ${wp!.latestHandshake ? `at ${new Date(wp!.latestHandshake * 1000).toISOString()}` : ''}, route to ${subnet} via ${dev}`));
  }
  out.push(rpFinding(f, dev, unrouted));
  return out;
}
