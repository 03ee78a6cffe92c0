import { InvalidArgumentError, type Command } from 'commander';
import { formatBench, runBackendBench } from '../bench/backends.js';
import { printJson } from './output.js';

/** `weft bench`: measured throughput, RTT and CPU per backend next to the underlay, on a test bed of namespaces. */
export function registerBench(program: Command): void {
  program
    .command('bench')
    .description('measure each backend (iperf3 throughput, RTT, CPU per Gbit/s) between two containers on two namespace hosts, next to the underlay')
    .option('--backends <list>', 'comma-separated backends (default: every implemented one)', (v: string) => v.split(',').map((s) => s.trim()).filter(Boolean))
    .option('--seconds <n>', 'iperf3 seconds per run (+1 omitted)', positive, 3)
    .option('--reps <n>', 'interleaved runs per path (median)', positive, 1)
    .option('--pings <n>', 'pings per path', positive, 20)
    .option('--json', 'print JSON (progress still goes to stderr)')
    .action(async (o) => {
      const progress = (line: string) => process.stderr.write(`bench: ${line}\n`);
      const rows = await runBackendBench({ backends: o.backends, seconds: o.seconds, reps: o.reps, pings: o.pings, progress });
      if (o.json) printJson({ seconds: o.seconds, reps: o.reps, rows });
      else process.stdout.write(formatBench(rows, { seconds: o.seconds, reps: o.reps }));
    });
}

function positive(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 1 || n > 600) throw new InvalidArgumentError(`expected a whole number 1–600, got "${v}"`);
  return n;
}
