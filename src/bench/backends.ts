import '../backends/all.js';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { backendModule, implementedBackends } from '../backends/registry.js';
import { createNetwork } from '../config/registry.js';
import { openStore } from '../store/index.js';
import { AgentProcess } from '../testbed/agents.js';
import { createTestbed, type Testbed } from '../testbed/index.js';
import { UsageError } from '../util/errors.js';
import { measureRounds, pingRtts, summarise, type MeasuredPath, type NsRun } from './measure.js';

/**
 * `weft bench`: per backend, two hosts (namespaces on one underlay switch, as in `weft demo`) with a real
 * agent each and one container each; iperf3 and ping container → container, and the same between the two
 * hosts' underlay addresses. Everything is made under a fresh prefix and removed at the end, also on failure.
 */

export interface BenchOptions {
  backends?: string[];
  /** iperf3 seconds per run (plus one omitted). */
  seconds?: number;
  /** Interleaved rounds per path. */
  reps?: number;
  pings?: number;
  progress?: (line: string) => void;
}

export interface BenchRow {
  path: string;
  backend?: string;
  /** Own-hosts mode (`--peer`): the network measured. */
  network?: string;
  gbps: number;
  rttUs: number;
  /** Throughput and RTT relative to the underlay between the same kind of hosts. */
  gbpsVsUnderlay?: number;
  rttVsUnderlay?: number;
  /**
   * CPU cores busy per Gbit/s carried: on the whole machine in the namespace test bed (both hosts share its
   * kernel); on the sending host with `--peer`.
   */
  cpuPerGbps: number;
  mtu: number;
  encrypted: boolean;
}

/** Whether a backend module says its traffic is encrypted (a module declares `encrypted: true`). */
export function backendEncrypts(type: string): boolean {
  return backendModule(type).encrypted === true;
}

/** Adds the ratios to the underlay row (pure). */
export function withRatios(rows: BenchRow[]): BenchRow[] {
  const u = rows.find((r) => r.path === 'underlay');
  return rows.map((r) => (r === u || !u ? r : { ...r, gbpsVsUnderlay: r.gbps / u.gbps, rttVsUnderlay: r.rttUs / u.rttUs }));
}

/** The comparison as a Markdown table. */
export function formatBench(rows: BenchRow[], o: { seconds: number; reps: number; peer?: { from: string; to: string } }): string {
  const f = (x: number | undefined, d = 2) => (x === undefined ? '—' : x.toFixed(d));
  const lines = [
    `| path | Gbit/s | × underlay | RTT µs | RTT × underlay | CPU cores per Gbit/s | MTU | encrypted |`,
    `|---|---:|---:|---:|---:|---:|---:|---|`,
    ...rows.map((r) => `| ${r.path} | ${f(r.gbps)} | ${r.gbpsVsUnderlay === undefined ? '1' : f(r.gbpsVsUnderlay)}× | ${f(r.rttUs, 0)} | ${r.rttVsUnderlay === undefined ? '1' : f(r.rttVsUnderlay)}× | ${f(r.cpuPerGbps)} | ${r.mtu} | ${r.encrypted ? 'yes' : 'no'} |`),
    '',
    `iperf3 one TCP stream, ${o.seconds} s (+1 s omitted), median of ${o.reps} interleaved run(s); RTT median of the pings; ` +
      (o.peer
        ? `container → container from ${o.peer.from} to ${o.peer.to} (bench containers on the hosts' own agents); CPU is this (sending) host's.`
        : 'container → container across two hosts (namespaces on this machine).'),
  ];
  return lines.join('\n') + '\n';
}

interface Pair {
  backend: string;
  path: MeasuredPath;
  mtu: number;
}

export async function runBackendBench(o: BenchOptions = {}): Promise<BenchRow[]> {
  const say = o.progress ?? (() => {});
  const known = implementedBackends();
  const backends = o.backends?.length ? o.backends : known;
  for (const b of backends) if (!known.includes(b)) throw new UsageError(`unknown backend "${b}" (implemented: ${known.join(', ')})`);
  const seconds = o.seconds ?? 3;
  const reps = o.reps ?? 1;
  const pings = o.pings ?? 20;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-bench-'));
  const agents: AgentProcess[] = [];
  let tb: Testbed | undefined;
  try {
    tb = await createTestbed({ hosts: 0 });
    say(`test bed ${tb.prefix}-* (namespaces removed at the end)`);
    const exec: NsRun = (ns, argv) => tb!.exec(ns, argv, { allowFail: true });
    const pairs: Pair[] = [];
    for (const [i, backend] of backends.entries()) {
      say(`${backend}: two hosts, an agent and a container on each`);
      const storeUrl = `sqlite://${path.join(dir, `${backend}.db`)}`;
      const store = await openStore(storeUrl, { create: true });
      try {
        await createNetwork(store, 'bench', { Network: `10.${230 + i}.0.0/16`, SubnetLen: 24, Backend: { Type: backend } });
      } finally {
        await store.close();
      }
      const hosts = [await tb.addHost(), await tb.addHost()];
      const pa: AgentProcess[] = [];
      for (const h of hosts) {
        const a = new AgentProcess(h, { storeUrl, dir: path.join(dir, backend), args: ['--ui-addr', 'off'] });
        agents.push(a);
        pa.push(await a.start());
      }
      await Promise.all(pa.map((a) => a.waitForPeers(1, 15_000)));
      const ips: string[] = [];
      const nss: string[] = [];
      for (const a of pa) {
        const ns = await tb.addContainer(a.host, 'c1');
        ips.push((await a.attach(ns)).address.split('/')[0]!);
        nss.push(ns);
      }
      const mtu = (await pa[0]!.status())?.networks[0]?.mtu ?? 0;
      pairs.push({ backend, path: { key: backend, srcNs: nss[0]!, dstIp: ips[1]! }, mtu });
      tb.spawn(nss[1]!, ['iperf3', '-s', '-B', ips[1]!]);
    }
    const [h1, h2] = tb.hosts;
    const underlay: Pair = { backend: 'underlay', path: { key: 'underlay', srcNs: h1!.ns, dstIp: h2!.ip }, mtu: tb.mtu };
    tb.spawn(h2!.ns, ['iperf3', '-s', '-B', h2!.ip]);
    const all = [underlay, ...pairs];
    await sleep(300);
    for (const p of all) await pingRtts(exec, p.path, 2); // warm up neighbours; fails loudly on a broken path

    const res = await measureRounds(
      all.map((p) => p.path),
      exec,
      { reps, seconds, pings, say },
    );
    const rows: BenchRow[] = all.map((p) => ({
      path: p.backend === 'underlay' ? 'underlay' : `${p.backend} (weft)`,
      ...(p.backend === 'underlay' ? {} : { backend: p.backend }),
      ...summarise(res.get(p.path.key)!),
      mtu: p.mtu,
      encrypted: p.backend === 'underlay' ? false : backendEncrypts(p.backend),
    }));
    return withRatios(rows);
  } finally {
    say('cleaning up');
    for (const a of agents) await a.stop('SIGTERM').catch(() => {});
    await tb?.destroy().catch(() => {});
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
