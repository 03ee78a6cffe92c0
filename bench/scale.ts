/**
 * Convergence at scale (issue 15 item 6). `npm run bench:scale -- [--quick] [--sizes 10,25,50]
 * [--stores sqlite,etcd] [--backends host-gw,vxlan] [--sim N] [--idle S] [--settle S] [--json]`
 *
 * 1. Namespaced hosts: for each size N, store and backend, N agents on a test bed settle into a full mesh;
 *    then one more host joins (time until all N peers have a route to its subnet, from the moment its
 *    lease was written — the newcomer's "lease acquired" log line) and leaves with `weft reset` (time until
 *    all N dropped the route, from the moment the reset was launched); idle CPU (from /proc/PID/stat, its children included, over
 *    --idle seconds, starting --settle seconds (2) after the mesh formed) and RSS per agent of the settled mesh. Routes are observed with one `ip monitor route`
 *    per host (event-driven: no polling processes disturb the measurement). etcd runs on a test-bed host
 *    of its own, as in test/faults/etcd-outage.test.ts.
 * 2. Simulated hosts (no kernel): --sim (1000) LeaseManagers acquire one after the other on one store while
 *    a watchLeases watcher follows: total time, p99 per acquire, watcher lag to the last lease.
 *
 * Bounded: every wait has a deadline (a combination that does not converge in time is reported as such),
 * --quick runs N=10 only. Everything it makes carries the test bed's prefix and is removed at the end;
 * processes are stopped by PID.
 */
import '../src/backends/all.js';
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import { callAgent } from '../src/agent/client.js';
import type { AgentStatus } from '../src/agent/types.js';
import { createNetwork } from '../src/config/registry.js';
import { watchLeases } from '../src/lease/leases.js';
import { LeaseManager } from '../src/lease/manager.js';
import { openStore } from '../src/store/index.js';
import { AgentProcess, WEFT_BIN } from '../src/testbed/agents.js';
import { createTestbed, nsExec, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import type { Logger } from '../src/util/log.js';
import { ETCD_BIN, startEtcd } from '../test/helpers/etcd.js';

interface Options {
  sizes: number[];
  stores: Array<'sqlite' | 'etcd'>;
  backends: string[];
  sim: number;
  idleSeconds: number;
  /** seconds between the full mesh and the idle window: the first minute holds each agent's first resync */
  settleSeconds: number;
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { sizes: [10, 25, 50], stores: ['sqlite', 'etcd'], backends: ['host-gw', 'vxlan'], sim: 1000, idleSeconds: 10, settleSeconds: 2, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const v = () => argv[++i] ?? '';
    if (a === '--quick') o.sizes = [10];
    else if (a === '--sizes') o.sizes = v().split(',').map(Number).filter((n) => n >= 2 && n <= 60);
    else if (a === '--stores') o.stores = v().split(',').filter((s): s is 'sqlite' | 'etcd' => s === 'sqlite' || s === 'etcd');
    else if (a === '--backends') o.backends = v().split(',').filter((b) => b === 'host-gw' || b === 'vxlan');
    else if (a === '--sim') o.sim = Math.min(5000, Math.max(0, Number(v()) || 0));
    else if (a === '--idle') o.idleSeconds = Math.min(600, Math.max(2, Number(v()) || 10));
    else if (a === '--settle') o.settleSeconds = Math.min(600, Math.max(0, Number(v()) || 0));
    else if (a === '--json') o.json = true;
    else throw new Error(`unknown argument ${a}`);
  }
  return o;
}

const log = (msg: string) => process.stderr.write(`scale: ${msg}\n`);
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};
const pct = (xs: number[], p: number) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.min(s.length - 1, Math.ceil((p / 100) * s.length) - 1)]! : NaN;
};

