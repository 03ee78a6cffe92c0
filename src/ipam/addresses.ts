import { WeftError } from '../util/errors.js';
import { containsAddress, intToIp, ipToInt, isIPv4, lastAddress, parseCidr, type Cidr } from '../net/ipv4.js';

/** The first usable address of a subnet: the host bridge's address and the containers' gateway. */
export function gatewayOf(subnet: string): string {
  return intToIp(parseCidr(subnet).base + 1);
}

/** The gateway with the subnet's prefix length ("10.5.72.1/24"): the bridge's address, flannel's FLANNEL_SUBNET, dockerd's --bip. */
export function gatewayCidr(subnet: string): string {
  return `${gatewayOf(subnet)}/${parseCidr(subnet).len}`;
}

/** Which part of a pool containers may have (a backend's AddressPlan: bridge/macvlan/l2 narrow or move it). */
export interface PoolRange {
  /** First and last address a container may get (defaults: the pool's first usable … last before broadcast). */
  first?: string;
  last?: string;
  /** The containers' gateway, never handed out; absent: none. */
  gateway?: string;
}

/**
 * Which addresses of a pool containers may have (pure). Without a range (a leased subnet): the network
 * address, the first usable address (the gateway: the host bridge owns it) and the broadcast address are
 * never handed out. With a range (a backend's address plan): the addresses first…last, minus the gateway
 * when it lies inside, and never the pool's network or broadcast address.
 */
export class AddressPool {
  readonly cidr: Cidr;
  /** First and last address a container may get. */
  readonly first: number;
  readonly last: number;
  readonly gateway: string | undefined;
  private readonly skip: number | undefined;

  constructor(
    readonly subnet: string,
    range?: PoolRange,
  ) {
    this.cidr = parseCidr(subnet);
    const bcast = lastAddress(this.cidr);
    if (!range) {
      this.gateway = gatewayOf(subnet);
      this.first = ipToInt(this.gateway) + 1;
      this.last = bcast - 1;
    } else {
      this.gateway = range.gateway;
      this.first = Math.max(this.cidr.base + 1, range.first ? ipToInt(range.first) : this.cidr.base + 1);
      this.last = Math.min(bcast - 1, range.last ? ipToInt(range.last) : bcast - 1);
    }
    const gw = this.gateway && isIPv4(this.gateway) ? ipToInt(this.gateway) : undefined;
    this.skip = gw !== undefined && gw >= this.first && gw <= this.last ? gw : undefined;
  }

  get size(): number {
    return Math.max(0, this.last - this.first + 1 - (this.skip === undefined ? 0 : 1));
  }

  /** The i-th assignable address. */
  at(i: number): string {
    const n = this.first + i;
    return intToIp(this.skip !== undefined && n >= this.skip ? n + 1 : n);
  }

  /** "10.5.0.0/16" or, for a narrowed range, "10.5.0.0/16 (10.5.1.16–10.5.1.31)". */
  private describe(): string {
    const full = this.first === this.cidr.base + 1 + (this.gateway === gatewayOf(this.subnet) && this.skip === undefined ? 1 : 0) && this.last === lastAddress(this.cidr) - 1;
    return full ? this.subnet : `${this.subnet} (${intToIp(this.first)}–${intToIp(this.last)})`;
  }

  /**
   * Checks a requested address ("10.5.72.9" or "10.5.72.9/24") and returns it without the prefix length;
   * a WeftError says why it cannot be given out.
   */
  check(requested: string): string {
    const [ip, len, ...rest] = requested.split('/');
    if (!ip || !isIPv4(ip) || rest.length || (len !== undefined && !/^\d{1,2}$/.test(len))) {
      throw new WeftError(`requested address ${JSON.stringify(requested)} is not an IPv4 address`);
    }
    if (len !== undefined && Number(len) !== this.cidr.len) {
      throw new WeftError(`requested address ${requested} has prefix /${len} but this host's subnet is ${this.subnet}`);
    }
    const n = ipToInt(ip);
    if (!containsAddress(this.cidr, n)) throw new WeftError(`requested address ${ip} is outside this host's subnet ${this.subnet}`);
    if (n === this.cidr.base) throw new WeftError(`requested address ${ip} is the network address of ${this.subnet}`);
    if (n === lastAddress(this.cidr)) throw new WeftError(`requested address ${ip} is the broadcast address of ${this.subnet}`);
    if (this.gateway && n === ipToInt(this.gateway)) throw new WeftError(`requested address ${ip} is the gateway of ${this.subnet} (the host bridge's address)`);
    if (n < this.first || n > this.last) throw new WeftError(`requested address ${ip} is outside this host's range of ${this.describe()}`);
    return intToIp(n);
  }
}
