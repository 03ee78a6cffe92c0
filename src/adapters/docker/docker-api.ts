import * as http from 'node:http';

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
}
