import { WeftError } from '../util/errors.js';
import { blockSize, intToIp, networkOf, parseCidrLoose } from '../lease/subnets.js';

/**
 * String-level CIDR helpers for the kernel layer (routes and addresses as `ip` prints them). The IPv4
 * arithmetic itself lives in lease/subnets.ts; this only adapts it to text in, text out.
 */

function parse(cidr: string): { ip: number; len: number } {
  const c = parseCidrLoose(cidr.includes('/') ? cidr : `${cidr}/32`);
  if (!c) throw new WeftError(`invalid CIDR "${cidr}"`);
  return c;
}

export { ipToInt, intToIp } from '../lease/subnets.js';

/** "10.5.3.7/24" → "10.5.3.0" */
export function networkAddress(cidr: string): string {
  const c = parse(cidr);
  return intToIp(networkOf(c.ip, c.len));
}

/** "10.5.3.7/24" → "10.5.3.0/24" */
export function canonicalCidr(cidr: string): string {
  return `${networkAddress(cidr)}/${parse(cidr).len}`;
}

export function cidrContains(cidr: string, ip: string): boolean {
  const c = parse(cidr);
  return networkOf(parse(ip).ip, c.len) === networkOf(c.ip, c.len);
}

/** Whether subnet `inner` lies entirely within `outer`. */
export function cidrWithin(inner: string, outer: string): boolean {
  const i = parse(inner);
  return i.len >= parse(outer).len && cidrContains(outer, intToIp(i.ip));
}

/** The n-th address of a subnet with its prefix length: ("10.5.3.0/24", 1) → "10.5.3.1/24". */
export function nthAddress(cidr: string, n: number): string {
  const c = parse(cidr);
  if (n < 0 || n >= blockSize(c.len)) throw new WeftError(`address #${n} is outside ${cidr}`);
  return `${intToIp(networkOf(c.ip, c.len) + n)}/${c.len}`;
}
