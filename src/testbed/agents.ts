import { PATIENCE } from './wait.js';
import { execFile, spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { callAgent } from '../agent/client.js';
import type { AgentStatus, Endpoint } from '../agent/types.js';
import { inNetns } from '../system/netns.js';
import { pidAlive } from '../system/process.js';
import { WeftError } from '../util/errors.js';
import { packageRoot } from '../util/package-root.js';
import type { TestbedHost } from './index.js';

/** The weft executable of this checkout (bin/weft), so tests and the demo run the code they ship. */
export const WEFT_BIN = path.join(packageRoot(import.meta.url), 'bin/weft');

export interface CliResult {
  code: number;
  stdout: string;
  stderr: string;
}

/** Runs this checkout's `weft` CLI; resolves with its exit code and output (never rejects). */
export function runWeft(args: readonly string[], o: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, [WEFT_BIN, ...args], { env: o.env ?? process.env, timeout: o.timeoutMs ?? 0 }, (err, stdout, stderr) => {
      const c = (err as NodeJS.ErrnoException | null)?.code;
      resolve({ code: err ? (typeof c === 'number' ? c : 1) : 0, stdout, stderr });
    });
  });
}

export interface AgentProcessOptions {
  storeUrl: string;
  /** Directory for this host's state, API socket and log. */
  dir: string;
  leaseTtlSeconds?: number;
  graceSeconds?: number;
  /** Extra `weft agent` flags. */
  args?: string[];
  /** Let the agent outlive this process (the demo); otherwise it is a child killed with it. */
  detached?: boolean;
}

/**
 * A `weft agent` running inside a test-bed host's namespace as its own process (as on a real host), with
 * its state dir, socket and log under `dir`. Started and stopped by PID.
 */
export class AgentProcess {
  pid = 0;
  readonly api: string;
  readonly stateDir: string;
  readonly logFile: string;

  constructor(
    readonly host: TestbedHost,
    readonly opts: AgentProcessOptions,
  ) {
    this.stateDir = path.join(opts.dir, host.id);
    this.api = path.join(this.stateDir, 'weft.sock');
    this.logFile = path.join(this.stateDir, 'agent.log');
  }

  /** Starts the agent and waits until its API answers. */
  async start(): Promise<this> {
    fs.mkdirSync(this.stateDir, { recursive: true });
    const args = [
      WEFT_BIN, 'agent',
      '--store', this.opts.storeUrl,
      '--iface', this.host.iface,
      '--state-dir', this.stateDir,
      '--api', this.api,
      '--host-id', this.host.id,
      ...(this.opts.leaseTtlSeconds ? ['--lease-ttl', String(this.opts.leaseTtlSeconds)] : []),
      ...(this.opts.graceSeconds ? ['--grace', String(this.opts.graceSeconds)] : []),
      ...(this.opts.args ?? []),
    ];
    const [cmd, argv] = inNetns(this.host.ns, process.execPath, args);
    const log = fs.openSync(this.logFile, 'a');
    const child = spawn(cmd, argv, { stdio: ['ignore', log, log], detached: this.opts.detached ?? false });
    fs.closeSync(log);
    if (!child.pid) throw new WeftError(`cannot start the agent on ${this.host.id}`);
    this.pid = child.pid;
    if (this.opts.detached) child.unref();
    await this.waitFor(async () => (await this.status()) !== undefined, 10_000, 'its API to answer');
    return this;
  }

  async status(): Promise<AgentStatus | undefined> {
    try {
      return await callAgent<AgentStatus>(this.api, 'GET', '/status');
    } catch {
      return undefined;
    }
  }

  /** Waits until every network on this host has `peers` peers and its backend says it is healthy (bgp: sessions up, routes in). */
  async waitForPeers(peers: number, timeoutMs = 10_000): Promise<void> {
    await this.waitFor(
      async () => {
        const st = await this.status();
        return !!st && st.networks.length > 0 && st.networks.every((n) => n.peers.length === peers && n.status?.healthy !== false);
      },
      timeoutMs,
      `${peers} peers`,
    );
  }

  attach(container: string, extra: { network?: string; address?: string } = {}): Promise<Endpoint> {
    return callAgent<Endpoint>(this.api, 'POST', '/attach', { container, ...extra });
  }

  /** Stops the process: SIGTERM (clean stop) or SIGKILL (a crash); waits until it is gone. */
  async stop(signal: 'SIGTERM' | 'SIGKILL' = 'SIGTERM'): Promise<void> {
    if (!this.pid || !alive(this.pid)) return;
    process.kill(this.pid, signal);
    await this.waitFor(async () => !alive(this.pid), 5_000, 'the agent to exit').catch(() => {
      if (alive(this.pid)) process.kill(this.pid, 'SIGKILL');
    });
  }

  private async waitFor(check: () => Promise<boolean>, timeoutMs: number, what: string): Promise<void> {
    const until = Date.now() + timeoutMs * PATIENCE;
    while (Date.now() < until) {
      if (await check()) return;
      if (this.pid && !alive(this.pid)) {
        throw new WeftError(`agent on ${this.host.id} exited while waiting for ${what}; log: ${tail(this.logFile)}`);
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new WeftError(`agent on ${this.host.id}: timed out waiting for ${what}; log: ${tail(this.logFile)}`);
  }
}

/** True when `pid` runs and is not a zombie (a zombie child counts as gone). */
export const alive = pidAlive;

function tail(file: string): string {
  try {
    return fs.readFileSync(file, 'utf8').trim().split('\n').slice(-3).join(' | ');
  } catch {
    return '(no log)';
  }
}
