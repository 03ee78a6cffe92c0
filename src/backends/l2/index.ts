import { z } from 'zod';
import type { BackendConfig, NetworkConfig } from '../../config/types.js';
import { gatewayOf } from '../../ipam/addresses.js';
import type { Lease } from '../../lease/types.js';
import { setBridgePort } from '../../system/bridge-port.js';
import { getLink, type IpLink } from '../../system/ip.js';
import { createLink } from '../../system/kernel.js';
import { KernelBatch, readFdb, readNeigh } from '../../system/ops.js';
import { cidrContains } from '../../net/ipv4.js';
import { WeftError } from '../../util/errors.js';
import { registerBackend } from '../registry.js';
import { RefusalLog } from '../routes.js';
import type { Backend, BackendContext, BackendStatus, EndpointInfo } from '../types.js';
import { MAX_VNI, VXLAN_OVERHEAD } from '../vxlan/device.js';
import { judgeL2 } from './doctor.js';
import { L2GreBackend } from './gre.js';

/** IANA's VXLAN port: l2 devices keep out of the vxlan backend's (flannel's 8472) VNI space. */
export const L2_DEFAULT_PORT = 4789;
const ZERO_MAC = '00:00:00:00:00:00';
const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

export function l2Device(config: { VNI?: number }): string {
  return `wl2.${config.VNI ?? 1}`;
}

/**
 * l2: one subnet spanning hosts (the OVS+GRE / weave model). Per network a VXLAN device (wl2.<VNI>,
 * nolearning) is a port of the host bridge; every peer host is an all-zeros FDB entry (head-end
 * replication carries broadcasts and ARP), and every remote container's MAC is an FDB entry towards its
 * host (from the endpoint records in the store), so known unicast is never flooded.
 *
 * Addresses: the IPAM pool is the whole network, so records are cluster-wide and its compare-and-swap
 * makes every address unique; any free address may be asked for. The gateway (the network's first
 * address) is the same on every host's bridge. So that a container's ARP for it is answered by its own
 * host only, the VXLAN port has `neigh_suppress` on: the bridge does not forward ARP requests for its
 * own addresses to that port (and answers from its neighbour table where it can), so no ebtables rule
 * is needed. Limitation: a host reaches its own containers; a remote container answers a host through
 * its own host's gateway (the shared address), so host → remote-container traffic is not supported.
 */
export class L2Backend implements Backend {
  readonly type = 'l2';
  readonly mtu: number;
  readonly vni: number;
  readonly port: number;
  readonly device: string;
  private peerCount = 0;
  private macCount = 0;
  private suppress = true;
  private readonly refusals: RefusalLog;

  constructor(private readonly ctx: BackendContext) {
    const b = ctx.network.Backend;
    this.vni = b.VNI ?? 1;
    this.port = b.Port ?? L2_DEFAULT_PORT;
    this.device = l2Device(b);
    this.mtu = ctx.underlay.mtu - VXLAN_OVERHEAD;
    this.refusals = new RefusalLog((p, why) => ctx.log.warn({ network: ctx.networkName, peer: p.publicIp }, `l2: skipping ${p.subnet}: ${why}`));
  }

  private matches(l: IpLink): boolean {
    const d = l.linkinfo?.info_data ?? {};
    return l.linkinfo?.info_kind === 'vxlan' && d.id === this.vni && d.port === this.port && d.local === this.ctx.underlay.ip && d.learning === false;
  }

  async init(): Promise<Record<string, unknown>> {
    const sys = this.ctx.sys;
    let link = await getLink(this.device, sys);
    if (link && !this.matches(link)) {
      this.ctx.log.warn({ device: this.device }, `l2: ${this.device} exists with other settings; recreating it`);
      await new KernelBatch().linkDel(this.device).commit(sys);
      link = null;
    }
    if (!link) {
      const u = this.ctx.underlay;
      await createLink('vxlan', { name: this.device, mtu: this.mtu, vxlan: { id: this.vni, local: u.ip, dev: u.iface, dstport: this.port } }, sys);
    }
    return { VNI: this.vni };
  }

  /** The device joins the host bridge (made by the runner with the shared gateway) with neigh_suppress on. */
  async activate(_own: Lease): Promise<void> {
    const link = await getLink(this.device, this.ctx.sys);
    if (!link) throw new WeftError(`l2: ${this.device} does not exist; init() first`);
    if (link.master !== this.ctx.bridge || !link.flags?.includes('UP') || link.mtu !== this.mtu) {
      await new KernelBatch().linkSet(this.device, { mtu: this.mtu, master: this.ctx.bridge, up: true }).commit(this.ctx.sys);
    }
    try {
      await setBridgePort(this.device, { neighSuppress: true, learning: true }, this.ctx.sys);
    } catch (err) {
      if (this.suppress) this.ctx.log.warn({ err }, `l2: cannot set neigh_suppress on ${this.device}: ARP for the shared gateway may be answered by other hosts`);
      this.suppress = false;
    }
  }

