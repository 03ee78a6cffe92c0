/** The little IPv4 arithmetic the Docker adapter needs (kept local so the adapter stands on its own). */

const QUAD = /^(\d{1,3})\.(\d{1,3})\.(\d{1,3})\.(\d{1,3})$/;

export function parseIp(text: string): number | undefined {
  const m = QUAD.exec(text.trim());
  if (!m) return undefined;
  const b = m.slice(1).map(Number);
  if (b.some((x, i) => x > 255 || (m[i + 1]!.length > 1 && m[i + 1]!.startsWith('0')))) return undefined;
  return ((b[0]! << 24) | (b[1]! << 16) | (b[2]! << 8) | b[3]!) >>> 0;
}

export function formatIp(n: number): string {
  return [(n >>> 24) & 255, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join('.');
}

export interface Block {
  base: number;
  len: number;
}

/** "10.40.0.0/16" → block; undefined when malformed or when host bits are set. */
export function parseBlock(text: string): Block | undefined {
  const [ip, lenText, ...rest] = text.trim().split('/');
  if (rest.length || ip === undefined || lenText === undefined || !/^\d{1,2}$/.test(lenText)) return undefined;
  const n = parseIp(ip);
  const len = Number(lenText);
  if (n === undefined || len > 32) return undefined;
  const size = 2 ** (32 - len);
  if (n % size !== 0) return undefined;
  return { base: n, len };
}

export function formatBlock(b: Block): string {
  return `${formatIp(b.base)}/${b.len}`;
}

export function blockContains(b: Block, ip: number): boolean {
  return ip >= b.base && ip < b.base + 2 ** (32 - b.len);
}

export function blocksOverlap(a: Block, b: Block): boolean {
  return a.base < b.base + 2 ** (32 - b.len) && b.base < a.base + 2 ** (32 - a.len);
}

/** The first usable address of a block (the bridge / gateway address in weft). */
export function firstUsable(b: Block): string {
  return formatIp(b.base + (b.len >= 31 ? 0 : 1));
}

/** "10.40.3.9/24" or "10.40.3.9" → "10.40.3.9" (Docker sends ReleaseAddress without a prefix length). */
export function stripPrefix(address: string): string {
  return address.split('/')[0]!.trim();
}
