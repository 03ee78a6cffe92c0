import '../src/backends/all.js';
/**
 * `npm run bench:dns`: weft's DNS server next to dnsmasq (Debian) serving the same records.
 *  - one test-bed host namespace (fresh prefix) with a real `weft agent` (one host-gw network, SQLite store
 *    in a temp dir); N names registered in the store reach the agent's server on the bridge gateway :53;
 *  - dnsmasq in the same namespace on the same address, port 5353, with the same records in a hosts file
 *    (--addn-hosts, --local=/weft.local/ so unknown weft names are NXDOMAIN there too);
 *  - the same closed-loop UDP client (bench/dns-load.ts, `window` queries in flight) runs against each,
 *    interleaved, `reps` times; each figure is the median over the reps.
 * Everything is removed at the end (also on failure and Ctrl-C); processes are stopped by PID; all traffic
 * stays inside the namespace.
 *
 *   node dist/bench/dns.js [--reps N (3)] [--queries N (20000)] [--names N (200)] [--window N (32)]
 *                          [--clients N (2)] [--json]
 */
import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { createNetwork } from '../src/config/registry.js';
import { registerEndpointName } from '../src/dns/registry.js';
import { gatewayOf } from '../src/ipam/addresses.js';
import { openStore } from '../src/store/index.js';
import { run } from '../src/system/exec.js';
import { inNetns } from '../src/system/netns.js';
import { AgentProcess } from '../src/testbed/agents.js';
import { createTestbed, type Testbed } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import type { LoadResult, LoadSpec } from './dns-load.js';

const LOAD = path.join(path.dirname(fileURLToPath(import.meta.url)), 'dns-load.js');
const DOMAIN = 'weft.local';
const DNSMASQ_PORT = 5353;

interface Options {
  reps: number;
  queries: number;
  names: number;
  window: number;
  /** Load generator processes at once (their queries/s add up; p50/p99 are the clients' worst). */
  clients: number;
  json: boolean;
}

function parseArgs(argv: string[]): Options {
  const o: Options = { reps: 3, queries: 20_000, names: 200, window: 32, clients: 2, json: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    const int = (min: number, max: number) => {
      const n = Number(argv[++i]);
      if (!Number.isInteger(n) || n < min || n > max) {
        process.stderr.write(`bench:dns: ${a} must be an integer in ${min}..${max}\n`);
        process.exit(2);
      }
      return n;
    };
    if (a === '--reps') o.reps = int(1, 20);
    else if (a === '--queries') o.queries = int(100, 200_000);
    else if (a === '--names') o.names = int(1, 250);
    else if (a === '--window') o.window = int(1, 512);
    else if (a === '--clients') o.clients = int(1, 8);
    else if (a === '--json') o.json = true;
    else {
      process.stderr.write('usage: node dist/bench/dns.js [--reps N] [--queries N] [--names N] [--window N] [--clients N] [--json]\n');
      process.exit(a === '--help' ? 0 : 2);
    }
  }
  return o;
}

const median = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length % 2 ? s[(s.length - 1) / 2]! : (s[s.length / 2 - 1]! + s[s.length / 2]!) / 2;
};

