import { spawn, type ChildProcess } from 'node:child_process';
import { ExecError } from './exec.js';
import { toRef, type NsOpts } from './netns.js';

/**
 * Pre-spawned processes for the attach path. A spawn from Node costs 2.5–4 ms of the event loop (fork, exec,
 * dynamic linking), three per attach: that was most of an attach. Here the next process of each kind is
 * started ahead of time, idle and blocked reading its stdin; a call hands it its input, closes stdin and
 * waits for the exit status as `run` does (same ExecError). The spent process is replaced after the call
 * has been served. An idle process costs no CPU; when the agent exits its pipes close and the idle ones
 * exit without doing anything (ip and ebtables-restore on an empty input, the shell's `read` on EOF).
 */

interface Warm {
  child: ChildProcess;
  out: Buffer[];
  err: Buffer[];
  closed: Promise<number | null>;
  /** What to show in an ExecError. */
  cmd: string;
  args: string[];
}

const idle = new Map<string, Warm>();
let enabled = process.env.WEFT_NO_PRESPAWN === undefined;

function start(cmd: string, args: string[]): Warm {
  const child = spawn(cmd, args, { stdio: ['pipe', 'pipe', 'pipe'] });
  const w: Warm = { child, out: [], err: [], cmd, args, closed: undefined as unknown as Promise<number | null> };
  child.stdout!.on('data', (b: Buffer) => w.out.push(b));
  child.stderr!.on('data', (b: Buffer) => w.err.push(b));
  child.stdin!.on('error', () => {}); // EPIPE when it died early: its exit status tells
  w.closed = new Promise((resolve) => {
    child.once('error', (e: NodeJS.ErrnoException) => {
      w.err.push(Buffer.from(e.code === 'ENOENT' ? `${cmd}: command not found` : e.message));
      resolve(null);
    });
    child.once('close', (code) => resolve(code));
  });
  return w;
}

/** Idle processes must not keep the agent's event loop alive. */
function park(w: Warm): void {
  for (const s of [w.child.stdin, w.child.stdout, w.child.stderr]) (s as unknown as { unref?: () => void })?.unref?.();
  w.child.unref();
}

function unpark(w: Warm): void {
  w.child.ref();
  for (const s of [w.child.stdin, w.child.stdout, w.child.stderr]) (s as unknown as { ref?: () => void })?.ref?.();
}

/**
 * Runs `cmd args` with `input` on stdin like exec.ts's `run`, using the idle process of that command line
 * when there is one (and leaving a fresh one idle for the next call). `prefix` is written before `input`
 * (the shell wrapper's namespace line) and is not part of error messages.
 */
async function runWarm(cmd: string, args: string[], input: string, shown: { cmd: string; args: string[] } = { cmd, args }, prefix = ''): Promise<void> {
  const key = JSON.stringify([cmd, ...args]);
  let w = enabled ? idle.get(key) : undefined;
  if (w) idle.delete(key);
  // a parked process that died meanwhile (killed by hand) is replaced
  if (!w || w.child.exitCode !== null || w.child.signalCode !== null) w = start(cmd, args);
  else unpark(w);
  w.child.stdin!.end(prefix + input);
  if (enabled) {
    // the next one is made once this call's process has its input (the spawn blocks the event loop)
    setImmediate(() => {
      if (!idle.has(key)) {
        const next = start(cmd, args);
        park(next);
        idle.set(key, next);
      }
    });
  }
  const code = await w.closed;
  if (code !== 0) throw new ExecError(shown.cmd, shown.args, code, Buffer.concat(w.err).toString(), Buffer.concat(w.out).toString());
}

/**
 * `ip -batch -` in the namespace. A named or PID namespace is entered by a pre-spawned shell that reads the
 * namespace from its first line and execs `ip -n NAME` (or `nsenter -t PID -n ip`): the exec is all that is
 * left on the critical path. Namespace names are checked by resolveNetns (no `/`); a newline is refused here.
 */
export async function warmIpBatch(lines: readonly string[], opts: NsOpts = {}): Promise<void> {
  if (lines.length === 0) return;
  const input = lines.join('\n') + '\n';
  if (opts.netns === undefined) return runWarm('ip', ['-batch', '-'], input);
  const r = toRef(opts.netns);
  const ref = 'name' in r ? r.name : String(r.pid);
  if (/[\n\r]/.test(ref) || !ref) throw new ExecError('ip', ['-batch', '-'], null, `bad namespace name ${JSON.stringify(ref)}`);
  const shown = 'name' in r ? { cmd: 'ip', args: ['-n', ref, '-batch', '-'] } : { cmd: 'nsenter', args: ['-t', ref, '-n', 'ip', '-batch', '-'] };
  return runWarm('sh', ['-c', NS_SHELL], input, shown, `${'name' in r ? 'name' : 'pid'} ${ref}\n`);
}

/** Reads "name NS" or "pid PID", then becomes ip in that namespace reading the rest of stdin. */
const NS_SHELL = 'IFS= read -r line || exit 1; kind=${line%% *}; ref=${line#* }; case "$kind" in name) exec ip -n "$ref" -batch - ;; pid) exec nsenter -t "$ref" -n ip -batch - ;; esac; echo "bad namespace line" >&2; exit 1';

/** `ebtables-restore --noflush` with `input`, in the namespace (pre-spawned in our own). */
export async function warmEbtablesRestore(input: string, argv: [string, string[]]): Promise<void> {
  return runWarm(argv[0], argv[1], input);
}

/** Turns pre-spawning off (tests comparing both) or on; idle processes are ended when turned off. */
export function setPrespawn(on: boolean): void {
  enabled = on;
  if (!on) stopWarm();
}

/** Ends every idle process (agent stop). */
export function stopWarm(): void {
  for (const w of idle.values()) {
    w.child.stdin!.end();
    park(w);
  }
  idle.clear();
}
