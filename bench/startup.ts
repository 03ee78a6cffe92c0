/**
 * Start-up costs (issue 15 item 4), interleaved with a bare `node -e 0` so the noisy machine's load shows:
 *  - `weft agent` on a fresh sqlite store: wall time from spawn to its "ready" line, RSS then (VmRSS, VmHWM),
 *    and the time from SIGTERM to exit;
 *  - `weft attach` CLI against that agent once it has settled, end to end (a fresh namespace each time).
 * Node 20 reads and parses the certificates named by NODE_EXTRA_CA_CERTS at every start, before any script runs
 * (~70 ms on this machine, where the sandbox sets it): the report says whether it was set.
 *   node dist/bench/startup.js [--reps N (7)] [--json]
 * Runs in one namespace of its own (prefix wst + random), deleted at the end, agents stopped by PID.
 */
import { spawn, spawnSync } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { performance } from 'node:perf_hooks';
import { openStore } from '../src/store/index.js';
import { WEFT_BIN as OWN_BIN } from '../src/testbed/agents.js';

/** Another checkout's bin/weft to compare with (e.g. main before a change). */
const WEFT_BIN = process.env.WEFT_BENCH_BIN ?? OWN_BIN;

const reps = Number(process.argv[process.argv.indexOf('--reps') + 1] || 7) || 7;
const json = process.argv.includes('--json');
const tag = `wst${Math.random().toString(36).slice(2, 7)}`;
const ns = `${tag}-h`;
const dir = fs.mkdtempSync(path.join(os.tmpdir(), `weft-startup-${tag}-`));
const enter = (argv: string[]) => ['nsenter', [`--net=/run/netns/${ns}`, ...argv]] as const;

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
}

/** CPU time (user+sys, ms) of a command run to completion, from bash's `times` (load-independent, unlike wall time). */
function cpuRun(argv: string[]): number {
  const [cmd, args] = enter(argv);
  const line = [cmd, ...args].map((a) => `'${a.replace(/'/g, `'\\''`)}'`).join(' ');
  const r = spawnSync('bash', ['-c', `${line} >/dev/null 2>&1; times`], { encoding: 'utf8' });
  const kids = r.stdout.trim().split('\n')[1] ?? '';
  const secs = [...kids.matchAll(/(\d+)m([\d.]+)s/g)].map((m) => Number(m[1]) * 60 + Number(m[2]));
  return (secs[0]! + secs[1]!) * 1000;
}

/** utime+stime of a live process (all threads), ms. */
function cpuOf(pid: number): number {
  const s = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
  const f = s.slice(s.lastIndexOf(')') + 2).split(' ');
  return ((Number(f[11]) + Number(f[12])) * 1000) / 100;
}

/** Wall time of a command run to completion, ms. */
function timeRun(argv: string[]): number {
  const [cmd, args] = enter(argv);
  const t0 = performance.now();
  const r = spawnSync(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  const dt = performance.now() - t0;
  if (r.status !== 0) throw new Error(`${argv.join(' ')} failed: ${r.stderr.toString().trim()}`);
  return dt;
}

function statusKb(pid: number, field: string): number {
  const m = new RegExp(`^${field}:\\s+(\\d+) kB`, 'm').exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) : NaN;
}

interface AgentRun {
  readyMs: number;
  readyCpuMs: number;
  rssMb: number;
  hwmMb: number;
  stopMs: number;
}

async function agentOnce(i: number, between?: (api: string) => Promise<void>): Promise<AgentRun> {
  const state = path.join(dir, `a${i}`);
  fs.mkdirSync(state, { recursive: true });
  // Agents never create the database (only `weft network create` does): an empty one, made here.
  await (await openStore(`sqlite://${state}/w.db`, { create: true })).close();
  const api = path.join(state, 'weft.sock');
  const [cmd, args] = enter([process.execPath, WEFT_BIN, 'agent', '--store', `sqlite://${state}/w.db`, '--iface', 'lo', '--state-dir', state, '--api', api, '--host-id', `h${i}`, '--ui-addr', 'off']);
  const t0 = performance.now();
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()));
  const readyMs = await new Promise<number>((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
      if (out.includes('ready ')) resolve(performance.now() - t0);
    });
    child.once('close', (code) => reject(new Error(`agent exited ${code} before ready: ${err.slice(-500)}`)));
  });
  // nsenter execs node: the child's PID is the agent's
  const readyCpuMs = cpuOf(child.pid!);
  const rssMb = statusKb(child.pid!, 'VmRSS') / 1024;
  const hwmMb = statusKb(child.pid!, 'VmHWM') / 1024;
  if (between) await between(api);
  const t1 = performance.now();
  child.kill('SIGTERM');
  await new Promise((r) => child.once('close', r));
  return { readyMs, readyCpuMs, rssMb, hwmMb, stopMs: performance.now() - t1 };
}

