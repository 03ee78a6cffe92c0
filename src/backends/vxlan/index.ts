import { canonicalCidr, cidrWithin, networkAddress } from '../../net/ipv4.js';
import { z } from 'zod';
import type { BackendConfig } from '../../config/types.js';
import type { Lease } from '../../lease/types.js';
import { getLink, type IpLink } from '../../system/ip.js';
import { createLink } from '../../system/kernel.js';
import { KernelBatch, readFdb, readNeigh, readRoutes, type FdbFact, type NeighFact, type RouteFact, type RouteSpec } from '../../system/ops.js';
import { WeftError } from '../../util/errors.js';
import { registerBackend } from '../registry.js';
import { appliedRoutes, diffRoutes, RefusalLog } from '../routes.js';
import type { Backend, BackendContext, BackendStatus, ReconcileHow } from '../types.js';
import { DEFAULT_VXLAN_PORT, MAX_VNI, VXLAN_OVERHEAD, vxlanDevice } from './device.js';
import { judgeVxlan } from './doctor.js';

export { DEFAULT_VXLAN_PORT, MAX_VNI, VXLAN_OVERHEAD, vxlanDevice } from './device.js';

interface Peer {
  subnet: string;
  gw: string;
  mac: string;
  publicIp: string;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

/**
 * vxlan, flannel-compatible: device weft.<VNI> (nolearning, local = underlay IP, dev = underlay iface,
 * UDP port 8472 unless Backend.Port), VtepMAC published in the lease; per peer an FDB entry
 * (VtepMAC → publicIp), a permanent neighbour (peer subnet's network address → VtepMAC) and an onlink route.
 * Kernel-only: with the agent stopped, traffic flows on with the entries as they were.
 */
export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly mtu: number;
  readonly vni: number;
  readonly port: number;
  readonly device: string;
  private own?: Lease;
  private vtepMac?: string;
  /** The device's interface index (its neighbour and fdb changes are reported under it). */
  private ifindex?: number;
  private peerCount = 0;
  /** The device's routes, neighbours and fdb entries as the last reconcile applied them; undefined until one succeeded. */
  private applied?: { routes: RouteFact[]; neigh: NeighFact[]; fdb: FdbFact[] };
  private readonly refusals: RefusalLog;

