import type { AgentStatus } from '../agent/types.js';
import type { BackendConfig } from '../config/types.js';
import type { Lease } from '../lease/types.js';
import type { IpLink } from '../system/ip.js';

/** One verdict of `weft doctor`. A failing finding's message names the cause in the user's words. */
export interface Finding {
  /** Stable id of the check, e.g. "ip_forward", "bridge:weft0", "peer:e2e:10.5.7.0/24". */
  check: string;
  ok: boolean;
  /** error: packets are lost now; warn: fragile or degraded; info: context (always for ok findings). */
  severity: 'error' | 'warn' | 'info';
  message: string;
  /** What to type (or do) to repair it. */
  fix?: string;
}

export interface RouteFact {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}
export interface NeighFact {
  dst: string;
  lladdr?: string;
  state?: string[];
}
export interface FdbFact {
  mac: string;
  dst?: string;
  flags?: string[];
  state?: string;
}

/** What the store says about one network (config and live leases). */
export interface StoreNetworkFacts {
  name: string;
  /** The whole network, e.g. "10.5.0.0/16". */
  cidr: string;
  backend: BackendConfig;
  leases: Lease[];
}

/**
 * Everything doctor looks at on one host, gathered once (src/doctor/gather.ts) and judged by a pure
 * function (src/doctor/judge.ts) so that the judging is tested with recorded facts.
 */
export interface DoctorFacts {
  /** ms since epoch when gathered. */
  now: number;
  /** The agent API socket asked. */
  api: string;
  agent: { status?: AgentStatus; error?: string };
  /** Absent when no store was given and the default one does not exist here. */
  store?: { url: string; error?: string; networks: StoreNetworkFacts[] };
  /** `ip -json -details addr show`. */
  links: IpLink[];
  /** `ip -json -4 route show` (main table). */
  routes: RouteFact[];
  /** `ip -json -4 neigh show dev D` per vxlan device. */
  neigh: Record<string, NeighFact[]>;
  /** `bridge -json fdb show dev D` per vxlan device. */
  fdb: Record<string, FdbFact[]>;
  /** net.ipv4.ip_forward as read ("0"/"1"), undefined when unreadable. */
  ipForward?: string;
  /** net.ipv4.conf.<dev>.rp_filter per device ("all" included), as numbers. */
  rpFilter: Record<string, number>;
  /** `weft doctor --ping IP`: whether one ping from this host was answered, and how the kernel routes it. */
  ping?: { target: string; answered: boolean; route?: RouteFact; error?: string; endpoints?: Array<{ address: string; container: string; network: string }> };
  /** Per peer: one ping to its underlay address, one small and one full-size (MTU, DF set) ping to its gateway across the overlay. */
  paths?: PathFact[];
  /** `iptables -S` of FORWARD, DOCKER-USER and WEFT-FORWARD (filter table); undefined where the chain does not exist. */
  iptables: { error?: string; forward?: string[]; dockerUser?: string[]; weftChain?: string[]; unreadable?: string[] };
}

/** What probing one peer's path found (src/doctor/gather.ts). */
export interface PathFact {
  network: string;
  backend: string;
  subnet: string;
  hostId?: string;
  publicIp: string;
  /** The peer's gateway address the overlay pings went to. */
  target: string;
  /** The network's MTU: the big ping is MTU - 28 bytes of payload with DF set. */
  mtu: number;
  underlay: boolean;
  small: boolean;
  big: boolean;
}
