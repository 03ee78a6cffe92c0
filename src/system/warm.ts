import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ExecError, run } from './exec.js';
import { ipCommand } from './ip.js';
import { inNetns, type NsOpts } from './netns.js';

/**
 * A spawner for the attach path. Each process Node spawns costs the event loop a fork of the whole agent
 * (2.5–4 ms idle, 10–30 ms on a loaded machine), three per attach: measured, that was most of an attach, and
 * pre-spawning did not help (the replacement's fork landed in the middle of the next step). Here one
 * long-lived bash (a few MB: its forks are cheap) runs the commands: Node writes a job (command line and
 * its stdin as a here-document) to bash's stdin; bash runs it in the background, its output goes to a file
 * of its own, and a line "ID STATUS" on bash's stdout says it is done. Jobs run concurrently, like spawns.
 * Failures are the same ExecError as exec.ts's `run`, with the output as its stderr. If bash cannot be
 * started (or WEFT_NO_SPAWNER is set) commands are spawned directly as before.
 */

interface Job {
  resolve: () => void;
  reject: (e: Error) => void;
  cmd: string;
  args: string[];
  out: string;
}

let helper: { child: ChildProcess; dir: string; buf: string } | undefined;
const jobs = new Map<number, Job>();
let nextId = 1;
const enabled = process.env.WEFT_NO_SPAWNER === undefined;

/** Single-quoted for bash. */
const q = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

