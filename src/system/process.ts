import { spawn } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import type { Logger } from '../util/log.js';
import { inNetns, type NsOpts } from './netns.js';

/**
 * Supervision of one long-running helper process (bird, wireguard-go): start it, start it again with
 * backoff when it dies, stop it by PID. Generic: knows nothing about what it runs.
 *
 * With `detached` + `pidFile` the process runs in its own session and outlives the agent: a later
 * supervisor with the same command line adopts it from the PID file instead of starting a second one
 * (an adopted process is not our child, so its death is noticed by polling its PID).
 */
export interface SuperviseOptions extends NsOpts {
  cmd: string;
  args: readonly string[];
  /** For logs, e.g. "bird". */
  name: string;
  log: Logger;
  /** Keep running when the supervisor's process exits (own session, no pipes to us). */
  detached?: boolean;
  /** Where the PID is kept (mode 0600); needed to adopt a detached process later. */
  pidFile?: string;
  /** The process's stdout/stderr are appended here (mode 0600); discarded when absent. */
  logFile?: string;
  /** Told each time the process exits (also while stopping: `restarting` false). */
  onExit?: (info: { pid: number; code: number | null; signal: string | null; restarting: boolean }) => void;
  /** Told each time a process is started or adopted. */
  onStart?: (info: { pid: number; adopted: boolean }) => void;
  /** First and largest delay before a restart (default 500 ms … 30 s, doubling; reset after 30 s of uptime). */
  backoffMs?: { min: number; max: number };
  /** How often an adopted process's PID is checked (default 1000 ms). */
  pollMs?: number;
}

/** How a supervised process ended, in words for status and errors: "killed by SIGKILL", "exited with code 1". */
export function describeExit(info: { code: number | null; signal: string | null }): string {
  return info.signal ? `killed by ${info.signal}` : info.code === null ? 'ended' : `exited with code ${info.code}`;
}

export interface SupervisedProcess {
  /** PID of the current process, or undefined between a death and its restart. */
  readonly pid: number | undefined;
  /** How many times the process was started again after dying. */
  readonly restarts: number;
  /** True when the current process was found running (adopted), not started by us. */
  readonly adopted: boolean;
  running(): boolean;
  /** Stops supervising and terminates the process by PID (SIGTERM, SIGKILL after `graceMs`); removes the PID file. */
  stop(graceMs?: number): Promise<void>;
  /** Stops supervising but leaves the process running (detached mode: a later supervisor adopts it). */
  release(): void;
}

/** True when `pid` runs and is not a zombie. */
export function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    return !/^\d+ \(.*\) [ZX]/s.test(stat);
  } catch {
    return false;
  }
}

/** The argv of a running process, or undefined. */
function cmdline(pid: number): string[] | undefined {
  try {
    const raw = fs.readFileSync(`/proc/${pid}/cmdline`, 'utf8');
    return raw.split('\0').filter((s, i, a) => s !== '' || i < a.length - 1);
  } catch {
    return undefined;
  }
}

/** The PID in `pidFile` when that process still runs exactly `cmd args` (a recycled PID is not adopted). */
export function findRunning(pidFile: string, cmd: string, args: readonly string[]): number | undefined {
  const p = pidFileProcess(pidFile);
  if (!p || path.basename(p.argv[0] ?? '') !== path.basename(cmd)) return undefined;
  if (p.argv.length !== args.length + 1 || args.some((a, i) => p.argv[i + 1] !== a)) return undefined;
  return p.pid;
}

/** The live process a PID file names, with its argv (to tell an older instance run with other arguments). */
export function pidFileProcess(pidFile: string): { pid: number; argv: string[] } | undefined {
  let pid: number;
  try {
    pid = Number(fs.readFileSync(pidFile, 'utf8').trim());
  } catch {
    return undefined;
  }
  if (!Number.isInteger(pid) || pid <= 1 || !pidAlive(pid)) return undefined;
  const argv = cmdline(pid);
  return argv ? { pid, argv } : undefined;
}

/** Waits up to `ms` for `pid` to be gone. */
async function waitGone(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!pidAlive(pid)) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return !pidAlive(pid);
}

