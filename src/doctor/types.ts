import type { AgentStatus } from '../agent/types.js';
import type { BackendConfig } from '../config/types.js';
import type { Lease } from '../lease/types.js';
import type { IpLink } from '../system/ip.js';

/** A verdict and the kernel facts doctor reads: one definition each, shared with the backends' checks. */
export type { Finding } from '../backends/types.js';
export type { FdbFact, NeighFact, RouteFact } from '../system/ops.js';
import type { Finding } from '../backends/types.js';
import type { FdbFact, NeighFact, RouteFact } from '../system/ops.js';

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
  /**
   * This host's containers (the agent's /endpoints) with the MTU of their interface inside the container
   * (read where the namespace can be entered: a netns name or path, a PID; absent otherwise).
   */
  endpoints?: EndpointFact[];
  /**
   * This host's endpoint records and IPAM records per network the agent runs, read from the store (absent
   * without agent or store). Judged against `links` by src/doctor/endpoints.ts.
   */
  endpointRecords?: { error?: string; networks: EndpointRecordFacts[] };
  /** `iptables -S` of FORWARD, DOCKER-USER and WEFT-FORWARD (filter table); undefined where the chain does not exist. */
  iptables: { error?: string; forward?: string[]; dockerUser?: string[]; weftChain?: string[]; unreadable?: string[] };
}

/** One of this host's containers as doctor saw it. */
export interface EndpointFact {
  container: string;
  network: string;
  /** Its interface inside the container, and the MTU found there. */
  ifname: string;
  mtu?: number;
  /** Its port on the host bridge. */
  hostIf: string;
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
  /** The UDP port the backend's tunnel uses towards this peer (vxlan, udp, wireguard, l2); absent for routed backends. */
  port?: number;
}

/** One network's endpoint records of this host and the addresses IPAM holds for this host in its pool. */
export interface EndpointRecordFacts {
  network: string;
  /** The CIDR this host's containers take addresses from (the lease; l2/bridge/macvlan: the whole network). */
  pool: string;
  records: Array<{ container: string; address: string; hostIf: string; ifname: string; owner: string; runtime?: string }>;
  addresses: Array<{ address: string; owner: string }>;
}
