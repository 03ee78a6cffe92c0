import type { Store, Watch, WatchEvent } from '../../store/types.js';
import { DockerApiError, type DockerApi } from './docker-api.js';
import { DOCKER_NETWORKS_PREFIX, type DockerNetworkRecord } from './agent-ops.js';

/**
 * Makes a Docker network created on one host exist on every host (and go away everywhere with it): follows
 * docker/networks/<name> in the store and creates/removes the same network (driver and IPAM driver = the
 * plugin) on this host's dockerd. Docker 20.10 keeps remote-driver networks per daemon outside Swarm, so
 * this is how `docker network create` on host A makes the network usable with `docker run` on host B.
 */
export interface SyncLog {
  info(obj: object, msg?: string): void;
  warn(obj: object, msg?: string): void;
}

export class DockerNetworkSync {
  private watch?: Watch;
  private chain: Promise<void> = Promise.resolve();
  private readonly records = new Map<string, DockerNetworkRecord>();
  /** Names that had a record at some point: only those are removed from Docker when the record goes. */
  private readonly seen = new Set<string>();
  private stopped = false;
  /** When this sync started: Docker networks older than that may have been removed elsewhere meanwhile. */
  private startedAt = 0;

  constructor(
    private readonly store: Store,
    private readonly docker: DockerApi,
    private readonly driver: string,
    private readonly log?: SyncLog,
  ) {}

  start(): void {
    this.startedAt = Date.now();
    this.watch = this.store.watch(DOCKER_NETWORKS_PREFIX, (ev) => this.onEvent(ev));
  }

  /** Resolves when every event seen so far has been applied. */
  settled(): Promise<void> {
    return this.chain;
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.watch?.close();
    await this.chain;
  }

  private onEvent(ev: WatchEvent): void {
    const parse = (value: string): DockerNetworkRecord | undefined => {
      try {
        return JSON.parse(value) as DockerNetworkRecord;
      } catch {
        return undefined;
      }
    };
    if (ev.type === 'resync') {
      this.records.clear();
      for (const e of ev.entries) {
        const r = parse(e.value);
        if (r) this.records.set(e.key.slice(DOCKER_NETWORKS_PREFIX.length), r);
      }
    } else if (ev.type === 'put') {
      const r = parse(ev.entry.value);
      if (r) this.records.set(ev.entry.key.slice(DOCKER_NETWORKS_PREFIX.length), r);
    } else {
      this.records.delete(ev.key.slice(DOCKER_NETWORKS_PREFIX.length));
    }
    this.chain = this.chain.then(() => this.apply()).catch((err) => this.log?.warn({ err: String(err) }, 'docker network sync failed'));
  }

  private retries = 0;

  /** Applies again in a second (a container on a network removed elsewhere may still be going away). */
  private retryLater(): void {
    if (this.stopped || this.retries >= 30) return;
    this.retries++;
    setTimeout(() => {
      this.chain = this.chain.then(() => this.apply()).catch((err) => this.log?.warn({ err: String(err) }, 'docker network sync failed'));
    }, 1000).unref();
  }

  private async apply(): Promise<void> {
    if (this.stopped) return;
    const local = await this.docker.listNetworks();
    const byName = new Map(local.map((n) => [n.Name, n]));
    for (const r of this.records.values()) {
      this.seen.add(r.dockerName);
      if (r.removing) continue;
      const have = byName.get(r.dockerName);
      if (have) {
        if (have.Driver !== this.driver) {
          this.log?.warn({ network: r.dockerName, driver: have.Driver }, `a Docker network ${r.dockerName} with another driver exists on this host; not replacing it`);
        }
        continue;
      }
      try {
        await this.docker.createNetwork({
          Name: r.dockerName,
          Driver: this.driver,
          IPAM: { Driver: this.driver, Config: [{ Subnet: r.subnet }], Options: r.ipamOptions },
          Options: r.options,
        });
        this.log?.info({ network: r.dockerName, subnet: r.subnet }, 'created Docker network from the store');
      } catch (err) {
        if (!(err instanceof DockerApiError && err.status === 409)) throw err;
      }
    }
    const wanted = new Set([...this.records.values()].filter((r) => !r.removing).map((r) => r.dockerName));
    const recorded = new Set([...this.records.values()].map((r) => r.dockerName));
    for (const n of local) {
      if (n.Driver !== this.driver || wanted.has(n.Name)) continue;
      if (!this.seen.has(n.Name)) {
        // Removed on another host while this agent was down (the store's record went while nobody here
        // watched): the store is what every host agrees on, and its owner removed the network, so the stale
        // local copy goes too — re-creating it would bring back, everywhere, a network the user deleted.
        // Only networks Docker made before this agent started: a network made since is the user's own,
        // waiting for its record (created by the plugin right after Docker's CreateNetwork).
        const created = n.Created ? Date.parse(n.Created) : NaN;
        if (recorded.has(n.Name) || !(created < this.startedAt)) continue;
        this.seen.add(n.Name);
        this.log?.info({ network: n.Name }, 'Docker network has no record in the store (removed on another host while this agent was down): removing it here');
      }
      try {
        // still in use here (being removed while this host has containers on it): wait for the record to go
        const full = await this.docker.inspectNetwork(n.Id);
        if (full.Containers && Object.keys(full.Containers).length) {
          if (!this.records.has(n.Name) || ![...this.records.values()].some((r) => r.dockerName === n.Name)) this.retryLater();
          continue;
        }
        await this.docker.removeNetwork(n.Id);
        this.seen.delete(n.Name);
        this.log?.info({ network: n.Name }, 'removed Docker network (removed on another host)');
      } catch (err) {
        this.log?.warn({ network: n.Name, err: String(err) }, 'cannot remove Docker network removed elsewhere yet; retrying');
        this.retryLater();
      }
    }
  }
}
