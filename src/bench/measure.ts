import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import type { RunResult } from '../system/exec.js';

/**
 * Measuring a path between two namespaces: iperf3 throughput, ping RTT and the machine's CPU time while it
 * runs. Shared by `npm run bench` (bench/main.ts) and `weft bench` (./backends.ts).
 */

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/**
 * The median of the ratios a[k] / b[k] of samples taken side by side (round k of each path ran back to
 * back): a load that drifts between rounds moves it far less than median(a) / median(b).
 */
export function pairedRatio(a: number[], b: number[]): number {
  if (a.length !== b.length || a.length === 0) throw new RangeError(`paired samples need equal, non-zero lengths (${a.length} and ${b.length})`);
  return median(a.map((x, k) => x / b[k]!));
}

/** Nearest-rank percentile. */
export function pct(xs: number[], p: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))]!;
}

/** Runs a command inside a namespace (allowFail semantics: resolves with the exit code). */
export type NsRun = (ns: string, argv: string[]) => Promise<RunResult>;

/** One path: traffic from a namespace to an address (an iperf3 server listens there). */
export interface MeasuredPath {
  key: string;
  srcNs: string;
  dstIp: string;
  /** The iperf3 server's port (default 5201). */
  port?: number;
}

/** iperf3 for `seconds` (+1 s omitted) from the path's source: Gbit/s received. Retries twice (a server still starting). */
export async function iperf(exec: NsRun, p: MeasuredPath, seconds: number): Promise<number> {
  for (let attempt = 1; ; attempt++) {
    const r = await exec(p.srcNs, ['iperf3', '-c', p.dstIp, ...(p.port ? ['-p', String(p.port)] : []), '-t', String(seconds), '-O', '1', '-J']);
    let j: { end?: { sum_received?: { bits_per_second?: number } }; error?: string };
    try {
      j = JSON.parse(r.stdout) as typeof j;
    } catch {
      j = { error: r.stderr.trim() || 'no JSON output' };
    }
    const bps = j?.end?.sum_received?.bits_per_second;
    if (r.code === 0 && typeof bps === 'number') return bps / 1e9;
    if (attempt >= 3) throw new Error(`iperf3 ${p.key} (${p.srcNs} → ${p.dstIp}) failed: ${j?.error ?? r.stderr}`);
    await sleep(500);
  }
}

/** `count` pings 50 ms apart: each answered RTT in µs (throws when none was answered). */
export async function pingRtts(exec: NsRun, p: MeasuredPath, count: number): Promise<number[]> {
  const r = await exec(p.srcNs, ['ping', '-n', '-c', String(count), '-i', '0.05', '-W', '1', p.dstIp]);
  const times = [...r.stdout.matchAll(/time=([\d.]+) ms/g)].map((m) => Number(m[1]) * 1000);
  if (times.length === 0) throw new Error(`ping ${p.key} (${p.srcNs} → ${p.dstIp}): no answer: ${r.stdout.trim().split('\n').pop()}`);
  return times;
}

/** Busy and total CPU time of the whole machine so far (/proc/stat, in USER_HZ ticks). */
export function cpuTicks(stat = readFileSync('/proc/stat', 'utf8')): { busy: number; total: number } {
  const f = stat.split('\n')[0]!.trim().split(/\s+/).slice(1).map(Number);
  const idle = (f[3] ?? 0) + (f[4] ?? 0);
  const total = f.slice(0, 8).reduce((a, b) => a + b, 0);
  return { busy: total - idle, total };
}

/** CPU cores kept busy between two cpuTicks readings (namespaces share the kernel, so this is all of both hosts). */
export function coresBusy(a: { busy: number; total: number }, b: { busy: number; total: number }, cores: number): number {
  const total = b.total - a.total;
  return total > 0 ? ((b.busy - a.busy) / total) * cores : 0;
}
