import { execFileSync } from 'node:child_process';

/**
 * Why end-to-end tests cannot run here (no root for network namespaces, no iproute2), or undefined.
 * Use as `describe(name, { skip: needsRoot() })`: the runner reports the tests as skipped with the reason.
 */
export function needsRoot(...binaries: string[]): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  const missing = ['ip', ...binaries].find((b) => !haveCommand(b));
  return missing ? `needs ${missing} (not installed: run scripts/setup)` : undefined;
}

/** Whether `bin` is on PATH. */
export function haveCommand(bin: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${bin}`], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}
