import os from 'node:os';
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

/** One path's samples: iperf3 Gbit/s and the cores busy during each run, and ping RTTs (µs). */
export interface PathSamples {
  gbps: number[];
  cores: number[];
  rtt: number[];
}

/**
 * `reps` rounds of iperf3 over every path (the order rotates each round, so every path meets the machine's
 * load in each position), noting the cores busy during each run; then `pings` pings per path. Progress goes
 * to `say`; `check` runs before each step (an interrupt stops the run there).
 */
export async function measureRounds(
  paths: MeasuredPath[],
  exec: NsRun,
  o: { reps: number; seconds: number; pings: number; say: (line: string) => void; check?: () => void },
): Promise<Map<string, PathSamples>> {
  const res = new Map(paths.map((p): [string, PathSamples] => [p.key, { gbps: [], cores: [], rtt: [] }]));
  const cores = os.cpus().length;
  for (let r = 0; r < o.reps; r++) {
    const order = paths.map((_, i) => paths[(i + r) % paths.length]!);
    for (const p of order) {
      o.check?.();
      o.say(`  round ${r + 1}/${o.reps}: iperf3 ${p.key} → ${p.dstIp} (${o.seconds + 1} s)…`);
      const t0 = cpuTicks();
      const g = await iperf(exec, p, o.seconds);
      const t1 = cpuTicks();
      res.get(p.key)!.gbps.push(g);
      res.get(p.key)!.cores.push(coresBusy(t0, t1, cores));
      o.say(`  round ${r + 1}/${o.reps}: ${p.key} ${g.toFixed(2)} Gbit/s`);
    }
  }
  for (const p of paths) {
    o.check?.();
    o.say(`  ping ${p.key} ×${o.pings}`);
    res.get(p.key)!.rtt.push(...(await pingRtts(exec, p, o.pings)));
  }
  return res;
}

/** Medians of one path's samples, and CPU cores per Gbit/s. */
export function summarise(x: PathSamples): { gbps: number; rttUs: number; cpuPerGbps: number } {
  const gbps = median(x.gbps);
  return { gbps, rttUs: median(x.rtt), cpuPerGbps: gbps > 0 ? median(x.cores) / gbps : 0 };
}
