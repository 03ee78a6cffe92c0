/**
 * `npm run bench:cni`: CNI ADD and DEL latency of weft-cni (the C forwarder → the agent's POST /cni) next to
 * Debian's reference `bridge` + `host-local`, in one run on one test-bed host, interleaved call by call
 * (the order flips every round) so the machine's noise hits both alike. Also, for scale: the agent's own
 * `POST /attach` (what weft-cni's ADD costs without the plugin and the CNI bookkeeping) and VERSION (plugin
 * start-up alone). Every container namespace is made before timing starts; everything is removed at the end.
 *
 *   node dist/bench/cni.js [--n N (100)] [--json]
 *
 * The timing loop runs inside the host's namespace (this file again with --worker, under nsenter), where a
 * runtime would run the plugins.
 */
import '../src/backends/all.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import { callAgent } from '../src/agent/client.js';
import { execPlugin, type PluginCall } from '../src/adapters/cni/exec-plugin.js';
import { ensureShim } from '../src/adapters/cni/shim-build.js';
import { createNetwork } from '../src/config/registry.js';
import { openStore } from '../src/store/index.js';
import { inNetns } from '../src/system/netns.js';
import { AgentProcess } from '../src/testbed/agents.js';
import { createTestbed, type Testbed } from '../src/testbed/index.js';

const REF = '/usr/lib/cni';
const WARMUP = 5;

interface WorkerInput {
  api: string;
  weftPlugin: string;
  weftConf: Record<string, unknown>;
  refConf: Record<string, unknown>;
  weftNs: string[];
  refNs: string[];
  apiNs: string[];
  /** For POST /cni without the executable. */
  directNs: string[];
  n: number;
}
type Series = Record<'weftAdd' | 'refAdd' | 'weftDel' | 'refDel' | 'apiAttach' | 'apiCni' | 'weftVersion' | 'refVersion', number[]>;

async function worker(inp: WorkerInput): Promise<Series> {
  const s: Series = { weftAdd: [], refAdd: [], weftDel: [], refDel: [], apiAttach: [], apiCni: [], weftVersion: [], refVersion: [] };
  const call = async (bin: string, p: PluginCall): Promise<number> => {
    const r = await execPlugin(bin, p);
    if (r.code !== 0) throw new Error(`${path.basename(bin)} ${p.command} failed: ${r.stdout} ${r.stderr}`);
    return r.ms;
  };
  const weft = { bin: inp.weftPlugin, conf: inp.weftConf, ns: inp.weftNs, add: s.weftAdd, del: s.weftDel, version: s.weftVersion };
  const ref = { bin: `${REF}/bridge`, conf: inp.refConf, ns: inp.refNs, add: s.refAdd, del: s.refDel, version: s.refVersion };
  const both = (i: number) => (i % 2 === 0 ? [weft, ref] : [ref, weft]);
  const p = (side: typeof weft, i: number, command: string): PluginCall => ({
    command,
    containerId: `bench-${i}`,
    netns: `/run/netns/${side.ns[i]}`,
    ifname: 'eth0',
    path: REF,
    config: side.conf,
  });
  const total = inp.n + WARMUP;
  for (let i = 0; i < total; i++) {
    for (const side of both(i)) {
      const ms = await call(side.bin, p(side, i, 'ADD'));
      if (i >= WARMUP) side.add.push(ms);
    }
    let t0 = performance.now();
    await callAgent(inp.api, 'POST', '/attach', { container: inp.apiNs[i] });
    if (i >= WARMUP) s.apiAttach.push(performance.now() - t0);
    // what the executable forwards, sent from here: the CNI bookkeeping without the exec
    t0 = performance.now();
    const env = { CNI_COMMAND: 'ADD', CNI_CONTAINERID: `direct-${i}`, CNI_NETNS: `/run/netns/${inp.directNs[i]}`, CNI_IFNAME: 'eth0' };
    const ans = await callAgent<{ exit: number; out: unknown }>(inp.api, 'POST', '/cni', { env, stdin: JSON.stringify(inp.weftConf) });
    if (ans.exit !== 0) throw new Error(`POST /cni ADD failed: ${JSON.stringify(ans.out)}`);
    if (i >= WARMUP) s.apiCni.push(performance.now() - t0);
  }
  for (let i = 0; i < total; i++) {
    for (const side of both(i)) {
      const ms = await call(side.bin, p(side, i, 'DEL'));
      if (i >= WARMUP) side.del.push(ms);
    }
  }
  for (let i = 0; i < total; i++) {
    for (const side of both(i)) {
      const ms = await call(side.bin, { command: 'VERSION', config: side.conf });
      if (i >= WARMUP) side.version.push(ms);
    }
  }
  return s;
}