async function main(): Promise<void> {
  const o = parseArgs(process.argv.slice(2));
  if (process.getuid?.() !== 0) throw new Error('run as root (network namespaces)');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-bench-dns-'));
  let tb: Testbed | undefined;
  let agent: AgentProcess | undefined;
  let dnsmasq: ChildProcess | undefined;
  const cleanup = async () => {
    if (dnsmasq?.pid && dnsmasq.exitCode === null) dnsmasq.kill('SIGKILL');
    await agent?.stop('SIGKILL').catch(() => {});
    await tb?.destroy().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  const onSignal = () => void cleanup().finally(() => process.exit(130));
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  try {
    tb = await createTestbed({ hosts: 1 });
    const h = tb.hosts[0]!;
    const storeUrl = `sqlite://${path.join(dir, 'weft.db')}`;
    const store = await openStore(storeUrl, { create: true });
    try {
      await createNetwork(store, 'bench', { Network: '10.79.0.0/16', Backend: { Type: 'host-gw' } });
      // no upstream answers: the bench asks weft names only
      agent = new AgentProcess(h, { storeUrl, dir, args: ['--dns-upstream', '127.0.0.1:9'] });
      await agent.start();
      // the API answers before the agent has joined its networks
      const joined = agent;
      await waitFor('the agent joined the network', 30_000, async () => (await joined.status())?.networks.length === 1);
      const subnet = (await agent.status())!.networks[0]!.subnet;
      const gw = gatewayOf(subnet);
      const base = subnet.split('.').slice(0, 3).join('.');
      const records = Array.from({ length: o.names }, (_, i) => ({ name: `svc${i}`, ip: `${base}.${(i % 250) + 2}` }));
      // registered as host h1's containers (h1 holds a live lease, so the records are served)
      for (const r of records) await registerEndpointName(store, 'bench', r.name, r.ip, h.id);
      const hosts = path.join(dir, 'hosts');
      fs.writeFileSync(hosts, records.map((r) => `${r.ip} ${r.name}.${DOMAIN}\n`).join(''), { mode: 0o644 });

      const [cmd, args] = inNetns(h.ns, 'dnsmasq', [
        '--keep-in-foreground', '--no-resolv', '--no-hosts', `--addn-hosts=${hosts}`, `--local=/${DOMAIN}/`,
        `--listen-address=${gw}`, '--bind-interfaces', `--port=${DNSMASQ_PORT}`, '--pid-file=', '--user=root', '--cache-size=10000',
      ]);
      dnsmasq = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
      let dnsmasqErr = '';
      dnsmasq.stderr!.on('data', (d: Buffer) => (dnsmasqErr += d.toString()));

      const names = records.map((r) => `${r.name}.${DOMAIN}`);
      const load = async (port: number, count: number, window = o.window): Promise<LoadResult> => {
        const spec: LoadSpec = { server: gw, port, names, count, window, maxSeconds: 30 };
        const r = await run('nsenter', [`--net=/run/netns/${h.ns}`, process.execPath, LOAD, JSON.stringify(spec)], { allowFail: true });
        if (r.code !== 0) throw new Error(`load generator failed: ${r.stderr}`);
        return JSON.parse(r.stdout) as LoadResult;
      };
      // both answer every name before timing starts (weft: the store watch has delivered all records)
      const allAnswered = (port: number) => async () => {
        const r = await load(port, names.length, 8);
        return (r.rcodes.NOERROR ?? 0) === names.length || `${JSON.stringify(r.rcodes)} ${dnsmasqErr.trim()}`;
      };
      await waitFor('weft to serve every record', 20_000, allAnswered(53), 200);
      await waitFor('dnsmasq to serve every record', 10_000, allAnswered(DNSMASQ_PORT), 200);

      const servers = [
        { label: 'weft (agent, Node)', port: 53 },
        { label: 'dnsmasq 2.90', port: DNSMASQ_PORT },
      ];
      // several clients at once: one Node client alone tops out near the servers' rate on this machine
      const loadMany = async (port: number): Promise<LoadResult> => {
        const rs = await Promise.all(Array.from({ length: o.clients }, () => load(port, Math.ceil(o.queries / o.clients))));
        const sum = (f: (r: LoadResult) => number) => rs.reduce((n, r) => n + f(r), 0);
        const worst = (f: (r: LoadResult) => number) => Math.max(...rs.map(f));
        return { sent: sum((r) => r.sent), answered: sum((r) => r.answered), lost: sum((r) => r.lost), seconds: worst((r) => r.seconds), qps: sum((r) => r.qps), p50Ms: worst((r) => r.p50Ms), p99Ms: worst((r) => r.p99Ms), rcodes: {} };
      };
      const runs = new Map<string, LoadResult[]>(servers.map((s) => [s.label, []]));
      const latency = new Map<string, LoadResult[]>(servers.map((s) => [s.label, []]));
      for (let rep = 0; rep < o.reps; rep++) {
        const order = rep % 2 ? [...servers].reverse() : servers;
        for (const s of order) {
          runs.get(s.label)!.push(await loadMany(s.port));
          // one query at a time: latency without queueing
          latency.get(s.label)!.push(await load(s.port, 2000, 1));
        }
      }
      const rows = servers.map((s) => {
        const r = runs.get(s.label)!;
        const l = latency.get(s.label)!;
        return {
          server: s.label,
          qps: median(r.map((x) => x.qps)),
          p50Ms: median(r.map((x) => x.p50Ms)),
          p99Ms: median(r.map((x) => x.p99Ms)),
          lost: r.reduce((n, x) => n + x.lost, 0),
          serialP50Ms: median(l.map((x) => x.p50Ms)),
          serialP99Ms: median(l.map((x) => x.p99Ms)),
        };
      });
      if (o.json) {
        process.stdout.write(`${JSON.stringify({ options: o, rows, runs: Object.fromEntries(runs), latency: Object.fromEntries(latency) }, null, 2)}\n`);
        return;
      }
      const ref = rows[1]!;
      process.stdout.write(
        `weft bench:dns — ${new Date().toISOString()} — ${os.cpus().length} CPU, Node ${process.version}\n\n` +
          `${o.names} names (A, ${DOMAIN}), UDP, clients in the same namespace; ${o.queries} queries per run from ${o.clients} client processes with ${o.window} in flight each ` +
          `(throughput, p50/p99 under load) and 2000 one at a time (serial latency); median of ${o.reps} interleaved runs.\n\n` +
          '| server | queries/s | × dnsmasq | p50 ms (load) | p99 ms (load) | p50 ms (serial) | p99 ms (serial) | lost |\n' +
          '|---|---:|---:|---:|---:|---:|---:|---:|\n' +
          rows
            .map((r) => `| ${r.server} | ${r.qps} | ${(r.qps / ref.qps).toFixed(2)}× | ${r.p50Ms.toFixed(2)} | ${r.p99Ms.toFixed(2)} | ${r.serialP50Ms.toFixed(3)} | ${r.serialP99Ms.toFixed(3)} | ${r.lost} |`)
            .join('\n') +
          '\n',
      );
    } finally {
      await store.close();
    }
  } finally {
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    await cleanup();
  }
}

main().catch((err) => {
  process.stderr.write(`bench:dns: ${err instanceof Error ? err.message : String(err)}\n`);
  process.exitCode = 1;
});
