import type { BackendStatus } from '../backends/types.js';

/** Shapes of the agent's HTTP API (unix socket); the CLI, Docker plugin and CNI plugin all speak these. */

export interface AttachRequest {
  /** netns name, /proc/PID/ns/net, a PID, or a Docker container id/name. */
  container: string;
  /** Network name; defaults to the agent's only (or first) network. */
  network?: string;
  /** Requested address, "10.5.72.9" or "10.5.72.9/24"; next free one when absent. */
  address?: string;
  /** DNS name for the container. */
  name?: string;
  /** Interface name inside the container; default eth0, else the next free ethweN. */
  ifname?: string;
}

export interface Endpoint {
  id: string;
  container: string;
  network: string;
  hostId: string;
  /** Interface inside the container and its peer on the host bridge. */
  ifname: string;
  hostIf: string;
  /** Address with prefix length, e.g. "10.5.72.2/24". */
  address: string;
  mac: string;
  /** The container's gateway; absent when the backend gives none. */
  gateway?: string;
  name?: string;
}

export interface DetachRequest {
  container: string;
  network?: string;
}

export interface NetworkStatus {
  name: string;
  subnet: string;
  backend: string;
  /** The host bridge ('' when the backend uses none). */
  bridge: string;
  mtu: number;
  /** The containers' gateway. */
  gateway?: string;
  /** When this host's lease runs out unless renewed (ms since epoch). */
  leaseExpiresAt?: number;
  /** The backend's own health and details. */
  status?: BackendStatus;
  /** Why the last reconcile failed, until one succeeds. */
  error?: string;
  peers: Array<{ subnet: string; publicIp: string; hostId?: string }>;
}

export interface AgentStatus {
  hostId: string;
  publicIp: string;
  iface: string;
  networks: NetworkStatus[];
  /** Networks this host could not join, with the reason. */
  failed?: Record<string, string>;
}

/** What `weft docker-opts` prints for dockerd (flannel's DOCKER_NETWORK_OPTIONS, with docker0 as weft's bridge). */
export interface DockerOptions {
  network: string;
  /** This host's lease. */
  subnet: string;
  /** --bip: the gateway with the lease's prefix length. */
  bip: string;
  /** --fixed-cidr: the part of the lease Docker's own IPAM hands out (weft never does). */
  fixedCidr: string;
  mtu: number;
  /** --ip-masq: false, weft masquerades egress itself. */
  ipMasq: false;
}
