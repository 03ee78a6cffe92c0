import type { AgentStatus } from '../agent/types.js';

/** What the web map draws, as one JSON document (pure: built from the agent's status and the store's endpoint records). */
export interface MapSnapshot {
  /** The host whose agent serves the page. */
  self: string;
  generatedAt: number;
  hosts: MapHost[];
  /** Tunnels from the serving host to each peer, per network. */
  links: MapLink[];
}

export type Health = 'ok' | 'bad' | 'unknown';

export interface MapHost {
  id: string;
  publicIp: string;
  self: boolean;
  subnets: Array<{ network: string; subnet: string; backend: string }>;
  containers: MapContainer[];
  /** Extra facts shown on click. */
  details: Record<string, unknown>;
}

export interface MapContainer {
  id: string;
  network: string;
  address: string;
  name?: string;
  container: string;
  mac?: string;
  ifname?: string;
}

export interface MapLink {
  from: string;
  to: string;
  network: string;
  backend: string;
  health: Health;
  why: string;
}

/** An endpoint record as the store holds it (untrusted: anything may be missing). */
export interface RawEndpoint {
  network: string;
  hostId: string;
  value: string;
}

/** Parses an endpoint record leniently; undefined for anything that does not look like one. */
export function parseMapContainer(raw: RawEndpoint): (MapContainer & { hostId: string }) | undefined {
  let v: Record<string, unknown>;
  try {
    v = JSON.parse(raw.value) as Record<string, unknown>;
  } catch {
    return undefined;
  }
  if (!v || typeof v !== 'object') return undefined;
  const str = (k: string) => (typeof v[k] === 'string' ? (v[k] as string) : undefined);
  const address = str('address');
  const id = str('id');
  if (!address || !id) return undefined;
  const name = str('name');
  const mac = str('mac');
  const ifname = str('ifname');
  return {
    id,
    hostId: str('hostId') || raw.hostId,
    network: raw.network,
    address,
    container: str('container') ?? str('owner') ?? id,
    ...(name ? { name } : {}),
    ...(mac ? { mac } : {}),
    ...(ifname ? { ifname } : {}),
  };
}

/** Builds the map from this host's status and every host's endpoint records. */
export function buildSnapshot(st: AgentStatus, endpoints: RawEndpoint[], now = Date.now()): MapSnapshot {
  const hosts = new Map<string, MapHost>();
  const host = (id: string, publicIp: string): MapHost => {
    let h = hosts.get(id);
    if (!h) hosts.set(id, (h = { id, publicIp, self: id === st.hostId, subnets: [], containers: [], details: {} }));
    return h;
  };
  const me = host(st.hostId, st.publicIp);
  me.details = { underlay: `${st.iface} ${st.publicIp}`, store: st.store, failed: st.failed, endpoints: st.endpoints };
  const links: MapLink[] = [];
  for (const n of st.networks) {
    me.subnets.push({ network: n.name, subnet: n.subnet, backend: n.backend });
    me.details[`network ${n.name}`] = { subnet: n.subnet, backend: n.backend, mtu: n.mtu, bridge: n.bridge, gateway: n.gateway, leaseExpiresAt: n.leaseExpiresAt, status: n.status, error: n.error };
    const backendOk = n.status?.healthy !== false && !n.error;
    for (const p of n.peers) {
      const id = p.hostId ?? p.publicIp;
      const h = host(id, p.publicIp);
      h.subnets.push({ network: n.name, subnet: p.subnet, backend: n.backend });
      h.details[`network ${n.name}`] = { subnet: p.subnet, backendData: p.backendData, lastSeen: p.lastSeen, expiresAt: p.expiresAt, reachable: p.reachable };
      const expired = p.expiresAt !== undefined && p.expiresAt < now;
      const health: Health = !backendOk || p.reachable === false || expired ? 'bad' : p.reachable === true ? 'ok' : 'unknown';
      const why = !backendOk
        ? `backend ${n.backend} on ${st.hostId}: ${n.error ?? n.status?.detail ?? 'unhealthy'}`
        : expired
          ? `lease ${p.subnet} expired`
          : p.reachable === false
            ? `${p.publicIp} does not answer on the underlay`
            : p.reachable
              ? `${p.publicIp} answers`
              : 'not probed yet';
      links.push({ from: st.hostId, to: id, network: n.name, backend: n.backend, health, why });
    }
  }
  const byIp = new Map([...hosts.values()].map((h) => [h.id, h]));
  for (const raw of endpoints) {
    const c = parseMapContainer(raw);
    if (!c) continue;
    const { hostId, ...rest } = c;
    const h = byIp.get(hostId) ?? host(hostId, '?');
    byIp.set(hostId, h);
    h.containers.push(rest);
  }
  for (const h of hosts.values()) h.containers.sort((a, b) => a.address.localeCompare(b.address, undefined, { numeric: true }));
  // the serving host first, then by id
  const sorted = [...hosts.values()].sort((a, b) => (a.self ? -1 : b.self ? 1 : a.id.localeCompare(b.id, undefined, { numeric: true })));
  return { self: st.hostId, generatedAt: now, hosts: sorted, links };
}

/** The part of a snapshot that changes what the page shows (generatedAt and probe times left out). */
export function snapshotKey(s: MapSnapshot): string {
  return JSON.stringify([s.hosts.map((h) => [h.id, h.publicIp, h.subnets, h.containers]), s.links.map((l) => [l.to, l.network, l.health])]);
}
