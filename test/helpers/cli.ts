/**
 * This checkout's `weft` CLI run in the test's own process: the same entry points as bin/weft (the fast
 * path, then the full CLI) without a Node start-up per command, for the unit tier. Output is captured only
 * for writes made on behalf of the command (an AsyncLocalStorage context), so the test runner's own
 * reports on stdout pass through untouched.
 */
import { AsyncLocalStorage } from 'node:async_hooks';
import { runFast } from '../../src/cli/fast.js';
import { runCli } from '../../src/cli/program.js';
import type { CliResult } from '../../src/testbed/agents.js';

interface Capture {
  stdout: string;
  stderr: string;
}

const capture = new AsyncLocalStorage<Capture>();
let patched = false;

function patch(): void {
  if (patched) return;
  patched = true;
  for (const name of ['stdout', 'stderr'] as const) {
    const stream = process[name];
    const original = stream.write.bind(stream) as (...a: unknown[]) => boolean;
    stream.write = ((chunk: unknown, ...rest: unknown[]) => {
      const c = capture.getStore();
      if (!c) return original(chunk, ...rest);
      c[name] += typeof chunk === 'string' ? chunk : Buffer.from(chunk as Uint8Array).toString('utf8');
      const cb = rest.find((r) => typeof r === 'function') as (() => void) | undefined;
      if (cb) queueMicrotask(cb);
      return true;
    }) as typeof stream.write;
  }
}

/** Runs `weft ARGS` in-process; resolves with its exit code and output (never rejects), like runWeft. */
export async function weftInProcess(args: readonly string[]): Promise<CliResult> {
  patch();
  const argv = [process.execPath, 'weft', ...args];
  const c: Capture = { stdout: '', stderr: '' };
  const savedExitCode = process.exitCode;
  process.exitCode = undefined;
  try {
    const code = await capture.run(c, async () => {
      if (await runFast(argv)) return Number(process.exitCode ?? 0);
      const outcome = await runCli(argv);
      return outcome.code !== 0 ? outcome.code : Number(process.exitCode ?? 0);
    });
    return { code, ...c };
  } catch (err) {
    return { code: 1, stdout: c.stdout, stderr: `${c.stderr}${err instanceof Error ? err.stack : String(err)}\n` };
  } finally {
    process.exitCode = savedExitCode;
  }
}
