/**
 * Idle cost and wake-up latency of SqliteStore watches (issue 15 #3).
 *
 *   node dist/bench/store-idle.js [--seconds 20] [--watches 3] [--writes 20]
 *
 * A child process opens a store on a temp file with N watches and one TTL key an hour out (like a held
 * lease), then sits idle. Its CPU (utime+stime from /proc/PID/stat) is read after a 12 s settle and again
 * `--seconds` later. Then this process writes `--writes` times (200 ms apart) and the child reports when
 * each write reached its watch: the cross-process latency.
 */
import { spawn } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { SqliteStore } from '../src/store/sqlite.js';

function arg(name: string, dflt: number): number {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : dflt;
}

const seconds = arg('seconds', 20);
const watches = arg('watches', 3);
const writes = arg('writes', 20);
const TICKS = 100; // USER_HZ on Linux

function cpuSeconds(pid: number): number {
  // Fields after the ")" of comm: state is field 3; utime and stime are fields 14 and 15.
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / TICKS;
}

const dir = mkdtempSync(join(tmpdir(), 'weft-bench-idle-'));
const file = join(dir, 'weft.db');
const writer = new SqliteStore(file);
await writer.put('lease/held', 'x', { ttlSeconds: 3600 });

const mod = new URL('../src/store/sqlite.js', import.meta.url).href;
const code = `
  const { SqliteStore } = await import(${JSON.stringify(mod)});
  const s = new SqliteStore(process.argv[1]);
  for (let i = 0; i < ${watches}; i++) {
    s.watch(i === 0 ? 'probe/' : 'w' + i + '/', (ev) => {
      if (ev.type === 'put') process.stdout.write(ev.entry.value + ' ' + Date.now() + '\\n');
    });
  }
  process.stdout.write('ready\\n');
  setInterval(() => {}, 1 << 30);`;
const child = spawn(process.execPath, ['--input-type=module', '-e', code, file], { stdio: ['ignore', 'pipe', 'inherit'] });
const seen = new Map<string, number>();
let ready = false;
let buf = '';
child.stdout.setEncoding('utf8');
child.stdout.on('data', (d: string) => {
  buf += d;
  for (let nl = buf.indexOf('\n'); nl >= 0; nl = buf.indexOf('\n')) {
    const [v, t] = buf.slice(0, nl).split(' ');
    buf = buf.slice(nl + 1);
    if (t) seen.set(v!, Number(t));
    else if (v === 'ready') ready = true;
  }
});
try {
  const start = Date.now();
  while (!ready) {
    if (child.exitCode !== null || Date.now() - start > 10_000) throw new Error('the idle store process did not start');
    await sleep(20);
  }
  // Past start-up's one-off work: V8's memory reducer runs a full GC ~8-10 s after start (~20 ms of CPU,
  // the same with or without a store), which would otherwise dominate an idle figure.
  await sleep(12_000);
  const c0 = cpuSeconds(child.pid!);
  await sleep(seconds * 1000);
  const c1 = cpuSeconds(child.pid!);
  const pct = ((c1 - c0) / seconds) * 100;

  const lat: number[] = [];
  for (let i = 0; i < writes; i++) {
    const v = `v${i}`;
    const t0 = Date.now();
    await writer.put('probe/k', v);
    const deadline = t0 + 5000;
    while (!seen.has(v) && Date.now() < deadline) await sleep(2);
    lat.push(seen.has(v) ? seen.get(v)! - t0 : Infinity);
    await sleep(200);
  }
  lat.sort((a, b) => a - b);
  const q = (p: number) => lat[Math.min(lat.length - 1, Math.floor(p * lat.length))];
  console.log(
    `sqlite idle: ${watches} watches, ${seconds} s: cpu ${(c1 - c0).toFixed(2)} s = ${pct.toFixed(3)} % of a core; ` +
      `cross-process watch latency over ${writes} writes: median ${q(0.5)} ms, p90 ${q(0.9)} ms, max ${lat[lat.length - 1]} ms`,
  );
} finally {
  if (child.exitCode === null && child.pid) process.kill(child.pid, 'SIGTERM');
  await writer.close();
  rmSync(dir, { recursive: true, force: true });
}
