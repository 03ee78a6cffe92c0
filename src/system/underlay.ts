import { canonicalCidr } from '../net/ipv4.js';
import { WeftError } from '../util/errors.js';
import { getLink, ipJson, type IpLink } from './ip.js';
import type { NsOpts } from './netns.js';

/** The host's underlay: the interface and address peers reach us on. */
export interface Underlay {
  iface: string;
  ip: string;
  /** The underlay link's MTU. */
  mtu: number;
}

export interface UnderlayOptions {
  /** --iface: use this interface (its first IPv4 address unless publicIp is given too). */
  iface?: string;
  /** --public-ip: the address peers use; its interface is the underlay. */
  publicIp?: string;
}

function ipv4s(link: IpLink): Array<{ local: string; prefixlen: number }> {
  return (link.addr_info ?? []).filter((a) => a.family === 'inet');
}

/** Finds the underlay: --iface, else the interface holding --public-ip, else the default route's interface. */
export async function findUnderlay(o: UnderlayOptions = {}, opts: NsOpts = {}): Promise<Underlay> {
  if (o.iface) {
    let link = await getLink(o.iface, opts);
    if (!link) throw new WeftError(`underlay interface ${o.iface} does not exist`, 'ENOUNDERLAY');
    // a NIC the bridge backend enslaved: its addresses are on the bridge now
    if (!o.publicIp && !ipv4s(link).length && link.master) link = (await getLink(link.master, opts)) ?? link;
    const addr = o.publicIp ?? ipv4s(link)[0]?.local;
    if (!addr) throw new WeftError(`underlay interface ${o.iface} has no IPv4 address`, 'ENOUNDERLAY');
    return { iface: link.ifname, ip: addr, mtu: link.mtu };
  }
  const links = await ipJson<IpLink[]>(['addr', 'show'], opts);
  if (o.publicIp) {
    const link = links.find((l) => ipv4s(l).some((a) => a.local === o.publicIp));
    if (!link) throw new WeftError(`no interface holds the public IP ${o.publicIp}; pass --iface`, 'ENOUNDERLAY');
    return { iface: link.ifname, ip: o.publicIp, mtu: link.mtu };
  }
  const routes = await ipJson<Array<{ dev?: string; prefsrc?: string }>>(['-4', 'route', 'show', 'default'], opts);
  const dev = routes.find((r) => r.dev)?.dev;
  if (!dev) throw new WeftError('cannot find the underlay: no default route; pass --iface or --public-ip', 'ENOUNDERLAY');
  const link = links.find((l) => l.ifname === dev);
  const addr = routes.find((r) => r.dev === dev && r.prefsrc)?.prefsrc ?? (link ? ipv4s(link)[0]?.local : undefined);
  if (!link || !addr) throw new WeftError(`default route interface ${dev} has no IPv4 address; pass --iface or --public-ip`, 'ENOUNDERLAY');
  return { iface: dev, ip: addr, mtu: link.mtu };
}

/** The IPv4 prefixes directly connected on an interface, e.g. ["192.168.77.0/24"] (its L2 segment). */
export async function connectedPrefixes(iface: string, opts: NsOpts = {}): Promise<string[]> {
  const link = await getLink(iface, opts);
  if (!link) throw new WeftError(`interface ${iface} does not exist`, 'ENOUNDERLAY');
  return ipv4s(link).map((a) => canonicalCidr(`${a.local}/${a.prefixlen}`));
}
