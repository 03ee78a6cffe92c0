import { type Cidr, containsAddress, intToIp, ipToInt, isIPv4, lastAddress, parseCidr } from '../net/ipv4.js';
import { WeftError } from '../util/errors.js';

/** The first usable address of a subnet: the host bridge's address and the containers' gateway. */
export function gatewayOf(subnet: string): string {
  return intToIp(parseCidr(subnet).base + 1);
}

/** The gateway with the subnet's prefix length ("10.5.72.1/24"): the bridge's address, flannel's FLANNEL_SUBNET, dockerd's --bip. */
export function gatewayCidr(subnet: string): string {
  return `${gatewayOf(subnet)}/${parseCidr(subnet).len}`;
}

/**
 * Which addresses of a leased subnet containers may have (pure). The network address, the first usable
 * address (the gateway: the host bridge owns it) and the broadcast address are never handed out.
 */
/** A narrower part of a subnet containers take addresses from (the rest is someone else's, e.g. Docker's --fixed-cidr). */
export interface PoolRange {
  /** First and last address containers may get (defaults: after the gateway … before broadcast). */
  first?: string;
  last?: string;
  /** The gateway (default: the subnet's first usable address). */
  gateway?: string;
}

export class AddressPool {
  readonly cidr: Cidr;
  /** First and last address a container may get. */
  readonly first: number;
  readonly last: number;
  readonly gateway: string;

  constructor(readonly subnet: string, range: PoolRange = {}) {
    this.cidr = parseCidr(subnet);
    this.gateway = range.gateway ?? gatewayOf(subnet);
    this.first = range.first ? ipToInt(range.first) : ipToInt(gatewayOf(subnet)) + 1;
    this.last = range.last ? ipToInt(range.last) : lastAddress(this.cidr) - 1;
    if (!containsAddress(this.cidr, this.first) || !containsAddress(this.cidr, this.last)) {
      throw new WeftError(`address range ${range.first ?? ''}–${range.last ?? ''} is not inside ${subnet}`);
    }
  }

  get size(): number {
    return Math.max(0, this.last - this.first + 1);
  }

  /** The i-th assignable address. */
  at(i: number): string {
    return intToIp(this.first + i);
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
    if (n === ipToInt(this.gateway)) throw new WeftError(`requested address ${ip} is the gateway of ${this.subnet} (the host bridge's address)`);
    if (n < this.first || n > this.last) {
      throw new WeftError(`requested address ${ip} is outside the range weft hands out in ${this.subnet} (${intToIp(this.first)}–${intToIp(this.last)}; the rest belongs to Docker's --fixed-cidr)`);
    }
    return intToIp(n);
  }
}
