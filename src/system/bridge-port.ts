import { bridgeBatch, bridgeJson } from './ip.js';
import type { NsOpts } from './netns.js';

/** Per-port flags of a bridge port (`bridge link set dev X …`). */
export interface BridgePortFlags {
  /** ARP/ND suppression: the bridge answers from its neighbour table and does not flood ARP for its own addresses to this port. */
  neighSuppress?: boolean;
  learning?: boolean;
}

/** Sets the flags that differ from what the kernel has (reads `bridge -d link` first). */
export async function setBridgePort(dev: string, flags: BridgePortFlags, sys: NsOpts = {}): Promise<void> {
  const links = await bridgeJson<Array<{ ifname: string; neigh_suppress?: boolean; learning?: boolean }>>(['-d', 'link', 'show', 'dev', dev], sys);
  const have = links.find((l) => l.ifname === dev);
  const on = (b: boolean) => (b ? 'on' : 'off');
  const parts: string[] = [];
  if (flags.neighSuppress !== undefined && have?.neigh_suppress !== flags.neighSuppress) parts.push('neigh_suppress', on(flags.neighSuppress));
  if (flags.learning !== undefined && have?.learning !== flags.learning) parts.push('learning', on(flags.learning));
  if (parts.length) await bridgeBatch([`link set dev ${dev} ${parts.join(' ')}`], sys);
}
