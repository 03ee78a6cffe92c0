import { cidrsOverlap, parseCidr } from '../net/ipv4.js';
import { listNetworkNames, networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { WeftError } from '../util/errors.js';
import { backendSpec } from './backend-spec.js';
import { DEFAULT_BACKEND, parseNetworkConfig, requireBackendType } from './network.js';
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
  /** Mark the network as the default of `weft attach` without --network (only one network may be). */
  default?: boolean;
  /** A further check of the validated config before it is stored (the CLI checks the host's routes). */
  check?: (config: NetworkConfig) => void | Promise<void>;
}

/**
 * Validates `input` (flannel's config JSON as an object), refuses a duplicate name, a Network overlapping
 * a reserved range (loopback, multicast, …) or another network of the store, what its backend module calls a
 * conflict (a VNI another network uses), a backend this weft has no module for and a second default network,
 * then stores it. The backend module fills in cluster-unique ids it needs (a vxlan network's VNI).
 */
export async function createNetwork(store: Store, name: string, input: Record<string, unknown>, opts: CreateOptions = {}): Promise<NetworkConfig> {
  const keys = networkKeys(store, name);
  const existing = await listNetworks(store);
  if (store.flannelLayout && existing.length) {
    throw new WeftError(`${store.url} uses flannel's single-network layout and already holds a network (${existing[0]!.config.Network})`);
  }
  if (existing.some((n) => n.name === name)) throw new WeftError(`network "${name}" already exists in ${store.url}`);
  const config = await fitNetwork(existing, input, opts);
  const written = await store.compareAndSwap(keys.config, 0, JSON.stringify(config));
  if (!written) throw new WeftError(`network "${name}" already exists in ${store.url}`);
  return config;
}

/**
 * Checks a network that is about to be created without creating it (the Docker plugin asks at RequestPool,
 * so `docker network create` itself fails): the same validation, overlap and backend-conflict checks as
 * createNetwork. Returns the config it would store.
 */
export async function checkNewNetwork(store: Store, input: Record<string, unknown>, opts: CreateOptions = {}): Promise<NetworkConfig> {
  return fitNetwork(await listNetworks(store), input, opts);
}

/** Validates `input` and refuses an overlap with, or a backend conflict (a VNI) with, the `existing` networks. */
async function fitNetwork(existing: NetworkInfo[], input: Record<string, unknown>, opts: CreateOptions): Promise<NetworkConfig> {
  const raw: Record<string, unknown> = { ...input };
  const type = String((raw.Backend as Record<string, unknown> | undefined)?.Type ?? DEFAULT_BACKEND);
  requireBackendType(type);
  const spec = backendSpec(type)!;
  const others = existing.map((n) => n.config.Backend).filter((o) => o.Type === type);
  // ids are filled in before defaults: a VNI the user left out is the lowest free one, not the default 1
  if (spec.allocateIds) raw.Backend = spec.allocateIds({ Type: type, ...((raw.Backend as Record<string, unknown>) ?? {}) }, others);
  if (opts.default) raw.Default = true;
  const config = parseNetworkConfig(raw);
  checkReservedRanges(config.Network);
  await opts.check?.(config);
  const cidr = parseCidr(config.Network);
  for (const other of existing) {
    if (cidrsOverlap(cidr, parseCidr(other.config.Network))) {
      throw new WeftError(`network ${config.Network} overlaps network "${other.name}" (${other.config.Network})`);
    }
    const why = other.config.Backend.Type === type ? spec.conflict?.(config.Backend, { name: other.name, backend: other.config.Backend }) : undefined;
    if (why) throw new WeftError(why);
    if (config.Default && other.config.Default) {
      throw new WeftError(`network "${other.name}" is already the default; create this one without --default`);
    }
  }
  return config;
}
