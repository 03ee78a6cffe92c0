import { WeftError } from '../util/errors.js';

/** Small IPv4 helpers (the kernel layer only deals with IPv4). */
export function ipToInt(ip: string): number {
  const p = ip.split('.');
  if (p.length !== 4 || p.some((x) => !/^\d{1,3}$/.test(x) || Number(x) > 255)) throw new WeftError(`invalid IPv4 address "${ip}"`);
  return ((Number(p[0]) << 24) | (Number(p[1]) << 16) | (Number(p[2]) << 8) | Number(p[3])) >>> 0;
}

export function intToIp(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Cidr {
  ip: string;
  prefixLen: number;
}

export function parseCidr(cidr: string): Cidr {
  const [ip, len, extra] = cidr.split('/');
  const prefixLen = len === undefined ? 32 : Number(len);
  if (extra !== undefined || !Number.isInteger(prefixLen) || prefixLen < 0 || prefixLen > 32) throw new WeftError(`invalid CIDR "${cidr}"`);
  ipToInt(ip!);
  return { ip: ip!, prefixLen };
}

function mask(len: number): number {
  return len === 0 ? 0 : (0xffffffff << (32 - len)) >>> 0;
}

/** "10.5.3.7/24" → "10.5.3.0" */
export function networkAddress(cidr: string): string {
  const c = parseCidr(cidr);
  return intToIp((ipToInt(c.ip) & mask(c.prefixLen)) >>> 0);
}

/** "10.5.3.7/24" → "10.5.3.0/24" */
export function canonicalCidr(cidr: string): string {
  const c = parseCidr(cidr);
  return `${networkAddress(cidr)}/${c.prefixLen}`;
}

export function cidrContains(cidr: string, ip: string): boolean {
  const c = parseCidr(cidr);
  const m = mask(c.prefixLen);
  return ((ipToInt(c.ip) & m) >>> 0) === ((ipToInt(ip) & m) >>> 0);
}

/** Whether subnet `inner` lies entirely within `outer`. */
export function cidrWithin(inner: string, outer: string): boolean {
  const i = parseCidr(inner);
  const o = parseCidr(outer);
  return i.prefixLen >= o.prefixLen && cidrContains(outer, i.ip);
}

/** The n-th address of a subnet with its prefix length: ("10.5.3.0/24", 1) → "10.5.3.1/24". */
export function nthAddress(cidr: string, n: number): string {
  const c = parseCidr(cidr);
  return `${intToIp((((ipToInt(c.ip) & mask(c.prefixLen)) >>> 0) + n) >>> 0)}/${c.prefixLen}`;
}
