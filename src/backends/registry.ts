import { backendTypes, registerBackendSpec } from '../config/backend-spec.js';
import { requireBackendType } from '../config/network.js';
import type { Lease } from '../lease/types.js';
import type { NetworkConfig } from '../config/types.js';
import { gatewayOf } from '../ipam/addresses.js';
import type { AddressPlan, Backend, BackendContext, BackendModule } from './types.js';

const modules = new Map<string, BackendModule>();

/** Called by each backend folder's index.ts at import time (src/backends/all.ts imports them all). */
export function registerBackend(module: BackendModule): void {
  modules.set(module.type, module);
  registerBackendSpec(module);
}

/** The module of a backend type; WeftError naming the registered ones when unknown. */
export function backendModule(type: string): BackendModule {
  requireBackendType(type);
  return modules.get(type)!;
}

/** Every registered backend type, in registration order. */
export function implementedBackends(): string[] {
  return backendTypes();
}

/** The runtime backend for `ctx.network.Backend.Type`. */
export function createBackend(ctx: BackendContext): Backend {
  return backendModule(ctx.network.Backend.Type).create(ctx);
}

/** Where containers of this host take addresses (the module's plan, else the host's lease). */
export function addressPlan(own: Lease, network: NetworkConfig): AddressPlan {
  const m = backendModule(network.Backend.Type);
  return m.addressPlan ? m.addressPlan(own, network) : { pool: own.subnet, gateway: gatewayOf(own.subnet) };
}
