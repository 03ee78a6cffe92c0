import type { Lease } from '../lease/types.js';
import { canonicalCidr, cidrWithin, networkAddress } from '../system/cidr.js';
import { bridgeBatch, bridgeJson, getLink, ipBatch, ipJson, type IpLink } from '../system/ip.js';
import { createLink } from '../system/kernel.js';
import type { NsOpts } from '../system/netns.js';
import { WeftError } from '../util/errors.js';
import { routeDst } from './host-gw.js';
import type { Backend, BackendContext } from './types.js';

export const VXLAN_OVERHEAD = 50;
export const DEFAULT_VXLAN_PORT = 8472;

interface Fdb {
  mac: string;
  dst?: string;
}
interface Neigh {
  dst: string;
  lladdr?: string;
  state?: string[];
}
interface Route {
  dst: string;
  gateway?: string;
  flags?: string[];
}
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
 */
export class VxlanBackend implements Backend {
  readonly type = 'vxlan';
  readonly mtu: number;
  readonly vni: number;
  readonly port: number;
  readonly device: string;
  private own?: Lease;
  private vtepMac?: string;
  private warned = new Set<string>();

  constructor(private readonly ctx: BackendContext, private readonly sys: NsOpts = {}) {
    const b = ctx.network.Backend;
    this.vni = b.VNI ?? 1;
    this.port = b.Port ?? DEFAULT_VXLAN_PORT;
    if (!Number.isInteger(this.vni) || this.vni < 0 || this.vni > 0xffffff) throw new WeftError(`vxlan VNI ${b.VNI} is out of range 0–16777215`);
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) throw new WeftError(`vxlan port ${b.Port} is out of range`);
    this.device = `weft.${this.vni}`;
    if (this.device.length > 15) throw new WeftError(`vxlan device name ${this.device} is longer than 15 characters`);
    this.mtu = ctx.underlay.mtu - VXLAN_OVERHEAD;
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
    let link = await getLink(this.device, this.sys);
    if (link && !this.matches(link)) {
      this.ctx.log.warn({ device: this.device, info: link.linkinfo }, `vxlan: ${this.device} exists with other settings; recreating it`);
      await ipBatch([`link del ${this.device}`], this.sys);
      link = null;
    }
    if (!link) {
      const u = this.ctx.underlay;
      await createLink(
        'vxlan',
        [`link add ${this.device} mtu ${this.mtu} type vxlan id ${this.vni} local ${u.ip} dev ${u.iface} dstport ${this.port} nolearning`],
        this.sys,
      );
      link = await getLink(this.device, this.sys);
      if (!link) throw new WeftError(`vxlan: ${this.device} vanished right after it was created`);
    } else if (link.mtu !== this.mtu) {
      await ipBatch([`link set ${this.device} mtu ${this.mtu}`], this.sys);
    }
    this.vtepMac = link.address!;
    return { VNI: this.vni, VtepMAC: this.vtepMac };
  }

  /** Gives the device `<subnet network address>/32` (as flannel does) and sets it up. */
  async activate(own: Lease): Promise<void> {
    this.own = own;
    const link = await getLink(this.device, this.sys);
    if (!link) throw new WeftError(`vxlan: ${this.device} does not exist; init() first`);
    const want = `${networkAddress(own.subnet)}/32`;
    const have = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    const lines = have.filter((a) => a !== want).map((a) => `addr del ${a} dev ${this.device}`);
    if (!have.includes(want)) lines.push(`addr add ${want} dev ${this.device}`);
    if (!link.flags?.includes('UP')) lines.push(`link set ${this.device} up`);
    await ipBatch(lines, this.sys);
  }

  private peers(leases: Lease[]): Peer[] {
    const ownSubnet = this.own ? canonicalCidr(this.own.subnet) : undefined;
    const out: Peer[] = [];
    for (const l of leases) {
      const subnet = canonicalCidr(l.subnet);
      if (subnet === ownSubnet || l.publicIp === this.ctx.underlay.ip) continue;
      const mac = String(l.backendData?.VtepMAC ?? '').toLowerCase();
      let why: string | null = null;
      if (l.backendType && l.backendType !== 'vxlan') why = `it uses backend ${l.backendType}`;
      else if (!MAC.test(mac)) why = 'its lease has no valid VtepMAC';
      else if (l.backendData?.VNI !== undefined && Number(l.backendData.VNI) !== this.vni) why = `it uses VNI ${l.backendData.VNI}, this host ${this.vni}`;
      else if (!cidrWithin(subnet, this.ctx.network.Network)) why = `its subnet is outside the network ${this.ctx.network.Network}`;
      if (why) {
        const key = `${subnet}@${l.publicIp}:${why}`;
        if (!this.warned.has(key)) {
          this.warned.add(key);
          this.ctx.log.error({ network: this.ctx.networkName, peer: l.publicIp, subnet }, `vxlan: skipping peer ${l.publicIp} (${subnet}): ${why}`);
        }
        continue;
      }
      out.push({ subnet, gw: networkAddress(subnet), mac, publicIp: l.publicIp });
    }
    return out;
  }

  async reconcile(leases: Lease[]): Promise<void> {
    const dev = this.device;
    const peers = this.peers(leases);
    const [fdb, neigh, routes] = await Promise.all([
      bridgeJson<Fdb[]>(['fdb', 'show', 'dev', dev], this.sys),
      ipJson<Neigh[]>(['-4', 'neigh', 'show', 'dev', dev], this.sys),
      ipJson<Route[]>(['-4', 'route', 'show', 'dev', dev], this.sys),
    ]);
    const fdbHave = fdb.filter((f) => f.dst && f.mac !== '00:00:00:00:00:00');
    const routeHave = routes.filter((r) => r.gateway);

    const ipDel: string[] = [];
    const ipAdd: string[] = [];
    const brDel: string[] = [];
    const brAdd: string[] = [];
    for (const r of routeHave) {
      const dst = routeDst(r.dst);
      if (!peers.some((p) => p.subnet === dst && p.gw === r.gateway)) ipDel.push(`route del ${dst} via ${r.gateway} dev ${dev}`);
    }
    for (const n of neigh) {
      if (!peers.some((p) => p.gw === n.dst && p.mac === n.lladdr?.toLowerCase())) ipDel.push(`neigh del ${n.dst} dev ${dev}`);
    }
    for (const f of fdbHave) {
      if (!peers.some((p) => p.mac === f.mac.toLowerCase() && p.publicIp === f.dst)) brDel.push(`fdb del ${f.mac} dev ${dev} dst ${f.dst} self`);
    }
    for (const p of peers) {
      if (!fdbHave.some((f) => f.mac.toLowerCase() === p.mac && f.dst === p.publicIp)) brAdd.push(`fdb replace ${p.mac} dev ${dev} dst ${p.publicIp} self permanent`);
      const n = neigh.find((x) => x.dst === p.gw);
      if (!n || n.lladdr?.toLowerCase() !== p.mac || !n.state?.includes('PERMANENT')) ipAdd.push(`neigh replace ${p.gw} lladdr ${p.mac} dev ${dev} nud permanent`);
      if (!routeHave.some((r) => routeDst(r.dst) === p.subnet && r.gateway === p.gw && r.flags?.includes('onlink')))
        ipAdd.push(`route replace ${p.subnet} via ${p.gw} dev ${dev} onlink`);
    }
    const changes = [...ipDel, ...brDel, ...brAdd, ...ipAdd];
    if (changes.length) this.ctx.log.debug({ network: this.ctx.networkName, changes }, 'vxlan: changes');
    // stale routes and neighbours first, then fdb, then new neighbours and routes (which need the fdb)
    const errors: unknown[] = [];
    const step = (p: Promise<void>) => p.catch((e) => void errors.push(e));
    await step(ipBatch(ipDel, { ...this.sys, force: true }));
    await step(bridgeBatch([...brDel, ...brAdd], { ...this.sys, force: true }));
    await step(ipBatch(ipAdd, { ...this.sys, force: true }));
    if (errors.length) throw errors[0];
  }

  async teardown(): Promise<void> {
    if (await getLink(this.device, this.sys)) await ipBatch([`link del ${this.device}`], this.sys);
  }
}
