import fs from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { FLOCK_ADDON, tryLockExclusive } from '../system/flock.js';
import { WeftError } from '../util/errors.js';
import { removeStaleSocket } from './api.js';

/**
 * One agent per host, enforced with real kernel locks (flock(2)) on two files: `<state-dir>/agent.lock` (one
 * lease, one host id, one set of bridges per state dir) and `<api socket>.lock` (one agent per socket).
 *
 * The agent holds each lock on an open descriptor of its own (src/system/flock.ts): when it dies in any way
 * (kill -9 included) the kernel drops the lock, so a stale lock cannot outlive its holder, and a PID reused
 * after a reboot cannot fake one. The holder's PID is written into the file for the refusal message. (Until
 * issue 15 a flock(1) process per lock held it: two process spawns on every start.)
 */

export const STATE_DIR_MODE = 0o700;
const LOCK_FILE_MODE = 0o600;
/** How often a taken lock is tried again while waiting for it. */
const RETRY_MS = 50;

export interface HeldLock {
  readonly file: string;
  release(): Promise<void>;
}

/**
 * Takes the exclusive lock on `file`, waiting up to `waitSeconds` (a holder killed a moment ago may still be
 * exiting). Throws a WeftError naming the PID of the holder when another process keeps it.
 */
export async function acquireLock(file: string, what: string, waitSeconds = 3): Promise<HeldLock> {
  const fd = fs.openSync(file, fs.constants.O_RDWR | fs.constants.O_CREAT, LOCK_FILE_MODE);
  try {
    fs.fchmodSync(fd, LOCK_FILE_MODE);
    const until = Date.now() + waitSeconds * 1000;
    while (!takeLock(fd, file)) {
      if (Date.now() >= until) {
        const pid = holderPid(file);
        throw new WeftError(`${what} is in use by another weft agent (${pid ? `pid ${pid}` : 'pid unknown'}; lock ${file}): stop it first — one agent per host`, 'ELOCKED');
      }
      await sleep(RETRY_MS);
    }
    fs.ftruncateSync(fd);
    fs.writeSync(fd, `${process.pid}\n`, 0);
  } catch (err) {
    fs.closeSync(fd);
    throw err;
  }
  let open = true;
  return {
    file,
    release: async () => {
      if (open) fs.closeSync(fd);
      open = false;
    },
  };
}

function takeLock(fd: number, file: string): boolean {
  try {
    return tryLockExclusive(fd);
  } catch (err) {
    const e = err as NodeJS.ErrnoException;
    const why = e.code === 'MODULE_NOT_FOUND' || e.code === 'ERR_DLOPEN_FAILED' ? `weft's native part is not built (${FLOCK_ADDON}): run \`npm run build:native\`` : e.message;
    throw new WeftError(`cannot lock ${file}: ${why}`, 'ELOCK');
  }
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
