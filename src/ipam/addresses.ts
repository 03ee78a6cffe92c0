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
export class AddressPool {
  readonly cidr: Cidr;
  /** First and last address a container may get. */
  readonly first: number;
  readonly last: number;
  readonly gateway: string;

  constructor(readonly subnet: string) {
    this.cidr = parseCidr(subnet);
    this.gateway = gatewayOf(subnet);
    this.first = ipToInt(this.gateway) + 1;
    this.last = lastAddress(this.cidr) - 1;
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
    return intToIp(n);
  }
}
