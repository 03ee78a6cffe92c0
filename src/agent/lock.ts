import { spawn, type ChildProcess } from 'node:child_process';
import fs from 'node:fs';
import path from 'node:path';
import { WeftError } from '../util/errors.js';
import { removeStaleSocket } from './api.js';

/**
 * One agent per host, enforced with real kernel locks (flock(2)) on two files: `<state-dir>/agent.lock` (one
 * lease, one host id, one set of bridges per state dir) and `<api socket>.lock` (one agent per socket).
 *
 * Node has no flock(); rather than a native addon, the lock is held by util-linux's flock(1) running `cat`
 * on a pipe from the agent. When the agent dies in any way (kill -9 included) the pipe closes, cat sees EOF
 * and exits, and the kernel drops the lock: a stale lock cannot outlive its holder, and a PID reused after a
 * reboot cannot fake one. The holder's PID is written into the file for the refusal message.
 */

export const STATE_DIR_MODE = 0o700;
const LOCK_FILE_MODE = 0o600;
/** flock(1)'s exit code when the lock is held (-E). */
const HELD = 75;

export interface HeldLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Takes the exclusive lock on `file`, waiting up to `waitSeconds` (a holder killed a moment ago needs a few
 * milliseconds to let go). Throws a WeftError naming the PID of the holder when another process keeps it.
 */
export async function acquireLock(file: string, what: string, waitSeconds = 3): Promise<HeldLock> {
  fs.closeSync(fs.openSync(file, 'a', LOCK_FILE_MODE));
  fs.chmodSync(file, LOCK_FILE_MODE);
  const child = spawn('flock', ['--exclusive', '--wait', String(waitSeconds), '--conflict-exit-code', String(HELD), file, 'sh', '-c', 'echo locked; exec cat'], {
    stdio: ['pipe', 'pipe', 'pipe'],
    // its own process group: a Ctrl-C meant for the agent must not drop the lock before the agent has stopped
    detached: true,
  });
  const outcome = await new Promise<'locked' | { code: number | null; stderr: string; err?: Error }>((resolve) => {
    let stderr = '';
    child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
    child.stdout!.on('data', (c: Buffer) => {
      if (c.toString().includes('locked')) resolve('locked');
    });
    child.once('error', (err) => resolve({ code: null, stderr, err }));
    child.once('exit', (code) => resolve({ code, stderr }));
  });
  if (outcome !== 'locked') {
    if (outcome.err) throw new WeftError(`cannot lock ${file}: flock(1) from util-linux is needed (${outcome.err.message})`, 'ELOCK');
    if (outcome.code === HELD) {
      const pid = holderPid(file);
      throw new WeftError(
        `${what} is in use by another weft agent (${pid ? `pid ${pid}` : 'pid unknown'}; lock ${file}): stop it first — one agent per host`,
        'ELOCKED',
      );
    }
    throw new WeftError(`cannot lock ${file}: flock exited with ${outcome.code}: ${outcome.stderr.trim()}`, 'ELOCK');
  }
  fs.writeFileSync(file, `${process.pid}\n`);
  // The helper must not keep the agent's event loop alive.
  for (const s of [child.stdin, child.stdout, child.stderr]) (s as unknown as { unref?: () => void } | null)?.unref?.();
  child.unref();
  return { file, release: () => releaseHelper(child) };
}

async function releaseHelper(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.stdin?.end();
  const t = setTimeout(() => child.kill('SIGKILL'), 2000);
  await exited;
  clearTimeout(t);
}

/** The PID written into a lock file by its holder, when the file names one. */
export function holderPid(file: string): number | undefined {
  try {
    const n = Number(fs.readFileSync(file, 'utf8').trim());
    return Number.isInteger(n) && n > 0 ? n : undefined;
  } catch {
    return undefined;
  }
}

/** Creates the state dir with mode 0700, and takes group/other access away from one that exists and is ours. */
export function prepareStateDir(dir: string): void {
  fs.mkdirSync(dir, { recursive: true, mode: STATE_DIR_MODE });
  const st = fs.statSync(dir);
  // never chmod a shared directory such as /tmp (sticky) or one owned by someone else
  const sticky = (st.mode & 0o1000) !== 0;
  if (!sticky && st.uid === process.getuid?.() && (st.mode & 0o777) !== STATE_DIR_MODE) fs.chmodSync(dir, STATE_DIR_MODE);
}

/**
 * Everything that makes this process the host's only agent: the state dir lock, the API socket lock and a
 * check that no other process (an older agent without locks) answers on the socket. Taken before the agent
 * touches the store or the kernel, so a refused second agent changes nothing.
 */
export async function lockAgent(stateDir: string, apiSocket: string): Promise<HeldLock[]> {
  prepareStateDir(stateDir);
  const held: HeldLock[] = [];
  try {
    held.push(await acquireLock(path.join(stateDir, 'agent.lock'), `state dir ${stateDir}`));
    fs.mkdirSync(path.dirname(apiSocket), { recursive: true });
    held.push(await acquireLock(`${apiSocket}.lock`, `API socket ${apiSocket}`));
    await removeStaleSocket(apiSocket);
    return held;
  } catch (err) {
    for (const l of held.reverse()) await l.release();
    throw err;
  }
}
