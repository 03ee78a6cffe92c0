import { WeftError } from '../util/errors.js';
import { subnetToKey } from '../lease/subnets.js';
import type { Store } from './types.js';

/**
 * The key layout of networks in the store — the one place that knows key names.
 *
 * weft layout (keys relative to the store's prefix):
 *   networks/<name>/config                      flannel's network config JSON
 *   networks/<name>/subnets/<a.b.c.d-len>       a host's lease (TTL): flannel's lease JSON, exactly
 *   networks/<name>/hosts/<hostId>              which subnet a host had and until when (no TTL)
 *   networks/<name>/ipam/<a.b.c.d-len>/<ip>     one allocated address in that subnet
 *
 * flannel layout (store.flannelLayout, e.g. etcd prefix /coreos.com/network): the store holds a single
 * network whose keys sit directly under the prefix (`config`, `subnets/10.5.72.0-24`, …) exactly as flannel
 * has them. That network is listed as FLANNEL_NETWORK_NAME and found under any name.
 */

export const NETWORKS_PREFIX = 'networks/';
export const FLANNEL_NETWORK_NAME = 'default';

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,62}$/;

/** Network names and host ids become key segments: letters, digits, '.', '_', '-', up to 63 characters. */
export function checkName(kind: 'network name' | 'host id', name: string): string {
  if (!NAME_RE.test(name)) {
    throw new WeftError(`invalid ${kind} ${JSON.stringify(name)}: use letters, digits, '.', '_' and '-' (at most 63, starting with a letter or digit)`);
  }
  return name;
}

/** The keys of one network. */
export class NetworkKeys {
  /** Prefix of every key of this network ("" in flannel layout). */
  readonly root: string;

  constructor(readonly name: string, flannelLayout: boolean) {
    this.root = flannelLayout ? '' : `${NETWORKS_PREFIX}${checkName('network name', name)}/`;
  }

  get config(): string {
    return `${this.root}config`;
  }
  get subnetsPrefix(): string {
    return `${this.root}subnets/`;
  }
  subnet(subnet: string): string {
    return `${this.subnetsPrefix}${subnetToKey(subnet)}`;
  }
  get hostsPrefix(): string {
    return `${this.root}hosts/`;
  }
  host(hostId: string): string {
    return `${this.hostsPrefix}${checkName('host id', hostId)}`;
  }
  get ipamPrefix(): string {
    return `${this.root}ipam/`;
  }
  /** Prefix of the address records of one leased subnet. */
  ipamSubnetPrefix(subnet: string): string {
    return `${this.ipamPrefix}${subnetToKey(subnet)}/`;
  }
  ipamAddress(subnet: string, ip: string): string {
    return `${this.ipamSubnetPrefix(subnet)}${ip}`;
  }
  /** Every host's endpoints: `endpoints/`. */
  get endpointsRoot(): string {
    return `${this.root}endpoints/`;
  }
  /** Endpoints (attached containers) of one host: `endpoints/<hostId>/<endpointId>`. */
  endpointsPrefix(hostId: string): string {
    return `${this.endpointsRoot}${checkName('host id', hostId)}/`;
  }
  endpoint(hostId: string, id: string): string {
    return `${this.endpointsPrefix(hostId)}${id}`;
  }
  /** Every prefix holding this network's data (what `network rm --force` deletes). */
  get ownedPrefixes(): string[] {
    return this.root ? [this.root] : [this.subnetsPrefix, this.hostsPrefix, this.ipamPrefix, this.endpointsRoot, this.config];
  }
}

/** The name a network is listed under: in flannel layout always FLANNEL_NETWORK_NAME, else `name`. */
export function canonicalNetworkName(store: Store, name: string): string {
  return store.flannelLayout ? FLANNEL_NETWORK_NAME : name;
}

export function networkKeys(store: Store, name: string): NetworkKeys {
  return new NetworkKeys(canonicalNetworkName(store, name), store.flannelLayout);
}

/** The name a key under NETWORKS_PREFIX belongs to, when it is a network's config key. */
export function networkNameOfConfigKey(key: string): string | undefined {
  const m = /^networks\/([^/]+)\/config$/.exec(key);
  return m?.[1];
}

/** Names of the networks whose config is in the store (sorted). */
export async function listNetworkNames(store: Store): Promise<string[]> {
  if (store.flannelLayout) {
    return (await store.get(networkKeys(store, FLANNEL_NETWORK_NAME).config)) ? [FLANNEL_NETWORK_NAME] : [];
  }
  const names = (await store.list(NETWORKS_PREFIX)).map((e) => networkNameOfConfigKey(e.key));
  return names.filter((n): n is string => n !== undefined).sort();
}

/**
 * External BGP peers (`weft bgp peer add`), shared by every agent: `bgp/peers/<ip>` → {"ip","asn","network"?}
 * (network absent: every bgp network). Keys sit beside `networks/`, relative to the store's prefix.
 */
export const BGP_PEERS_PREFIX = 'bgp/peers/';

export function bgpPeerKey(ip: string): string {
  if (!/^\d{1,3}(\.\d{1,3}){3}$/.test(ip)) throw new WeftError(`invalid BGP peer address ${JSON.stringify(ip)}`);
  return `${BGP_PEERS_PREFIX}${ip}`;
}
