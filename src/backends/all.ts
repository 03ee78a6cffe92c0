/** Every backend and endpoint driver weft has: one import line each (each registers itself). */
import './endpoints/veth-bridge.js';
import './host-gw/index.js';
import './vxlan/index.js';
import './wireguard/index.js';
import './l2/index.js';
import './endpoints/macvlan.js';
import './macvlan/index.js';
import './bridge/index.js';
import './bgp/index.js';
import './udp/index.js';

export { addressPlan, backendModule, createBackend, implementedBackends } from './registry.js';
export { endpointDriver } from './endpoints/registry.js';