/** Terminates a process by PID: SIGTERM, then SIGKILL after `graceMs`. Resolves when it is gone. */
export async function terminatePid(pid: number, graceMs = 5000): Promise<void> {
  if (!pidAlive(pid)) return;
  try {
    process.kill(pid, 'SIGTERM');
  } catch {
    return;
  }
  if (await waitGone(pid, graceMs)) return;
  try {
    process.kill(pid, 'SIGKILL');
  } catch {
    /* gone */
  }
  await waitGone(pid, 2000);
}

export function superviseProcess(o: SuperviseOptions): SupervisedProcess {
  const min = o.backoffMs?.min ?? 500;
  const max = o.backoffMs?.max ?? 30_000;
  let pid: number | undefined;
  let adopted = false;
  let restarts = 0;
  let delay = min;
  let startedAt = 0;
  let done = false;
  let timer: NodeJS.Timeout | undefined;
  let poll: NodeJS.Timeout | undefined;

  const writePid = (p: number) => {
    if (!o.pidFile) return;
    fs.writeFileSync(o.pidFile, `${p}\n`, { mode: 0o600 });
  };

  const died = (code: number | null, signal: string | null) => {
    const was = pid;
    pid = undefined;
    if (poll) clearInterval(poll);
    poll = undefined;
    if (was === undefined) return;
    o.onExit?.({ pid: was, code, signal, restarting: !done });
    if (done) return;
    if (Date.now() - startedAt > 30_000) delay = min;
    o.log.error({ process: o.name, pid: was, code, signal, restartInMs: delay }, `${o.name} (pid ${was}) exited (${signal ?? `code ${code}`}); restarting it in ${delay} ms`);
    timer = setTimeout(() => {
      timer = undefined;
      restarts++;
      launch();
    }, delay);
    timer.unref?.();
    delay = Math.min(max, delay * 2);
  };

  /** Polls a process that is not our child (adopted). */
  const watchPid = (p: number) => {
    poll = setInterval(() => {
      if (pid === p && !pidAlive(p)) died(null, null);
    }, o.pollMs ?? 1000);
    poll.unref?.();
  };

  const launch = () => {
    if (done) return;
    const [cmd, args] = inNetns(o.netns, o.cmd, o.args);
    let out: number | 'ignore' = 'ignore';
    if (o.logFile) out = fs.openSync(o.logFile, 'a', 0o600);
    let child;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', out, out], detached: o.detached ?? false });
    } finally {
      if (typeof out === 'number') fs.closeSync(out);
    }
    startedAt = Date.now();
    adopted = false;
    child.on('error', (err) => {
      o.log.error({ process: o.name, err: err.message }, `cannot start ${o.name}`);
      if (child.pid === undefined) {
        pid = -1; // so died() schedules a retry
        died(null, null);
      }
    });
    if (child.pid === undefined) return;
    const p = child.pid;
    pid = p;
    writePid(p);
    if (o.detached) child.unref();
    child.on('exit', (code, signal) => {
      if (pid === p) died(code, signal);
    });
    o.log.info({ process: o.name, pid: p, cmd: [o.cmd, ...o.args].join(' ') }, `${o.name} started (pid ${p})`);
    o.onStart?.({ pid: p, adopted: false });
  };

  const found = o.pidFile ? findRunning(o.pidFile, o.cmd, o.args) : undefined;
  if (found !== undefined) {
    pid = found;
    adopted = true;
    startedAt = Date.now();
    watchPid(found);
    o.log.info({ process: o.name, pid: found }, `${o.name} already running (pid ${found}): adopted`);
    o.onStart?.({ pid: found, adopted: true });
  } else launch();

  return {
    get pid() {
      return pid !== undefined && pid > 0 ? pid : undefined;
    },
    get restarts() {
      return restarts;
    },
    get adopted() {
      return adopted;
    },
    running: () => pid !== undefined && pid > 0 && pidAlive(pid),
    async stop(graceMs = 5000) {
      done = true;
      if (timer) clearTimeout(timer);
      if (poll) clearInterval(poll);
      const p = pid;
      if (p !== undefined && p > 0) await terminatePid(p, graceMs);
      pid = undefined;
      if (o.pidFile) fs.rmSync(o.pidFile, { force: true });
    },
    release() {
      done = true;
      if (timer) clearTimeout(timer);
      if (poll) clearInterval(poll);
    },
  };
}
