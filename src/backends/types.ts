import type { BackendSpec } from '../config/backend-spec.js';
import type { NetworkConfig } from '../config/types.js';
import type { Lease } from '../lease/types.js';
import type { NsOpts } from '../system/netns.js';
import type { IpLink } from '../system/ip.js';
import type { FdbFact, NeighFact, RouteFact } from '../system/ops.js';
import type { Store } from '../store/types.js';
import type { Logger } from '../util/log.js';

/**
 * The seam every data plane plugs into (like flannel's pkg/backend/<name>). A backend is one folder
 * `src/backends/<name>/` whose index.ts calls registerBackend(module) at import time; src/backends/all.ts
 * imports every folder (one line each). Nothing else in weft names a backend.
 */

export type { Underlay } from '../system/underlay.js';
import type { Underlay } from '../system/underlay.js';

/** A container attached anywhere in the network, as the store holds it (backends such as l2 program its MAC). */
export interface EndpointInfo {
  hostId: string;
  /** Address with prefix length, e.g. "10.5.72.2/24". */
  address: string;
  mac: string;
  name?: string;
}

export interface BackendContext {
  networkName: string;
  network: NetworkConfig;
  underlay: Underlay;
  log: Logger;
  /** This network's own state directory on this host (`<state-dir>/<network>`, mode 0700): keys, generated configs. */
  stateDir: string;
  /** The host bridge the agent assigned to this network (weft0, weft1, …), whether or not the backend wants one. */
  bridge: string;
  /** This host's id (stable across restarts). */
  hostId: string;
  /** Where the backend acts: absent = the agent's own namespace (tests drive other namespaces). */
  sys: NsOpts;
  /** The agent's store, for backends that follow keys of their own (bgp: external peers). Absent in tests without one. */
  store?: Store;
}

/** A network connected to this one (`weft network connect`), as a backend is told of it. */
export interface ConnectedNetwork {
  name: string;
  cidr: string;
  /** Its live leases on every host (any backend type); only for modules with `wantsConnectedLeases`. */
  leases?: Lease[];
}

/** How containers of this host take addresses. Default (lease): the host's leased subnet, gateway = its first address. */
export interface AddressPlan {
  /** The CIDR the IPAM allocates in (its records are kept per this CIDR: a lease, or the whole network for l2). */
  pool: string;
  /** First and last address containers may get (defaults: after the gateway … before broadcast). */
  first?: string;
  last?: string;
  /** The containers' gateway (no prefix length); absent: no gateway route (l2 without a router). */
  gateway?: string;
  /** Prefix length on the container interface (default the pool's). */
  prefixLen?: number;
  /** false: the runner leaves the host bridge's address alone (the bridge backend moves the host's own address there). */
  bridgeAddress?: false;
}

/** What `weft status` and doctor show of a backend at run time. */
export interface BackendStatus {
  /** false when the data plane cannot carry traffic now (a process down, a device missing). */
  healthy: boolean;
  /** One line for humans, e.g. "wireguard-go pid 123, 2 peers with a handshake". */
  detail?: string;
  /** Anything else, shown in `--json` (counters, sessions, …). */
  [extra: string]: unknown;
}

/**
 * One data plane on one host, created per network. The agent drives it:
 *   init() → lease acquired with the returned data → activate(lease) → start(signal) → reconcile(...) on changes.
 * Every method is idempotent and reads what the kernel already has, so an agent restart changes nothing
 * that is already right (established flows survive). stop() ends processes; kernel state stays.
 */
/** How a reconcile may find the kernel state it changes (Backend.reconcile). */
export interface ReconcileHow {
  /** Read the kernel (true), or trust what the last successful reconcile applied (false). */
  readKernel: boolean;
}

