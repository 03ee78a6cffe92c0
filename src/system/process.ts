import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { WeftError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { inNetns, type NsOpts } from './netns.js';

/**
 * Supervised helper processes of a data plane (wireguard-go, bird, …): start, restart with backoff when
 * they die, stop by PID. Never by name: only the PID we started (or adopted through our own PID file).
 *
 * Two lifetimes:
 *  - attached (no pidFile): the child dies with the supervisor's stop(); it does not outlive `release()` either.
 *  - detached (pidFile): the child outlives the agent (SIGTERM or SIGKILL to the agent's PID, a crash); the
 *    next supervisor started with the same pidFile adopts it (same PID, no restart) and watches it by polling,
 *    since it is no longer our child. The PID file holds "PID STARTTIME" so a recycled PID is never adopted.
 *    It stays in the agent's session and process group unless newSession: a signal to the whole group (Ctrl-C
 *    on an agent in a terminal) reaches it too. Measured here: with the kernel's autogroup scheduling a process
 *    in a session of its own gets a separate CPU share, and wireguard-go in its own session ran at 0.55–0.85×
 *    of the same wireguard-go in the caller's session on this loaded machine.
 */

export interface SuperviseOptions {
  /** Short name for logs, e.g. "wireguard-go weftwg-1a2b3c4d". */
  name: string;
  cmd: string;
  args: readonly string[];
  log: Logger;
  /** Namespace to run in (absent: the caller's). */
  sys?: NsOpts;
  env?: NodeJS.ProcessEnv;
  /** Detached mode: the child outlives the supervisor and is adopted through this file (written mode 0600). */
  pidFile?: string;
  /** Run the child in a session (and process group) of its own: group signals do not reach it. Default false. */
  newSession?: boolean;
  /** The child's stdout and stderr (appended, mode 0600); default: discarded. */
  logFile?: string;
  /**
   * Called after every start or adoption (configure the process; e.g. `wg set` after wireguard-go came up).
   * A failure stops that instance and counts as a crash (restart with backoff); on the first start it rejects.
   */
  onStart?: (pid: number, how: 'started' | 'adopted' | 'restarted') => Promise<void>;
  /** Told each time the process ends on its own (not by stop()). */
  onExit?: (why: string) => void;
  /** Restart delay: starts at initialMs, doubles up to maxMs; reset after the process ran for resetAfterMs. */
  backoff?: { initialMs?: number; maxMs?: number; resetAfterMs?: number };
  /** How often an adopted (not our child) process is checked for life (ms, default 1000). */
  pollMs?: number;
}

export interface Supervised {
  /** PID of the running instance, undefined while it is down. */
  readonly pid: number | undefined;
  readonly running: boolean;
  /** Whether the current instance was adopted from an earlier supervisor (agent) rather than started. */
  readonly adopted: boolean;
  /** Times the process was started again after it died. */
  readonly restarts: number;
  /** Why the last instance ended, if one did. */
  readonly lastExit: string | undefined;
  /** Stops supervising and leaves the process running (detached mode); an attached child is stopped. */
  release(): Promise<void>;
  /** Stops supervising and ends the process by PID: SIGTERM, then SIGKILL after graceMs. Removes the PID file. */
  stop(graceMs?: number): Promise<void>;
}

/** Is `pid` a live process (not a zombie)? */
export function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
  const st = procStat(pid);
  return st !== undefined && st.state !== 'Z';
}

/** State letter and start time (clock ticks since boot) of a process, from /proc/PID/stat. */
function procStat(pid: number): { state: string; start: string } | undefined {
  try {
    const text = fs.readFileSync(`/proc/${pid}/stat`, 'utf8');
    // "PID (comm) S ..." — comm may contain spaces and parentheses: split after the last ')'
    const rest = text.slice(text.lastIndexOf(')') + 2).split(' ');
    return { state: rest[0]!, start: rest[19]! };
  } catch {
    return undefined;
  }
}

