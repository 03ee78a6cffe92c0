/**
 * A network's configuration, with flannel's field names and JSON shape so that a flannel config stored
 * under /coreos.com/network/config is read as it is. The zod schema in ./network.ts validates it.
 */
export interface BackendConfig {
  /** host-gw | vxlan | udp | l2 | bridge | macvlan | wireguard | bgp */
  Type: string;
  /** vxlan: VXLAN network identifier (default 1). */
  VNI?: number;
  /** vxlan: UDP port (default 8472); udp: 8285. */
  Port?: number;
  /** Backend-specific extras are kept as they are. */
  [extra: string]: unknown;
}

export interface NetworkConfig {
  /** The whole network, e.g. "10.5.0.0/16". */
  Network: string;
  /** Prefix length of each host's subnet (default 24). */
  SubnetLen?: number;
  /** First and last subnet handed out (defaults, as flannel's: the second and the last subnet of Network). */
  SubnetMin?: string;
  SubnetMax?: string;
  Backend: BackendConfig;
  /** Masquerade traffic leaving the network (flannel's --ip-masq, per network). */
  IPMasq?: boolean;
  /** weft: the network `weft attach` uses when none is named and the host has several (`network create --default`). */
  Default?: boolean;
}