async function main(): Promise<void> {
  spawnSync('ip', ['netns', 'add', ns]);
  spawnSync('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  const bare: number[] = [];
  const runs: AgentRun[] = [];
  const cliErr: number[] = [];
  const bareCpu: number[] = [];
  const cliCpu: number[] = [];
  const cli: number[] = [];
  const cliNs: string[] = [];
  try {
    for (let i = 0; i < reps; i++) {
      bare.push(timeRun([process.execPath, '-e', '0']));
      bareCpu.push(cpuRun([process.execPath, '-e', '0']));
      cliCpu.push(cpuRun([process.execPath, WEFT_BIN, 'attach', 'c', '--api', path.join(dir, 'none.sock')]));
      // the CLI's fast path is only as cheap as what it loads: no agent, so no agent work in the number
      const t0 = performance.now();
      spawnSync(...enter([process.execPath, WEFT_BIN, 'status', '--api', path.join(dir, 'none.sock')]), { stdio: 'ignore' });
      cliErr.push(performance.now() - t0);
      runs.push(
        await agentOnce(i, async (api) => {
          // `weft attach` CLI end to end against a settled agent (as a runtime meets it), three times: one fresh
          // namespace each. The agent has no network, so it refuses at once: the figure is the CLI's own cost
          // plus one API call (the agent's work for a real attach is bench/cni.ts's "POST /attach" row).
          await new Promise((r) => setTimeout(r, 1000));
          for (let k = 0; k < 3; k++) {
            const c = `${tag}-c${i}-${k}`;
            spawnSync('ip', ['netns', 'add', c]);
            cliNs.push(c);
            const t = performance.now();
            spawnSync(...enter([process.execPath, WEFT_BIN, 'attach', c, '--api', api]), { stdio: 'ignore' });
            cli.push(performance.now() - t);
          }
        }),
      );
    }
  } finally {
    for (const c of cliNs) spawnSync('ip', ['netns', 'del', c]);
    spawnSync('ip', ['netns', 'del', ns]);
    fs.rmSync(dir, { recursive: true, force: true });
  }
  const res = {
    reps,
    nodeExtraCaCerts: process.env.NODE_EXTRA_CA_CERTS ?? null,
    loadavg: os.loadavg().map((x) => x.toFixed(2)).join(' '),
    nodeBareMs: median(bare),
    agentReadyMs: median(runs.map((r) => r.readyMs)),
    agentRssMb: median(runs.map((r) => r.rssMb)),
    agentHwmMb: median(runs.map((r) => r.hwmMb)),
    agentStopMs: median(runs.map((r) => r.stopMs)),
    cliNoAgentMs: median(cliErr),
    cliAttachMs: median(cli),
    nodeBareCpuMs: median(bareCpu),
    cliAttachNoAgentCpuMs: median(cliCpu),
    agentReadyCpuMs: median(runs.map((r) => r.readyCpuMs)),
  };
  if (json) process.stdout.write(JSON.stringify(res, null, 2) + '\n');
  else {
    const f = (x: number) => x.toFixed(1);
    console.log(`startup (median of ${reps}, load ${res.loadavg}), inside one namespace via nsenter; NODE_EXTRA_CA_CERTS ${res.nodeExtraCaCerts ? `set (${res.nodeExtraCaCerts}): every node start reads it` : 'unset'}:`);
    console.log(`  CPU (user+sys): node -e 0 ${f(res.nodeBareCpuMs)} ms; weft attach, no agent ${f(res.cliAttachNoAgentCpuMs)} ms (${(res.cliAttachNoAgentCpuMs / res.nodeBareCpuMs).toFixed(2)}× node); weft agent until ready ${f(res.agentReadyCpuMs)} ms (${(res.agentReadyCpuMs / res.nodeBareCpuMs).toFixed(2)}× node)`);
    console.log(`  node -e 0                     ${f(res.nodeBareMs)} ms`);
    console.log(`  weft status, no agent (error) ${f(res.cliNoAgentMs)} ms  (${(res.cliNoAgentMs / res.nodeBareMs).toFixed(2)}× node)`);
    console.log(`  weft attach CLI, settled agent (refused: no network) ${f(res.cliAttachMs)} ms  (${(res.cliAttachMs / res.nodeBareMs).toFixed(2)}× node)`);
    console.log(`  weft agent ready (sqlite)     ${f(res.agentReadyMs)} ms  (${(res.agentReadyMs / res.nodeBareMs).toFixed(2)}× node); RSS ${f(res.agentRssMb)} MB, peak ${f(res.agentHwmMb)} MB; SIGTERM→exit ${f(res.agentStopMs)} ms`);
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
