import { canonicalCidr } from '../net/ipv4.js';
import type { IpLink } from '../system/ip.js';
import { routeDst } from '../system/ops.js';
import type { BackendCheckInput, Finding, RouteFact } from './types.js';

/** Small helpers every doctor check shares (core checks in src/doctor, backend checks in each module). */

export const ok = (check: string, message: string): Finding => ({ check, ok: true, severity: 'info', message });
export const bad = (check: string, severity: 'error' | 'warn', message: string, fix?: string): Finding => ({
  check,
  ok: false,
  severity,
  message,
  ...(fix ? { fix } : {}),
});

export const isUp = (l: IpLink) => l.flags?.includes('UP') ?? false;
export const ipv4 = (l: IpLink) => (l.addr_info ?? []).filter((a) => a.family === 'inet');

export function peerName(p: { publicIp: string; hostId?: string }): string {
  return p.hostId ? `peer ${p.hostId} (${p.publicIp})` : `peer ${p.publicIp}`;
}
export function hostWords(p: { publicIp: string; hostId?: string }): string {
  return p.hostId ? `host ${p.hostId}, ${p.publicIp}` : `host ${p.publicIp}`;
}

/** The kernel's routes to exactly this subnet. */
export function findRoute(routes: readonly RouteFact[], subnet: string): RouteFact[] {
  const want = canonicalCidr(subnet);
  return routes.filter((r) => r.dst !== 'default' && canonicalCidr(routeDst(r.dst)) === want);
}

/** rp_filter in effect on a device: the larger of conf.all and conf.<dev> (1 = strict). */
function rpFilter(f: BackendCheckInput, dev: string): number | undefined {
  const a = f.rpFilter.all;
  const d = f.rpFilter[dev];
  if (a === undefined && d === undefined) return undefined;
  return Math.max(a ?? 0, d ?? 0);
}

/** Strict reverse-path filtering on a device that lacks routes back to some peers drops their packets on arrival. */
export function rpFinding(f: BackendCheckInput, dev: string, unrouted: string[]): Finding {
  const rp = rpFilter(f, dev);
  const check = `rp_filter:${dev}`;
  if (rp === 1 && unrouted.length)
    return bad(check, 'warn', `rp_filter is strict (1) on ${dev} and there is no route back to ${unrouted.join(', ')}: packets from there are dropped on arrival too`, 'fix the routes above (or: sysctl -w net.ipv4.conf.all.rp_filter=2)');
  return ok(check, `rp_filter=${rp ?? '?'} on ${dev}${rp === 1 ? ' (strict: fine while every peer route is in place)' : ''}`);
}