function ensureHelper(): typeof helper {
  if (helper && helper.child.exitCode === null && helper.child.signalCode === null) return helper;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'weft-spawner-'));
  const child = spawn('bash', ['--norc', '--noprofile', '-s'], { stdio: ['pipe', 'pipe', 'ignore'], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
  const h = { child, dir, buf: '' };
  child.stdin!.on('error', () => {});
  // bash removes the job files' dir when its stdin closes, also when the agent was killed (SIGKILL)
  child.stdin!.write(`trap ${q(`rm -rf ${q(dir)}`)} EXIT\n`);
  child.stdout!.on('data', (b: Buffer) => {
    h.buf += b.toString();
    const lines = h.buf.split('\n');
    h.buf = lines.pop() ?? '';
    for (const line of lines) {
      const m = /^(\d+) (\d+)$/.exec(line);
      if (!m) continue;
      finish(h, Number(m[1]), Number(m[2]));
    }
  });
  const fail = () => {
    if (helper === h) helper = undefined;
    for (const [id, j] of jobs) {
      jobs.delete(id);
      j.reject(new ExecError(j.cmd, j.args, null, 'the command runner (bash) exited'));
    }
    fs.rmSync(dir, { recursive: true, force: true });
  };
  child.once('error', fail);
  child.once('close', fail);
  helper = h;
  idle(h);
  // the job output files go with the process, also when it exits without stopWarm()
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return h;
}

function finish(h: NonNullable<typeof helper>, id: number, code: number): void {
  const j = jobs.get(id);
  if (!j) return;
  jobs.delete(id);
  let out = '';
  try {
    out = fs.readFileSync(j.out, 'utf8');
    fs.rmSync(j.out, { force: true });
  } catch {
    /* no output */
  }
  if (!jobs.size) idle(h);
  if (code === 0) j.resolve();
  else j.reject(new ExecError(j.cmd, j.args, code === 127 ? null : code, code === 127 && !out ? `${j.cmd}: command not found` : out));
}

/** bash and its pipes keep the event loop alive only while a job runs (a CLI must not exit under one). */
function idle(h: NonNullable<typeof helper>): void {
  h.child.unref();
  for (const s of [h.child.stdin, h.child.stdout]) (s as unknown as { unref?: () => void } | null)?.unref?.();
}
function busy(h: NonNullable<typeof helper>): void {
  h.child.ref();
  for (const s of [h.child.stdin, h.child.stdout]) (s as unknown as { ref?: () => void } | null)?.ref?.();
}

/** Runs `cmd args` with `input` on stdin through the helper; `shown` names it in errors. */
export function runJob(cmd: string, args: string[], input: string, shown = { cmd, args }): Promise<void> {
  let h: typeof helper;
  try {
    h = enabled ? ensureHelper() : undefined;
  } catch {
    h = undefined;
  }
  if (!h) return run(cmd, args, { input }).then(() => undefined);
  const id = nextId++;
  const out = path.join(h.dir, `${id}.out`);
  const eof = `__WEFT_EOF_${id}__`;
  if (input.split('\n').includes(eof)) return run(cmd, args, { input }).then(() => undefined);
  const body = input.endsWith('\n') ? input : `${input}\n`;
  const script = `{ ${[cmd, ...args].map(q).join(' ')} >${q(out)} 2>&1 <<'${eof}'\n${body}${eof}\necho "${id} $?"; } &\n`;
  return new Promise<void>((resolve, reject) => {
    jobs.set(id, { resolve, reject, cmd: shown.cmd, args: shown.args, out });
    busy(h!);
    h!.child.stdin!.write(script);
  });
}

/** `ip -batch -` (in the namespace when given; `force`: on past failing lines, as ipBatch), through the helper. */
export async function warmIpBatch(lines: readonly string[], opts: NsOpts & { force?: boolean } = {}): Promise<void> {
  if (lines.length === 0) return;
  const [cmd, args] = ipCommand([...(opts.force ? ['-force'] : []), '-batch', '-'], opts);
  return runJob(cmd, args, lines.join('\n') + '\n');
}

/** `bridge -batch -` (fdb entries), as warmIpBatch. */
export async function warmBridgeBatch(lines: readonly string[], opts: NsOpts & { force?: boolean } = {}): Promise<void> {
  if (lines.length === 0) return;
  const [cmd, args] = inNetns(opts.netns, 'bridge', [...(opts.force ? ['-force'] : []), '-batch', '-']);
  return runJob(cmd, args, lines.join('\n') + '\n');
}

/**
 * Long-lived `ebtables-restore --noflush -v`, one per command line (namespace). It commits each
 * `*filter … COMMIT` block as it reads it and, with -v, echoes comment lines: a `# weft-ack ID` after the
 * block comes back on stdout once the block is committed (0.5 ms, where a new process took 4 ms idle). A
 * failing block makes it exit with "line N failed: …" on stderr: that job fails with that message, and the
 * next job starts a new process. Jobs of one process run one at a time, so a failure is always the job in
 * flight. Started on first use, like the runner above; the kernel sees exactly the same blocks as before.
 */
interface Restorer {
  child: ChildProcess;
  out: string;
  err: string;
  /** The job in flight. */
  job?: { id: number; resolve: () => void; reject: (e: Error) => void };
  /** Jobs waiting for it, in order. */
  queue: Array<() => void>;
}
const restorers = new Map<string, Restorer>();

function restorer(argv: [string, string[]]): Restorer | undefined {
  const key = JSON.stringify(argv);
  const have = restorers.get(key);
  if (have && have.child.exitCode === null && have.child.signalCode === null) return have;
  let child: ChildProcess;
  try {
    child = spawn(argv[0], [...argv[1], '-v'], { stdio: ['pipe', 'pipe', 'pipe'], env: { PATH: process.env.PATH ?? '/usr/sbin:/usr/bin:/sbin:/bin', LC_ALL: 'C' } });
  } catch {
    return undefined;
  }
  const r: Restorer = { child, out: '', err: '', queue: have?.queue ?? [] };
  child.stdin!.on('error', () => {});
  child.stdout!.on('data', (b: Buffer) => {
    r.out += b.toString();
    let nl: number;
    while ((nl = r.out.indexOf('\n')) >= 0) {
      const line = r.out.slice(0, nl);
      r.out = r.out.slice(nl + 1);
      const m = /^# weft-ack (\d+)$/.exec(line);
      if (m && r.job && Number(m[1]) === r.job.id) {
        const j = r.job;
        r.job = undefined;
        j.resolve();
        next(r);
      }
    }
  });
  child.stderr!.on('data', (b: Buffer) => {
    r.err = (r.err + b.toString()).slice(-4000);
  });
  const gone = (code: number | null, e?: Error) => {
    if (restorers.get(key) === r) restorers.delete(key);
    const j = r.job;
    r.job = undefined;
    j?.reject(new ExecError(argv[0], argv[1], code, e ? (/ENOENT/.test(e.message) ? `${argv[0]}: command not found` : e.message) : r.err || 'ebtables-restore exited'));
    // the jobs still waiting go to a new process
    const waiting = r.queue.splice(0);
    if (waiting.length) {
      const again = restorer(argv);
      if (again) {
        again.queue.push(...waiting);
        if (!again.job) next(again);
      } else for (const w of waiting) w();
    }
  };
  child.once('error', (e) => gone(null, e));
  child.once('close', (code) => gone(code));
  restorers.set(key, r);
  rest(r);
  return r;
}

function next(r: Restorer): void {
  const go = r.queue.shift();
  if (go) go();
  else rest(r);
}
function rest(r: Restorer): void {
  r.child.unref();
  for (const s of [r.child.stdin, r.child.stdout, r.child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
}
function wake(r: Restorer): void {
  r.child.ref();
  for (const s of [r.child.stdin, r.child.stdout, r.child.stderr]) (s as unknown as { ref?: () => void } | null)?.ref?.();
}

/** `ebtables-restore --noflush` with `input` (whole `*filter … COMMIT` blocks); `argv` is the command line (inNetns(...)). */
export async function warmEbtablesRestore(input: string, argv: [string, string[]]): Promise<void> {
  const r = enabled ? restorer(argv) : undefined;
  if (!r) return runJob(argv[0], argv[1], input);
  const body = input.endsWith('\n') ? input : `${input}\n`;
  return new Promise<void>((resolve, reject) => {
    const go = () => {
      // this job may have been handed to a new process (the one it waited on died)
      const cur = restorers.get(JSON.stringify(argv));
      if (!cur) return void runJob(argv[0], argv[1], input).then(resolve, reject);
      const id = nextId++;
      cur.job = { id, resolve, reject };
      wake(cur);
      cur.child.stdin!.write(`${body}# weft-ack ${id}\n`);
    };
    r.queue.push(go);
    if (!r.job) next(r);
  });
}

/** Ends the helpers once their running jobs are done (agent stop). */
export function stopWarm(): void {
  helper?.child.stdin!.end();
  for (const r of restorers.values()) r.child.stdin!.end();
}
