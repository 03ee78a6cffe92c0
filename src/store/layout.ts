import ipaddr from 'ipaddr.js';
import { WeftError } from '../util/errors.js';
import { intToIp, isIPv4, networkOf, parseCidr, parseCidrLoose } from '../net/ipv4.js';
import type { Store } from './types.js';

/**
 * The key layout of networks in the store — the one place that knows key names.
 *
 * weft layout (keys relative to the store's prefix):
 *   networks/<name>/config                      flannel's network config JSON
 *   networks/<name>/subnets/<a.b.c.d-len>       a host's lease (TTL): flannel's lease JSON, exactly
 *   networks/<name>/hosts/<hostId>              which subnet a host had and until when (no TTL)
 *   networks/<name>/ipam/<a.b.c.d-len>/<ip>     one allocated address in that subnet
 *   networks/<name>/dns/<dnsname>/<ip>          one A record of the network's name service (value: owner JSON)
 *
 *   cni/<hostId>/<containerId>/<ifname>         a CNI attachment on a host (src/adapters/cni/attachments.ts)
 *
 * flannel layout (store.flannelLayout, e.g. etcd prefix /coreos.com/network): the store holds a single
 * network whose keys sit directly under the prefix (`config`, `subnets/10.5.72.0-24`, …) exactly as flannel
 * has them. That network is listed as FLANNEL_NETWORK_NAME and found under any name.
 */

export const NETWORKS_PREFIX = 'networks/';

/** What a lease key under `subnets/` names: flannel's `10.5.72.0-24`, or its dual-stack `10.5.72.0-24&fd57:0:0:17::-64`. */
export interface LeaseKey {
  /** The IPv4 subnet, e.g. "10.5.72.0/24": what the lease occupies in the network's range. */
  subnet: string;
  /** The IPv6 subnet of a dual-stack key, e.g. "fd57:0:0:17::/64". */
  subnetV6?: string;
}

/** Parses the last segment of a lease key (plain or dual-stack); undefined for anything else. */
export function parseLeaseKey(key: string): LeaseKey | undefined {
  const amp = key.indexOf('&');
  const subnet = keyToSubnet(amp < 0 ? key : key.slice(0, amp));
  if (!subnet) return undefined;
  if (amp < 0) return { subnet };
  const m = /^([0-9a-fA-F:]+)-(\d{1,3})$/.exec(key.slice(amp + 1));
  if (!m || !ipaddr.IPv6.isValid(m[1]!) || Number(m[2]) > 128) return undefined;
  const len = Number(m[2]);
  const addr = ipaddr.IPv6.parse(m[1]!);
  const net = ipaddr.IPv6.networkAddressFromCIDR(`${m[1]}/${len}`);
  if (net.toNormalizedString() !== addr.toNormalizedString()) return undefined; // host bits set
  return { subnet, subnetV6: `${addr.toString()}/${len}` };
}


/** "10.5.72.0/24" → "10.5.72.0-24" (flannel's subnet key). */
export function subnetToKey(subnet: string): string {
  const c = parseCidr(subnet);
  return `${intToIp(c.base)}-${c.len}`;
}

/** "10.5.72.0-24" → "10.5.72.0/24"; undefined for anything that is not a subnet key. */
export function keyToSubnet(key: string): string | undefined {
  const dash = key.indexOf('-');
  if (dash < 0 || !isIPv4(key.slice(0, dash))) return undefined;
  const text = `${key.slice(0, dash)}/${key.slice(dash + 1)}`;
  const c = parseCidrLoose(text);
  if (!c || networkOf(c.ip, c.len) !== c.ip) return undefined;
  return text;
}
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
  /** DNS records of this network: `dns/<name>/<ip>` (several IPs under one name give round-robin A records). */
  get dnsPrefix(): string {
    return `${this.root}dns/`;
  }
  /** Prefix of the records of one DNS name (the name is lower-case, checked by src/dns/records.ts). */
  dnsNamePrefix(name: string): string {
    return `${this.dnsPrefix}${name}/`;
  }
  dnsRecord(name: string, ip: string): string {
    return `${this.dnsNamePrefix(name)}${ip}`;
  }
  /** [name, ip] of a key under dnsPrefix, or undefined for anything else. */
  dnsRecordOfKey(key: string): [string, string] | undefined {
    if (!key.startsWith(this.dnsPrefix)) return undefined;
    const parts = key.slice(this.dnsPrefix.length).split('/');
    return parts.length === 2 && parts[0] && parts[1] ? [parts[0], parts[1]] : undefined;
  }
  /** Every prefix holding this network's data (what `network rm --force` deletes). */
  get ownedPrefixes(): string[] {
    return this.root ? [this.root] : [this.subnetsPrefix, this.hostsPrefix, this.ipamPrefix, this.endpointsRoot, this.dnsPrefix, this.config];
  }
}

/** Where the CNI plugin's attachments of one host live (not per network: DEL must find one by id alone). */
export function cniAttachmentsPrefix(hostId: string): string {
  return `cni/${checkName('host id', hostId)}/`;
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
 * Networks the user connected (`weft network connect A B`): one key per pair, `connections/<a>+<b>` with the
 * names sorted (so A B and B A are one key). Networks are isolated from each other unless connected.
 */
export const CONNECTIONS_PREFIX = 'connections/';

export function connectionKey(a: string, b: string): string {
  const [x, y] = [checkName('network name', a), checkName('network name', b)].sort();
  return `${CONNECTIONS_PREFIX}${x}+${y}`;
}

/** The two names of a connection key ("a+b"), or undefined when the key is not one. */
export function connectionOfKey(key: string): [string, string] | undefined {
  const m = /^connections\/([^/+]+)\+([^/+]+)$/.exec(key);
  return m ? [m[1]!, m[2]!] : undefined;
}

/**
 * External BGP peers (`weft bgp peer add`), shared by every agent: `bgp/peers/<ip>` → {"ip","asn","network"?}
 * (network absent: every bgp network). Keys sit beside `networks/`, relative to the store's prefix.
 */
export const BGP_PEERS_PREFIX = 'bgp/peers/';

export function bgpPeerKey(ip: string): string {
  if (!isIPv4(ip)) throw new WeftError(`invalid BGP peer address ${JSON.stringify(ip)}`);
  return `${BGP_PEERS_PREFIX}${ip}`;
}