  async reconcile(peers: Lease[], endpoints: EndpointInfo[] = []): Promise<void> {
    const dev = this.device;
    const sys = this.ctx.sys;
    const hosts = new Map<string, string>(); // hostId → underlay address
    for (const p of peers) {
      if (p.publicIp === this.ctx.underlay.ip || p.hostId === this.ctx.hostId) continue;
      if (p.backendData?.VNI !== undefined && Number(p.backendData.VNI) !== this.vni) {
        this.refusals.refuse({ subnet: p.subnet, publicIp: p.publicIp }, `it uses VNI ${p.backendData.VNI}, this host ${this.vni}`);
        continue;
      }
      if (p.hostId) hosts.set(p.hostId, p.publicIp);
      else hosts.set(p.publicIp, p.publicIp);
    }
    const floods = new Set(hosts.values());
    const macs = new Map<string, string>(); // mac → underlay address of its host
    const neighs = new Map<string, string>(); // remote container address → its mac
    for (const e of endpoints) {
      const at = hosts.get(e.hostId);
      const mac = e.mac.toLowerCase();
      if (at && MAC.test(mac) && e.hostId !== this.ctx.hostId) {
        macs.set(mac, at);
        const ip = e.address.split('/')[0]!;
        if (cidrContains(this.ctx.network.Network, ip)) neighs.set(ip, mac);
      }
    }
    const have = (await readFdb(dev, sys)).filter((f) => f.dst);
    const batch = new KernelBatch();
    for (const f of have) {
      const mac = f.mac.toLowerCase();
      const keep = mac === ZERO_MAC ? floods.has(f.dst!) : macs.get(mac) === f.dst;
      if (!keep) batch.fdbDel({ mac: f.mac, dev, dst: f.dst });
    }
    for (const ip of floods) if (!have.some((f) => f.mac === ZERO_MAC && f.dst === ip)) batch.fdbAppend({ mac: ZERO_MAC, dev, dst: ip });
    for (const [mac, ip] of macs) if (!have.some((f) => f.mac.toLowerCase() === mac && f.dst === ip)) batch.fdbReplace({ mac, dev, dst: ip });
    // The host's own neighbour entries for remote containers (on the bridge), so that traffic this host
    // routes into the network (from a connected network) needs no ARP from the shared gateway: the answer
    // to such an ARP goes to the shared MAC, which the answering container's own host takes.
    const bridge = this.ctx.bridge;
    const haveNeigh = (await readNeigh(bridge, sys).catch(() => [])).filter((n) => n.state?.includes('PERMANENT') && cidrContains(this.ctx.network.Network, n.dst));
    for (const n of haveNeigh) if (!neighs.has(n.dst)) batch.neighDel({ dst: n.dst, dev: bridge });
    for (const [ip, mac] of neighs) if (!haveNeigh.some((n) => n.dst === ip && n.lladdr?.toLowerCase() === mac)) batch.neighReplace({ dst: ip, lladdr: mac, dev: bridge });
    if (batch.size) this.ctx.log.debug({ network: this.ctx.networkName, changes: batch.lines() }, 'l2: fdb and neighbour changes');
    await batch.commit({ ...sys, force: true });
    this.peerCount = floods.size;
    this.macCount = macs.size;
  }

  status(): BackendStatus {
    return {
      healthy: true,
      device: this.device,
      port: this.port,
      detail: `${this.device} (VNI ${this.vni}, port ${this.port}) on ${this.ctx.bridge}: ${this.peerCount} peer host${this.peerCount === 1 ? '' : 's'}, ${this.macCount} remote MAC${this.macCount === 1 ? '' : 's'}${this.suppress ? '' : ', neigh_suppress unavailable'}`,
    };
  }

  async teardown(): Promise<void> {
    if (await getLink(this.device, this.ctx.sys)) await new KernelBatch().linkDel(this.device).commit(this.ctx.sys);
  }
}

registerBackend({
  type: 'l2',
  description: 'one subnet spanning hosts: a VXLAN port on each host bridge, shared gateway, cluster-wide addresses (weave / OVS+GRE model)',
  mtuOverhead: VXLAN_OVERHEAD,
  defaults: { Port: L2_DEFAULT_PORT },
  configSchema: z.looseObject({
    VNI: z.number().int().min(0).max(MAX_VNI, { message: `VNI out of range (0–${MAX_VNI})` }).optional(),
    Port: z.number().int().min(1).max(65535, { message: 'port out of range (1–65535)' }).optional(),
    Encap: z.enum(['vxlan', 'gre'], { message: 'vxlan or gre' }).optional(),
  }),
  options: [
    { flag: 'encap', field: 'Encap', kind: 'string', description: 'l2 encapsulation: vxlan (default) or gre (needs the kernel gretap module)' },
    { flag: 'vni', field: 'VNI', kind: 'int', description: 'VXLAN network identifier (default: 1, or the lowest one no other network uses)' },
    { flag: 'port', field: 'Port', kind: 'int', description: 'UDP port (default 4789)' },
  ],
  wantsEndpoints: true,
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
  addressPlan: (_own: Lease, network: NetworkConfig) => ({ pool: network.Network, gateway: gatewayOf(network.Network) }),
  deviceNames: (network) => (network.Backend.Encap === 'gre' ? [] : [l2Device(network.Backend)]),
  doctor: (input) => {
    if (input.store?.config.Backend.Encap === 'gre') return [];
    const dev = input.store ? l2Device(input.store.config.Backend) : typeof input.network.status?.device === 'string' ? input.network.status.device : undefined;
    return dev ? judgeL2(input, dev) : [];
  },
  create: (ctx) => (ctx.network.Backend.Encap === 'gre' ? new L2GreBackend(ctx) : new L2Backend(ctx)),
});