  constructor(private readonly ctx: BackendContext) {
    const b = ctx.network.Backend;
    this.vni = b.VNI ?? 1;
    this.port = b.Port ?? DEFAULT_VXLAN_PORT;
    if (!Number.isInteger(this.vni) || this.vni < 0 || this.vni > MAX_VNI) throw new WeftError(`vxlan VNI ${b.VNI} is out of range 0–${MAX_VNI}`);
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) throw new WeftError(`vxlan port ${b.Port} is out of range`);
    this.device = vxlanDevice(b);
    if (this.device.length > 15) throw new WeftError(`vxlan device name ${this.device} is longer than 15 characters`);
    this.mtu = ctx.underlay.mtu - VXLAN_OVERHEAD;
    this.refusals = new RefusalLog((p, why) =>
      ctx.log.error({ network: ctx.networkName, peer: p.publicIp, subnet: p.subnet }, `vxlan: skipping peer ${p.publicIp} (${p.subnet}): ${why}`),
    );
  }

  private matches(l: IpLink): boolean {
    const d = l.linkinfo?.info_data ?? {};
    return (
      l.linkinfo?.info_kind === 'vxlan' &&
      d.id === this.vni &&
      d.port === this.port &&
      d.local === this.ctx.underlay.ip &&
      d.link === this.ctx.underlay.iface &&
      d.learning === false
    );
  }

  /** Creates (or adopts a matching) weft.<VNI>; returns { VNI, VtepMAC }. */
  async init(): Promise<Record<string, unknown>> {
    const sys = this.ctx.sys;
    this.applied = undefined; // the next reconcile reads the kernel
    let link = await getLink(this.device, sys);
    if (link && !this.matches(link)) {
      this.ctx.log.warn({ device: this.device, info: link.linkinfo }, `vxlan: ${this.device} exists with other settings; recreating it`);
      await new KernelBatch().linkDel(this.device).commit(sys);
      link = null;
    }
    if (!link) {
      const u = this.ctx.underlay;
      await createLink('vxlan', { name: this.device, mtu: this.mtu, vxlan: { id: this.vni, local: u.ip, dev: u.iface, dstport: this.port } }, sys);
      link = await getLink(this.device, sys);
      if (!link) throw new WeftError(`vxlan: ${this.device} vanished right after it was created`);
    } else if (link.mtu !== this.mtu) {
      await new KernelBatch().linkSet(this.device, { mtu: this.mtu }).commit(sys);
    }
    this.vtepMac = link.address!;
    this.ifindex = link.ifindex;
    return { VNI: this.vni, VtepMAC: this.vtepMac };
  }

  /** Gives the device `<subnet network address>/32` (as flannel does) and sets it up. */
  async activate(own: Lease): Promise<void> {
    this.own = own;
    this.applied = undefined; // the next reconcile reads the kernel
    const link = await getLink(this.device, this.ctx.sys);
    if (!link) throw new WeftError(`vxlan: ${this.device} does not exist; init() first`);
    const want = `${networkAddress(own.subnet)}/32`;
    const have = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    const batch = new KernelBatch();
    for (const a of have) if (a !== want) batch.addrDel(a, this.device);
    if (!have.includes(want)) batch.addrAdd(want, this.device);
    if (!link.flags?.includes('UP')) batch.linkSet(this.device, { up: true });
    await batch.commit(this.ctx.sys);
  }

  private peers(leases: Lease[]): Peer[] {
    const ownSubnet = this.own ? canonicalCidr(this.own.subnet) : undefined;
    const out: Peer[] = [];
    for (const l of leases) {
      const subnet = canonicalCidr(l.subnet);
      if (subnet === ownSubnet || l.publicIp === this.ctx.underlay.ip) continue;
      const mac = String(l.backendData?.VtepMAC ?? '').toLowerCase();
      let why: string | null = null;
      if (!MAC.test(mac)) why = 'its lease has no valid VtepMAC';
      else if (l.backendData?.VNI !== undefined && Number(l.backendData.VNI) !== this.vni) why = `it uses VNI ${l.backendData.VNI}, this host ${this.vni}`;
      else if (!cidrWithin(subnet, this.ctx.network.Network)) why = `its subnet is outside the network ${this.ctx.network.Network}`;
      if (why) this.refusals.refuse({ subnet, publicIp: l.publicIp }, why);
      else out.push({ subnet, gw: networkAddress(subnet), mac, publicIp: l.publicIp });
    }
    return out;
  }

  async reconcile(leases: Lease[], _endpoints?: unknown, how?: ReconcileHow): Promise<void> {
    const dev = this.device;
    const sys = this.ctx.sys;
    const peers = this.peers(leases);
    const want: RouteSpec[] = peers.map((p) => ({ dst: p.subnet, via: p.gw, dev, onlink: true }));
    // a change of peers diffs against the entries applied last (ReconcileHow): three reads, three processes, fewer
    const { fdb, neigh, routes } =
      how?.readKernel === false && this.applied
        ? this.applied
        : await Promise.all([readFdb(dev, sys), readNeigh(dev, sys), readRoutes({ dev, ...sys })]).then(([fdb, neigh, routes]) => ({ fdb, neigh, routes }));
    const batch = new KernelBatch();
    diffRoutes(
      routes.filter((r) => r.gateway),
      want,
      batch,
    );
    for (const n of neigh) {
      if (!peers.some((p) => p.gw === n.dst && p.mac === n.lladdr?.toLowerCase())) batch.neighDel({ dst: n.dst, dev });
    }
    const fdbHave = fdb.filter((f) => f.dst && f.mac !== '00:00:00:00:00:00');
    for (const f of fdbHave) {
      if (!peers.some((p) => p.mac === f.mac.toLowerCase() && p.publicIp === f.dst)) batch.fdbDel({ mac: f.mac, dev, dst: f.dst });
    }
    for (const p of peers) {
      if (!fdbHave.some((f) => f.mac.toLowerCase() === p.mac && f.dst === p.publicIp)) batch.fdbReplace({ mac: p.mac, dev, dst: p.publicIp });
      const n = neigh.find((x) => x.dst === p.gw);
      if (!n || n.lladdr?.toLowerCase() !== p.mac || !n.state?.includes('PERMANENT')) batch.neighReplace({ dst: p.gw, lladdr: p.mac, dev });
    }
    if (batch.size) this.ctx.log.debug({ network: this.ctx.networkName, changes: batch.lines() }, 'vxlan: changes');
    // stale routes and neighbours first, then fdb, then new neighbours and routes (which need the fdb)
    this.applied = undefined;
    await batch.commit({ ...sys, force: true, warm: true });
    this.applied = {
      routes: appliedRoutes(want),
      neigh: peers.map((p) => ({ dst: p.gw, lladdr: p.mac, state: ['PERMANENT'] })),
      fdb: peers.map((p) => ({ mac: p.mac, dst: p.publicIp })),
    };
    this.peerCount = peers.length;
  }

  /** reconcile() reads the device's fdb, neighbours and routes: a resync re-reads them only after such a change (or a link or address change). */
  kernelReads(): readonly string[] | undefined {
    return this.ifindex === undefined || this.ctx.sys.netns !== undefined ? undefined : ['route', 'link', 'addr', `neigh:${this.ifindex}`];
  }

  status(): BackendStatus {
    return { healthy: true, device: this.device, port: this.port, detail: `${this.device} (VNI ${this.vni}, port ${this.port}), ${this.peerCount} peer${this.peerCount === 1 ? '' : 's'}` };
  }

  async teardown(): Promise<void> {
    if (await getLink(this.device, this.ctx.sys)) await new KernelBatch().linkDel(this.device).commit(this.ctx.sys);
  }
}

