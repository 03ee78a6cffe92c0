import { cniAttachmentsPrefix } from '../../store/layout.js';
import type { Store } from '../../store/types.js';
import type { CniResult } from './spec.js';

/**
 * What the CNI plugin remembers per attachment, keyed as the spec names one: (container id, ifname).
 * Written before the interface is made ("adding") so that a DEL after a crash half-way still finds what to
 * undo, and kept after the namespace is gone so that DEL can free the address then.
 */
export interface CniAttachment {
  containerId: string;
  ifname: string;
  /** The network configuration's `name` (GC is per configuration). */
  config: string;
  /** The weft network. */
  network: string;
  /** CNI_NETNS at ADD; weft's endpoint names the container by it. */
  netns: string;
  state: 'adding' | 'ready';
  /**
   * weft's endpoint record for it and that record's store revision (global, never reused), once ready:
   * DEL frees only that endpoint, not whatever holds the namespace path by then.
   */
  endpoint?: { key: string; revision: number };
  /** The ADD result, for CHECK. */
  result?: CniResult;
}

export class Attachments {
  private readonly prefix: string;

  constructor(
    private readonly store: Store,
    hostId: string,
  ) {
    this.prefix = cniAttachmentsPrefix(hostId);
  }

  private key(containerId: string, ifname: string): string {
    return `${this.prefix}${containerId}/${ifname}`;
  }

  async get(containerId: string, ifname: string): Promise<CniAttachment | undefined> {
    const e = await this.store.get(this.key(containerId, ifname));
    return e ? decode(e.value) : undefined;
  }

  /** Creates the record only when there is none; false when (containerId, ifname) is taken. */
  async create(a: CniAttachment): Promise<boolean> {
    return (await this.store.compareAndSwap(this.key(a.containerId, a.ifname), 0, JSON.stringify(a))) !== undefined;
  }

  async put(a: CniAttachment): Promise<void> {
    await this.store.put(this.key(a.containerId, a.ifname), JSON.stringify(a));
  }

  async delete(containerId: string, ifname: string): Promise<void> {
    await this.store.delete(this.key(containerId, ifname));
  }

  async list(): Promise<CniAttachment[]> {
    const out: CniAttachment[] = [];
    for (const e of await this.store.list(this.prefix)) {
      const a = decode(e.value);
      if (a) out.push(a);
    }
    return out;
  }
}

/** A record another client wrote badly is skipped, not fatal. */
function decode(value: string): CniAttachment | undefined {
  try {
    const a = JSON.parse(value) as CniAttachment;
    return typeof a?.containerId === 'string' && typeof a.ifname === 'string' && typeof a.netns === 'string' && typeof a.network === 'string' ? a : undefined;
  } catch {
    return undefined;
  }
}
