import { spawn } from 'node:child_process';
/**
 * A command that failed: carries the command line, exit code and stderr. Not a WeftError: a kernel or tool
 * failure is the host's problem, not the user's input (the API answers 500 and logs the command).
 */
export class ExecError extends Error {
  readonly code = 'EEXEC';
  constructor(
    readonly cmd: string,
    readonly args: readonly string[],
    readonly exitCode: number | null,
    readonly stderr: string,
    readonly stdout = '',
  ) {
    super(`${[cmd, ...args].join(' ')} failed (exit ${exitCode ?? 'signal'}): ${stderr.trim() || stdout.trim() || 'no output'}`);
    this.name = 'ExecError';
  }
}

export interface RunOptions {
  /** Written to the child's stdin, which is then closed. */
  input?: string;
  /** Do not throw on a non-zero exit; the caller inspects `code`. */
  allowFail?: boolean;
  env?: NodeJS.ProcessEnv;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

/** Runs a command without a shell and collects its output. Throws ExecError on failure unless allowFail. */
export function run(cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, {
      stdio: [opts.input === undefined ? 'ignore' : 'pipe', 'pipe', 'pipe'],
      env: opts.env,
      timeout: opts.timeoutMs,
    });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout!.on('data', (b: Buffer) => out.push(b));
    child.stderr!.on('data', (b: Buffer) => err.push(b));
    child.on('error', (e: NodeJS.ErrnoException) => {
      reject(new ExecError(cmd, args, null, e.code === 'ENOENT' ? `${cmd}: command not found` : e.message));
    });
    child.on('close', (code) => {
      const res = { stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code };
      if (code !== 0 && !opts.allowFail) reject(new ExecError(cmd, args, code, res.stderr, res.stdout));
      else resolve(res);
    });
    if (opts.input !== undefined) {
      child.stdin!.on('error', () => {}); // EPIPE when the child exits early; 'close' reports the failure
      child.stdin!.end(opts.input);
    }
  });
}

/** What went wrong in a kernel call, classified once here (no stderr regexes elsewhere). */
export type KernelFailure = 'exists' | 'missing' | 'unsupported' | 'permission' | 'other';

export function kernelFailure(err: unknown): KernelFailure {
  // rtnetlink (./netlink.ts): the kernel's errno itself
  const errno = (err as { name?: unknown; errno?: unknown } | null)?.name === 'NetlinkError' ? (err as { errno: number }).errno : undefined;
  if (errno !== undefined) {
    if (errno === 17 || errno === 98) return 'exists'; // EEXIST, EADDRINUSE
    if (errno === 2 || errno === 3 || errno === 19) return 'missing'; // ENOENT, ESRCH, ENODEV
    if (errno === 95 || errno === 93) return 'unsupported'; // EOPNOTSUPP, EPROTONOSUPPORT
    if (errno === 1 || errno === 13) return 'permission'; // EPERM, EACCES
    return 'other';
  }
  const text = err instanceof ExecError ? `${err.stderr}\n${err.stdout}` : err instanceof Error ? err.message : String(err);
  if (/File exists|already exists|Address already in use/i.test(text)) return 'exists';
  if (/does not exist|Cannot find device|No such device|No such process|not found|No such file/i.test(text)) return 'missing';
  if (/Unknown device type|Operation not supported|not supported|Protocol not available/i.test(text)) return 'unsupported';
  if (/Operation not permitted|Permission denied/i.test(text)) return 'permission';
  return 'other';
}
