import { WeftError } from '../util/errors.js';
import { kernelFailure } from './exec.js';
import { ipBatch } from './ip.js';
import { netnsArg, type NetnsRef, type NsOpts } from './netns.js';

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
  /** The lower device (`link PARENT`): a macvlan's parent NIC. */
  parent?: string;
  /** MAC address of the new link. */
  address?: string;
  /** Made directly inside this namespace (`netns NAME|PID`). */
  netns?: NetnsRef | string;
  /** macvlan mode (`mode bridge`). */
  macvlanMode?: 'bridge' | 'private' | 'vepa' | 'passthru' | 'source';
  /** vxlan: VNI, local address, underlay device, UDP port; address learning off unless `learning`. */
  vxlan?: { id: number; local: string; dev: string; dstport: number; learning?: boolean };
  /** gretap: the tunnel's two ends and its key. */
  gretap?: { local: string; remote: string; key: number };
}

/** The `ip -batch` line that creates a link of `kind` (`link add [link P] [address M] [netns N] NAME [mtu X] type KIND …`). */
export function linkAddLine(kind: string, spec: LinkSpec): string {
  const parts = ['link', 'add'];
  if (spec.parent) parts.push('link', spec.parent);
  if (spec.address) parts.push('address', spec.address);
  if (spec.netns !== undefined) parts.push('netns', netnsArg(spec.netns));
  parts.push(spec.name);
  if (spec.mtu) parts.push('mtu', String(spec.mtu));
  parts.push('type', kind);
  if (spec.macvlanMode) parts.push('mode', spec.macvlanMode);
  const v = spec.vxlan;
  if (v) parts.push('id', String(v.id), 'local', v.local, 'dev', v.dev, 'dstport', String(v.dstport), ...(v.learning ? [] : ['nolearning']));
  const g = spec.gretap;
  if (g) parts.push('local', g.local, 'remote', g.remote, 'key', String(g.key));
  return parts.join(' ');
}

/** Creates a link of `kind`; missing kernel support becomes a clear WeftError naming the module. */
export async function createLink(kind: string, spec: LinkSpec, opts: NsOpts = {}): Promise<void> {
  try {
    await ipBatch([linkAddLine(kind, spec)], opts);
  } catch (e) {
    throw explainKernelError(kind, e);
  }
}
