import { canonicalCidr, cidrContains, cidrWithin } from '../../net/ipv4.js';
import type { Lease } from '../../lease/types.js';
import { KernelBatch, readRoutes, routeDst, type RouteFact, type RouteSpec } from '../../system/ops.js';
import { connectedPrefixes } from '../../system/underlay.js';
import { registerBackend } from '../registry.js';
import { appliedRoutes, diffRoutes, RefusalLog } from '../routes.js';
import type { Backend, BackendContext, BackendStatus, ReconcileHow } from '../types.js';
import { judgeHostGw } from './doctor.js';

/**
 * host-gw: one route per peer subnet via the peer's underlay address on the underlay interface.
 * Needs every peer on the underlay's L2 segment; peers elsewhere are refused (logged and skipped).
 * Routes it owns: those on the underlay interface with a gateway whose destination lies in the network.
 * Kernel-only: with the agent stopped, traffic flows on with the routes as they were.
 */
export class HostGwBackend implements Backend {
  readonly type = 'host-gw';
  readonly mtu: number;
  private own?: Lease;
  private prefixes?: string[];
  private routed = 0;
  /** The routes the last reconcile applied; undefined until one succeeded (and while one commits). */
  private applied?: RouteFact[];
  private readonly refusals: RefusalLog;

  constructor(private readonly ctx: BackendContext) {
    this.mtu = ctx.underlay.mtu;
    this.refusals = new RefusalLog((p, why) =>
      ctx.log.error({ network: ctx.networkName, peer: p.publicIp, subnet: p.subnet }, `host-gw: refusing peer ${p.publicIp} (${p.subnet}): ${why}`),
    );
  }

  async init(): Promise<Record<string, unknown>> {
    this.applied = undefined; // the next reconcile reads the kernel
    this.prefixes = await connectedPrefixes(this.ctx.underlay.iface, this.ctx.sys);
    return {};
  }

  async activate(own: Lease): Promise<void> {
    this.own = own;
    this.applied = undefined; // the next reconcile reads the kernel
    this.prefixes ??= await connectedPrefixes(this.ctx.underlay.iface, this.ctx.sys);
  }

  /** Why a peer cannot be routed to, or null when it can. */
  private refusal(p: Lease): string | null {
    if (!cidrWithin(p.subnet, this.ctx.network.Network)) return `its subnet is outside the network ${this.ctx.network.Network}`;
    const onLink = (this.prefixes ?? []).some((pre) => cidrContains(pre, p.publicIp));
    if (!onLink)
      return `its public IP ${p.publicIp} is not on the L2 segment of ${this.ctx.underlay.iface} (${(this.prefixes ?? []).join(', ') || 'no IPv4 prefix'}); host-gw needs all hosts on one L2 network — use vxlan instead`;
    return null;
  }

  /** The routes this backend owns on the host now. */
  private async ours() {
    const routes = await readRoutes({ dev: this.ctx.underlay.iface, ...this.ctx.sys });
    return routes.filter((r) => r.gateway && r.dst !== 'default' && cidrWithin(routeDst(r.dst), this.ctx.network.Network));
  }

  async reconcile(peers: Lease[], _endpoints?: unknown, how?: ReconcileHow): Promise<void> {
    this.prefixes ??= await connectedPrefixes(this.ctx.underlay.iface, this.ctx.sys);
    const ownSubnet = this.own ? canonicalCidr(this.own.subnet) : undefined;
    const want: RouteSpec[] = [];
    for (const p of peers) {
      const subnet = canonicalCidr(p.subnet);
      if (subnet === ownSubnet || p.publicIp === this.ctx.underlay.ip) continue;
      const why = this.refusal(p);
      if (why) this.refusals.refuse({ subnet, publicIp: p.publicIp }, why);
      else want.push({ dst: subnet, via: p.publicIp, dev: this.ctx.underlay.iface });
    }
    const batch = new KernelBatch();
    // a change of peers diffs against the routes applied last (ReconcileHow); in doubt, the kernel's
    const have = how?.readKernel === false && this.applied ? this.applied : await this.ours();
    diffRoutes(have, want, batch);
    if (batch.size) this.ctx.log.debug({ network: this.ctx.networkName, changes: batch.lines() }, 'host-gw: route changes');
    this.applied = undefined;
    await batch.commit({ ...this.ctx.sys, force: true, warm: true });
    this.applied = appliedRoutes(want);
    this.routed = want.length;
  }

  /** reconcile() reads this host's routes (and the underlay's prefixes, once): a resync re-reads them only after a route, link or address change. */
  kernelReads(): readonly string[] | undefined {
    // the agent's watch sees its own namespace only
    return this.ctx.sys.netns === undefined ? ['route', 'link', 'addr'] : undefined;
  }

  status(): BackendStatus {
    return { healthy: true, detail: `${this.routed} peer route${this.routed === 1 ? '' : 's'} via ${this.ctx.underlay.iface}` };
  }

  async teardown(): Promise<void> {
    const batch = new KernelBatch();
    diffRoutes(await this.ours(), [], batch);
    await batch.commit({ ...this.ctx.sys, force: true, warm: true });
  }
}

registerBackend({
  type: 'host-gw',
  description: 'a route per peer subnet via its underlay address (all hosts on one L2 segment; no encapsulation)',
  mtuOverhead: 0,
  doctor: judgeHostGw,
  create: (ctx) => new HostGwBackend(ctx),
});
