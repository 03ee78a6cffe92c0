import type { Lease } from '../lease/types.js';
import { canonicalCidr, cidrContains, cidrWithin } from '../system/cidr.js';
import { ipBatch, ipJson } from '../system/ip.js';
import type { NsOpts } from '../system/netns.js';
import { connectedPrefixes } from '../system/underlay.js';
import type { Backend, BackendContext } from './types.js';

interface Route {
  dst: string;
  gateway?: string;
  dev?: string;
  flags?: string[];
}

/** Normalises `ip -json route` dst ("10.5.2.0/24", or a bare host "10.5.2.7" for /32). */
export function routeDst(dst: string): string {
  return dst.includes('/') ? dst : `${dst}/32`;
}

/**
 * host-gw: one route per peer subnet via the peer's underlay address on the underlay interface.
 * Needs every peer on the underlay's L2 segment; peers elsewhere are refused (logged and skipped).
 * Routes it owns: those on the underlay interface with a gateway whose destination lies in the network.
 */
export class HostGwBackend implements Backend {
  readonly type = 'host-gw';
  readonly mtu: number;
  private own?: Lease;
  private prefixes?: string[];
  private refused = new Set<string>();

  constructor(private readonly ctx: BackendContext, private readonly sys: NsOpts = {}) {
    this.mtu = ctx.underlay.mtu;
  }

  async init(): Promise<Record<string, unknown>> {
    this.prefixes = await connectedPrefixes(this.ctx.underlay.iface, this.sys);
    return {};
  }

  async activate(own: Lease): Promise<void> {
    this.own = own;
    this.prefixes ??= await connectedPrefixes(this.ctx.underlay.iface, this.sys);
  }

  /** Why a peer cannot be routed to, or null when it can. */
  private refusal(p: Lease): string | null {
    if (p.backendType && p.backendType !== 'host-gw') return `it uses backend ${p.backendType}`;
    if (!cidrWithin(p.subnet, this.ctx.network.Network)) return `its subnet is outside the network ${this.ctx.network.Network}`;
    const onLink = (this.prefixes ?? []).some((pre) => cidrContains(pre, p.publicIp));
    if (!onLink)
      return `its public IP ${p.publicIp} is not on the L2 segment of ${this.ctx.underlay.iface} (${(this.prefixes ?? []).join(', ') || 'no IPv4 prefix'}); host-gw needs all hosts on one L2 network — use vxlan instead`;
    return null;
  }

  private async ours(): Promise<Route[]> {
    const routes = await ipJson<Route[]>(['-4', 'route', 'show', 'dev', this.ctx.underlay.iface], this.sys);
    return routes.filter((r) => r.gateway && r.dst !== 'default' && cidrWithin(routeDst(r.dst), this.ctx.network.Network));
  }

  async reconcile(peers: Lease[]): Promise<void> {
    this.prefixes ??= await connectedPrefixes(this.ctx.underlay.iface, this.sys);
    const want = new Map<string, string>();
    const ownSubnet = this.own ? canonicalCidr(this.own.subnet) : undefined;
    for (const p of peers) {
      const subnet = canonicalCidr(p.subnet);
      if (subnet === ownSubnet || p.publicIp === this.ctx.underlay.ip) continue;
      const why = this.refusal(p);
      if (why) {
        const key = `${subnet}@${p.publicIp}:${why}`;
        if (!this.refused.has(key)) {
          this.refused.add(key);
          this.ctx.log.error({ network: this.ctx.networkName, peer: p.publicIp, subnet, hostId: p.hostId }, `host-gw: refusing peer ${p.publicIp} (${subnet}): ${why}`);
        }
        continue;
      }
      want.set(subnet, p.publicIp);
    }
    const dev = this.ctx.underlay.iface;
    const lines: string[] = [];
    const have = await this.ours();
    for (const r of have) {
      const dst = routeDst(r.dst);
      if (want.get(dst) !== r.gateway) lines.push(`route del ${dst} via ${r.gateway} dev ${dev}`);
    }
    for (const [subnet, gw] of want) {
      if (!have.some((r) => routeDst(r.dst) === subnet && r.gateway === gw)) lines.push(`route replace ${subnet} via ${gw} dev ${dev}`);
    }
    if (lines.length) this.ctx.log.debug({ network: this.ctx.networkName, lines }, 'host-gw: route changes');
    await ipBatch(lines, { ...this.sys, force: true });
  }

  async teardown(): Promise<void> {
    const dev = this.ctx.underlay.iface;
    const lines = (await this.ours()).map((r) => `route del ${routeDst(r.dst)} via ${r.gateway} dev ${dev}`);
    await ipBatch(lines, { ...this.sys, force: true });
  }
}
