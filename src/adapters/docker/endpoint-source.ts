import type { Endpoint } from '../../agent/types.js';
import type { DockerApi } from './docker-api.js';
import type { EndpointRecord } from './state.js';
import { describePort } from './ports.js';

/**
 * Docker's containers on weft networks, for `weft ps` and `weft status` (src/agent's EndpointSource): the
 * plugin knows the endpoints (address, MAC, host interface); the Docker API adds each container's name and id.
 */
export function dockerEndpointSource(o: {
  hostId: string;
  /** The plugin's endpoint records (its in-memory state). */
  endpoints: () => readonly EndpointRecord[];
  /** For container names and ids (Docker network inspect). */
  docker?: DockerApi;
  /** Networks whose backend already keeps a store record per Docker endpoint (l2): counted there. */
  recordedInStore?: (network: string) => boolean;
}) {
  return {
    count(network: string): number {
      if (o.recordedInStore?.(network)) return 0;
      return o.endpoints().filter((e) => e.network === network && e.hostIf).length;
    },
    async list(): Promise<Endpoint[]> {
      const eps = o.endpoints().filter((e) => e.hostIf);
      // one inspect per Docker network: its Containers map has each endpoint's container id and name
      const byEndpoint = new Map<string, { id: string; name: string }>();
      for (const netId of new Set(eps.map((e) => e.networkId))) {
        const net = await o.docker?.inspectNetwork(netId).catch(() => undefined);
        for (const [cid, c] of Object.entries(net?.Containers ?? {})) {
          const v = c as { EndpointID?: string; Name?: string };
          if (v.EndpointID) byEndpoint.set(v.EndpointID, { id: cid.slice(0, 12), name: v.Name ?? cid.slice(0, 12) });
        }
      }
      return eps.map((e) => {
        const c = byEndpoint.get(e.id);
        return {
          id: c?.id ?? `endpoint:${e.id.slice(0, 12)}`,
          container: c ? c.name : `docker endpoint ${e.id.slice(0, 12)}`,
          runtime: 'docker',
          network: e.network,
          hostId: o.hostId,
          ifname: '',
          hostIf: e.hostIf ?? '',
          address: e.address,
          mac: e.mac,
          ...(e.gateway ? { gateway: e.gateway } : {}),
          ...(e.ports?.length ? { ports: e.ports.map(describePort) } : {}),
          // its DNS names once the plugin has looked them up (the first is the container name when that is a valid one)
          ...(e.dnsNames?.length ? { name: e.dnsNames[0]! } : {}),
          ...(e.dnsNames && e.dnsNames.length > 1 ? { aliases: e.dnsNames.slice(1) } : {}),
        };
      });
    },
  };
}
