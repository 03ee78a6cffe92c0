import { CONNECTIONS_PREFIX, connectionKey, connectionOfKey } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { getNetwork, listNetworks } from './registry.js';

/**
 * Which weft networks may reach each other. Networks are isolated unless the user connects them
 * (`weft network connect A B`); each connection is one store key that every agent follows
 * (system/iptables.ts turns this policy into rules).
 */

export interface IsolationPolicy {
  networks: Array<{ name: string; cidr: string }>;
  /** "a+b" (names sorted) per connected pair. */
  connected: Set<string>;
}

export async function connectNetworks(store: Store, a: string, b: string): Promise<{ created: boolean }> {
  if (a === b) throw new WeftError(`cannot connect network "${a}" to itself`);
  await getNetwork(store, a);
  await getNetwork(store, b);
  const key = connectionKey(a, b);
  const created = (await store.compareAndSwap(key, 0, JSON.stringify({ networks: [a, b].sort(), at: new Date().toISOString() }))) !== undefined;
  return { created };
}

export async function disconnectNetworks(store: Store, a: string, b: string): Promise<{ removed: boolean }> {
  const removed = await store.delete(connectionKey(a, b));
  return { removed: Boolean(removed) };
}

/** Connected pairs as [a, b] (sorted). */
export async function listConnections(store: Store): Promise<Array<[string, string]>> {
  if (store.flannelLayout) return [];
  return (await store.list(CONNECTIONS_PREFIX)).map((e) => connectionOfKey(e.key)).filter((c): c is [string, string] => c !== undefined);
}

/** The networks and their connections, as the isolation rules need them. */
export async function isolationPolicy(store: Store): Promise<IsolationPolicy> {
  const [networks, connections] = await Promise.all([listNetworks(store), listConnections(store)]);
  return {
    networks: networks.map((n) => ({ name: n.name, cidr: n.config.Network })),
    connected: new Set(connections.map(([x, y]) => `${x}+${y}`)),
  };
}
