import ipaddr from 'ipaddr.js';
import { WeftError } from '../util/errors.js';

/**
 * IPv4 subnet arithmetic for leases and IPAM (pure; no store). Addresses are handled as unsigned 32-bit
 * numbers; ipaddr.js does the parsing so that only plain dotted-quad input is accepted.
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

/** Parses "a.b.c.d/len"; undefined when it is not a valid IPv4 CIDR. Host bits are kept (see hasHostBits). */
export function parseCidrLoose(text: string): { ip: number; len: number } | undefined {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})\/(\d{1,2})$/.exec(text);
  if (!m || !isIPv4(m[1]!)) return undefined;
  const len = Number(m[2]);
  if (len > 32) return undefined;
  return { ip: ipToInt(m[1]!), len };
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

/** "10.5.72.0/24" → "10.5.72.0-24" (flannel's subnet key). */
export function subnetToKey(subnet: string): string {
  const c = parseCidr(subnet);
  return `${intToIp(c.base)}-${c.len}`;
}

/** "10.5.72.0-24" → "10.5.72.0/24"; undefined for anything that is not a subnet key. */
export function keyToSubnet(key: string): string | undefined {
  const m = /^(\d{1,3}(?:\.\d{1,3}){3})-(\d{1,2})$/.exec(key);
  if (!m) return undefined;
  const text = `${m[1]}/${m[2]}`;
  const c = parseCidrLoose(text);
  if (!c || networkOf(c.ip, c.len) !== c.ip) return undefined;
  return text;
}

/** What a lease key under `subnets/` names: flannel's `10.5.72.0-24`, or its dual-stack `10.5.72.0-24&fd57:0:0:17::-64`. */
export interface LeaseKey {
  /** The IPv4 subnet, e.g. "10.5.72.0/24": what the lease occupies in the network's range. */
  subnet: string;
  /** The IPv6 subnet of a dual-stack key, e.g. "fd57:0:0:17::/64". */
  subnetV6?: string;
}

/** Parses the last segment of a lease key (plain or dual-stack); undefined for anything else. */
export function parseLeaseKey(key: string): LeaseKey | undefined {
  const amp = key.indexOf('&');
  const subnet = keyToSubnet(amp < 0 ? key : key.slice(0, amp));
  if (!subnet) return undefined;
  if (amp < 0) return { subnet };
  const m = /^([0-9a-fA-F:]+)-(\d{1,3})$/.exec(key.slice(amp + 1));
  if (!m || !ipaddr.IPv6.isValid(m[1]!) || Number(m[2]) > 128) return undefined;
  const len = Number(m[2]);
  const addr = ipaddr.IPv6.parse(m[1]!);
  const net = ipaddr.IPv6.networkAddressFromCIDR(`${m[1]}/${len}`);
  if (net.toNormalizedString() !== addr.toNormalizedString()) return undefined; // host bits set
  return { subnet, subnetV6: `${addr.toString()}/${len}` };
}

/** What a validated network config says about which subnets can be leased. */
export interface SubnetRangeSpec {
  Network: string;
  SubnetLen: number;
  SubnetMin?: string;
  SubnetMax?: string;
}

/**
 * The leasable subnets of a network: `count` subnets of length `len`, the i-th starting at first + i·size.
 * Defaults as flannel's: SubnetMin the network's second subnet, SubnetMax its last.
 */
export class SubnetRange {
  readonly first: number;
  readonly len: number;
  readonly count: number;

  constructor(spec: SubnetRangeSpec) {
    const net = parseCidr(spec.Network);
    this.len = spec.SubnetLen;
    const size = blockSize(this.len);
    // flannel's default SubnetMin is the network's second subnet (the first holds the network address).
    this.first = spec.SubnetMin ? ipToInt(spec.SubnetMin) : net.base + size;
    const last = spec.SubnetMax ? ipToInt(spec.SubnetMax) : lastAddress(net) + 1 - size;
    this.count = last < this.first ? 0 : Math.floor((last - this.first) / size) + 1;
  }

  /** The i-th subnet as CIDR text. */
  at(i: number): string {
    return `${intToIp(this.first + i * blockSize(this.len))}/${this.len}`;
  }

  /** Index of a subnet in this range, or -1 when it is not one of them. */
  indexOf(subnet: string): number {
    const c = parseCidrLoose(subnet);
    if (!c || c.len !== this.len) return -1;
    const off = c.ip - this.first;
    const size = blockSize(this.len);
    if (off < 0 || off % size !== 0 || off / size >= this.count) return -1;
    return off / size;
  }

  has(subnet: string): boolean {
    return this.indexOf(subnet) >= 0;
  }

  *all(): Generator<string> {
    for (let i = 0; i < this.count; i++) yield this.at(i);
  }
}
