import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { ExecError, run } from './exec.js';
import { toRef, type NsOpts } from './netns.js';

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

/** `ip -batch -` (in the namespace when given), through the helper. */
export async function warmIpBatch(lines: readonly string[], opts: NsOpts = {}): Promise<void> {
  if (lines.length === 0) return;
  const input = lines.join('\n') + '\n';
  if (opts.netns === undefined) return runJob('ip', ['-batch', '-'], input);
  const r = toRef(opts.netns);
  if ('name' in r) return runJob('ip', ['-n', r.name, '-batch', '-'], input);
  return runJob('nsenter', ['-t', String(r.pid), '-n', 'ip', '-batch', '-'], input);
}

/** `ebtables-restore --noflush` with `input`; `argv` is the command line (inNetns(...)). */
export async function warmEbtablesRestore(input: string, argv: [string, string[]]): Promise<void> {
  return runJob(argv[0], argv[1], input);
}

/** Ends the helper once its running jobs are done (agent stop). */
export function stopWarm(): void {
  helper?.child.stdin!.end();
}
