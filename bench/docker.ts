import '../src/backends/all.js';
/**
 * `npm run bench:docker`: `docker run` to the container's first ping reply, median of N (20), for
 *  - weft: a container on a weft vxlan network (the Docker plugin) pinging a container on another host;
 *  - reference: a container on Docker's own default bridge pinging a container on the same host
 *    (no plugin, no second host: what `docker run` costs without weft).
 * Two test-bed hosts, each with a real dockerd (20.10) and a weft agent with --docker, one sqlite store.
 * The runs alternate weft/reference (the order flips every round) so the machine's noise hits both alike.
 * Timed from spawning `docker run` (attached) until the container prints that its ping was answered; the
 * container is removed outside the timing. Everything is removed at the end, by PID.
 *
 *   node dist/bench/docker.js [--n N] [--json]
 */
import { spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { median, pct } from '../src/bench/measure.js';
import { AgentProcess } from '../src/testbed/agents.js';
import { createTestbed, type Testbed, type TestbedHost } from '../src/testbed/index.js';
import { waitFor } from '../src/testbed/wait.js';
import { DOCKER_CLIENT, ensureBusyboxImage, startDockerd, type Dockerd } from '../test/helpers/dockerd.js';

const arg = (name: string) => {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : undefined;
};
const N = Number(arg('--n') ?? 20);
const WARMUP = 2;

/** ms from `docker run` to the container's "up" line (its first answered ping); the container is then removed. */
async function runToFirstPing(d: Dockerd, network: string, target: string, name: string): Promise<number> {
  const script = `until ping -c 1 -W 1 ${target} >/dev/null 2>&1; do :; done; echo up; exec sleep 60`;
  const t0 = performance.now();
  const child = spawn(DOCKER_CLIENT, ['-H', `unix://${d.socket}`, 'run', '--name', name, '--network', network, 'busybox:local', 'sh', '-c', script], { stdio: ['ignore', 'pipe', 'pipe'] });
  try {
    return await new Promise<number>((resolve, reject) => {
      let out = '';
      let err = '';
      const timer = setTimeout(() => reject(new Error(`${name}: no ping reply within 30 s: ${err}`)), 30_000);
      child.stdout!.on('data', (c) => {
        out += c;
        if (out.includes('up')) {
          clearTimeout(timer);
          resolve(performance.now() - t0);
        }
      });
      child.stderr!.on('data', (c) => (err += c));
      child.on('exit', (code) => {
        clearTimeout(timer);
        reject(new Error(`${name}: docker run exited ${code}: ${err}`));
      });
    });
  } finally {
    await d.docker(['rm', '-f', name], { timeoutMs: 30_000 });
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}

async function main(): Promise<void> {
  let tb: Testbed | undefined;
  const daemons: Dockerd[] = [];
  const agents: AgentProcess[] = [];
  const dir = await mkdtemp(path.join(os.tmpdir(), 'wbd-'));
  const cleanup = async () => {
    for (const d of daemons) await d.stop().catch(() => {});
    for (const a of agents) await a.stop().catch(() => {});
    await tb?.destroy().catch(() => {});
    await rm(dir, { recursive: true, force: true });
  };
  process.once('SIGINT', () => void cleanup().then(() => process.exit(130)));
  try {
    tb = await createTestbed({ hosts: 2 });
    const [h1, h2] = tb.hosts as [TestbedHost, TestbedHost];
    const storeUrl = `sqlite://${dir}/weft.db`;
    for (const [i, h] of [h1, h2].entries()) {
      const d = await startDockerd({ netns: h.ns, dir: path.join(dir, `d${i}`) });
      daemons.push(d);
      await ensureBusyboxImage(d);
      agents.push(await new AgentProcess(h, { storeUrl, dir, args: ['--docker', '--docker-plugin-dir', d.pluginDir, '--docker-host', `unix://${d.socket}`] }).start());
    }
    const [dA, dB] = daemons as [Dockerd, Dockerd];
    await dA.dockerOk(['network', 'create', '-d', 'weft', '--ipam-driver', 'weft', '--subnet', '10.44.0.0/16', 'benchnet']);
    await waitFor('benchnet on B', 20_000, async () => (await dB.docker(['network', 'inspect', 'benchnet'])).code === 0);
    await dB.dockerOk(['run', '-d', '--name', 'target', '--network', 'benchnet', 'busybox:local', 'sleep', '3600']);
    const weftTarget = await dB.dockerOk(['inspect', '-f', '{{.NetworkSettings.Networks.benchnet.IPAddress}}', 'target']);
    await dA.dockerOk(['run', '-d', '--name', 'target', 'busybox:local', 'sleep', '3600']);
    const bridgeTarget = await dA.dockerOk(['inspect', '-f', '{{.NetworkSettings.IPAddress}}', 'target']);

    const weft: number[] = [];
    const ref: number[] = [];
    for (let i = 0; i < N + WARMUP; i++) {
      const sides: Array<[string, string, number[]]> = [
        ['benchnet', weftTarget, weft],
        ['bridge', bridgeTarget, ref],
      ];
      if (i % 2) sides.reverse();
      for (const [net, target, out] of sides) {
        const ms = await runToFirstPing(dA, net, target, `b${i}-${net}`);
        if (i >= WARMUP) out.push(ms);
      }
    }
    const row = (label: string, xs: number[]) => ({ label, n: xs.length, medianMs: Math.round(median(xs)), p90Ms: Math.round(pct(xs, 90)), minMs: Math.round(Math.min(...xs)) });
    const rows = [row('weft network (plugin), ping to another host', weft), row("Docker's bridge network, ping on one host", ref)];
    const ratio = median(weft) / median(ref);
    if (process.argv.includes('--json')) {
      process.stdout.write(JSON.stringify({ testbed: tb.prefix, rows, ratio }, null, 2) + '\n');
    } else {
      process.stdout.write(`docker run → first ping reply (median of ${N}; test bed ${tb.prefix})\n`);
      for (const r of rows) process.stdout.write(`  ${r.label.padEnd(48)} median ${String(r.medianMs).padStart(5)} ms  p90 ${String(r.p90Ms).padStart(5)} ms  min ${String(r.minMs).padStart(5)} ms\n`);
      process.stdout.write(`  weft / bridge: ${ratio.toFixed(2)}×\n`);
    }
  } finally {
    await cleanup();
  }
}

main().catch((err) => {
  process.stderr.write(`bench:docker failed: ${err instanceof Error ? err.stack : String(err)}\n`);
  process.exit(1);
});
