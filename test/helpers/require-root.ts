import { execFileSync } from 'node:child_process';

/**
 * Why end-to-end tests cannot run here (no root for network namespaces, no iproute2), or undefined.
 * Use as `describe(name, { skip: needsRoot() })`: the runner reports the tests as skipped with the reason.
 */
export function needsRoot(...binaries: string[]): string | undefined {
  if (process.getuid?.() !== 0) return 'needs root (network namespaces)';
  for (const b of ['ip', ...binaries]) {
    try {
      execFileSync('sh', ['-c', `command -v ${b}`], { stdio: 'ignore' });
    } catch {
      return `needs ${b} (not installed: run scripts/setup)`;
    }
  }
  return undefined;
}
