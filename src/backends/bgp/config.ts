/**
 * The BIRD 2 configuration of one host (pure: data in, text out; unit-tested without root).
 *
 * - `weft_own` (static): the host's lease subnet via its bridge — what the host announces.
 * - `weft_kernel`: exports BGP-learned routes into the kernel's main table (`proto bird`); `persist`
 *   keeps them when bird stops, so traffic flows on while bird restarts; learns nothing from the kernel.
 * - one `protocol bgp` per session, named after the peer's address so the name (and the text) of an
 *   unchanged session stays the same across `birdc configure`: bird keeps such sessions up.
 *   Full mesh: a session per weft host, importing exactly that host's lease subnet. Route reflectors: plain
 *   hosts peer with the reflectors only and take any subnet of the network; a reflector peers with every
 *   host as `rr client` and re-advertises what it learns. External peers (a top-of-rack router) get our
 *   subnet and may give us anything outside the network (never a subnet of the network).
 * All sessions are `direct` (peers on the underlay's L2 segment; next hops are their underlay addresses).
 */
import { intToIp, isIPv4, parseCidrLoose } from '../../net/ipv4.js';

export interface WeftPeer {
  /** The peer host's underlay address. */
  ip: string;
  /** Its lease subnet (full mesh: the only route taken from it). */
  subnet?: string;
  hostId?: string;
}

export interface ExternalPeer {
  ip: string;
  asn: number;
}

export interface BirdConfigInput {
  /** This host's underlay address: router id and session source. */
  routerId: string;
  asn: number;
  /** The whole network (routes of weft hosts lie inside it). */
  network: string;
  /** Prefix length of host subnets. */
  subnetLen: number;
  /** This host's lease subnet and bridge; absent before the lease (nothing announced yet). */
  own?: { subnet: string; bridge: string };
  /** BGP hold time in seconds (bird's minimum is 3). */
  holdTime: number;
  /** Other weft hosts of the network (from the leases). */
  peers: WeftPeer[];
  /** Underlay addresses of the route reflectors; empty: full mesh. */
  reflectors: string[];
  external: ExternalPeer[];
}

/** What a session is for: status and doctor show it. */
export type SessionKind = 'mesh' | 'reflector' | 'rr-client' | 'external';

export interface SessionSpec {
  /** bird protocol name. */
  name: string;
  peer: string;
  asn: number;
  kind: SessionKind;
  /** Import filter expression. */
  importWhere: string;
  exportWhere: string;
  rrClient: boolean;
  nextHopSelf: boolean;
}


/** The bird protocol name of a session with `ip` (letters, digits, underscores: safe in the config). */
export function sessionName(kind: 'weft' | 'ext', ip: string): string {
  if (!isIPv4(ip)) throw new Error(`not an IPv4 address: ${JSON.stringify(ip)}`);
  return `${kind}_${ip.replaceAll('.', '_')}`;
}

/** The peer address a session name stands for, or undefined for bird's other protocols. */
export function sessionPeer(name: string): { kind: 'weft' | 'ext'; ip: string } | undefined {
  const m = /^(weft|ext)_(\d+)_(\d+)_(\d+)_(\d+)$/.exec(name);
  return m ? { kind: m[1] as 'weft' | 'ext', ip: `${m[2]}.${m[3]}.${m[4]}.${m[5]}` } : undefined;
}

function cidr(s: string): string {
  const c = parseCidrLoose(s);
  // as written in bird's config: canonical text (no leading zeros), host bits allowed
  if (!c || `${intToIp(c.ip)}/${c.len}` !== s) throw new Error(`not an IPv4 CIDR: ${JSON.stringify(s)}`);
  return s;
}