/** Route additions/removals seen per host, with when they arrived (one `ip monitor route` each). */
class RouteMonitor {
  readonly seen = new Map<string, Array<{ at: number; line: string }>>();
  private readonly children: ChildProcess[] = [];
  constructor(private readonly tb: Testbed) {}
  watch(h: TestbedHost): void {
    const lines: Array<{ at: number; line: string }> = [];
    this.seen.set(h.id, lines);
    const child = this.tb.spawn(h.ns, ['ip', '-4', 'monitor', 'route']);
    let buf = '';
    child.stdout!.on('data', (b: Buffer) => {
      const at = Date.now();
      buf += b.toString();
      const parts = buf.split('\n');
      buf = parts.pop() ?? '';
      for (const line of parts) lines.push({ at, line });
    });
    this.children.push(child);
  }
  /** When host `id` first saw a line about `subnet` (deleted or not), after `since`. */
  when(id: string, subnet: string, deleted: boolean, since: number): number | undefined {
    const net = subnet.split('/')[0]!;
    return this.seen.get(id)?.find((l) => l.at >= since && l.line.includes(`${net}/`) && l.line.startsWith('Deleted') === deleted)?.at;
  }
  stop(): void {
    for (const c of this.children) if (c.pid && c.exitCode === null) c.kill('SIGTERM');
  }
}

/**
 * utime+stime clock ticks of a process, of its waited-for children (fields 14–17 of /proc/PID/stat) and of its
 * live descendants: the processes an agent spawns (ip, iptables, ping) are its cost too.
 */
function cpuTicks(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  let ticks = Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]);
  // live descendants too (e.g. the warm command runner's bash, whose children it reaps itself)
  for (const child of childrenOf(pid)) {
    try {
      ticks += cpuTicks(child);
    } catch {
      // exited meanwhile
    }
  }
  return ticks;
}

