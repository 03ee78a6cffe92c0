import type { NsOpts } from '../system/netns.js';
import { WeftError } from '../util/errors.js';
import { HostGwBackend } from './host-gw.js';
import { BACKEND_TYPES, type Backend, type BackendContext } from './types.js';
import { VxlanBackend } from './vxlan.js';

/** A backend factory; `sys.netns` makes it act on another namespace (tests drive hosts from outside). */
export type ScopedBackendFactory = (ctx: BackendContext, sys: NsOpts) => Backend;

const factories = new Map<string, ScopedBackendFactory>([
  ['host-gw', (ctx, sys) => new HostGwBackend(ctx, sys)],
  ['vxlan', (ctx, sys) => new VxlanBackend(ctx, sys)],
]);

/** Lets another module add a backend type (udp, wireguard, …) without editing this file. */
export function registerBackend(type: string, factory: ScopedBackendFactory): void {
  factories.set(type, factory);
}

export function implementedBackends(): string[] {
  return [...factories.keys()];
}

/** The backend for `ctx.network.Backend.Type`. */
export function createBackend(ctx: BackendContext, sys: NsOpts = {}): Backend {
  const type = ctx.network.Backend?.Type;
  const f = factories.get(type);
  if (f) return f(ctx, sys);
  if ((BACKEND_TYPES as readonly string[]).includes(type)) throw new WeftError(`backend ${type} is not implemented yet`, 'ENOTIMPL');
  throw new WeftError(`unknown backend type "${type}" (known: ${BACKEND_TYPES.join(', ')})`, 'EBADBACKEND');
}
