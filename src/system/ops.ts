import { bridgeBatch, bridgeJson, ipBatch, ipJson, type IpLink } from './ip.js';
import { explainKernelError, linkAddLine, type LinkSpec } from './kernel.js';
import type { NsOpts } from './netns.js';
import { warmBridgeBatch, warmIpBatch } from './warm.js';

/**
 * Typed kernel operations. Callers describe routes, neighbours, FDB entries, links and addresses as data;
 * this module alone writes `ip`/`bridge` syntax and runs a whole change set in as few processes as possible
 * (one `ip -batch`, one `bridge -batch`, in dependency order).
 */

export interface RouteSpec {
  /** "10.5.2.0/24" (a bare address means /32). */
  dst: string;
  via?: string;
  dev: string;
  onlink?: boolean;
  /** Routing protocol tag, e.g. "static" or a number. */
  proto?: string;
  src?: string;
  mtu?: number;
  /** "link", "host" (a route without a gateway); absent: the kernel's default. */
  scope?: string;
  metric?: number;
}

export interface NeighSpec {
  dst: string;
  lladdr: string;
  dev: string;
}

export interface FdbSpec {
  mac: string;
  dev: string;
  /** Remote VTEP (vxlan) */
  dst?: string;
}

export interface RouteFact {
  dst: string;
  gateway?: string;
  dev?: string;
  protocol?: string;
  prefsrc?: string;
  scope?: string;
  metric?: number;
  flags?: string[];
}
export interface NeighFact {
  dst: string;
  lladdr?: string;
  state?: string[];
}
export interface FdbFact {
  mac: string;
  dst?: string;
  flags?: string[];
  state?: string;
}

/** `ip -json route` dst ("default", "10.5.2.0/24", or a bare host "10.5.2.7" for /32) as a CIDR. */
export function routeDst(dst: string): string {
  return dst.includes('/') || dst === 'default' ? dst : `${dst}/32`;
}

function routeLine(verb: 'replace' | 'add' | 'del', r: Partial<RouteSpec> & { dst: string }): string {
  const parts = ['route', verb, r.dst];
  const adding = verb !== 'del';
  if (r.via) parts.push('via', r.via);
  if (r.dev) parts.push('dev', r.dev);
  if (r.src && adding) parts.push('src', r.src);
  if (r.proto && adding) parts.push('proto', r.proto);
  if (r.scope && adding) parts.push('scope', r.scope);
  if (r.metric !== undefined && adding) parts.push('metric', String(r.metric));
  if (r.mtu && adding) parts.push('mtu', String(r.mtu));
  if (r.onlink && adding) parts.push('onlink');
  return parts.join(' ');
}

/** Commit options: where, and how failures are handled. */
export interface CommitOptions extends NsOpts {
  /** Try every line; the first failure is thrown at the end. */
  force?: boolean;
  /**
   * Run `ip` and `bridge` through the long-lived spawner (./warm.ts): no fork of the agent per commit (the attach
   * path, and the backends' reconciles: at 50 hosts, every peer forking at once on each join, issue 15).
   */
  warm?: boolean;
}

/**
 * A set of kernel changes applied together. Removals run before additions; `ip` lines before `bridge`
 * lines for removals and after them for additions (a neighbour or onlink route may need the FDB entry).
 */
export class KernelBatch {
  private readonly ipDel: string[] = [];
  private readonly ipAdd: string[] = [];
  private readonly ipLinks: string[] = [];
  private readonly brDel: string[] = [];
  private readonly brAdd: string[] = [];
  /** Kinds of the links this batch creates (a missing kernel module is named in the error). */
  private readonly kinds = new Set<string>();

  get size(): number {
    return this.ipDel.length + this.ipAdd.length + this.ipLinks.length + this.brDel.length + this.brAdd.length;
  }

  /** Every line, in the order they run (for logs and tests). */
  lines(): string[] {
    return [...this.ipLinks, ...this.ipDel, ...this.brDel.map((l) => `bridge ${l}`), ...this.brAdd.map((l) => `bridge ${l}`), ...this.ipAdd];
  }

