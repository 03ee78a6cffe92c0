import { routeDst, type KernelBatch, type RouteFact, type RouteSpec } from '../system/ops.js';

/**
 * The route reconciler shared by the routed backends (host-gw, vxlan, and the ones that route through a
 * device of their own), like flannel's RouteNetwork: given the routes a backend owns now and the ones it
 * wants, it adds to `batch` exactly the difference. Pure, so it is unit-tested without a kernel.
 */
export function diffRoutes(have: readonly RouteFact[], want: readonly RouteSpec[], batch: KernelBatch): void {
  const same = (r: RouteFact, w: RouteSpec) =>
    routeDst(r.dst) === w.dst && (r.gateway ?? undefined) === w.via && (!w.dev || !r.dev || r.dev === w.dev) && (!w.onlink || (r.flags ?? []).includes('onlink'));
  for (const r of have) {
    if (!want.some((w) => same(r, w))) batch.routeDel({ dst: routeDst(r.dst), via: r.gateway, dev: r.dev });
  }
  for (const w of want) if (!have.some((r) => same(r, w))) batch.routeReplace(w);
}

/** The routes `want` as the kernel lists them once applied: what a reconcile that trusts its last one diffs against. */
export function appliedRoutes(want: readonly RouteSpec[]): RouteFact[] {
  return want.map((w) => ({ dst: w.dst, gateway: w.via, dev: w.dev, flags: w.onlink ? ['onlink'] : [] }));
}

/** Logs a refused peer once per (peer, reason), so a reconcile every 30 s does not repeat itself. */
export class RefusalLog {
  private readonly seen = new Set<string>();
  constructor(private readonly say: (peer: { subnet: string; publicIp: string }, why: string) => void) {}
  refuse(peer: { subnet: string; publicIp: string }, why: string): void {
    const key = `${peer.subnet}@${peer.publicIp}:${why}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    this.say(peer, why);
  }
}
