import '../backends/all.js';
import path from 'node:path';
import { createBackend } from '../backends/registry.js';
import { networkKeys } from '../store/layout.js';
import { getNetwork } from '../config/registry.js';
import { removeHostRecords } from '../dns/registry.js';
import { LeaseManager } from '../lease/manager.js';
import { listNetworkNames } from '../store/layout.js';
import { openStore } from '../store/index.js';
import { removeBridge } from '../system/bridge.js';
import { listInterfaces } from '../system/ip.js';
import { removeAntispoof } from '../system/antispoof.js';
import { removeAllWeftRules } from '../system/iptables.js';
import { findUnderlay } from '../system/underlay.js';
import { detachVeth } from '../system/veth.js';
import { log } from '../util/log.js';
import { BridgeNames } from './bridges.js';
import { resolveHostId } from './host-id.js';

/**
 * `weft reset` when no agent runs: gives this host's leases back and removes weft's bridges, backend
 * devices and routes, container veths and iptables rules. (With an agent running, the agent does it.)
 */
export async function resetHost(o: { storeUrl?: string; stateDir: string; hostId?: string }): Promise<{ networks: string[] }> {
  const hostId = resolveHostId(o.hostId, o.stateDir);
  const store = await openStore(o.storeUrl);
  const underlay = await findUnderlay().catch(() => undefined);
  const names = await listNetworkNames(store);
  try {
    for (const name of names) {
      await new LeaseManager(store, name, { hostId }).release();
      await removeHostRecords(store, name, hostId); // this host's DNS names (src/dns)
      // this host's endpoint records go with its veths (a later attach must not find a stale record)
      for (const e of await store.list(networkKeys(store, name).endpointsPrefix(hostId))) await store.delete(e.key);
      const network = await getNetwork(store, name).catch(() => undefined);
      if (network) {
        // without a default route the underlay is unknown; teardown needs only the device names then
        const u = underlay ?? { iface: '', ip: '', mtu: 1500 };
        try {
          await createBackend({ networkName: name, network, underlay: u, log, stateDir: path.join(o.stateDir, name), bridge: '', hostId, sys: {} }).teardown();
        } catch (err) {
          log.warn({ err, network: name }, 'backend teardown failed');
        }
      }
    }
  } finally {
    await store.close();
  }
  // Host ends of container veths (vw + 8 hex) go with their bridges' networks.
  for (const ifname of await listInterfaces()) if (/^vw[0-9a-f]{8}$/.test(ifname)) await detachVeth(ifname).catch(() => {});
  const bridges = new BridgeNames(o.stateDir);
  for (const [network, bridge] of Object.entries(bridges.all())) {
    await removeBridge(bridge).catch(() => {});
    bridges.forget(network);
  }
  await removeAllWeftRules();
  await removeAntispoof();
  return { networks: names };
}
