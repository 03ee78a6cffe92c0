import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import * as path from 'node:path';
import type { PublishedPort } from './ports.js';

/**
 * What the Docker plugin must remember across restarts (Docker never replays CreateNetwork/CreateEndpoint
 * after a plugin restart). Docker network and endpoint ids are per Docker daemon, so this state is per host:
 * it lives in the agent's state dir (docker-plugin.json).
 */
export interface PoolRecord {
  /** The pool as Docker asked for it, e.g. "10.40.0.0/16". */
  pool: string;
  /** IPAM options given with --ipam-opt. */
  options: Record<string, string>;
  /** The weft network the pool belongs to, once known. */
  network?: string;
}

export interface NetworkRecord {
  /** Docker's network id. */
  id: string;
  poolId: string;
  pool: string;
  /** The weft network (in the store) behind this Docker network. */
  network?: string;
  /** Docker's name for it, once resolved (for messages). */
  dockerName?: string;
  /** Driver options given with -o. */
  options: Record<string, string>;
}

export interface EndpointRecord {
  id: string;
  networkId: string;
  network: string;
  /** Address with the lease's prefix length, e.g. "10.40.1.2/24". */
  address: string;
  mac: string;
  /** Host end (on the bridge) and the end Docker moves into the container, once joined. */
  hostIf?: string;
  peerIf?: string;
  /**
   * An interface that lives only in the container (macvlan: hostIf = peerIf), after Leave: Docker moves it
   * back to the host under this name once Leave returns, and DeleteEndpoint removes it.
   */
  returningIf?: string;
  gateway?: string;
  /** Ports published with `docker run -p` (ProgramExternalConnectivity), until revoked. */
  ports?: PublishedPort[];
  /** The container's name (from the Docker API after Join). */
  container?: string;
  /** DNS names registered for the endpoint (container name, then its aliases), until Leave. */
  dnsNames?: string[];
}

export interface PluginState {
  pools: Record<string, PoolRecord>;
  networks: Record<string, NetworkRecord>;
  endpoints: Record<string, EndpointRecord>;
}

export function emptyState(): PluginState {
  return { pools: {}, networks: {}, endpoints: {} };
}

export interface StateStore {
  load(): Promise<PluginState>;
  save(state: PluginState): Promise<void>;
}

/** Atomic JSON file (write to a temp file, rename). */
export class FileStateStore implements StateStore {
  constructor(readonly file: string) {}

  async load(): Promise<PluginState> {
    try {
      const parsed = JSON.parse(await readFile(this.file, 'utf8')) as Partial<PluginState>;
      return { pools: parsed.pools ?? {}, networks: parsed.networks ?? {}, endpoints: parsed.endpoints ?? {} };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return emptyState();
      throw err;
    }
  }

  async save(state: PluginState): Promise<void> {
    await mkdir(path.dirname(this.file), { recursive: true });
    const tmp = `${this.file}.${process.pid}.tmp`;
    await writeFile(tmp, JSON.stringify(state, null, 2) + '\n', { mode: 0o600 });
    await rename(tmp, this.file);
  }
}
