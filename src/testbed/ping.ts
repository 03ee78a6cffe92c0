import { nsExec } from './index.js';

export interface PingTarget {
  /** Namespace to ping from / name shown in the matrix. */
  ns: string;
  label: string;
  ip: string;
}

export interface PingResult {
  from: string;
  to: string;
  ok: boolean;
  /** Round-trip time in ms when answered. */
  rttMs?: number;
}

/** One ping between every ordered pair (a few at a time); RTTs as ping printed them. */
export function pingAll(targets: PingTarget[], o: { timeoutSec?: number; parallel?: number } = {}): Promise<PingResult[]> {
  return pingPairs(targets.flatMap((src) => targets.filter((dst) => dst !== src).map((dst) => [src, dst] as const)), o);
}

/** One ping for each of these ordered pairs (a few at a time). */
export async function pingPairs(pairs: ReadonlyArray<readonly [PingTarget, PingTarget]>, o: { timeoutSec?: number; parallel?: number } = {}): Promise<PingResult[]> {
  const results: PingResult[] = [];
  let next = 0;
  const worker = async () => {
    while (next < pairs.length) {
      const [src, dst] = pairs[next++]!;
      const r = await nsExec(src.ns, ['ping', '-n', '-c', '1', '-W', String(o.timeoutSec ?? 2), dst.ip], { allowFail: true });
      const rtt = /time=([\d.]+) ms/.exec(r.stdout)?.[1];
      results.push({ from: src.label, to: dst.label, ok: r.code === 0, ...(rtt ? { rttMs: Number(rtt) } : {}) });
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.parallel ?? 6, pairs.length) }, worker));
  return results;
}

/** The all-pairs matrix as text: rows ping columns, ✓ with the RTT or ✗. */
export function formatMatrix(targets: PingTarget[], results: PingResult[]): string {
  const cell = (from: string, to: string) => {
    if (from === to) return '·';
    const r = results.find((x) => x.from === from && x.to === to);
    return r?.ok ? `✓ ${r.rttMs?.toFixed(2) ?? ''}ms` : '✗';
  };
  const labels = targets.map((t) => t.label);
  const rows = [['', ...labels], ...labels.map((from) => [from, ...labels.map((to) => cell(from, to))])];
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
  return rows.map((r) => r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd()).join('\n') + '\n';
}