/** The PID recorded in a PID file when that very process (same start time) still runs; else undefined. */
export function livePidFromFile(pidFile: string): number | undefined {
  let text: string;
  try {
    text = fs.readFileSync(pidFile, 'utf8');
  } catch {
    return undefined;
  }
  const m = /^(\d+) (\d+)\s*$/.exec(text);
  if (!m) return undefined;
  const pid = Number(m[1]);
  const st = procStat(pid);
  return st && st.state !== 'Z' && st.start === m[2] ? pid : undefined;
}

function writePidFile(pidFile: string, pid: number): void {
  const st = procStat(pid);
  const tmp = `${pidFile}.${process.pid}.tmp`;
  fs.writeFileSync(tmp, `${pid} ${st?.start ?? 0}\n`, { mode: 0o600 });
  fs.renameSync(tmp, pidFile);
}

/** Ends a process by PID: SIGTERM, wait up to graceMs, then SIGKILL; resolves once it is gone. */
export async function killPid(pid: number, graceMs = 3000): Promise<void> {
  const signal = (s: NodeJS.Signals) => {
    try {
      process.kill(pid, s);
    } catch {
      /* already gone */
    }
  };
  signal('SIGTERM');
  const until = Date.now() + graceMs;
  while (processAlive(pid) && Date.now() < until) await sleep(25);
  if (processAlive(pid)) {
    signal('SIGKILL');
    const hard = Date.now() + 2000;
    while (processAlive(pid) && Date.now() < hard) await sleep(25);
  }
}

/** Stops the process a PID file names (if it is still that process) and removes the file (`weft reset` without an agent). */
export async function stopByPidFile(pidFile: string, graceMs = 3000): Promise<number | undefined> {
  const pid = livePidFromFile(pidFile);
  if (pid !== undefined) await killPid(pid, graceMs);
  fs.rmSync(pidFile, { force: true });
  return pid;
}

class Supervisor implements Supervised {
  pid: number | undefined;
  adopted = false;
  restarts = 0;
  lastExit: string | undefined;
  private child?: ChildProcess;
  private poll?: NodeJS.Timeout;
  private retry?: NodeJS.Timeout;
  private delayMs: number;
  private startedAt = 0;
  private done = false;

  constructor(private readonly o: SuperviseOptions) {
    this.delayMs = o.backoff?.initialMs ?? 500;
  }

  get running(): boolean {
    return this.pid !== undefined && processAlive(this.pid);
  }

  /** Adopts a live instance from the PID file, else starts one. Rejects when the first start fails. */
  async begin(): Promise<void> {
    const prior = this.o.pidFile ? livePidFromFile(this.o.pidFile) : undefined;
    if (prior !== undefined) {
      this.pid = prior;
      this.adopted = true;
      this.startedAt = Date.now();
      this.watchAdopted();
      this.o.log.info({ pid: prior }, `${this.o.name}: adopted the running process (pid ${prior})`);
      try {
        await this.o.onStart?.(prior, 'adopted');
        return;
      } catch (err) {
        this.o.log.warn({ err }, `${this.o.name}: the adopted process could not be configured; starting a new one`);
        this.unwatch();
        await killPid(prior);
        this.pid = undefined;
        this.adopted = false;
      }
    }
    await this.launch('started');
  }