/** The sessions this host runs, in a stable order. */
export function sessions(c: BirdConfigInput): SessionSpec[] {
  const out: SessionSpec[] = [];
  const net = cidr(c.network);
  const inNetwork = `net ~ [ ${net}{${c.subnetLen},${c.subnetLen}} ]`;
  const notOwn = c.own ? ` && net != ${cidr(c.own.subnet)}` : '';
  const ownOnly = 'proto = "weft_own"';
  const rrMode = c.reflectors.length > 0;
  const iAmReflector = c.reflectors.includes(c.routerId);
  // one session per address: a second lease on the same address (a stale one) is not a second peer
  const byIp = new Map<string, WeftPeer>();
  for (const p of c.peers) if (p.ip !== c.routerId && !byIp.has(p.ip)) byIp.set(p.ip, p);
  const others = [...byIp.values()].sort((a, b) => cmpIp(a.ip, b.ip));
  if (!rrMode) {
    for (const p of others) {
      if (!p.subnet) continue;
      out.push({ name: sessionName('weft', p.ip), peer: p.ip, asn: c.asn, kind: 'mesh', importWhere: `net = ${cidr(p.subnet)}${notOwn}`, exportWhere: ownOnly, rrClient: false, nextHopSelf: true });
    }
  } else if (iAmReflector) {
    const reflectors = new Set(c.reflectors);
    const clients = others.filter((p) => !reflectors.has(p.ip));
    const targets = [...clients.map((p) => p.ip), ...c.reflectors.filter((r) => r !== c.routerId)].sort(cmpIp);
    for (const ip of targets) {
      const client = !reflectors.has(ip);
      // A reflector passes on what it learned with the origin's next hop; only its own subnet carries itself.
      out.push({
        name: sessionName('weft', ip),
        peer: ip,
        asn: c.asn,
        kind: client ? 'rr-client' : 'reflector',
        importWhere: `${inNetwork}${notOwn}`,
        exportWhere: `${ownOnly} || (source = RTS_BGP && ${inNetwork})`,
        rrClient: client,
        nextHopSelf: false,
      });
    }
  } else {
    for (const ip of [...c.reflectors].sort(cmpIp)) {
      out.push({ name: sessionName('weft', ip), peer: ip, asn: c.asn, kind: 'reflector', importWhere: `${inNetwork}${notOwn}`, exportWhere: ownOnly, rrClient: false, nextHopSelf: true });
    }
  }
  const seen = new Set(out.map((s) => s.peer));
  for (const e of [...c.external].sort((a, b) => cmpIp(a.ip, b.ip))) {
    if (seen.has(e.ip) || e.ip === c.routerId) continue;
    seen.add(e.ip);
    out.push({ name: sessionName('ext', e.ip), peer: e.ip, asn: e.asn, kind: 'external', importWhere: `!(net ~ [ ${net}+ ])`, exportWhere: ownOnly, rrClient: false, nextHopSelf: true });
  }
  return out;
}

function cmpIp(a: string, b: string): number {
  const n = (s: string) => s.split('.').reduce((acc, x) => acc * 256 + Number(x), 0);
  return n(a) - n(b);
}

/** The whole bird.conf. */
export function birdConfig(c: BirdConfigInput): string {
  if (!isIPv4(c.routerId)) throw new Error(`router id must be an IPv4 address, got ${JSON.stringify(c.routerId)}`);
  if (!Number.isInteger(c.asn) || c.asn < 1 || c.asn > 4294967295) throw new Error(`AS number out of range: ${c.asn}`);
  const hold = Math.max(3, Math.floor(c.holdTime));
  const keepalive = Math.max(1, Math.floor(hold / 3));
  const lines = [
    '# Written by weft (bgp backend). Do not edit: the agent rewrites it and runs `birdc configure`.',
    `router id ${c.routerId};`,
    'log stderr { info, remote, warning, error, auth, fatal, bug };',
    'timeformat protocol iso long;',
    '',
    'protocol device weft_device { scan time 10; }',
    '',
    'protocol kernel weft_kernel {',
    '  ipv4 { import none; export where source = RTS_BGP; };',
    '  persist;',
    '  scan time 10;',
    '}',
    '',
  ];
  if (c.own) {
    if (!/^[\w.-]{1,15}$/.test(c.own.bridge)) throw new Error(`bad bridge name ${JSON.stringify(c.own.bridge)}`);
    lines.push('protocol static weft_own {', '  ipv4;', `  route ${cidr(c.own.subnet)} via "${c.own.bridge}";`, '}', '');
  }
  lines.push(
    'template bgp weft_session {',
    `  local ${c.routerId} as ${c.asn};`,
    '  direct;',
    `  hold time ${hold};`,
    `  keepalive time ${keepalive};`,
    '  connect delay time 1;',
    '  connect retry time 5;',
    '  error wait time 1, 30;',
    '  graceful restart off;',
    '}',
    '',
  );
  for (const s of sessions(c)) {
    if (!Number.isInteger(s.asn) || s.asn < 1 || s.asn > 4294967295) throw new Error(`AS number out of range: ${s.asn}`);
    lines.push(
      `# ${s.kind}`,
      `protocol bgp ${s.name} from weft_session {`,
      `  neighbor ${s.peer} as ${s.asn};`,
      ...(s.rrClient ? ['  rr client;'] : []),
      '  ipv4 {',
      `    import where ${s.importWhere};`,
      `    export where ${s.exportWhere};`,
      ...(s.nextHopSelf ? ['    next hop self;'] : []),
      '  };',
      '}',
      '',
    );
  }
  return lines.join('\n');
}
