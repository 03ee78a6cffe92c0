import { blockSize, intToIp, ipToInt, lastAddress, parseCidr, parseCidrLoose } from '../net/ipv4.js';

/** The leasable subnets of a network (pure): which subnets a host may lease, by index. */

/** What a validated network config says about which subnets can be leased. */
export interface SubnetRangeSpec {
  Network: string;
  SubnetLen: number;
  SubnetMin?: string;
  SubnetMax?: string;
}

/**
 * The leasable subnets of a network: `count` subnets of length `len`, the i-th starting at first + i·size.
 * Defaults as flannel's: SubnetMin the network's second subnet, SubnetMax its last.
 */
export class SubnetRange {
  readonly first: number;
  readonly len: number;
  readonly count: number;

  constructor(spec: SubnetRangeSpec) {
    const net = parseCidr(spec.Network);
    this.len = spec.SubnetLen;
    const size = blockSize(this.len);
    // flannel's default SubnetMin is the network's second subnet (the first holds the network address).
    this.first = spec.SubnetMin ? ipToInt(spec.SubnetMin) : net.base + size;
    const last = spec.SubnetMax ? ipToInt(spec.SubnetMax) : lastAddress(net) + 1 - size;
    this.count = last < this.first ? 0 : Math.floor((last - this.first) / size) + 1;
  }

  /** The i-th subnet as CIDR text. */
  at(i: number): string {
    return `${intToIp(this.first + i * blockSize(this.len))}/${this.len}`;
  }

  /** Index of a subnet in this range, or -1 when it is not one of them. */
  indexOf(subnet: string): number {
    const c = parseCidrLoose(subnet);
    if (!c || c.len !== this.len) return -1;
    const off = c.ip - this.first;
    const size = blockSize(this.len);
    if (off < 0 || off % size !== 0 || off / size >= this.count) return -1;
    return off / size;
  }

  has(subnet: string): boolean {
    return this.indexOf(subnet) >= 0;
  }

  *all(): Generator<string> {
    for (let i = 0; i < this.count; i++) yield this.at(i);
  }
}
