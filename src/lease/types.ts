/** A host's subnet lease as weft uses it in memory. Stored under networks/<name>/subnets/<a.b.c.d-len>. */
export interface Lease {
  network: string;
  /** CIDR, e.g. "10.5.72.0/24". */
  subnet: string;
  /** Underlay address peers send to. */
  publicIp: string;
  backendType: string;
  /** Backend-specific data published to peers (vxlan: VNI, VtepMAC; wireguard: PublicKey; …). */
  backendData: Record<string, unknown>;
  /** Stable identity of the holder; absent for leases written by flannel itself. */
  hostId?: string;
  /** ms since epoch, where known. */
  expiresAt?: number;
}
