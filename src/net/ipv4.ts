import ipaddr from 'ipaddr.js';
import { WeftError } from '../util/errors.js';

/**
 * IPv4 arithmetic, once for all of weft. ipaddr.js parses (only plain dotted quads are accepted); the
 * uint32 maths below is what ipaddr.js has nothing for: subnet ranges, n-th addresses, overlap.
 */

export interface Cidr {
  /** First address of the block, as an unsigned 32-bit number. */
  base: number;
  /** Prefix length, 0–32. */
  len: number;
}

/** True for a plain dotted-quad IPv4 address ("10.5.72.1"; not "10.5", not hex). */
export function isIPv4(text: string): boolean {
  return ipaddr.IPv4.isValidFourPartDecimal(text);
}

export function ipToInt(ip: string): number {
  if (!isIPv4(ip)) throw new WeftError(`not an IPv4 address: ${JSON.stringify(ip)}`);
  const b = ipaddr.IPv4.parse(ip).toByteArray();
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

export function intToIp(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

/** Number of addresses in a block of prefix length `len`. */
export function blockSize(len: number): number {
  return 2 ** (32 - len);
}

/** Parses "a.b.c.d/len"; undefined when it is not a valid IPv4 CIDR. Host bits are kept. */
export function parseCidrLoose(text: string): { ip: number; len: number } | undefined {
  if (!ipaddr.IPv4.isValidCIDR(text)) return undefined;
  const [addr, len] = text.split('/');
  if (!isIPv4(addr!) || !/^\d{1,2}$/.test(len!)) return undefined;
  return { ip: ipToInt(addr!), len: Number(len) };
}

/** The network address of `ip` within a block of prefix length `len`. */
export function networkOf(ip: number, len: number): number {
  return len === 0 ? 0 : (ip - (ip % blockSize(len))) >>> 0;
}

/** Parses a CIDR whose host bits are zero; throws otherwise (callers validate first for user messages). */
export function parseCidr(text: string): Cidr {
  const c = parseCidrLoose(text);
  if (!c) throw new WeftError(`not an IPv4 CIDR: ${JSON.stringify(text)}`);
  if (networkOf(c.ip, c.len) !== c.ip) throw new WeftError(`host bits set in ${text}`);
  return { base: c.ip, len: c.len };
}

export function formatCidr(c: Cidr): string {
  return `${intToIp(c.base)}/${c.len}`;
}

/** Last address of the block (the broadcast address). */
export function lastAddress(c: Cidr): number {
  return c.base + blockSize(c.len) - 1;
}

export function containsAddress(c: Cidr, ip: number): boolean {
  return ip >= c.base && ip <= lastAddress(c);
}

export function cidrsOverlap(a: Cidr, b: Cidr): boolean {
  return a.base <= lastAddress(b) && b.base <= lastAddress(a);
}

// --- text in, text out (routes and addresses as `ip` prints them; a bare address is a /32) ---

function loose(cidr: string): { ip: number; len: number } {
  const c = parseCidrLoose(cidr.includes('/') ? cidr : `${cidr}/32`);
  if (!c) throw new WeftError(`invalid CIDR "${cidr}"`);
  return c;
}

/** "10.5.3.7/24" → "10.5.3.0" */
export function networkAddress(cidr: string): string {
  const c = loose(cidr);
  return intToIp(networkOf(c.ip, c.len));
}

/** "10.5.3.7/24" → "10.5.3.0/24" */
export function canonicalCidr(cidr: string): string {
  return `${networkAddress(cidr)}/${loose(cidr).len}`;
}

export function cidrContains(cidr: string, ip: string): boolean {
  const c = loose(cidr);
  return networkOf(loose(ip).ip, c.len) === networkOf(c.ip, c.len);
}

/** Whether subnet `inner` lies entirely within `outer`. */
export function cidrWithin(inner: string, outer: string): boolean {
  const i = loose(inner);
  return i.len >= loose(outer).len && cidrContains(outer, intToIp(i.ip));
}

/** Whether two CIDRs (host bits allowed) share any address. */
export function cidrTextsOverlap(a: string, b: string): boolean {
  const x = loose(a);
  const y = loose(b);
  return cidrsOverlap({ base: networkOf(x.ip, x.len), len: x.len }, { base: networkOf(y.ip, y.len), len: y.len });
}

/** The n-th address of a subnet with its prefix length: ("10.5.3.0/24", 1) → "10.5.3.1/24". */
export function nthAddress(cidr: string, n: number): string {
  const c = loose(cidr);
  if (n < 0 || n >= blockSize(c.len)) throw new WeftError(`address #${n} is outside ${cidr}`);
  return `${intToIp(networkOf(c.ip, c.len) + n)}/${c.len}`;
}

/** "10.40.3.9/24" or "10.40.3.9" → "10.40.3.9" (Docker sends ReleaseAddress without a prefix length). */
export function stripPrefix(address: string): string {
  return address.split('/')[0]!.trim();
}

// --- lenient parsers for free text from other programs (Docker): undefined instead of throwing ---

export function tryParseIp(text: string): number | undefined {
  const t = text.trim();
  return isIPv4(t) ? ipToInt(t) : undefined;
}

/** "10.40.0.0/16" → block; undefined when malformed or when host bits are set. */
export function tryParseCidr(text: string): Cidr | undefined {
  try {
    return parseCidr(text.trim());
  } catch {
    return undefined;
  }
}
