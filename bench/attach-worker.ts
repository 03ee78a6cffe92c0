/**
 * Runs inside a test-bed host's network namespace (started by bench/main.ts with nsenter), where that
 * host's `weft agent` runs: times serial attaches through the agent's API next to the reference CNI
 * `bridge` plugin, interleaved (weft, cni, weft, cni, …), plus `weft attach` through the CLI.
 * Input: one JSON object (WorkerInput) on stdin. Output: one JSON object (WorkerOutput) on stdout.
 * Every namespace it attaches was made before it started, so `ip netns add` is in neither number.
 */
import { spawn } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { callAgent } from '../src/agent/client.js';
import type { Endpoint } from '../src/agent/types.js';

export interface WorkerInput {
  api: string;
  /** Namespaces for weft's API attaches (warm-up ones first). */
  weftNs: string[];
  /** Namespaces for the CNI plugin (same count as weftNs). */
  cniNs: string[];
  /** Namespaces for `weft attach` through the CLI. */
  cliNs: string[];
  warmup: number;
  cniPlugin: string;
  cniPath: string;
  cniConf: Record<string, unknown>;
  weftBin: string;
}

export interface WorkerOutput {
  weftMs: number[];
  cniMs: number[];
  cliMs: number[];
  sample: { weft?: Endpoint; cni?: unknown };
}

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

/** Spawns a command, feeds stdin, resolves with stdout when it exits 0; rejects otherwise. */
function exec(cmd: string, args: string[], o: { env?: NodeJS.ProcessEnv; input?: string } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { env: o.env, stdio: [o.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', reject);
    child.on('close', (code) => {
      const stdout = Buffer.concat(out).toString();
      if (code === 0) resolve(stdout);
      else reject(new Error(`${cmd} exited ${code}: ${Buffer.concat(err).toString().trim() || stdout.trim()}`));
    });
    if (o.input !== undefined) {
      child.stdin!.on('error', () => {});
      child.stdin!.end(o.input);
    }
  });
}

async function main(): Promise<void> {
  const inp = JSON.parse(await readStdin()) as WorkerInput;
  const out: WorkerOutput = { weftMs: [], cniMs: [], cliMs: [], sample: {} };
  const conf = JSON.stringify(inp.cniConf);
  const cni = (ns: string) =>
    exec(inp.cniPlugin, [], {
      input: conf,
      env: {
        PATH: process.env.PATH,
        CNI_COMMAND: 'ADD',
        CNI_CONTAINERID: `bench-${ns}`,
        CNI_NETNS: `/run/netns/${ns}`,
        CNI_IFNAME: 'eth0',
        CNI_PATH: inp.cniPath,
      },
    });
  const n = Math.min(inp.weftNs.length, inp.cniNs.length);
  for (let i = 0; i < n; i++) {
    const timed = i >= inp.warmup;
    // alternate which goes first, so neither always follows the other
    const order: Array<'weft' | 'cni'> = i % 2 === 0 ? ['weft', 'cni'] : ['cni', 'weft'];
    for (const which of order) {
      if (which === 'weft') {
        const t0 = performance.now();
        const ep = await callAgent<Endpoint>(inp.api, 'POST', '/attach', { container: inp.weftNs[i] });
        const dt = performance.now() - t0;
        if (timed) out.weftMs.push(dt);
        out.sample.weft ??= ep;
      } else {
        const t0 = performance.now();
        const res = await cni(inp.cniNs[i]!);
        const dt = performance.now() - t0;
        if (timed) out.cniMs.push(dt);
        out.sample.cni ??= JSON.parse(res);
      }
    }
  }
  for (const ns of inp.cliNs) {
    const t0 = performance.now();
    await exec(process.execPath, [inp.weftBin, 'attach', ns, '--api', inp.api, '--json']);
    out.cliMs.push(performance.now() - t0);
  }
  process.stdout.write(JSON.stringify(out) + '\n');
}

main().catch((e: unknown) => {
  process.stderr.write(`attach worker: ${(e as Error).message}\n`);
  process.exit(1);
});
