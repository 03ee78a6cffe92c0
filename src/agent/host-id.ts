import crypto from 'node:crypto';
import fs from 'node:fs';
import path from 'node:path';

/**
 * A host's stable identity: the --host-id flag, else /etc/machine-id, else an id generated once and kept in
 * the state dir. Leases are found again by it after a restart, so it must not change between runs.
 */
export function resolveHostId(flag: string | undefined, stateDir: string): string {
  if (flag) return flag;
  const machineId = readTrimmed('/etc/machine-id');
  if (machineId) return machineId;
  const file = path.join(stateDir, 'host-id');
  const kept = readTrimmed(file);
  if (kept) return kept;
  const fresh = crypto.randomUUID().replaceAll('-', '');
  fs.mkdirSync(stateDir, { recursive: true, mode: 0o700 });
  fs.writeFileSync(file, fresh + '\n', { mode: 0o600 });
  fs.chmodSync(file, 0o600);
  return fresh;
}

function readTrimmed(file: string): string | undefined {
  try {
    return fs.readFileSync(file, 'utf8').trim() || undefined;
  } catch {
    return undefined;
  }
}
