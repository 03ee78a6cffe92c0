import '../backends/all.js';
import path from 'node:path';
import { backendModule, createBackend } from '../backends/registry.js';
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
export interface ResetResult {
  networks: string[];
  /** weft's devices still present afterwards (backend devices, bridges, container ports): empty when all went. */
  left: string[];
}

export async function resetHost(o: { storeUrl?: string; stateDir: string; hostId?: string }): Promise<ResetResult> {
  const hostId = resolveHostId(o.hostId, o.stateDir);
  const store = await openStore(o.storeUrl);
  const underlay = await findUnderlay().catch(() => undefined);
  const names = await listNetworkNames(store);
  /** Every device this reset must remove, checked at the end (the backends' devices, the bridges). */
  const devices = new Set<string>();
  try {
    for (const name of names) {
      await new LeaseManager(store, name, { hostId }).release();
      await removeHostRecords(store, name, hostId); // this host's DNS names (src/dns)
      // this host's endpoint records go with its veths (a later attach must not find a stale record)
      for (const e of await store.list(networkKeys(store, name).endpointsPrefix(hostId))) await store.delete(e.key);
      const network = await getNetwork(store, name).catch(() => undefined);
      if (network) {
        try {
          for (const d of backendModule(network.Backend.Type).deviceNames?.(network) ?? []) devices.add(d);
        } catch {
          /* a backend this weft does not know */
        }
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
    devices.add(bridge);
    await removeBridge(bridge).catch((err) => log.warn({ err, bridge }, 'bridge removal failed'));
    bridges.forget(network);
  }
  await removeAllWeftRules();
  await removeAntispoof();
  // say what is still there rather than assume the removals worked
  const present = await listInterfaces();
  const left = present.filter((n) => devices.has(n) || /^vw[0-9a-f]{8}$/.test(n)).sort();
  return { networks: names, left };
}

/** What `weft reset` prints: success only when nothing of weft's is left. */
export function resetMessage(r: { left?: string[] }): { ok: boolean; text: string } {
  const left = r.left ?? [];
  if (!left.length) return { ok: true, text: "reset: removed weft's devices, rules and leases on this host" };
  return { ok: false, text: `reset: could not remove ${left.join(', ')} (see the log above); the leases were given back` };
}