registerBackend({
  type: 'vxlan',
  description: "flannel-compatible VXLAN (device weft.<VNI>, UDP 8472, VtepMAC in the lease): works across L3",
  mtuOverhead: VXLAN_OVERHEAD,
  defaults: { VNI: 1, Port: DEFAULT_VXLAN_PORT },
  configSchema: z.looseObject({
    VNI: z.number().int().min(0).max(MAX_VNI, { message: `VNI out of range (0–${MAX_VNI})` }).optional(),
    Port: z.number().int().min(1).max(65535, { message: 'port out of range (1–65535)' }).optional(),
  }),
  options: [
    { flag: 'vni', field: 'VNI', kind: 'int', description: 'VXLAN network identifier (default: 1, or the lowest one no other network uses)' },
    { flag: 'port', field: 'Port', kind: 'int', description: 'VXLAN UDP port (default 8472)' },
  ],
  allocateIds(config: BackendConfig, others: BackendConfig[]): BackendConfig {
    if (config.VNI !== undefined) return config;
    const used = new Set(others.map((o) => o.VNI ?? 1));
    let vni = 1;
    while (used.has(vni)) vni++;
    return { ...config, VNI: vni };
  },
  conflict(config, other) {
    const mine = config.VNI ?? 1;
    return mine === (other.backend.VNI ?? 1) ? `VNI ${mine} is already used by network "${other.name}"; pick another with --vni` : undefined;
  },
  deviceNames: (network) => [vxlanDevice(network.Backend)],
  doctor: judgeVxlan,
  create: (ctx) => new VxlanBackend(ctx),
});