export interface Backend {
  readonly type: string;
  /** MTU for container interfaces on this host. */
  readonly mtu: number;
  /** The NIC containers' interfaces hang off (macvlan); undefined for bridge-based backends. */
  readonly parent?: string;
  /** Create or adopt what does not depend on the lease; returns data published in the lease (BackendData). */
  init(): Promise<Record<string, unknown>>;
  /** Configure what depends on our own lease (called again when the lease changes on renewal). */
  activate(own: Lease): Promise<void>;
  /** Start processes (TUN loop, bird, wireguard-go); `signal` aborts when the agent stops. Optional. */
  start?(signal: AbortSignal): Promise<void>;
  /** Stop processes; kernel-only state stays in place. Optional. */
  stop?(): Promise<void>;
  /**
   * Make the data plane reach exactly these peers (our own lease is not among them). `endpoints` are the
   * network's endpoints on every host, given only when the module says `wantsEndpoints`. With `how.readKernel`
   * false (a change of peers or endpoints, after a reconcile that succeeded) nothing but this backend changed its
   * kernel state since as far as the agent knows: a backend may diff against what it applied last instead of
   * reading the kernel again (issue 15: the reads were most of a join's processes at 50 hosts). The first and
   * the periodic (drift-repairing) reconciles, and any after a failure, read. Absent means read.
   */
  reconcile(peers: Lease[], endpoints?: EndpointInfo[], how?: ReconcileHow): Promise<void>;
  /**
   * The kernel state reconcile() reads and repairs, as kernel-watch kinds (src/system/kernel-watch.ts:
   * 'route', 'link', 'addr', 'neigh', 'neigh:IFINDEX', 'nft'). When given, a periodic resync with the same
   * peers and endpoints skips reconcile() while none of them changed since the last one; without it, every
   * resync runs reconcile(). Declare every kind reconcile() depends on, or drift of the others goes unrepaired.
   */
  kernelReads?(): readonly string[] | undefined;
  /**
   * The networks connected to this one (`weft network connect`), told after every reconcile. Optional: for
   * backends that filter inner sources by lease, which must then accept these too (udp: any source in a
   * connected network; wireguard: a peer's own subnets in the connected networks, from `leases`, given
   * when the module says `wantsConnectedLeases`).
   */
  connectedNetworks?(networks: ConnectedNetwork[]): Promise<void>;
  /** Health and details for `weft status` and doctor. */
  status(): BackendStatus;
  /** Remove everything this backend made on the host (`weft reset`, network removed). */
  teardown(): Promise<void>;
  /** New key pair for backends that have keys (`weft rotate-keys`); returns the lease data to publish. Optional. */
  rotateKeys?(): Promise<Record<string, unknown>>;
}

/** A doctor verdict (src/doctor prints them). */
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

export type { FdbFact, NeighFact, RouteFact } from '../system/ops.js';

/** What a backend's doctor checks see of one network on one host (gathered by src/doctor). */
export interface BackendCheckInput {
  network: {
    name: string;
    subnet: string;
    bridge: string;
    mtu: number;
    backend: string;
    /** The agent's peers of this network. */
    peers: Array<{ subnet: string; publicIp: string; hostId?: string }>;
    /** The backend's own status() as the agent reported it. */
    status?: BackendStatus;
  };
  /** The network's config and live leases from the store, when the store was readable. */
  store?: { config: NetworkConfig; leases: Lease[] };
  publicIp: string;
  underlayIface: string;
  links: IpLink[];
  underlay?: IpLink;
  routes: RouteFact[];
  /** `ip -4 neigh` / `bridge fdb` per device name, for the devices the modules name (deviceNames). */
  neigh: Record<string, NeighFact[]>;
  fdb: Record<string, FdbFact[]>;
  /** net.ipv4.conf.<dev>.rp_filter per device ("all" included). */
  rpFilter: Record<string, number>;
}

/**
 * What a backend module registers: the pure spec (config schema, defaults, ids, MTU overhead, options; see
 * config/backend-spec.ts) plus how containers join, how they take addresses, doctor checks and the runtime.
 */
export interface BackendModule extends BackendSpec {
  /** False when containers hang off no host bridge (macvlan). Default true. */
  wantsBridge?: boolean;
  /** Endpoint driver for containers of this backend (default "veth-bridge"). */
  endpointDriver?: string;
  /** The network's endpoints on every host are passed to reconcile (l2: per-MAC FDB entries). */
  wantsEndpoints?: boolean;
  /**
   * connectedNetworks() gets the connected networks' leases too (the agent follows them while connected):
   * wireguard's cryptokey routing accepts a peer's packets only from addresses it names, so a connected
   * network's subnets of that peer's host must be among them.
   */
  wantsConnectedLeases?: boolean;
  /** How this host's containers take addresses; default: the host's lease, gateway = its first address. */
  addressPlan?(own: Lease, network: NetworkConfig): AddressPlan;
  /** Device names whose neigh/fdb doctor should read (e.g. ["weft.1"]). */
  deviceNames?(config: NetworkConfig): string[];
  /** Backend-specific doctor checks (pure: facts in, findings out). */
  doctor?(input: BackendCheckInput): Finding[];
  /** Traffic between hosts is encrypted (wireguard); `weft bench` prints it. Default false. */
  encrypted?: boolean;
  /** A runtime instance for one network on this host. */
  create(ctx: BackendContext): Backend;
}
