/**
 * Where an attach's time goes: builds one test-bed host with a weft agent, traces the agent with
 * `strace -f` (process spawns and file syncs) during N serial API attaches, and prints per attach the
 * wall time, the processes it spawned and the time from request to each spawn.
 *   node dist/bench/profile-attach.js [N (10)]
 * Cleans up like bench/main.ts: its own prefix, processes stopped by PID.
 */
import '../src/backends/all.js';
import { spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { createNetwork } from '../src/config/registry.js';
import { openStore } from '../src/store/index.js';
import { ipBatch } from '../src/system/ip.js';
import { AgentProcess } from '../src/testbed/agents.js';
import { createTestbed } from '../src/testbed/index.js';

async function main(): Promise<void> {
  const n = Math.min(50, Math.max(1, Number(process.argv[2] ?? 10)));
  const tb = await createTestbed({});
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), `weft-prof-${tb.prefix}-`));
  let agent: AgentProcess | undefined;
  let strace: ReturnType<typeof spawn> | undefined;
  const stop = async () => {
    if (strace?.pid && strace.exitCode === null && strace.signalCode === null) {
      try {
        process.kill(strace.pid, 'SIGINT');
      } catch {
        /* gone */
      }
    }
    await agent?.stop().catch(() => {});
    await tb.destroy();
    fs.rmSync(dir, { recursive: true, force: true });
  };
  process.on('SIGINT', () => void stop().finally(() => process.exit(130)));
  try {
    const storeUrl = `sqlite://${path.join(dir, 'p.db')}`;
    const store = await openStore(storeUrl, { create: true });
    await createNetwork(store, 'bench', { Network: '10.248.0.0/16', SubnetLen: 24, Backend: { Type: 'host-gw' } });
    await store.close();
    const h = await tb.addHost();
    agent = await new AgentProcess(h, { storeUrl, dir }).start();
    await agent.waitForPeers(0);
    const nss = Array.from({ length: n + 1 }, (_, i) => `${h.ns}-p${i}`);
    await ipBatch(nss.map((x) => `netns add ${x}`));
    h.containers.push(...nss);
    await agent.attach(nss[0]!); // warm-up
    const traceFile = path.join(dir, 'strace.txt');
    // the agent and the helpers it keeps (the warm bash runner, weft-netlink, ebtables-restore): a process
    // spawned by any of them during an attach is seen, not only the agent's own
    const pids = [agent.pid!, ...descendants(agent.pid!)];
    strace = spawn('strace', ['-f', '-ttt', '-e', 'trace=execve,fsync,fdatasync', '-o', traceFile, ...pids.flatMap((p) => ['-p', String(p)])], { stdio: 'ignore' });
    console.log(`tracing the agent (pid ${agent.pid}) and its ${pids.length - 1} helper processes: ${pids.slice(1).map((p) => `${p} ${comm(p)}`).join(', ') || 'none'}`);
    await new Promise((r) => setTimeout(r, 500));
    const marks: Array<{ t0: number; t1: number }> = [];
    for (const ns of nss.slice(1)) {
      const t0 = Date.now() / 1000;
      const p0 = performance.now();
      await agent.attach(ns);
      marks.push({ t0, t1: t0 + (performance.now() - p0) / 1000 });
    }
    await new Promise((r) => setTimeout(r, 300));
    process.kill(strace.pid!, 'SIGINT');
    await new Promise((r) => strace!.once('close', r));
    const events = fs
      .readFileSync(traceFile, 'utf8')
      .split('\n')
      // successful calls only (execvp tries every PATH entry: the misses end in ENOENT)
      .map((l) => /^(\d+)\s+([\d.]+)\s+(\w+)\((.*) = 0$/.exec(l))
      .filter((m): m is RegExpExecArray => !!m)
      .map((m) => ({ t: Number(m[2]), call: m[3]!, arg: m[4]! }));
    let spawns = 0;
    let syncs = 0;
    for (const [i, m] of marks.entries()) {
      const inside = events.filter((e) => e.t >= m.t0 && e.t <= m.t1);
      const ex = inside.filter((e) => e.call === 'execve');
      spawns += ex.length;
      syncs += inside.filter((e) => e.call !== 'execve').length;
      const desc = ex.map((e) => `+${((e.t - m.t0) * 1000).toFixed(1)}ms ${(/\[(.*?)\]/.exec(e.arg)?.[1] ?? e.arg).replace(/"/g, '').slice(0, 70)}`);
      console.log(`attach ${i + 1}: ${((m.t1 - m.t0) * 1000).toFixed(1)} ms (traced), ${ex.length} execve: ${desc.join(' | ')}`);
    }
    console.log(`per attach: ${(spawns / n).toFixed(1)} execve, ${(syncs / n).toFixed(1)} fsync/fdatasync`);
  } finally {
    await stop();
  }
}

function comm(pid: number): string {
  try {
    return fs.readFileSync(`/proc/${pid}/comm`, 'utf8').trim();
  } catch {
    return '?';
  }
}

/** Every process below `pid` (from /proc/PID/stat's parent field). */
function descendants(pid: number): number[] {
  const parent = new Map<number, number>();
  for (const d of fs.readdirSync('/proc')) {
    if (!/^\d+$/.test(d)) continue;
    try {
      const stat = fs.readFileSync(`/proc/${d}/stat`, 'utf8');
      parent.set(Number(d), Number(stat.slice(stat.lastIndexOf(')') + 2).split(' ')[1]));
    } catch {
      /* gone */
    }
  }
  const out: number[] = [];
  const walk = (p: number) => {
    for (const [c, pp] of parent) if (pp === p) (out.push(c), walk(c));
  };
  walk(pid);
  return out;
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