  routeReplace(r: RouteSpec): this {
    this.ipAdd.push(routeLine('replace', r));
    return this;
  }
  /** `route add`: fails when the route exists (a container's first route; replace would hide a clash). */
  routeAdd(r: RouteSpec): this {
    this.ipAdd.push(routeLine('add', r));
    return this;
  }
  routeDel(r: Partial<RouteSpec> & { dst: string }): this {
    this.ipDel.push(routeLine('del', r));
    return this;
  }
  neighReplace(n: NeighSpec): this {
    this.ipAdd.push(`neigh replace ${n.dst} lladdr ${n.lladdr} dev ${n.dev} nud permanent`);
    return this;
  }
  neighDel(n: { dst: string; dev: string }): this {
    this.ipDel.push(`neigh del ${n.dst} dev ${n.dev}`);
    return this;
  }
  fdbReplace(f: FdbSpec): this {
    this.brAdd.push(`fdb replace ${f.mac} dev ${f.dev}${f.dst ? ` dst ${f.dst}` : ''} self permanent`);
    return this;
  }
  /** Appends (does not replace) an entry: several all-zeros entries flood to several VTEPs. */
  fdbAppend(f: FdbSpec): this {
    this.brAdd.push(`fdb append ${f.mac} dev ${f.dev}${f.dst ? ` dst ${f.dst}` : ''} self permanent`);
    return this;
  }
  fdbDel(f: FdbSpec): this {
    this.brDel.push(`fdb del ${f.mac} dev ${f.dev}${f.dst ? ` dst ${f.dst}` : ''} self`);
    return this;
  }
  /** Address changes and link settings run first (devices must be up before routes through them). */
  addrAdd(cidr: string, dev: string): this {
    this.ipLinks.push(`addr add ${cidr} dev ${dev}`);
    return this;
  }
  addrDel(cidr: string, dev: string): this {
    this.ipLinks.push(`addr del ${cidr} dev ${dev}`);
    return this;
  }
  /** Moves an address from one device to another (deleted, then added, in this order). */
  addrMove(cidr: string, from: string, to: string): this {
    return this.addrDel(cidr, from).addrAdd(cidr, to);
  }
  /** Creates a link (runs with the link changes, in the order given). */
  linkAdd(kind: string, spec: LinkSpec): this {
    this.kinds.add(kind);
    this.ipLinks.push(linkAddLine(kind, spec));
    return this;
  }
  linkSet(dev: string, o: { up?: boolean; down?: boolean; mtu?: number; master?: string; nomaster?: boolean; address?: string }): this {
    const parts = ['link', 'set', dev];
    if (o.mtu !== undefined) parts.push('mtu', String(o.mtu));
    if (o.address) parts.push('address', o.address);
    if (o.master) parts.push('master', o.master);
    if (o.nomaster) parts.push('nomaster');
    if (o.up) parts.push('up');
    if (o.down) parts.push('down');
    this.ipLinks.push(parts.join(' '));
    return this;
  }
  linkDel(dev: string): this {
    this.ipLinks.push(`link del ${dev}`);
    return this;
  }

  /**
   * Runs the batch: one `ip -batch` process when there are no `bridge` lines, else ip, bridge, ip. With
   * `force`, every line is tried and the first failure is thrown at the end (a reconcile repairs what it
   * can); without, the first failing line stops the batch. Errors are those of ./exec.ts (classified by
   * kernelFailure); a link kind the kernel lacks becomes a WeftError naming its module.
   */
  async commit(sys: CommitOptions = {}): Promise<void> {
    try {
      await this.run(sys);
    } catch (e) {
      throw this.kinds.size === 1 ? explainKernelError([...this.kinds][0]!, e) : e;
    }
  }

  private async run(sys: CommitOptions): Promise<void> {
    const ns: NsOpts = { netns: sys.netns };
    const ip = (lines: string[]) => (sys.warm ? warmIpBatch : ipBatch)(lines, { ...ns, force: sys.force });
    const bridge = (lines: string[]) => (sys.warm ? warmBridgeBatch : bridgeBatch)(lines, { ...ns, force: sys.force });
    if (this.brDel.length + this.brAdd.length === 0) return ip([...this.ipLinks, ...this.ipDel, ...this.ipAdd]);
    const errors: unknown[] = [];
    const step = async (p: Promise<void>) => {
      try {
        await p;
      } catch (e) {
        if (!sys.force) throw e;
        errors.push(e);
      }
    };
    await step(ip([...this.ipLinks, ...this.ipDel]));
    await step(bridge([...this.brDel, ...this.brAdd]));
    await step(ip(this.ipAdd));
    if (errors.length) throw errors[0];
  }
}

/** IPv4 routes of the main table, optionally on one device. */
export function readRoutes(o: { dev?: string; table?: string } & NsOpts = {}): Promise<RouteFact[]> {
  const args = ['-4', 'route', 'show'];
  if (o.table) args.push('table', o.table);
  if (o.dev) args.push('dev', o.dev);
  return ipJson<RouteFact[]>(args, o);
}

/** Links (with -details), optionally only the ports of bridge `master`. */
export function readLinks(o: { master?: string } & NsOpts = {}): Promise<IpLink[]> {
  return ipJson<IpLink[]>(['-d', 'link', 'show', ...(o.master ? ['master', o.master] : [])], { netns: o.netns });
}

export function readNeigh(dev: string, sys: NsOpts = {}): Promise<NeighFact[]> {
  return ipJson<NeighFact[]>(['-4', 'neigh', 'show', 'dev', dev], sys);
}

export function readFdb(dev: string, sys: NsOpts = {}): Promise<FdbFact[]> {
  return bridgeJson<FdbFact[]>(['fdb', 'show', 'dev', dev], sys);
}
