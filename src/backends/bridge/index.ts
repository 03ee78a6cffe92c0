import { readFileSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { NetworkConfig } from '../../config/types.js';
import type { Lease } from '../../lease/types.js';
import { containsAddress, intToIp, ipToInt, isIPv4, lastAddress, parseCidr } from '../../net/ipv4.js';
import { getLink, type IpLink } from '../../system/ip.js';
import { KernelBatch, readLinks, readRoutes, type RouteFact, type RouteSpec } from '../../system/ops.js';
import { WeftError } from '../../util/errors.js';
import { registerBackend } from '../registry.js';
import type { AddressPlan, Backend, BackendContext, BackendStatus } from '../types.js';

const IFNAME = /^[A-Za-z0-9_.-]{1,15}$/;
const STATE_FILE = 'bridge-uplink.json';
/** Link kinds stacked on a parent NIC through its receive hook (which a bridge port needs for itself). */
const STACKED = new Set(['macvlan', 'macvtap', 'ipvlan', 'ipvtap']);

/** What was moved from the uplink to the bridge (kept in the network's state dir for `weft reset`). */
interface Moved {
  uplink: string;
  bridge: string;
  addresses: string[];
}

/**
 * Containers take addresses in the one (physical) subnet, each host only inside its lease: weft computes
 * the non-overlapping per-host ranges that the guides split by hand. The gateway is the physical router when
 * the user names one (--gateway), else this host's own address (on the bridge) when it lies in the subnet.
 */
export function bridgePlan(own: Lease, network: NetworkConfig): AddressPlan {
  const lease = parseCidr(own.subnet);
  const net = parseCidr(network.Network);
  const named = typeof network.Backend.Gateway === 'string' ? network.Backend.Gateway : undefined;
  if (named && !containsAddress(net, ipToInt(named))) throw new WeftError(`bridge gateway ${named} is outside the network ${network.Network}`);
  const gateway = named ?? (isIPv4(own.publicIp) && containsAddress(net, ipToInt(own.publicIp)) ? own.publicIp : undefined);
  return { pool: network.Network, first: intToIp(lease.base), last: intToIp(lastAddress(lease)), ...(gateway ? { gateway } : {}), bridgeAddress: false };
}

/** A route as the kernel listed it, on another device (what moves with the addresses). */
function movedRoute(r: RouteFact, dev: string): RouteSpec {
  return {
    dst: r.dst,
    ...(r.gateway ? { via: r.gateway } : {}),
    dev,
    ...(r.protocol && r.protocol !== 'kernel' ? { proto: r.protocol } : {}),
    ...(r.scope && r.scope !== 'universe' && !r.gateway ? { scope: r.scope } : {}),
    ...(r.metric !== undefined ? { metric: r.metric } : {}),
    ...(r.prefsrc ? { src: r.prefsrc } : {}),
    ...(r.flags?.includes('onlink') ? { onlink: true } : {}),
  };
}

/** The routes of `dev` that move with its addresses (not the kernel's own prefix routes). */
async function routesToMove(dev: string, sys: BackendContext['sys']): Promise<RouteFact[]> {
  return (await readRoutes({ ...sys, dev })).filter((r) => r.protocol !== 'kernel');
}

/**
 * bridge: hosts on one physical L2 segment (the guides' br0 bridged to eth0). weft enslaves the uplink to
 * the host bridge and moves the host's addresses and routes onto the bridge in one `ip -batch` (the bridge
 * takes the uplink's MAC, so neighbours' ARP caches stay right and connectivity is kept); teardown (`weft
 * reset`) moves them back. Containers are veths on the bridge, directly on the physical segment.
 * Kernel-only: with the agent stopped nothing changes.
 */
export class BridgeBackend implements Backend {
  readonly type = 'bridge';
  readonly mtu: number;
  private uplink: string;
  private own?: Lease;
  private problem?: string;

  constructor(private readonly ctx: BackendContext) {
    const u = ctx.network.Backend.Uplink;
    this.uplink = typeof u === 'string' && u ? u : ctx.underlay.iface;
    this.mtu = ctx.underlay.mtu;
  }

  private get stateFile(): string {
    return path.join(this.ctx.stateDir, STATE_FILE);
  }

  async init(): Promise<Record<string, unknown>> {
    const sys = this.ctx.sys;
    const bridge = this.ctx.bridge;
    if (this.uplink === bridge) {
      // the agent found its underlay on our bridge (restart after the move): the uplink is its other port
      const saved = this.saved();
      if (!saved) throw new WeftError(`bridge: the underlay ${bridge} is already the host bridge but ${this.stateFile} does not say which NIC is its uplink`);
      this.uplink = saved.uplink;
    }
    const up = await getLink(this.uplink, sys);
    if (!up) throw new WeftError(`bridge: uplink ${this.uplink} does not exist on this host (set it with --uplink)`);
    if (up.master === bridge) return {}; // already moved
    if (up.master) throw new WeftError(`bridge: uplink ${this.uplink} is already a port of ${up.master}`);
    // The kernel gives a NIC one receive hook: a macvlan parent cannot become a bridge port (EBUSY)
    const children = (await readLinks(sys)).filter((l) => l.link === this.uplink && STACKED.has(l.linkinfo?.info_kind ?? ''));
    if (children.length) {
      const names = children.map((l) => `${l.ifname} (${l.linkinfo!.info_kind})`).join(', ');
      throw new WeftError(
        `bridge: uplink ${this.uplink} is the parent of ${names}: a NIC cannot be a macvlan/ipvlan parent and a bridge port at once; ` +
          `remove the macvlan network from this host first, or name another NIC with --uplink`,
        'EUPLINKBUSY',
      );
    }
    const br = await getLink(bridge, sys);
    if (br && br.linkinfo?.info_kind !== 'bridge') throw new WeftError(`bridge: ${bridge} exists and is not a bridge`);
    const addresses = (up.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    const routes = await routesToMove(this.uplink, sys);
    const moved: Moved = { uplink: this.uplink, bridge, addresses };
    writeFileSync(this.stateFile, JSON.stringify(moved) + '\n', { mode: 0o600 });
    const batch = new KernelBatch();
    if (!br) batch.linkAdd('bridge', { name: bridge, mtu: up.mtu });
    batch.linkSet(bridge, { address: up.address, mtu: up.mtu, up: true }).linkSet(this.uplink, { master: bridge });
    for (const a of addresses) batch.addrMove(a, this.uplink, bridge);
    for (const r of routes) batch.routeReplace(movedRoute(r, bridge));
    this.ctx.log.info({ uplink: this.uplink, bridge, lines: batch.lines() }, `bridge: moving ${this.uplink}'s addresses and routes onto ${bridge}`);
    try {
      await batch.commit(sys);
    } catch (err) {
      await this.moveBack(bridge, sys, routes).catch(() => undefined);
      throw new WeftError(`bridge: moving ${this.uplink} onto ${bridge} failed (moved back): ${(err as Error).message}`);
    }
    return {};
  }

  private saved(): Moved | undefined {
    try {
      return JSON.parse(readFileSync(this.stateFile, 'utf8')) as Moved;
    } catch {
      return undefined;
    }
  }

  async activate(own: Lease): Promise<void> {
    this.own = own;
    const up = await getLink(this.uplink, this.ctx.sys);
    if (up && up.master !== this.ctx.bridge) await new KernelBatch().linkSet(this.uplink, { master: this.ctx.bridge }).commit(this.ctx.sys);
  }

  /**
   * Nothing to program per peer (every host is on the segment), but a peer host whose own address lies in
   * this host's range would be handed to a container here: say so (status and log) — the network needs
   * --subnet-min/--subnet-max that keep the hosts' addresses out of the leases.
   */
  async reconcile(peers: Lease[]): Promise<void> {
    const range = this.own ? parseCidr(this.own.subnet) : undefined;
    const inside = range ? peers.filter((p) => isIPv4(p.publicIp) && containsAddress(range, ipToInt(p.publicIp))).map((p) => p.publicIp) : [];
    const problem = inside.length
      ? `host address${inside.length === 1 ? '' : 'es'} ${inside.join(', ')} lie in this host's range ${this.own!.subnet}: containers here could take them; recreate the network with --subnet-min/--subnet-max clear of the hosts`
      : undefined;
    if (problem && problem !== this.problem) this.ctx.log.error({ network: this.ctx.networkName }, `bridge: ${problem}`);
    this.problem = problem;
  }

  status(): BackendStatus {
    return { healthy: !this.problem, detail: this.problem ?? `${this.uplink} bridged into ${this.ctx.bridge}` };
  }

  /** Puts the addresses and routes back on the uplink (one `ip -batch`) and frees it from the bridge. */
  private async moveBack(bridge: string, sys: BackendContext['sys'], routes?: RouteFact[]): Promise<void> {
    const br: IpLink | null = await getLink(bridge, sys);
    const addresses = (br?.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    const onBridge = br ? await routesToMove(bridge, sys) : [];
    const batch = new KernelBatch().linkSet(this.uplink, { nomaster: true }).linkSet(this.uplink, { up: true });
    for (const a of addresses) batch.addrMove(a, bridge, this.uplink);
    for (const r of routes ?? onBridge) batch.routeReplace(movedRoute(r, this.uplink));
    await batch.commit({ ...sys, force: true });
  }

  async teardown(): Promise<void> {
    const sys = this.ctx.sys;
    const saved = this.saved();
    // `weft reset` without an agent knows no bridge name: the underlay it found is the bridge then
    let bridge = this.ctx.bridge || saved?.bridge || '';
    if (!bridge) {
      const u = await getLink(this.ctx.underlay.iface, sys);
      if (u?.linkinfo?.info_kind === 'bridge') bridge = u.ifname;
    }
    if (saved) this.uplink = saved.uplink;
    else if (this.uplink === bridge) {
      const ports = await readLinks({ ...sys, master: bridge });
      const nic = ports.find((p) => !/^vw[0-9a-f]{8}$/.test(p.ifname) && p.linkinfo?.info_kind !== 'vxlan');
      if (nic) this.uplink = nic.ifname;
    }
    const up = bridge ? await getLink(this.uplink, sys) : null;
    if (up?.master === bridge) await this.moveBack(bridge, sys);
    rmSync(this.stateFile, { force: true });
  }
}

registerBackend({
  sharesUnderlay: true,
  type: 'bridge',
  description: "hosts on one physical L2 segment: the uplink joins the host bridge, containers sit on the segment with per-host ranges",
  mtuOverhead: 0,
  configSchema: z.looseObject({
    Uplink: z.string().regex(IFNAME, { message: 'not an interface name' }).optional(),
    Gateway: z.string().refine(isIPv4, { message: 'not an IPv4 address' }).optional(),
  }),
  options: [
    { flag: 'uplink', field: 'Uplink', kind: 'string', description: 'NIC enslaved to the host bridge (default: the underlay interface)' },
    { flag: 'gateway', field: 'Gateway', kind: 'string', description: "containers' gateway on the physical network (default: none / the host)" },
  ],
  addressPlan: bridgePlan,
  create: (ctx) => new BridgeBackend(ctx),
});
