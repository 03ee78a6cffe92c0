import type { NetnsRef, NsOpts } from '../../system/netns.js';

/**
 * An endpoint driver decides how a container joins a network on this host: a veth onto the host bridge
 * (veth-bridge, the default), a macvlan on a parent NIC, … The agent's attach, the Docker plugin's Join and
 * the CNI plugin all go through one. A backend module names its driver (BackendModule.endpointDriver).
 */

export interface JoinSpec {
  /** The container's namespace. */
  netns: NetnsRef;
  /** Interface name inside the container (eth0, ethwe0, …). */
  ifname: string;
  /** Host-side name (veth-bridge: the veth's host end; macvlan: the name it is created under before the move). */
  hostIf: string;
  /** Container address with prefix length, e.g. "10.5.1.2/24". */
  address: string;
  /** Gateway (no prefix length); absent: no route is added. */
  gateway?: string;
  /** What the route via the gateway covers: "default" or a CIDR (a container's further network). */
  routeTo: string;
  mtu: number;
  mac: string;
  /** Pin the MAC in the port's source filter too (default true); the IPv4 source is always pinned. */
  pinMac?: boolean;
  /** The host bridge (veth-bridge). */
  bridge?: string;
  /** The parent NIC (macvlan). */
  parent?: string;
  /** Namespace of the host side when it is not our own (tests drive hosts from outside). */
  hostNetns?: NsOpts['netns'];
}

/** What a runtime that moves the interface itself (Docker's remote driver) is handed. */
export interface PreparedInterface {
  /** The interface the runtime moves into the container (left in the host namespace). */
  ifname: string;
  /** The host-side interface that stays (veth-bridge), or the same name (macvlan). */
  hostIf: string;
  mac: string;
}

/** An endpoint as the driver needs to find it again. */
export interface EndpointRef {
  hostIf: string;
  ifname: string;
  /** The container's namespace, when still known (macvlan interfaces live only there). */
  netns?: NetnsRef;
  hostNetns?: NsOpts['netns'];
}

/** An endpoint's identity on the wire, for the drivers that enforce it (anti-spoofing). */
export interface EndpointSource {
  hostIf: string;
  /** Address without prefix length. */
  ip: string;
  /** Absent: the MAC is not pinned. */
  mac?: string;
}

export interface EndpointDriver {
  readonly name: string;
  /** Creates the container's interface inside its namespace, addressed and routed. Leaves nothing behind on failure. */
  join(spec: JoinSpec): Promise<{ mac: string }>;
  /** Creates the interface in the host namespace for a runtime that moves it itself. */
  prepare(spec: Omit<JoinSpec, 'netns' | 'ifname' | 'gateway' | 'routeTo' | 'address'> & { peerIf: string; address?: string }): Promise<PreparedInterface>;
  /** Removes the endpoint's interface; false when it was already gone. */
  leave(ep: EndpointRef): Promise<boolean>;
  /** Whether the endpoint's interface still exists (the agent reconciles records against it). */
  exists(ep: EndpointRef): Promise<boolean>;
  /**
   * Makes the host's source filters hold exactly the endpoints `endpoints` gives among the ones this driver
   * made with `hostIfPattern` (the agent's own; the Docker plugin's have another prefix), leaving ports
   * `busy` names alone (attaches under way). `endpoints` is asked after the kernel was read, `busy` after
   * that (see system/antispoof reconcileSources). Returns ports changed.
   */
  reconcileSources?(endpoints: () => Promise<EndpointSource[]>, hostIfPattern: RegExp, busy: (hostIf: string) => boolean): Promise<string[]>;
}
