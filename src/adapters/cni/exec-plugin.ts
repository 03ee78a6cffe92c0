import { spawn } from 'node:child_process';
import { inNetns } from '../../system/netns.js';

/** One plugin call as a runtime makes it: CNI_* variables, config on stdin. */
export interface PluginCall {
  command: string;
  containerId?: string;
  netns?: string;
  ifname?: string;
  args?: string;
  path?: string;
  /** Written to stdin as it is (a string) or as JSON. */
  config?: unknown;
}

export interface PluginOutcome {
  code: number;
  stdout: string;
  stderr: string;
  /** stdout parsed, when it is JSON. */
  json?: any;
  ms: number;
}

/** Runs a CNI plugin executable the way libcni does (tests and bench/cni.ts drive weft-cni and the reference plugins with it). */
export function execPlugin(plugin: string, call: PluginCall, o: { timeoutMs?: number; hostNetns?: string } = {}): Promise<PluginOutcome> {
  const env: NodeJS.ProcessEnv = { PATH: process.env.PATH, CNI_COMMAND: call.command };
  if (call.containerId !== undefined) env.CNI_CONTAINERID = call.containerId;
  if (call.netns !== undefined) env.CNI_NETNS = call.netns;
  if (call.ifname !== undefined) env.CNI_IFNAME = call.ifname;
  if (call.args !== undefined) env.CNI_ARGS = call.args;
  env.CNI_PATH = call.path ?? '/usr/lib/cni';
  const input = call.config === undefined ? '' : typeof call.config === 'string' ? call.config : JSON.stringify(call.config);
  return new Promise((resolve, reject) => {
    const t0 = process.hrtime.bigint();
    // A runtime runs plugins in the host's namespace; a test host is a namespace of its own.
    const [cmd, argv] = o.hostNetns ? inNetns(o.hostNetns, plugin, []) : [plugin, []];
    const child = spawn(cmd, argv, { env, stdio: ['pipe', 'pipe', 'pipe'], timeout: o.timeoutMs ?? 60_000 });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (c: Buffer) => out.push(c));
    child.stderr.on('data', (c: Buffer) => err.push(c));
    child.on('error', reject);
    child.stdin.on('error', () => {}); // a plugin that exits before reading stdin
    child.on('close', (code) => {
      const ms = Number(process.hrtime.bigint() - t0) / 1e6;
      const stdout = Buffer.concat(out).toString('utf8');
      let json: unknown;
      try {
        json = stdout.trim() ? JSON.parse(stdout) : undefined;
      } catch {
        /* not JSON */
      }
      resolve({ code: code ?? -1, stdout, stderr: Buffer.concat(err).toString('utf8'), json, ms });
    });
    child.stdin.end(input);
  });
}
