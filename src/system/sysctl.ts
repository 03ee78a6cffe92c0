import { readFile } from 'node:fs/promises';
import { run } from './exec.js';
import { inNetns, type NsOpts } from './netns.js';

/** sysctl(8)'s convention: dots separate levels; a dot inside a device name is written as '/' ("net.ipv4.conf.weft/1.rp_filter"). */
function keyPath(key: string): string {
  return `/proc/sys/${key.replace(/[./]/g, (c) => (c === '.' ? '/' : '.'))}`;
}

/** Reads a sysctl (e.g. "net.ipv4.ip_forward") in the namespace. */
export async function getSysctl(key: string, opts: NsOpts = {}): Promise<string> {
  if (opts.netns === undefined) return (await readFile(keyPath(key), 'utf8')).trim();
  const [cmd, args] = inNetns(opts.netns, 'cat', [keyPath(key)]);
  return (await run(cmd, args)).stdout.trim();
}

/** Sets a sysctl when it differs; returns whether it changed. */
export async function setSysctl(key: string, value: string, opts: NsOpts = {}): Promise<boolean> {
  if ((await getSysctl(key, opts)) === value) return false;
  const [cmd, args] = inNetns(opts.netns, 'sysctl', ['-qw', `${key}=${value}`]);
  await run(cmd, args);
  return true;
}

/** Turns on IPv4 forwarding (net.ipv4.ip_forward=1). */
export function enableIpForward(opts: NsOpts = {}): Promise<boolean> {
  return setSysctl('net.ipv4.ip_forward', '1', opts);
}

/** The sysctl's value, or undefined when it cannot be read (no such device, no permission). */
export async function readSysctl(key: string, opts: NsOpts = {}): Promise<string | undefined> {
  try {
    return await getSysctl(key, opts);
  } catch {
    return undefined;
  }
}
