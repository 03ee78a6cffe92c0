import { cidrsOverlap, networkOf, parseCidr, parseCidrLoose, type Cidr } from '../net/ipv4.js';
import { WeftError } from '../util/errors.js';

/**
 * Address ranges a container network must not use: the kernel routes them specially (loopback, multicast,
 * broadcast), hosts use them for themselves (link-local, "this network"), or nothing may use them (class E).
 * A network overlapping one would lease host subnets that cannot work (0.0.0.0/0 once leased a public /24).
 */
export const RESERVED_RANGES: ReadonlyArray<{ cidr: string; what: string }> = [
  { cidr: '0.0.0.0/8', what: '"this network"' },
  { cidr: '127.0.0.0/8', what: 'loopback' },
  { cidr: '169.254.0.0/16', what: 'link-local' },
  { cidr: '224.0.0.0/4', what: 'multicast' },
  { cidr: '240.0.0.0/4', what: 'reserved (class E, with the broadcast address 255.255.255.255)' },
];

const PRIVATE_HINT = 'pick a private range such as 10.0.0.0/8, 172.16.0.0/12 or 192.168.0.0/16';

/** Refuses a network (CIDR text) that overlaps a reserved range, naming the range. */
export function checkReservedRanges(network: string): void {
  const net = parseCidr(network);
  for (const r of RESERVED_RANGES) {
    if (cidrsOverlap(net, parseCidr(r.cidr))) {
      throw new WeftError(`network ${network} overlaps ${r.cidr} (${r.what}), which containers cannot use: ${PRIVATE_HINT}`, 'ERESERVED');
    }
  }
}

/** "192.168.79.0/24", "192.168.79.7/24" or a bare "192.168.79.7" as a block; undefined for anything else. */
function toBlock(prefix: string): Cidr | undefined {
  const c = parseCidrLoose(prefix.includes('/') ? prefix : `${prefix}/32`);
  return c ? { base: networkOf(c.ip, c.len), len: c.len } : undefined;
}

/**
 * Refuses a network that overlaps one of a host's underlay prefixes (its connected routes, the routes it
 * needs to reach its peers): leasing such a subnet would shadow the host's own traffic. `prefixes` are CIDRs
 * or addresses as `ip route` prints them; a default route (0.0.0.0/0, "default") never counts.
 */
export function checkUnderlayOverlap(network: string, prefixes: readonly string[], where = "this host's underlay"): void {
  const net = parseCidr(network);
  for (const p of prefixes) {
    if (p === 'default') continue;
    const block = toBlock(p);
    if (!block || block.len === 0) continue;
    if (cidrsOverlap(net, block)) {
      throw new WeftError(`network ${network} overlaps ${p}, a route of ${where}: containers would shadow the host's own traffic; pick another range`, 'EUNDERLAY');
    }
  }
}
