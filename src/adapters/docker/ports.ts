import { z } from 'zod';
import { tryParseIp } from '../../net/ipv4.js';

/**
 * Published ports (`docker run -p HOSTPORT:PORT`). Docker sends them to a remote driver only in the Options
 * of ProgramExternalConnectivity, under com.docker.network.portmap, as libnetwork's PortBinding:
 *   {"Proto":6,"IP":"","Port":80,"HostIP":"","HostPort":8080,"HostPortEnd":8080}
 * (Proto is the IP protocol number). Docker allocates no host port for a remote driver, so a binding
 * without one (`-p 80`) is refused rather than silently not published.
 */
export const PORTMAP_OPTION = 'com.docker.network.portmap';

export interface PublishedPort {
  proto: 'tcp' | 'udp' | 'sctp';
  /** Host address to listen on (absent: every address of the host). */
  hostIp?: string;
  hostPort: number;
  /** Port in the container. */
  port: number;
}

const PROTOS: Record<number, PublishedPort['proto']> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };
const port = z.number().int().min(0).max(65535);
const bindingSchema = z.looseObject({
  Proto: z.number().int(),
  IP: z.string().max(64).optional(),
  Port: port,
  HostIP: z.string().max(64).optional(),
  HostPort: port.optional(),
  HostPortEnd: port.optional(),
});
const portmapSchema = z.array(bindingSchema).max(1024).nullable().optional();

/** Bindings from ProgramExternalConnectivity's Options; throws a message for the user on one weft cannot honour. */
export function parsePortMap(options: Record<string, unknown> | null | undefined): PublishedPort[] {
  const raw = options?.[PORTMAP_OPTION];
  const parsed = portmapSchema.safeParse(raw);
  if (!parsed.success) throw new Error(`invalid ${PORTMAP_OPTION}: ${parsed.error.issues[0]?.message ?? 'not a list of port bindings'}`);
  const out: PublishedPort[] = [];
  const seen = new Set<string>();
  for (const b of parsed.data ?? []) {
    const proto = PROTOS[b.Proto];
    if (!proto) throw new Error(`published port ${b.Port}: protocol ${b.Proto} is not tcp, udp or sctp`);
    const hostIp = b.HostIP ?? '';
    // Docker 20.10 may add an IPv6 wildcard twin of each binding: weft networks are IPv4 only.
    if (hostIp.includes(':')) continue;
    if (hostIp && tryParseIp(hostIp) === undefined) throw new Error(`published port ${b.Port}: invalid host address "${hostIp}"`);
    if (!b.Port) throw new Error(`published port: container port 0 in ${JSON.stringify(b)}`);
    if (!b.HostPort) {
      throw new Error(`-p ${b.Port}/${proto}: weft needs an explicit host port (-p HOSTPORT:${b.Port}); Docker allocates none for network plugins`);
    }
    if (b.HostPortEnd && b.HostPortEnd !== b.HostPort) {
      throw new Error(`-p ${b.HostPort}-${b.HostPortEnd}:${b.Port}: host port ranges are not supported; publish one host port per container port`);
    }
    const p: PublishedPort = { proto, hostPort: b.HostPort, port: b.Port, ...(hostIp && hostIp !== '0.0.0.0' ? { hostIp } : {}) };
    const key = portKey(p);
    if (seen.has(key)) continue;
    seen.add(key);
    out.push(p);
  }
  return out;
}

/** What two bindings may not share on one host: protocol, host port and address ("any" clashes with each one). */
export function portKey(p: PublishedPort): string {
  return `${p.proto}/${p.hostPort}@${p.hostIp ?? '*'}`;
}

/** Whether two bindings would take the same host port. */
export function portsClash(a: PublishedPort, b: PublishedPort): boolean {
  return a.proto === b.proto && a.hostPort === b.hostPort && (!a.hostIp || !b.hostIp || a.hostIp === b.hostIp);
}

export function describePort(p: PublishedPort): string {
  return `${p.hostIp ? `${p.hostIp}:` : ''}${p.hostPort}->${p.port}/${p.proto}`;
}
