import { WeftError } from '../util/errors.js';
import { ExecError } from './exec.js';
import { ipBatch } from './ip.js';
import type { NsOpts } from './netns.js';

const CONFIG: Record<string, string> = {
  vxlan: 'CONFIG_VXLAN',
  bridge: 'CONFIG_BRIDGE',
  veth: 'CONFIG_VETH',
  macvlan: 'CONFIG_MACVLAN',
  wireguard: 'CONFIG_WIREGUARD',
  dummy: 'CONFIG_DUMMY',
  gretap: 'CONFIG_NET_IPGRE',
  geneve: 'CONFIG_GENEVE',
  ipvlan: 'CONFIG_IPVLAN',
};

/** Turns "Unknown device type" / "Operation not supported" from ip into a WeftError naming the kernel feature. */
export function explainKernelError(kind: string, err: unknown): unknown {
  const text = err instanceof ExecError ? err.stderr : err instanceof Error ? err.message : String(err);
  if (/Unknown device type|Operation not supported|not supported|No such file or directory.*module/i.test(text)) {
    return new WeftError(
      `the kernel has no ${kind} support (module ${kind}, ${CONFIG[kind] ?? `CONFIG_${kind.toUpperCase()}`}): ${text.trim()}`,
      'ENOKERNEL',
    );
  }
  return err;
}

/** Runs `ip -batch` lines that create a link of `kind`; missing kernel support becomes a clear WeftError. */
export async function createLink(kind: string, lines: readonly string[], opts: NsOpts = {}): Promise<void> {
  try {
    await ipBatch(lines, opts);
  } catch (e) {
    throw explainKernelError(kind, e);
  }
}