function childrenOf(pid: number): number[] {
  const out: number[] = [];
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const s = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      if (Number(s.slice(s.lastIndexOf(')') + 2).split(' ')[1]) === pid) out.push(Number(d));
    } catch {
      // gone
    }
  }
  return out;
}
function rssMb(pid: number): number {
  const m = /^VmRSS:\s+(\d+) kB/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

interface HostsResult {
  store: string;
  backend: string;
  n: number;
  meshSeconds?: number;
  joinMs?: number;
  joinReached: number;
  leaveMs?: number;
  leaveReached: number;
  idleCpuPct: { median: number; max: number };
  rssMb: { median: number; max: number };
  error?: string;
}

/** What a run has made, for the SIGINT handler (Ctrl-C cleans up like a normal end). */
const live = { tb: undefined as Testbed | undefined, agents: [] as AgentProcess[], etcd: undefined as ChildProcess | undefined };
process.once('SIGINT', () => {
  log('interrupted: stopping agents and removing the test bed');
  void Promise.all(live.agents.map((a) => a.stop().catch(() => {})))
    .then(() => (live.etcd?.pid && live.etcd.exitCode === null ? live.etcd.kill('SIGKILL') : undefined))
    .then(() => live.tb?.destroy())
    .finally(() => process.exit(130));
});

async function hostsRun(o: Options, n: number, store: 'sqlite' | 'etcd', backend: string): Promise<HostsResult> {
  const res: HostsResult = { store, backend, n, joinReached: 0, leaveReached: 0, idleCpuPct: { median: NaN, max: NaN }, rssMb: { median: NaN, max: NaN } };
  const tb = await createTestbed({});
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `weft-scale-${tb.prefix}-`));
  const agents: AgentProcess[] = [];
  const mon = new RouteMonitor(tb);
  let etcd: ChildProcess | undefined;
  live.tb = tb;
  live.agents = agents;
  try {
    log(`${store}/${backend} N=${n}: building ${n + 1 + (store === 'etcd' ? 1 : 0)} hosts (prefix ${tb.prefix})`);
    const hosts: TestbedHost[] = [];
    for (let i = 0; i < n + 1; i++) hosts.push(await tb.addHost());
    let url = `sqlite://${path.join(dir, 'weft.db')}`;
    if (store === 'etcd') {
      const eh = await tb.addHost();
      const port = 23790;
      const cu = `http://${eh.ip}:${port}`;
      const pu = `http://${eh.ip}:${port + 1}`;
      etcd = tb.spawn(eh.ns, [ETCD_BIN, '--name', 'scale', '--data-dir', path.join(dir, 'etcd'), '--listen-client-urls', cu, '--advertise-client-urls', cu, '--listen-peer-urls', pu, '--initial-advertise-peer-urls', pu, '--initial-cluster', `scale=${pu}`, '--logger', 'zap', '--log-level', 'error']);
      url = `etcd://${eh.ip}:${port}`;
      live.etcd = etcd;
    }
    const created = await deadline(30_000, async () => {
      for (;;) {
        const r = await nsExec(hosts[0]!.ns, [process.execPath, WEFT_BIN, 'network', 'create', 'scale', '--subnet', '10.240.0.0/16', '--backend', backend, '--store', url, '--ignore-host-routes'], { allowFail: true });
        if (r.code === 0) return true;
        if (!/unreachable|UNAVAILABLE|ECONNREFUSED|deadline|timed out/i.test(r.stderr)) throw new Error(`network create: ${r.stderr.trim()}`);
        await sleep(300);
      }
    });
    if (!created) throw new Error('the store did not answer within 30 s');
    const settled = hosts.slice(0, n);
    const newcomer = hosts[n]!;
    const t0 = Date.now();
    for (const h of settled) {
      const a = new AgentProcess(h, { storeUrl: url, dir, args: ['--ui-addr', 'off', '--no-dns'] });
      agents.push(a);
      await startAgent(a);
    }
    const meshOk = await deadline(Math.max(60_000, n * 4_000), async () => {
      for (;;) {
        const st = await Promise.all(agents.map((a) => callAgent<AgentStatus>(a.api, 'GET', '/status', undefined, { timeoutMs: 5000 }).catch(() => undefined)));
        if (st.every((s) => s && s.networks.length === 1 && s.networks[0]!.peers.length === n - 1)) return true;
        await sleep(500);
      }
    });
    if (!meshOk) throw new Error('no full mesh in time');
    res.meshSeconds = (Date.now() - t0) / 1000;
    // idle: the settled mesh, nothing happening
    await sleep(o.settleSeconds * 1000);
    const before = agents.map((a) => cpuTicks(a.pid));
    await sleep(o.idleSeconds * 1000);
    const cpu = agents.map((a, i) => ((cpuTicks(a.pid) - before[i]!) / (o.idleSeconds * 100)) * 100);
    const rss = agents.map((a) => rssMb(a.pid));
    res.idleCpuPct = { median: median(cpu), max: Math.max(...cpu) };
    res.rssMb = { median: median(rss), max: Math.max(...rss) };
    // join
    for (const h of settled) mon.watch(h);
    await sleep(500);
    const nc = new AgentProcess(newcomer, { storeUrl: url, dir, args: ['--ui-addr', 'off', '--no-dns'] });
    agents.push(nc);
    const launchedAt = Date.now();
    await startAgent(nc);
    const subnet = await deadline(30_000, async () => {
      for (;;) {
        const st = await callAgent<AgentStatus>(nc.api, 'GET', '/status').catch(() => undefined);
        const s = st?.networks[0]?.subnet;
        if (s) return s;
        await sleep(50);
      }
    });
    if (!subnet) throw new Error('the newcomer has no lease after 30 s');
    const leasedAt = leaseTime(nc.logFile);
    // a peer may install the route before the newcomer has logged its lease: look from the newcomer's launch
    const joined = await until(20_000, () => settled.map((h) => mon.when(h.id, subnet, false, launchedAt)));
    res.joinReached = joined.filter((x) => x !== undefined).length;
    if (res.joinReached === n) res.joinMs = Math.max(0, Math.max(...(joined as number[])) - leasedAt);
    // leave
    const resetAt = Date.now();
    await nsExec(newcomer.ns, [process.execPath, WEFT_BIN, 'reset', '--api', nc.api], { allowFail: true });
    const left = await until(20_000, () => settled.map((h) => mon.when(h.id, subnet, true, resetAt)));
    res.leaveReached = left.filter((x) => x !== undefined).length;
    if (res.leaveReached === n) res.leaveMs = Math.max(...(left as number[])) - resetAt;
  } catch (err) {
    res.error = (err as Error).message.split('\n')[0];
    // keep the agents' logs of a failed combination
    const keep = path.join(os.tmpdir(), `weft-scale-failed-${tb.prefix}`);
    fs.mkdirSync(keep, { recursive: true });
    for (const a of agents) if (fs.existsSync(a.logFile)) fs.copyFileSync(a.logFile, path.join(keep, `${a.host.id}.log`));
    res.error += ` (agent logs in ${keep})`;
  } finally {
    mon.stop();
    // every host's data plane goes with its namespace; the agents are stopped by PID
    await Promise.all(agents.map((a) => a.stop().catch(() => {})));
    if (etcd?.pid && etcd.exitCode === null) etcd.kill('SIGKILL');
    await tb.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return res;
}

