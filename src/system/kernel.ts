import { WeftError } from '../util/errors.js';
import { kernelFailure } from './exec.js';
import { ipBatch } from './ip.js';
import type { NsOpts } from './netns.js';

/** The kernel option behind each link kind weft may create (for the message when it is missing). */
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
  tun: 'CONFIG_TUN',
};

/** Turns "Unknown device type" / "Operation not supported" into a WeftError naming the missing kernel feature. */
export function explainKernelError(kind: string, err: unknown): unknown {
  if (kernelFailure(err) !== 'unsupported') return err;
  const text = err instanceof Error ? err.message : String(err);
  return new WeftError(`the kernel has no ${kind} support (module ${kind}, ${CONFIG[kind] ?? `CONFIG_${kind.toUpperCase()}`}): ${text.trim()}`, 'ENOKERNEL');
}

export interface LinkSpec {
  name: string;
  mtu?: number;
  /** Kind-specific arguments after `type KIND`, e.g. ['id', '1', 'local', '10.0.0.1', 'dstport', '8472']. */
  args?: string[];
  /** Extra link-level arguments before `type`, e.g. ['link', 'eth0'] for macvlan. */
  linkArgs?: string[];
}

/** Creates a link of `kind`; missing kernel support becomes a clear WeftError naming the module. */
export async function createLink(kind: string, spec: LinkSpec, opts: NsOpts = {}): Promise<void> {
  const line = ['link', 'add', ...(spec.linkArgs ?? []), spec.name, ...(spec.mtu ? ['mtu', String(spec.mtu)] : []), 'type', kind, ...(spec.args ?? [])].join(' ');
  try {
    await ipBatch([line], opts);
  } catch (e) {
    throw explainKernelError(kind, e);
  }
}