  private async launch(how: 'started' | 'restarted'): Promise<void> {
    const [cmd, args] = inNetns(this.o.sys?.netns, this.o.cmd, this.o.args);
    const detached = this.o.pidFile !== undefined;
    const out = this.o.logFile ? fs.openSync(this.o.logFile, 'a', 0o600) : 'ignore';
    let child: ChildProcess;
    try {
      child = spawn(cmd, args, { stdio: ['ignore', out, out], detached: this.o.newSession ?? false, env: this.o.env ?? process.env });
    } finally {
      if (typeof out === 'number') fs.closeSync(out);
    }
    const spawned = await new Promise<Error | undefined>((resolve) => {
      child.once('spawn', () => resolve(undefined));
      child.once('error', (e: NodeJS.ErrnoException) => resolve(e.code === 'ENOENT' ? new WeftError(`${this.o.cmd}: command not found (is it installed?)`) : e));
    });
    if (spawned) {
      this.lastExit = spawned.message;
      throw spawned;
    }
    child.on('error', () => {});
    const pid = child.pid!;
    this.child = child;
    this.pid = pid;
    this.adopted = false;
    this.startedAt = Date.now();
    if (detached) {
      child.unref();
      writePidFile(this.o.pidFile!, pid);
    }
    child.once('exit', (code, sig) => {
      if (this.child === child) this.exited(pid, sig ? `killed by ${sig}` : `exited with code ${code}`);
    });
    this.o.log.info({ pid }, `${this.o.name}: ${how} (pid ${pid}${detached ? ', detached' : ''})`);
    try {
      await this.o.onStart?.(pid, how);
    } catch (err) {
      this.o.log.error({ err }, `${this.o.name}: configuring the new process failed; stopping it`);
      this.child = undefined;
      await killPid(pid);
      this.exited(pid, `configuration failed: ${(err as Error).message}`);
      throw err;
    }
  }

  /** An adopted process is not our child: no 'exit' event, so look now and then. */
  private watchAdopted(): void {
    const pid = this.pid!;
    this.poll = setInterval(() => {
      if (!processAlive(pid)) this.exited(pid, 'ended (adopted process; exit status unknown)');
    }, this.o.pollMs ?? 1000);
    this.poll.unref();
  }

  private unwatch(): void {
    if (this.poll) clearInterval(this.poll);
    this.poll = undefined;
  }

  private exited(pid: number, why: string): void {
    if (this.pid !== pid) return;
    this.unwatch();
    this.child = undefined;
    this.pid = undefined;
    this.scheduleRestart(why, pid);
  }

  private scheduleRestart(why: string, pid?: number): void {
    this.lastExit = why;
    if (this.done || this.retry) return;
    const b = this.o.backoff ?? {};
    if (Date.now() - this.startedAt > (b.resetAfterMs ?? 10_000)) this.delayMs = b.initialMs ?? 500;
    const delay = this.delayMs;
    this.delayMs = Math.min(b.maxMs ?? 30_000, this.delayMs * 2);
    this.o.log.error({ pid, delayMs: delay }, `${this.o.name}: ${why}; restarting in ${delay} ms`);
    this.o.onExit?.(why);
    this.retry = setTimeout(() => {
      this.retry = undefined;
      if (this.done) return;
      this.restarts++;
      this.launch('restarted').catch((err: Error) => {
        if (this.pid === undefined) this.scheduleRestart(`restart failed: ${err.message}`);
      });
    }, delay);
    this.retry.unref();
  }

  private quiet(): void {
    this.done = true;
    this.unwatch();
    if (this.retry) clearTimeout(this.retry);
    this.retry = undefined;
  }

  async release(): Promise<void> {
    if (this.o.pidFile === undefined) return this.stop();
    this.quiet();
    this.o.log.info({ pid: this.pid }, `${this.o.name}: left running (pid ${this.pid})`);
  }

  async stop(graceMs?: number): Promise<void> {
    this.quiet();
    const pid = this.pid;
    this.child = undefined;
    this.pid = undefined;
    if (pid !== undefined) await killPid(pid, graceMs);
    if (this.o.pidFile) fs.rmSync(this.o.pidFile, { force: true });
  }
}

/**
 * Starts (or adopts, see pidFile) a supervised process and resolves once it runs and onStart succeeded.
 * Rejects (leaving nothing running) when the first start fails.
 */
export async function superviseProcess(o: SuperviseOptions): Promise<Supervised> {
  const s = new Supervisor(o);
  try {
    await s.begin();
  } catch (err) {
    await s.stop().catch(() => {});
    throw err;
  }
  return s;
}