/**
 * When the newcomer's lease was in the store (pino's `time`, ms since epoch): its LeaseManager's "leased
 * subnet …" line, logged as soon as the compare-and-swap returned (before the host record and the rest of
 * the join); the runner's later "lease acquired" line where that one is missing.
 */
function leaseTime(logFile: string): number {
  let acquired: number | undefined;
  for (const line of fs.readFileSync(logFile, 'utf8').split('\n')) {
    try {
      const v = JSON.parse(line) as { msg?: string; time?: number };
      if (v.msg?.startsWith('leased subnet ') && v.time) return v.time;
      if (v.msg === 'lease acquired' && v.time) acquired ??= v.time;
    } catch {
      /* not JSON */
    }
  }
  if (acquired !== undefined) return acquired;
  throw new Error(`no "lease acquired" line in ${logFile}`);
}

/**
 * Starts an agent, allowing a loaded machine more than the test bed's 10 s for its API to answer (each agent
 * pays Node's start-up and module loading; 25+ at once on 2 cores take a while).
 */
async function startAgent(a: AgentProcess): Promise<void> {
  try {
    await a.start();
  } catch (err) {
    if (!/timed out waiting for its API/.test((err as Error).message)) throw err;
    const ok = await deadline(60_000, async () => {
      for (;;) {
        if (await a.status()) return true;
        await sleep(250);
      }
    });
    if (!ok) throw err;
  }
}

async function deadline<T>(ms: number, fn: () => Promise<T>): Promise<T | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const out = await Promise.race([fn(), new Promise<undefined>((r) => (timer = setTimeout(() => r(undefined), ms)))]);
  clearTimeout(timer);
  return out;
}

/** Polls (in memory) until every entry is defined or the time is up; returns the last answer. */
async function until(ms: number, check: () => Array<number | undefined>): Promise<Array<number | undefined>> {
  const end = Date.now() + ms;
  let v = check();
  while (v.some((x) => x === undefined) && Date.now() < end) {
    await sleep(50);
    v = check();
  }
  return v;
}

interface SimResult {
  store: string;
  hosts: number;
  totalSeconds: number;
  p99AcquireMs: number;
  medianAcquireMs: number;
  watcherLagMs?: number;
  error?: string;
}

