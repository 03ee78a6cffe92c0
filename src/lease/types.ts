/** A host's subnet lease as weft uses it in memory. Stored under networks/<name>/subnets/<a.b.c.d-len>. */
export interface Lease {
  network: string;
  /** CIDR, e.g. "10.5.72.0/24". */
  subnet: string;
  /** IPv6 subnet of a dual-stack lease (flannel key `10.5.72.0-24&fd57:0:0:17::-64`). */
  subnetV6?: string;
  /** Underlay address peers send to. */
  publicIp: string;
  /** flannel's PublicIPv6, where the lease has one. */
  publicIpV6?: string;
  backendType: string;
  /** Backend-specific data published to peers (vxlan: VNI, VtepMAC; wireguard: PublicKey; …). */
  backendData: Record<string, unknown>;
  /** Stable identity of the holder; absent for leases written by flannel itself. */
  hostId?: string;
  /** ms since epoch, where known. */
  expiresAt?: number;
}
