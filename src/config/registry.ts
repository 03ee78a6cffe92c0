import { describeHolders, listLeases } from '../lease/leases.js';
import { cidrsOverlap, parseCidr } from '../lease/subnets.js';
import { listNetworkNames, networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { parseNetworkConfig } from './network.js';
import { checkReservedRanges } from './ranges.js';
import type { NetworkConfig } from './types.js';

/** The networks of a store: create (with the cross-network checks), read, list, remove. */

export interface NetworkInfo {
  name: string;
  config: NetworkConfig;
}

/** The network's config, or undefined when the store has none under that name. */
export async function findNetwork(store: Store, name: string): Promise<NetworkConfig | undefined> {
  const entry = await store.get(networkKeys(store, name).config);
  if (!entry) return undefined;
  try {
    return parseNetworkConfig(entry.value);
  } catch (err) {
    throw new WeftError(`network "${name}" in ${store.url}: ${(err as Error).message}`);
  }
}

/** The network's config; a WeftError naming the networks that do exist when it is missing. */
export async function getNetwork(store: Store, name: string): Promise<NetworkConfig> {
  const config = await findNetwork(store, name);
  if (config) return config;
  const names = await listNetworkNames(store);
  throw new WeftError(`no network "${name}" in ${store.url} (${names.length ? `networks: ${names.join(', ')}` : 'no networks yet'})`);
}

export async function listNetworks(store: Store): Promise<NetworkInfo[]> {
  const out: NetworkInfo[] = [];
  for (const name of await listNetworkNames(store)) {
    const config = await findNetwork(store, name);
    if (config) out.push({ name, config });
  }
  return out;
}

export interface CreateOptions {
  /** Backend types this build implements (backends/registry's implementedBackends()); others are refused. */
  backends?: readonly string[];
  /** Mark the network as the default of `weft attach` without --network (only one network may be). */
  default?: boolean;
  /** A further check of the validated config before it is stored (the CLI checks the host's routes). */
  check?: (config: NetworkConfig) => void | Promise<void>;
}

/**
 * Validates `input` (flannel's config JSON as an object), refuses a duplicate name, a Network overlapping
 * a reserved range (loopback, multicast, …) or another network of the store, a VNI another network uses,
 * a backend not implemented and a second default network, then stores it. A vxlan network without a VNI
 * gets the lowest one no other network uses.
 */
export async function createNetwork(store: Store, name: string, input: Record<string, unknown>, opts: CreateOptions = {}): Promise<NetworkConfig> {
  const keys = networkKeys(store, name);
  const existing = await listNetworks(store);
  if (store.flannelLayout && existing.length) {
    throw new WeftError(`${store.url} uses flannel's single-network layout and already holds a network (${existing[0]!.config.Network})`);
  }
  if (existing.some((n) => n.name === name)) throw new WeftError(`network "${name}" already exists in ${store.url}`);
  const raw: Record<string, unknown> = { ...input };
  const backend = { ...((raw.Backend as Record<string, unknown> | undefined) ?? {}) };
  if ((backend.Type ?? 'vxlan') === 'vxlan' && backend.VNI === undefined) {
    const used = new Set(existing.map((n) => n.config.Backend.VNI));
    let vni = 1;
    while (used.has(vni)) vni++;
    raw.Backend = { ...backend, VNI: vni };
  }
  if (opts.default) raw.Default = true;
  const config = parseNetworkConfig(raw);
  checkReservedRanges(config.Network);
  const type = config.Backend.Type;
  if (opts.backends && !opts.backends.includes(type)) {
    throw new WeftError(`backend ${type} is not implemented yet: use ${opts.backends.join(' or ')} (--backend)`, 'ENOTIMPL');
  }
  await opts.check?.(config);
  const cidr = parseCidr(config.Network);
  for (const other of existing) {
    if (cidrsOverlap(cidr, parseCidr(other.config.Network))) {
      throw new WeftError(`network ${config.Network} overlaps network "${other.name}" (${other.config.Network})`);
    }
    if (config.Backend.VNI !== undefined && other.config.Backend.VNI === config.Backend.VNI) {
      throw new WeftError(`VNI ${config.Backend.VNI} is already used by network "${other.name}"; pick another with --vni`);
    }
    if (config.Default && other.config.Default) {
      throw new WeftError(`network "${other.name}" is already the default; create this one without --default`);
    }
  }
  const written = await store.compareAndSwap(keys.config, 0, JSON.stringify(config));
  if (!written) throw new WeftError(`network "${name}" already exists in ${store.url}`);
  return config;
}

/** Removes a network and everything under it; refused while leases are held unless `force`. */
export async function removeNetwork(store: Store, name: string, opts: { force?: boolean } = {}): Promise<void> {
  await getNetwork(store, name);
  const leases = await listLeases(store, name);
  if (leases.length && !opts.force) {
    throw new WeftError(
      `network "${name}" has ${leases.length} live lease${leases.length === 1 ? '' : 's'} (${describeHolders(leases)}); stop those agents or use --force`,
    );
  }
  const keys = networkKeys(store, name);
  for (const prefix of keys.ownedPrefixes) {
    for (const e of await store.list(prefix)) await store.delete(e.key);
  }
}
