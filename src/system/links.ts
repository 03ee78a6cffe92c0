import { getLink } from './ip.js';
import type { NetnsRef, NsOpts } from './netns.js';
import { NetlinkError, netlinkCanReach, netlinkReady, nlConfigure, nlDeleteLink } from './netlink.js';
import { KernelBatch } from './ops.js';

/**
 * Link operations of the attach path that the netlink helper (./netlink.ts) can do without a process: each
 * goes through the helper when it runs, else through one `ip -batch` (a KernelBatch). Errors are
 * NetlinkError (errno) or ExecError (stderr); kernelFailure (./exec.ts) classifies both alike.
 */

export interface InterfaceConfig {
  /** The namespace the interface is in. */
  netns: NetnsRef | string;
  ifname: string;
  /** Address with prefix length, e.g. "10.5.1.2/24". */
  address: string;
  /** Gateway without prefix length; absent: no route. */
  gateway?: string;
  /** What the route via the gateway covers: "default" (the default) or a CIDR. */
  routeTo?: string;
}

/** The `ip -batch` form of configureInterface (its fallback; also what tests read). */
export function configureBatch(o: InterfaceConfig): KernelBatch {
  const b = new KernelBatch().linkSet('lo', { up: true }).addrAdd(o.address, o.ifname).linkSet(o.ifname, { up: true });
  if (o.gateway) b.routeAdd({ dst: o.routeTo ?? 'default', via: o.gateway, dev: o.ifname });
  return b;
}

/**
 * Inside `netns`: lo up, `address` on `ifname`, `ifname` up, then (with a gateway) `route add ROUTETO via
 * GATEWAY dev IFNAME`. Stops at the first failing step; the caller removes the interface.
 */
export async function configureInterface(o: InterfaceConfig): Promise<void> {
  if (netlinkReady() && netlinkCanReach(o.netns)) {
    await nlConfigure({ netns: o.netns, ifname: o.ifname, address: o.address, gateway: o.gateway, routeTo: o.routeTo });
    return;
  }
  await configureBatch(o).commit({ netns: o.netns, warm: true });
}

/** Deletes a link whatever it is (cleanup after a failed attach): netlink, else `ip -force`. A missing link is no error. */
export async function deleteLink(name: string, netns?: NetnsRef | string): Promise<void> {
  if (netlinkReady() && netlinkCanReach(netns)) {
    try {
      await nlDeleteLink(name, netns);
      return;
    } catch (e) {
      if (e instanceof NetlinkError && e.code === 'ENODEV') return;
    }
  }
  await new KernelBatch().linkDel(name).commit({ netns, force: true });
}

/** Deletes link `name`; false when it did not exist. Other failures are thrown. */
export async function removeLink(name: string, opts: NsOpts = {}): Promise<boolean> {
  if (netlinkReady() && netlinkCanReach(opts.netns)) {
    try {
      await nlDeleteLink(name, opts.netns);
      return true;
    } catch (e) {
      if (e instanceof NetlinkError && e.code === 'ENODEV') return false;
      if (e instanceof NetlinkError) throw e;
      // the helper died unanswered: ask `ip` below
    }
  }
  if (!(await getLink(name, opts))) return false;
  await new KernelBatch().linkDel(name).commit(opts);
  return true;
}
