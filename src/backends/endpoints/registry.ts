import { WeftError } from '../../util/errors.js';
import type { EndpointDriver } from './types.js';

const drivers = new Map<string, EndpointDriver>();

export function registerEndpointDriver(d: EndpointDriver): void {
  drivers.set(d.name, d);
}

/** The driver by name (default veth-bridge); WeftError naming the known ones when unknown. */
export function endpointDriver(name = 'veth-bridge'): EndpointDriver {
  const d = drivers.get(name);
  if (!d) throw new WeftError(`unknown endpoint driver "${name}" (known: ${[...drivers.keys()].join(', ')})`);
  return d;
}