function stats(xs: number[]) {
  const v = [...xs].sort((a, b) => a - b);
  const q = (f: number) => v[Math.min(v.length - 1, Math.floor(f * v.length))]!;
  return { n: v.length, median: v.length % 2 ? v[(v.length - 1) / 2]! : (v[v.length / 2 - 1]! + v[v.length / 2]!) / 2, p90: q(0.9), min: v[0]! };
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  if (argv[0] === '--worker') {
    const inp = JSON.parse(fs.readFileSync(0, 'utf8')) as WorkerInput;
    process.stdout.write(JSON.stringify(await worker(inp)) + '\n');
    return;
  }
  let n = 100;
  let json = false;
  for (let i = 0; i < argv.length; i++) {
    if (argv[i] === '--n') n = Number(argv[++i]);
    else if (argv[i] === '--json') json = true;
    else throw new Error(`unknown argument ${argv[i]} (usage: node dist/bench/cni.js [--n N] [--json])`);
  }
  if (!Number.isInteger(n) || n < 1 || n > 200) throw new Error('--n takes 1..200');
  for (const b of ['bridge', 'host-local']) if (!fs.existsSync(`${REF}/${b}`)) throw new Error(`${REF}/${b} is missing (Debian containernetworking-plugins)`);
  const weftPlugin = ensureShim();

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-bench-cni-'));
  let tb: Testbed | undefined;
  let agent: AgentProcess | undefined;
  const cleanup = async () => {
    await agent?.stop('SIGKILL').catch(() => {});
    await tb?.destroy().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().finally(() => process.exit(130)));
  try {
    const storeUrl = `sqlite://${path.join(dir, 'weft.db')}`;
    const store = await openStore(storeUrl, { create: true });
    // a /22 per host: 3 × (n + warm-up) weft attaches stay up until the DELs
    await createNetwork(store, 'bench', { Network: '10.248.0.0/16', SubnetLen: 22, Backend: { Type: 'host-gw' } });
    await store.close();
    tb = await createTestbed({ hosts: 1 });
    const h = tb.hosts[0]!;
    agent = await new AgentProcess(h, { storeUrl, dir }).start();
    const total = n + WARMUP;
    const mk = async (tag: string) => {
      const out: string[] = [];
      for (let i = 0; i < total; i++) out.push(await tb!.addContainer(h, `${tag}${i}`));
      return out;
    };
    process.stderr.write(`bench:cni: making ${4 * total} container namespaces on ${h.ns} (before any timing)\n`);
    const inp: WorkerInput = {
      api: agent.api,
      weftPlugin,
      weftConf: { cniVersion: '1.0.0', name: 'benchweft', type: 'weft-cni', network: 'bench', agentSocket: agent.api },
      refConf: {
        cniVersion: '1.0.0',
        name: 'benchref',
        type: 'bridge',
        bridge: 'cni0',
        isGateway: true,
        ipam: { type: 'host-local', subnet: '10.249.0.0/24', dataDir: path.join(dir, 'host-local') },
      },
      weftNs: await mk('w'),
      refNs: await mk('r'),
      apiNs: await mk('a'),
      directNs: await mk('d'),
      n,
    };
    process.stderr.write(`bench:cni: ${n} ADDs then ${n} DELs each (after ${WARMUP} warm-up), weft-cni and bridge+host-local interleaved\n`);
    const [cmd, args] = inNetns(h.ns, process.execPath, [fileURLToPath(import.meta.url), '--worker']);
    const s = await new Promise<Series>((resolve, reject) => {
      const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'inherit'] });
      const out: Buffer[] = [];
      child.stdout.on('data', (c: Buffer) => out.push(c));
      child.on('error', reject);
      child.on('close', (code) => (code === 0 ? resolve(JSON.parse(Buffer.concat(out).toString())) : reject(new Error(`worker exited ${code}`))));
      child.stdin.end(JSON.stringify(inp));
    });
    const st = Object.fromEntries(Object.entries(s).map(([k, v]) => [k, stats(v)])) as Record<keyof Series, ReturnType<typeof stats>>;
    const meta = { date: new Date().toISOString(), cpus: os.cpus().length, node: process.version, n };
    if (json) {
      process.stdout.write(JSON.stringify({ ...meta, stats: st }, null, 2) + '\n');
      return;
    }
    const f = (x: number) => x.toFixed(2);
    const row = (label: string, a: ReturnType<typeof stats>, ref?: ReturnType<typeof stats>) =>
      `| ${label} | ${f(a.median)} | ${f(a.p90)} | ${f(a.min)} | ${ref ? `${(a.median / ref.median).toFixed(2)}×` : '1×'} |`;
    process.stdout.write(
      [
        `weft bench:cni — ${meta.date} — \`node dist/bench/cni.js --n ${n}\` — ${meta.cpus} CPU, Node ${meta.node}`,
        '',
        `CNI latency, exec to exit as a runtime sees it, median of ${n} (after ${WARMUP} warm-up), interleaved, run inside the host namespace.`,
        '',
        '| call | median ms | p90 ms | min ms | × reference |',
        '|---|---:|---:|---:|---:|',
        row('weft-cni ADD', st.weftAdd, st.refAdd),
        row('reference bridge + host-local ADD', st.refAdd),
        row('weft-cni DEL', st.weftDel, st.refDel),
        row('reference bridge + host-local DEL', st.refDel),
        row('(info) agent POST /cni ADD sent directly (no exec)', st.apiCni, st.refAdd),
        row('(info) agent POST /attach (no CNI)', st.apiAttach, st.refAdd),
        row('(info) weft-cni VERSION (start-up only)', st.weftVersion, st.refVersion),
        row('(info) reference bridge VERSION', st.refVersion),
        '',
        'Target: weft-cni ADD ≤ 1.0× the reference.',
        '',
      ].join('\n'),
    );
  } finally {
    await cleanup();
  }
}

main().catch((e: unknown) => {
  process.stderr.write(`bench:cni: ${(e as Error).message}\n`);
  process.exit(1);
});
