/** Facts about weft's VXLAN device, shared by the backend and its doctor checks. */

/** Outer IPv4 (20) + UDP (8) + VXLAN (8) + inner Ethernet (14). */
export const VXLAN_OVERHEAD = 50;
export const DEFAULT_VXLAN_PORT = 8472;
export const MAX_VNI = 2 ** 24 - 1;

/** The device of a VNI: flannel's `flannel.<VNI>` becomes `weft.<VNI>`. */
export function vxlanDevice(config: { VNI?: number }): string {
  return `weft.${config.VNI ?? 1}`;
}
