import { createHash } from 'node:crypto';
import { z } from 'zod';
import type { NetworkConfig } from '../../config/types.js';
import type { Lease } from '../../lease/types.js';
import { intToIp, isIPv4, parseCidr, lastAddress, containsAddress, ipToInt } from '../../net/ipv4.js';
import { getLink } from '../../system/ip.js';
import { createLink } from '../../system/kernel.js';
import { KernelBatch, readRoutes, routeDst } from '../../system/ops.js';
import { WeftError } from '../../util/errors.js';
import { registerBackend } from '../registry.js';
import type { AddressPlan, Backend, BackendContext, BackendStatus } from '../types.js';

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;

/** The host's shim on the parent, per network: wm + 8 hex of the network name. */
export function shimName(network: string): string {
  return 'wm' + createHash('sha256').update(network).digest('hex').slice(0, 8);
}

/**
 * Containers take addresses from the whole network (records cluster-wide: no clash), each host within its
 * lease; the lease's first address is the host's shim. The gateway is the physical router when the user
 * names one (--gateway), else this host's shim: containers reach their own network directly on the wire
 * (on-link, the whole network's prefix) and everything else through their host, whose forwarding rules
 * apply (network isolation, `weft network connect`, masquerade for egress).
 */
export function macvlanPlan(own: Lease, network: NetworkConfig): AddressPlan {
  const lease = parseCidr(own.subnet);
  const named = typeof network.Backend.Gateway === 'string' ? network.Backend.Gateway : undefined;
  if (named && !containsAddress(parseCidr(network.Network), ipToInt(named))) {
    throw new WeftError(`macvlan gateway ${named} is outside the network ${network.Network}`);
  }
  return { pool: network.Network, first: intToIp(lease.base + 2), last: intToIp(lastAddress(lease) - 1), gateway: named ?? intToIp(lease.base + 1) };
}

/**
 * macvlan: containers get macvlan interfaces (bridge mode) on the parent NIC (--parent, default the
 * underlay interface) and sit on its L2 segment: no bridge, no encapsulation, no routes between hosts.
 * A macvlan child cannot talk to its parent, so the host gets a shim macvlan of its own on the parent with
 * the lease's first address (/32) and a route to the network through it: the host reaches its containers.
 * Unless the user names a physical gateway, that shim is also the containers' gateway: traffic within the
 * network goes container to container on the wire (macvlan bridge mode: frames between children of one
 * parent are switched inside the driver, never seen by the host's iptables), everything else is routed by
 * the host, so network isolation, `weft network connect` and masquerade apply to it as on a bridge.
 * Kernel-only: with the agent stopped traffic flows on.
 */
export class MacvlanBackend implements Backend {
  readonly type = 'macvlan';
  readonly mtu: number;
  readonly parent: string;
  readonly shim: string;
  private own?: Lease;

  constructor(private readonly ctx: BackendContext) {
    const p = ctx.network.Backend.Parent;
    this.parent = typeof p === 'string' && p ? p : ctx.underlay.iface;
    this.shim = shimName(ctx.networkName);
    this.mtu = ctx.underlay.mtu;
  }

  async init(): Promise<Record<string, unknown>> {
    const link = await getLink(this.parent, this.ctx.sys);
    if (!link) throw new WeftError(`macvlan: parent interface ${this.parent} does not exist on this host (set it with --parent)`, 'ENOPARENT');
    if (link.master) {
      // the kernel gives a NIC one receive hook: a bridge port cannot carry macvlans (EBUSY)
      throw new WeftError(
        `macvlan: parent interface ${this.parent} is a port of ${link.master} (a bridge network?): a NIC cannot be a bridge port and a macvlan parent at once; ` +
          `name another NIC with --parent (${link.master} itself works)`,
        'EPARENTBUSY',
      );
    }
    return {};
  }

  async activate(own: Lease): Promise<void> {
    this.own = own;
    await this.ensureShim();
  }

  /** The shim: up, with exactly the lease's first address, and the route to the network through it. */
  private async ensureShim(): Promise<void> {
    if (!this.own) return;
    const sys = this.ctx.sys;
    const addr = `${intToIp(parseCidr(this.own.subnet).base + 1)}/32`;
    let link = await getLink(this.shim, sys);
    if (link && link.linkinfo?.info_kind !== 'macvlan') {
      await new KernelBatch().linkDel(this.shim).commit(sys);
      link = null;
    }
    if (!link) {
      await createLink('macvlan', { name: this.shim, mtu: this.mtu, parent: this.parent, macvlanMode: 'bridge' }, sys);
      link = await getLink(this.shim, sys);
    }
    const batch = new KernelBatch();
    const have = (link?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    for (const a of have) if (a !== addr) batch.addrDel(a, this.shim);
    if (!have.includes(addr)) batch.addrAdd(addr, this.shim);
    if (!link?.flags?.includes('UP')) batch.linkSet(this.shim, { up: true });
    const routes = await readRoutes({ dev: this.shim, ...sys });
    if (!routes.some((r) => routeDst(r.dst) === this.ctx.network.Network)) batch.routeReplace({ dst: this.ctx.network.Network, dev: this.shim, src: addr.split('/')[0] });
    if (batch.size) await batch.commit(sys);
  }

  /** Nothing per peer (one L2 segment); repairs the shim. */
  async reconcile(): Promise<void> {
    await this.ensureShim();
  }

  status(): BackendStatus {
    return { healthy: true, detail: `macvlan on ${this.parent}, host shim ${this.shim}` };
  }

  async teardown(): Promise<void> {
    if (await getLink(this.shim, this.ctx.sys)) await new KernelBatch().linkDel(this.shim).commit(this.ctx.sys);
  }
}

registerBackend({
  sharesUnderlay: true,
  type: 'macvlan',
  description: 'containers on the parent NIC as macvlan interfaces (one L2 segment, no bridge); host reaches them through a shim',
  mtuOverhead: 0,
  configSchema: z.looseObject({
    Parent: z.string().regex(IFNAME, { message: 'not an interface name' }).optional(),
    Gateway: z.string().refine(isIPv4, { message: 'not an IPv4 address' }).optional(),
  }),
  options: [
    { flag: 'parent', field: 'Parent', kind: 'string', description: 'parent NIC of the macvlan interfaces (default: the underlay interface)' },
    { flag: 'gateway', field: 'Gateway', kind: 'string', description: "containers' gateway on the physical network (default: the host's shim, so the host routes and filters what leaves the network)" },
  ],
  wantsBridge: false,
  endpointDriver: 'macvlan',
  addressPlan: macvlanPlan,
  create: (ctx) => new MacvlanBackend(ctx),
});
