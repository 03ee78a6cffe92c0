import { createHash } from 'node:crypto';
import type { Lease } from '../../lease/types.js';
import { setBridgePort } from '../../system/bridge-port.js';
import { getLink, listInterfaces } from '../../system/ip.js';
import { createLink } from '../../system/kernel.js';
import { KernelBatch } from '../../system/ops.js';
import type { Backend, BackendContext, BackendStatus } from '../types.js';

/** Outer IPv4 (20) + GRE with key (8) + inner Ethernet (14). */
export const GRETAP_OVERHEAD = 42;

/** The GRE port towards one peer: wg + 8 hex of (VNI, peer address); ≤ 15 characters. */
export function grePort(vni: number, peerIp: string): string {
  return 'wg' + createHash('sha256').update(`${vni}\0${peerIp}`).digest('hex').slice(0, 8);
}

/**
 * l2 over GRE (the guides' OVS+GRE model, `Backend.Encap: "gre"`): one gretap port per peer host (key =
 * VNI) on the host bridge, with neigh_suppress like the VXLAN port. The bridge itself floods to every port
 * (head-end replication) and learns MACs per port, so no FDB programming is needed. Needs the kernel's
 * gretap (CONFIG_NET_IPGRE): init() probes it, so a kernel without it fails the join with a message naming
 * the module instead of at the first peer.
 */
export class L2GreBackend implements Backend {
  readonly type = 'l2';
  readonly mtu: number;
  readonly vni: number;
  private peers = 0;

  constructor(private readonly ctx: BackendContext) {
    this.vni = ctx.network.Backend.VNI ?? 1;
    this.mtu = ctx.underlay.mtu - GRETAP_OVERHEAD;
  }

  private port(peerIp: string): string {
    return grePort(this.vni, peerIp);
  }

  async init(): Promise<Record<string, unknown>> {
    // probe: a port towards ourselves, removed at once (createLink names the missing module)
    const probe = this.port('probe');
    if (!(await getLink(probe, this.ctx.sys))) {
      await createLink('gretap', { name: probe, gretap: { local: this.ctx.underlay.ip, remote: this.ctx.underlay.ip, key: this.vni } }, this.ctx.sys);
    }
    await new KernelBatch().linkDel(probe).commit(this.ctx.sys);
    return { VNI: this.vni, Encap: 'gre' };
  }

  async activate(_own: Lease): Promise<void> {}

  async reconcile(peers: Lease[]): Promise<void> {
    const sys = this.ctx.sys;
    const want = new Map<string, string>();
    for (const p of peers) if (p.publicIp !== this.ctx.underlay.ip && p.hostId !== this.ctx.hostId) want.set(this.port(p.publicIp), p.publicIp);
    const have = new Set((await listInterfaces(sys)).filter((n) => /^wg[0-9a-f]{8}$/.test(n)));
    const batch = new KernelBatch();
    for (const name of have) {
      const link = await getLink(name, sys);
      if (link?.linkinfo?.info_kind === 'gretap' && link.master === this.ctx.bridge && !want.has(name)) batch.linkDel(name);
    }
    await batch.commit({ ...sys, force: true });
    for (const [name, ip] of want) {
      if (!have.has(name)) {
        await createLink('gretap', { name, gretap: { local: this.ctx.underlay.ip, remote: ip, key: this.vni } }, sys);
      }
      const link = await getLink(name, sys);
      if (link?.master !== this.ctx.bridge || !link.flags?.includes('UP')) await new KernelBatch().linkSet(name, { master: this.ctx.bridge, up: true }).commit(sys);
      await setBridgePort(name, { neighSuppress: true }, sys);
    }
    this.peers = want.size;
  }

  status(): BackendStatus {
    return { healthy: true, detail: `l2 over GRE (key ${this.vni}) on ${this.ctx.bridge}: ${this.peers} gretap port${this.peers === 1 ? '' : 's'}` };
  }

  async teardown(): Promise<void> {
    const sys = this.ctx.sys;
    const batch = new KernelBatch();
    for (const name of await listInterfaces(sys)) {
      if (!/^wg[0-9a-f]{8}$/.test(name)) continue;
      const link = await getLink(name, sys);
      if (link?.linkinfo?.info_kind === 'gretap') batch.linkDel(name);
    }
    await batch.commit({ ...sys, force: true });
  }
}
