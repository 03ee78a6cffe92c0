import * as http from 'node:http';
import { z } from 'zod';

/**
 * The few Docker Engine API calls weft needs, over dockerd's unix socket (API v1.41, Docker 20.10).
 * Kept to plain http so the agent does not depend on a Docker client library at runtime.
 */

export const DEFAULT_DOCKER_SOCKET = (process.env.DOCKER_HOST ?? 'unix:///var/run/docker.sock').replace(/^unix:\/\//, '');

export class DockerApiError extends Error {
  constructor(
    message: string,
    readonly status: number,
  ) {
    super(message);
  }
}

export interface DockerNetworkSummary {
  Id: string;
  Name: string;
  Driver: string;
  /** When Docker made it (RFC 3339 with nanoseconds). */
  Created?: string;
  IPAM?: { Driver?: string; Config?: Array<{ Subnet?: string }>; Options?: Record<string, string> | null };
  Options?: Record<string, string> | null;
  Containers?: Record<string, unknown> | null;
}

/** What Docker answers is not trusted: only the fields weft reads, checked (extra fields pass). */
const endpointSettings = z.looseObject({
  EndpointID: z.string().max(256).optional(),
  NetworkID: z.string().max(256).optional(),
  Aliases: z.array(z.string().max(1024)).max(256).nullable().optional(),
});
const networksMap = z.record(z.string().max(1024), endpointSettings.nullable());
/** GET /containers/json: one summary per container. */
export const containerListSchema = z
  .array(
    z.looseObject({
      Id: z.string().regex(/^[0-9a-f]{12,64}$/, 'not a container id'),
      Names: z.array(z.string().max(1024)).max(64).nullable().optional(),
      NetworkSettings: z.looseObject({ Networks: networksMap.nullable().optional() }).nullable().optional(),
    }),
  )
  .max(100_000);
/** GET /containers/{id}/json: the fields weft reads. */
export const containerInspectSchema = z.looseObject({
  Id: z.string().regex(/^[0-9a-f]{12,64}$/, 'not a container id'),
  Name: z.string().max(1024).optional(),
  NetworkSettings: z.looseObject({ Networks: networksMap.nullable().optional() }).nullable().optional(),
});

/** A container as the Docker API names it on one of its endpoints. */
export interface EndpointContainer {
  /** Full container id. */
  id: string;
  /** Its name without Docker's leading "/". */
  name: string;
  /** `--network-alias` aliases on that network (Docker adds the short id too), as Docker lists them. */
  aliases: string[];
}

/** Docker's answer did not have the shape weft reads (an error naming the field; never trusted half-way). */
export class DockerAnswerError extends Error {}

function checked<T>(schema: z.ZodType<T>, value: unknown, what: string): T {
  const r = schema.safeParse(value);
  if (r.success) return r.data;
  const issue = r.error.issues[0]!;
  throw new DockerAnswerError(`unexpected answer from docker ${what}: ${issue.path.join('.') || '(body)'}: ${issue.message}`);
}

export class DockerApi {
  constructor(readonly socket: string = DEFAULT_DOCKER_SOCKET) {}

  request<T>(method: string, path: string, body?: unknown, timeoutMs = 30_000): Promise<T> {
    const payload = body === undefined ? undefined : JSON.stringify(body);
    return new Promise<T>((resolve, reject) => {
      const req = http.request(
        {
          socketPath: this.socket,
          method,
          path: `/v1.41${path}`,
          timeout: timeoutMs,
          headers: payload ? { 'content-type': 'application/json', 'content-length': Buffer.byteLength(payload) } : {},
        },
        (res) => {
          let text = '';
          res.on('data', (c) => (text += c));
          res.on('end', () => {
            let parsed: unknown = undefined;
            try {
              parsed = text ? JSON.parse(text) : undefined;
            } catch {
              parsed = text;
            }
            const status = res.statusCode ?? 500;
            if (status >= 300) {
              const msg = (parsed as { message?: string } | undefined)?.message ?? `${text}`.trim();
              reject(new DockerApiError(`docker ${method} ${path}: ${msg || status}`, status));
            } else resolve(parsed as T);
          });
        },
      );
      req.on('timeout', () => req.destroy(new Error(`docker ${method} ${path}: no answer from ${this.socket}`)));
      req.on('error', reject);
      req.end(payload);
    });
  }

  async networkName(id: string): Promise<string | undefined> {
    try {
      return (await this.request<DockerNetworkSummary>('GET', `/networks/${encodeURIComponent(id)}`, undefined, 3000)).Name;
    } catch (err) {
      if (err instanceof DockerApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  listNetworks(): Promise<DockerNetworkSummary[]> {
    return this.request<DockerNetworkSummary[]>('GET', '/networks');
  }

  inspectNetwork(idOrName: string): Promise<DockerNetworkSummary> {
    return this.request<DockerNetworkSummary>('GET', `/networks/${encodeURIComponent(idOrName)}`);
  }

  createNetwork(spec: {
    Name: string;
    Driver: string;
    IPAM: { Driver: string; Config: Array<{ Subnet: string }>; Options?: Record<string, string> };
    Options?: Record<string, string>;
  }): Promise<{ Id: string }> {
    return this.request<{ Id: string }>('POST', '/networks/create', { CheckDuplicate: true, ...spec });
  }

  async removeNetwork(idOrName: string): Promise<void> {
    await this.request('DELETE', `/networks/${encodeURIComponent(idOrName)}`);
  }

  /** A running container's init PID (for `weft attach <docker container>`); undefined when unknown. */
  async containerPid(idOrName: string): Promise<{ id: string; pid: number } | undefined> {
    try {
      const c = await this.request<{ Id: string; State?: { Pid?: number; Running?: boolean } }>(
        'GET',
        `/containers/${encodeURIComponent(idOrName)}/json`,
        undefined,
        5000,
      );
      if (!c.State?.Running || !c.State.Pid) return undefined;
      return { id: c.Id, pid: c.State.Pid };
    } catch (err) {
      if (err instanceof DockerApiError && err.status === 404) return undefined;
      throw err;
    }
  }

  /**
   * The container behind a network endpoint: its name and its aliases on that network. undefined while
   * Docker does not list the endpoint yet (a container still starting: Docker records it after Join) or
   * any more. Throws when Docker does not answer or answers something malformed.
   */
  async containerOfEndpoint(networkId: string, endpointId: string, timeoutMs = 5000): Promise<EndpointContainer | undefined> {
    const filters = encodeURIComponent(JSON.stringify({ network: [networkId] }));
    const list = checked(containerListSchema, await this.request<unknown>('GET', `/containers/json?all=1&filters=${filters}`, undefined, timeoutMs), 'GET /containers/json');
    const summary = list.find((c) => Object.values(c.NetworkSettings?.Networks ?? {}).some((n) => n?.EndpointID === endpointId));
    if (!summary) return undefined;
    // The summary has the name; aliases only in the container's own record (its lock may be held while it starts: retried by the caller).
    let inspect: z.infer<typeof containerInspectSchema>;
    try {
      inspect = checked(containerInspectSchema, await this.request<unknown>('GET', `/containers/${summary.Id}/json`, undefined, timeoutMs), `GET /containers/${summary.Id.slice(0, 12)}/json`);
    } catch (err) {
      if (err instanceof DockerApiError && err.status === 404) return undefined; // removed meanwhile
      throw err;
    }
    const net = Object.values(inspect.NetworkSettings?.Networks ?? {}).find((n) => n?.EndpointID === endpointId);
    if (!net) return undefined;
    const name = (inspect.Name ?? summary.Names?.[0] ?? '').replace(/^\//, '');
    if (!name) throw new DockerAnswerError(`unexpected answer from docker: container ${summary.Id.slice(0, 12)} has no name`);
    return { id: inspect.Id, name, aliases: [...(net.Aliases ?? [])] };
  }
}