async function simulated(store: 'sqlite' | 'etcd', n: number): Promise<SimResult> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-scale-sim-'));
  const etcd = store === 'etcd' ? await startEtcd() : undefined;
  const quiet = pino({ level: 'silent' }) as unknown as Logger;
  const res: SimResult = { store, hosts: n, totalSeconds: NaN, p99AcquireMs: NaN, medianAcquireMs: NaN };
  try {
    const s = await openStore(etcd ? etcd.url : `sqlite://${path.join(dir, 'weft.db')}`, { create: true });
    try {
      await createNetwork(s, 'sim', { Network: '10.0.0.0/8', SubnetLen: 24, Backend: { Type: 'host-gw' } });
      let lastSeen: number | undefined;
      const last = `h${n - 1}`;
      // The change tells what arrived (a scan of the whole list per event would be the bench's own O(n²)).
      const w = watchLeases(s, 'sim', (leases, change) => {
        if (lastSeen !== undefined) return;
        if (change.type === 'resync' ? leases.some((l) => l.hostId === last) : change.type === 'put' && change.lease.hostId === last) lastSeen = Date.now();
      });
      const managers = Array.from({ length: n }, (_, i) => new LeaseManager(s, 'sim', { hostId: `h${i}`, log: quiet, ttlSeconds: 3600 }));
      const each: number[] = [];
      const t0 = performance.now();
      let wroteLast = 0;
      for (const [i, m] of managers.entries()) {
        const t = performance.now();
        await m.acquire({ publicIp: `192.168.${i >> 8}.${i & 255}` });
        each.push(performance.now() - t);
        if (i === n - 1) wroteLast = Date.now();
        // Hosts are separate processes: let the watcher (and the store's watch) run between acquires, as
        // it would beside them (sqlite calls never yield on their own).
        await new Promise((r) => setImmediate(r));
      }
      res.totalSeconds = (performance.now() - t0) / 1000;
      res.p99AcquireMs = pct(each, 99);
      res.medianAcquireMs = median(each);
      const end = Date.now() + 30_000;
      while (lastSeen === undefined && Date.now() < end) await sleep(5);
      if (lastSeen !== undefined) res.watcherLagMs = Math.max(0, lastSeen - wroteLast);
      w.close();
      for (const m of managers) await (m as unknown as { stop?: () => Promise<void> }).stop?.().catch(() => {});
    } finally {
      await s.close();
    }
  } catch (err) {
    res.error = (err as Error).message.split('\n')[0];
  } finally {
    await etcd?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return res;
}

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  const started = Date.now();
  const load0 = os.loadavg();
  const stores = o.stores.filter((s) => s === 'sqlite' || fs.existsSync(ETCD_BIN));
  const hosts: HostsResult[] = [];
  for (const n of o.sizes) for (const store of stores) for (const backend of o.backends) {
    const r = await hostsRun(o, n, store, backend);
    log(JSON.stringify(r));
    hosts.push(r);
  }
  const sims: SimResult[] = [];
  if (o.sim) for (const store of stores) {
    log(`simulated: ${o.sim} hosts on ${store}`);
    const r = await simulated(store, o.sim);
    log(JSON.stringify(r));
    sims.push(r);
  }
  const meta = { date: new Date().toISOString(), command: `node dist/bench/scale.js ${process.argv.slice(2).join(' ')}`.trim(), cpus: os.cpus().length, loadavgStart: load0.map((x) => x.toFixed(1)).join(' '), loadavgEnd: os.loadavg().map((x) => x.toFixed(1)).join(' '), minutes: ((Date.now() - started) / 60000).toFixed(1) };
  if (o.json) {
    process.stdout.write(JSON.stringify({ meta, hosts, simulated: sims }, null, 2) + '\n');
    return;
  }
  const f = (x: number | undefined, d = 0) => (x === undefined || Number.isNaN(x) ? '—' : x.toFixed(d));
  const out: string[] = [];
  out.push(`weft bench:scale — ${meta.date} — \`${meta.command}\` — ${meta.cpus} CPUs, load average ${meta.loadavgStart} at start, ${meta.loadavgEnd} at end, ${meta.minutes} min`, '');
  out.push('| store | backend | N | mesh from launch s | join → all N ms | leave → all N ms | idle CPU % per agent (median / max) | RSS MB per agent (median / max) |');
  out.push('|---|---|---:|---:|---:|---:|---:|---:|');
  for (const r of hosts) {
    const join = r.joinMs !== undefined ? f(r.joinMs) : `${r.joinReached}/${r.n} in 20 s`;
    const leave = r.leaveMs !== undefined ? f(r.leaveMs) : `${r.leaveReached}/${r.n} in 20 s`;
    out.push(`| ${r.store} | ${r.backend} | ${r.n} | ${f(r.meshSeconds, 1)} | ${join} | ${leave} | ${f(r.idleCpuPct.median, 2)} / ${f(r.idleCpuPct.max, 2)} | ${f(r.rssMb.median, 1)} / ${f(r.rssMb.max, 1)} |${r.error ? ` error: ${r.error}` : ''}`);
  }
  if (sims.length) {
    out.push('', '| store | simulated hosts | total s | acquire median ms | acquire p99 ms | watcher lag to the last lease ms |', '|---|---:|---:|---:|---:|---:|');
    for (const r of sims) out.push(`| ${r.store} | ${r.hosts} | ${f(r.totalSeconds, 2)} | ${f(r.medianAcquireMs, 2)} | ${f(r.p99AcquireMs, 2)} | ${f(r.watcherLagMs)} |${r.error ? ` error: ${r.error}` : ''}`);
  }
  process.stdout.write(out.join('\n') + '\n');
}

main().then(
  // a client of a stopped etcd may keep a connect pending for minutes (and this process the bench lock)
  () => process.exit(0),
  (e: unknown) => {
    console.error(e);
    process.exit(1);
  },
);
