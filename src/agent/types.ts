import type { BackendStatus } from '../backends/types.js';
import type { DockerPlan } from '../lease/docker-env.js';

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
  /**
   * In-process callers only (the API schema refuses it): more DNS names of the container (CNI's
   * runtimeConfig.aliases), registered and removed with `name`.
   */
  aliases?: string[];
  /** Interface name inside the container; default eth0, else the next free ethweN. */
  ifname?: string;
  /**
   * In-process callers only (the API schema refuses it): false lets the container change its MAC (a CNI
   * chain's tuning plugin may); its IPv4 source is still pinned.
   */
  pinMac?: boolean;
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
  /** false when the port's filter pins only the address (see AttachRequest.pinMac). */
  pinMac?: false;
  /** The container's gateway; absent when the backend gives none. */
  gateway?: string;
  name?: string;
  /** Further DNS names (CNI runtimeConfig.aliases). */
  aliases?: string[];
  /** Who made it when not weft itself ("docker": a container of weft's Docker plugin). */
  runtime?: string;
  /** Published ports ("8080->80/tcp"), Docker's containers only. */
  ports?: string[];
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
  /** The lease TTL this host uses (it renews every third of it). */
  leaseTtlSeconds?: number;
  /** The backend's own health and details. */
  status?: BackendStatus;
  /** Why the last reconcile failed, until one succeeds. */
  error?: string;
  peers: PeerStatus[];
  /** This host's containers in this network, and IPAM use of its pool (from the last background probe). */
  endpoints?: number;
  ipam?: { used: number; size: number };
}

export interface PeerStatus {
  subnet: string;
  publicIp: string;
  hostId?: string;
  /** The peer's backend data from its lease (VtepMAC, public key, …). */
  backendData?: Record<string, unknown>;
  /** When this agent last saw the peer's lease written (renewed), ms since epoch. */
  lastSeen?: number;
  /** When the peer's lease runs out unless renewed (ms since epoch). */
  expiresAt?: number;
  /** Whether the peer's underlay address answered the last ICMP probe (absent: not probed yet). */
  reachable?: boolean;
}

/** The store as the agent's background probe last found it. */
export interface StoreHealth {
  url: string;
  healthy: boolean;
  error?: string;
  latencyMs?: number;
  /** When it was last probed (ms since epoch). */
  checkedAt?: number;
}

export interface AgentStatus {
  hostId: string;
  publicIp: string;
  iface: string;
  networks: NetworkStatus[];
  /** Networks this host could not join, with the reason. */
  failed?: Record<string, string>;
  store?: StoreHealth;
  /** This host's containers over all networks. */
  endpoints?: number;
  /** Where the web map listens, when it does. */
  ui?: string;
  /** The name service: its domain and the networks whose gateway answers DNS (absent with --no-dns). */
  dns?: { domain: string; networks: string[] };
  /** When the status was taken (ms since epoch). */
  now?: number;
}

/** What `weft docker-opts` prints for dockerd (flannel's DOCKER_NETWORK_OPTIONS, with docker0 as weft's bridge): the plan the agent also writes to docker.env. */
export type DockerOptions = DockerPlan;
