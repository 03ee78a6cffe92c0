import type { NetworkStatus } from '../agent/types.js';
import { parseEndpoint } from '../agent/endpoints.js';
import { addressPlan } from '../backends/all.js';
import { bad, ok } from '../backends/findings.js';
import type { AddressPlan } from '../backends/types.js';
import { gatewayOf } from '../ipam/addresses.js';
import { Ipam } from '../ipam/ipam.js';
import { networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import type { DoctorFacts, EndpointRecordFacts, Finding, StoreNetworkFacts } from './types.js';

/**
 * Store against kernel for this host's containers (issue 8 item 7: "doctor reports any difference"): every
 * endpoint record has its interface on the network's bridge, every weft port (vw + 8 hex) on a bridge has a
 * record, and every address IPAM holds for a container of this host belongs to an endpoint record. The
 * agent repairs these at start and on every resync; doctor names what is different now.
 */

/** Host-side ports of the veth-bridge driver: vw + 8 hex of (container, network). */
export const WEFT_PORT = /^vw[0-9a-f]{8}$/;

/**
 * Where this host's containers of `n` take addresses (the backend module's address plan, from the store's
 * config): l2's pool is the whole network and its gateway the network's first address. Without the config,
 * the host's lease with its first address.
 */
export function hostPlan(n: Pick<NetworkStatus, 'name' | 'subnet' | 'backend'>, sn: StoreNetworkFacts | undefined, publicIp: string): AddressPlan {
  const fallback: AddressPlan = { pool: n.subnet, gateway: gatewayOf(n.subnet) };
  if (!sn) return fallback;
  try {
    return addressPlan({ network: n.name, subnet: n.subnet, publicIp, backendType: n.backend, backendData: {} }, { Network: sn.cidr, Backend: sn.backend });
  } catch {
    return fallback;
  }
}

/** Reads this host's endpoint records and the IPAM records of its pool, per network the agent runs. */
export async function readEndpointRecords(store: Store, hostId: string, publicIp: string, networks: NetworkStatus[], stored: StoreNetworkFacts[]): Promise<EndpointRecordFacts[]> {
  const ipam = new Ipam(store);
  const out: EndpointRecordFacts[] = [];
  for (const n of networks) {
    const sn = stored.find((s) => s.name === n.name);
    const pool = hostPlan(n, sn, publicIp).pool;
    const keys = networkKeys(store, n.name);
    const records = (await store.list(keys.endpointsPrefix(hostId)))
      .map((e) => parseEndpoint(e.value))
      .filter((e) => e !== undefined)
      .map((e) => ({ container: e.container, address: e.address, hostIf: e.hostIf, ifname: e.ifname, owner: e.owner, ...(e.runtime ? { runtime: e.runtime } : {}) }));
    // a pool shared by hosts (l2, bridge, macvlan) holds every host's addresses: only this host's count
    const addresses = (await ipam.list({ network: n.name, subnet: pool }))
      .filter((a) => (a.host ? a.host === hostId : pool === n.subnet))
      .map((a) => ({ address: a.address, owner: a.owner }));
    out.push({ network: n.name, pool, records, addresses });
  }
  return out;
}

const bare = (a: string) => a.split('/')[0]!;

/** The differences between the endpoint records, the interfaces and IPAM on this host; one ok finding when none. */
export function judgeEndpoints(f: DoctorFacts): Finding[] {
  const st = f.agent.status;
  if (!st) return [];
  if (f.endpointRecords?.error) return [bad('endpoints', 'warn', `endpoint records not compared with the kernel: ${f.endpointRecords.error}`)];
  if (!f.endpointRecords) return [];
  const out: Finding[] = [];
  const links = new Map(f.links.map((l) => [l.ifname, l]));
  const bridges = new Set(st.networks.map((n) => n.bridge).filter(Boolean));
  const named = new Set<string>();
  let records = 0;
  let addresses = 0;
  for (const e of f.endpointRecords.networks) {
    const n = st.networks.find((x) => x.name === e.network);
    if (!n) continue;
    records += e.records.length;
    addresses += e.addresses.length;
    for (const r of e.records) named.add(r.hostIf);
    // a record with no interface (bridge-based networks: the host end of the veth is on this host)
    if (n.bridge) {
      for (const r of e.records) {
        const l = links.get(r.hostIf);
        const who = `container ${r.container} (${r.address}) of ${e.network}`;
        if (!l)
          out.push(
            bad(
              `endpoint:${e.network}:${r.hostIf}`,
              'error',
              `${who} has an endpoint record but no interface ${r.hostIf} on this host: it is cut off, and its address stays taken`,
              `weft attach ${r.container} --network ${e.network} (re-creates it), or weft detach ${r.container} --network ${e.network}; the agent also repairs it at its next reconcile`,
            ),
          );
        else if (l.master !== n.bridge)
          out.push(bad(`endpoint:${e.network}:${r.hostIf}`, 'error', `${who}: its port ${r.hostIf} is ${l.master ? `on ${l.master}` : 'on no bridge'}, not on ${n.bridge}: it is cut off`, `ip link set ${r.hostIf} master ${n.bridge}`));
      }
    }
    // an address IPAM holds for a container of this host that no endpoint record has. Docker's and CNI's
    // addresses are handed out before their endpoint exists (their runtime releases them): not counted.
    const owners = new Set(e.records.map((r) => r.owner));
    const held = new Set(e.records.map((r) => bare(r.address)));
    for (const a of e.addresses) {
      if (owners.has(a.owner) || held.has(a.address) || !/^(netns|pid):/.test(a.owner)) continue;
      out.push(
        bad(
          `ipam:${e.network}:${a.address}`,
          'warn',
          `address ${a.address} of ${e.network} is allocated to ${a.owner} but no endpoint record has it: leaked (no container on this host uses it)`,
          'restart the agent (its reconcile releases it)',
        ),
      );
    }
  }
  // a weft port with no record: on one of weft's bridges, or on none
  for (const l of f.links) {
    if (!WEFT_PORT.test(l.ifname) || named.has(l.ifname)) continue;
    if (l.master && !bridges.has(l.master)) continue;
    out.push(
      bad(
        `port:${l.ifname}`,
        'warn',
        `interface ${l.ifname}${l.master ? ` on ${l.master}` : ''} is a weft container port but no endpoint record names it: leaked by an interrupted attach or detach`,
        `ip link del ${l.ifname}   (the agent also removes it at its next reconcile)`,
      ),
    );
  }
  if (!out.length) out.push(ok('endpoints', `${records} endpoint record${records === 1 ? '' : 's'}, their interfaces and ${addresses} allocated address${addresses === 1 ? '' : 'es'} agree`));
  return out;
}
