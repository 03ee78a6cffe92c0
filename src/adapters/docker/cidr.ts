import { gatewayOf } from '../../ipam/addresses.js';
import { containsAddress, formatCidr, ipToInt, isIPv4, parseCidr, type Cidr } from '../../lease/subnets.js';

/**
 * The Docker adapter's view of IPv4 (Docker sends free text: pools, addresses with or without a prefix
 * length). Lenient parsers that answer undefined instead of throwing, over weft's one IPv4 module.
 */

export type Block = Cidr;

export function parseIp(text: string): number | undefined {
  const t = text.trim();
  return isIPv4(t) ? ipToInt(t) : undefined;
}

/** "10.40.0.0/16" → block; undefined when malformed or when host bits are set. */
export function parseBlock(text: string): Block | undefined {
  try {
    return parseCidr(text.trim());
  } catch {
    return undefined;
  }
}

export const formatBlock = formatCidr;
export const blockContains = containsAddress;

/** The first usable address of a block (the bridge / gateway address in weft). */
export function firstUsable(b: Block): string {
  return gatewayOf(formatCidr(b));
}

/** "10.40.3.9/24" or "10.40.3.9" → "10.40.3.9" (Docker sends ReleaseAddress without a prefix length). */
export function stripPrefix(address: string): string {
  return address.split('/')[0]!.trim();
}
