import type { NetworkConfig } from '../config/types.js';
import type { Lease } from '../lease/types.js';
import type { Logger } from '../util/log.js';

/** The host's underlay: the interface and address peers reach us on. */
export interface Underlay {
  iface: string;
  ip: string;
  /** The underlay link's MTU. */
  mtu: number;
}

export interface BackendContext {
  networkName: string;
  network: NetworkConfig;
  underlay: Underlay;
  log: Logger;
}

/**
 * One data plane (like flannel's pkg/backend/<name>). The agent drives it:
 *   init() → acquire lease with the returned backendData → activate(lease) → reconcile(peers) on every change.
 * Every method is idempotent and reads what the kernel already has, so an agent restart changes nothing
 * that is already right (established flows survive).
 */
export interface Backend {
  readonly type: string;
  /** MTU for container interfaces on this host. */
  readonly mtu: number;
  /** Create or adopt devices that do not depend on the lease; returns data to publish in the lease. */
  init(): Promise<Record<string, unknown>>;
  /** Configure what depends on our own lease. */
  activate(own: Lease): Promise<void>;
  /** Make the kernel route to exactly these peers (our own lease is not among them). */
  reconcile(peers: Lease[]): Promise<void>;
  /** Remove everything this backend made on the host (`weft reset`). */
  teardown(): Promise<void>;
}

export type BackendFactory = (ctx: BackendContext) => Backend;

/** Every backend type weft knows (flannel's names where flannel has one). Config validation checks against it. */
export const BACKEND_TYPES = ['host-gw', 'vxlan', 'udp', 'l2', 'bridge', 'macvlan', 'wireguard', 'bgp'] as const;
export type BackendType = (typeof BACKEND_TYPES)[number];
