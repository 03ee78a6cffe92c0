import type http from 'node:http';
import '../backends/all.js';
import path from 'node:path';
import { getNetwork } from '../config/registry.js';
import { DnsService, type DnsServiceOptions } from '../dns/service.js';
import { subnetEnvPath } from '../lease/subnet-env.js';
import { dockerEnvPath } from '../lease/docker-env.js';
import { listLeases } from '../lease/leases.js';
import { listNetworkNames, networkNameOfConfigKey } from '../store/layout.js';
import { openStore } from '../store/index.js';
import type { Store, Watch } from '../store/types.js';
import type { Underlay } from '../backends/types.js';
import { removeBridge } from '../system/bridge.js';
import { getLink } from '../system/ip.js';
import { removeAntispoof } from '../system/antispoof.js';
import { removeAllWeftRules } from '../system/iptables.js';
import { stopNetlink } from '../system/netlink.js';
import { kernelWatch } from '../system/kernel-watch.js';
import { stopWarm } from '../system/warm.js';
import { findUnderlay } from '../system/underlay.js';
import { WeftError } from '../util/errors.js';
import { log as rootLog, type Logger } from '../util/log.js';
import { serveApi, type Route } from './api.js';
import { BridgeNames } from './bridges.js';
import { Endpoints, type ContainerResolver, type NetworkDirectory } from './endpoints.js';
import { resolveHostId } from './host-id.js';
import { lockAgent, type HeldLock } from './lock.js';
import { HealthProbe } from './health.js';
import { AgentMetrics, serveMetrics } from './metrics.js';
import { DOCKER_BRIDGE, NetworkRunner } from './network-runner.js';
import { attachRequestSchema, detachRequestSchema, rotateKeysRequestSchema, dockerOptsRequestSchema } from './schemas.js';
import type { AgentStatus, AttachRequest, DetachRequest, DockerOptions, Endpoint } from './types.js';
import { readdir, rm } from 'node:fs/promises';
import { DEFAULT_RESYNC_SECONDS } from '../config/network.js';

/** A source of endpoints outside the store (see Agent.endpointSources). */
export interface EndpointSource {
  list(): Promise<Endpoint[]>;
  /** This host's endpoints of a network, from memory (status answers without I/O). */
  count(network: string): number;
}

export interface AgentOptions {
  storeUrl?: string;
  iface?: string;
  publicIp?: string;
  stateDir: string;
  api: string;
  /** Group id given the API socket (`--api-group`); the socket is 0660, owned by root. */
  apiGid?: number;
  hostId?: string;
  /** Join only these networks; default: every network in the store, including ones created later. */
  networks?: string[];
  leaseTtlSeconds?: number;
  graceSeconds?: number;
  /** How long a host record outlives its lease and grace (LeaseManager's hostRecordSeconds; default 7 days). */
  hostRecordSeconds?: number;
  ipMasq?: boolean;
  /** Extra ways to find a container (the Docker adapter adds container ids/names). */
  resolvers?: ContainerResolver[];
  /** Seconds between resyncs of kernel state and endpoint records (default DEFAULT_RESYNC_SECONDS). */
  resyncSeconds?: number;
  /** Extra API routes (the Docker plugin, metrics, web page). */
  routes?: (agent: Agent) => Route[];
  forwardParents?: string[];
  /** Name service (src/dns): domain, upstreams, enabled, … (store, host id and log come from the agent). */
  dns?: Omit<DnsServiceOptions, 'store' | 'hostId' | 'log'>;
  /** Also serve GET /metrics on this TCP HOST:PORT (`--metrics-addr`). */
  metricsAddr?: string;
  /** Milliseconds between background health probes (store, peers, counts) behind `weft status` (default HEALTH_INTERVAL_MS, 15 s). */
  healthIntervalMs?: number;
  log?: Logger;
}

/**
 * The per-host daemon: joins networks (lease, bridge, backend), follows peers, serves the API. Stopping it
 * leaves the data plane as it is; reset() removes what it made and gives the leases back.
 */
export class Agent implements NetworkDirectory {
  readonly runners = new Map<string, NetworkRunner>();
  /** Networks that could not be joined, with the reason (shown by `weft status`). */
  readonly failed = new Map<string, string>();
  readonly endpoints: Endpoints;
  readonly dns: DnsService;
  private server?: http.Server;
  private watch?: Watch;
  private joining = Promise.resolve();
  /** The joins of the networks the store holds at start (attach waits for them). */
  private initialJoins: Promise<void> = Promise.resolve();
  /** Networks whose join failed, with when to try again (backoff doubles up to a minute). */
  private readonly retries = new Map<string, { at: number; delayMs: number; timer: NodeJS.Timeout }>();
  private stopped = false;
  private repairTimer?: NodeJS.Timeout;
  private readonly bridges: BridgeNames;
  private readonly log: Logger;
  /** One agent per host: the state dir and API socket locks (./lock.ts), held until stop(). */
  private locks: HeldLock[] = [];
  /** Cached store/peer/count probes behind status() (./health.ts). */
  readonly health: HealthProbe;
  readonly metrics: AgentMetrics;
  private metricsServer?: http.Server;
  /**
   * Endpoints this agent's store does not hold (Docker's, kept by its plugin): listed by GET /endpoints and
   * counted by `weft status`. Adapters push theirs (src/adapters/docker/index.ts).
   */
  readonly endpointSources: EndpointSource[] = [];
  /** Where the web map listens and its token for non-loopback clients (set by src/ui when it starts). */
  ui?: { url: string; token: string };

  private constructor(
    readonly store: Store,
    readonly hostId: string,
    readonly underlay: Underlay,
    readonly opts: AgentOptions,
  ) {
    this.log = (opts.log ?? rootLog).child({ hostId });
    this.bridges = new BridgeNames(opts.stateDir);
    this.endpoints = new Endpoints(store, hostId, this, opts.resolvers, this.log);
    this.dns = new DnsService({ ...opts.dns, store, hostId, log: this.log });
    this.endpoints.dns = this.dns;
    this.health = new HealthProbe(store, hostId, () => this.all(), this.log, opts.healthIntervalMs);
    this.metrics = new AgentMetrics(() => this.status(), () => this.health.snap.storeErrors, () => this.dns.stats());
  }

  static async start(opts: AgentOptions): Promise<Agent> {
    // Before anything else: a second agent on this host must be refused before it changes anything.
    const locks = await lockAgent(opts.stateDir, opts.api);
    let agent: Agent;
    try {
      const underlay = await findUnderlay({ iface: opts.iface, publicIp: opts.publicIp });
      const hostId = resolveHostId(opts.hostId, opts.stateDir);
      const store = await openStore(opts.storeUrl);
      agent = new Agent(store, hostId, underlay, opts);
    } catch (err) {
      for (const l of locks) await l.release();
      throw err;
    }
    agent.locks = locks;
    try {
      await agent.begin();
    } catch (err) {
      await agent.stop();
      throw err;
    }
    return agent;
  }

  private async begin(): Promise<void> {
    this.log.info({ underlay: this.underlay, store: this.store.url }, 'agent starting');
    // what changes in this host's kernel: the periodic resync re-reads only what may have changed
    kernelWatch.start();
    this.endpoints.kernel = kernelWatch;
    // The API answers at once: `weft status` says why a network is not joined yet (store down, subnet full).
    this.server = await serveApi(this.opts.api, [...this.routes(), ...(this.opts.routes?.(this) ?? [])], this.log, { gid: this.opts.apiGid });
    if (this.opts.metricsAddr) this.metricsServer = await serveMetrics(this.opts.metricsAddr, this.metrics, this.log);
    const wanted = this.opts.networks;
    this.initialJoins = (async () => {
      let names = wanted;
      if (!names) {
        try {
          names = await listNetworkNames(this.store);
        } catch (err) {
          // A store that does not answer at start (etcd busy with 50 agents starting, or down) is not fatal:
          // the API answers, and the networks watch below lists again when the store answers (its first
          // resync) and joins them then. subnet.env files are left alone: nothing says they are stale.
          this.log.error({ err }, 'cannot list the networks in the store; joining them when it answers');
          return;
        }
      }
      await this.removeStaleSubnetEnv(names);
      for (const name of names) await this.join(name);
    })();
    await this.initialJoins;
    // Networks created later (by `weft network create` or Docker) are joined as they appear (unless this agent
    // runs only the networks it was given); either way the running networks' isolation rules follow them.
    const prefix = this.store.flannelLayout ? 'config' : 'networks/';
    this.watch = this.store.watch(prefix, (ev) => {
      // Only config keys (and resyncs) matter here; leases, addresses and endpoints change far more often.
      const key = ev.type === 'put' ? ev.entry.key : ev.type === 'delete' ? ev.key : undefined;
      if (key !== undefined && key !== 'config' && networkNameOfConfigKey(key) === undefined) return;
      for (const r of this.all()) r.networksChanged();
      if (!wanted) this.joining = this.joining.then(() => this.syncNetworks());
    });
    // Store and kernel agree on endpoints: now, and on every resync.
    await this.repairEndpoints();
    this.repairTimer = setInterval(() => void this.repairEndpoints(), (this.opts.resyncSeconds ?? DEFAULT_RESYNC_SECONDS) * 1000);
    this.repairTimer.unref();
    this.health.start();
    this.log.info({ api: this.opts.api, networks: [...this.runners.keys()] }, 'agent ready');
  }

  private async repairEndpoints(): Promise<void> {
    for (const r of this.all()) {
      await this.endpoints.reconcile(r).catch((err) => this.log.warn({ err, network: r.name }, 'endpoint reconcile failed; retried on the next resync'));
    }
  }

  /**
   * Joins networks that appeared. A network whose config vanished is NOT torn down: a deleted or corrupt
   * config key is not a removal (that is `weft network rm`, which deletes the leases too); the data plane
   * keeps forwarding and is adopted again when the config comes back.
   */
  private async syncNetworks(): Promise<void> {
    let names: Set<string>;
    try {
      names = new Set(await listNetworkNames(this.store));
    } catch (err) {
      this.log.error({ err }, 'cannot list networks in the store; keeping every network as it is');
      return;
    }
    for (const n of names) if (!this.runners.has(n)) await this.join(n);
    for (const [n, runner] of this.runners) {
      if (names.has(n)) {
        await this.checkConfig(n, runner);
        continue;
      }
      const leases = await listLeases(this.store, n).catch(() => undefined);
      if (leases && leases.length === 0) {
        this.log.info({ network: n }, 'network removed from the store (config and leases gone): leaving it');
        this.runners.delete(n);
        await this.dns.stopNetwork(n);
        await runner.stop();
        await runner.backend.teardown().catch((err) => this.log.warn({ err }, 'teardown failed'));
        for (const f of [...this.subnetEnvPaths(n), dockerEnvPath(this.opts.stateDir, n)]) await rm(f, { force: true }).catch(() => {});
        await removeBridge(this.bridges.get(n)).catch(() => {});
        this.bridges.forget(n);
      } else {
        this.log.error({ network: n }, `!!! the config of network ${n} is missing or unreadable in the store, but its leases remain: keeping its data plane as it is (remove a network with \`weft network rm\`)`);
      }
    }
  }

  /** Says loudly when a running network's config turned unreadable or changed (applied at the next agent start). */
  private async checkConfig(name: string, runner: NetworkRunner): Promise<void> {
    try {
      const now = await getNetwork(this.store, name);
      if (JSON.stringify(now) !== JSON.stringify(runner.config)) {
        this.log.warn({ network: name, was: runner.config, now }, `the config of network ${name} changed in the store; this host keeps running it as it was until the agent restarts`);
      }
    } catch (err) {
      this.log.error({ network: name, err: (err as Error).message }, `!!! the config of network ${name} is unreadable in the store: keeping its data plane as it is`);
    }
  }

  /** Joins one network; a failure is logged and kept for `weft status`, and the agent carries on. */
  async join(name: string): Promise<NetworkRunner | undefined> {
    const existing = this.runners.get(name);
    if (existing) return existing;
    try {
      const config = await getNetwork(this.store, name);
      const runner = new NetworkRunner(name, config, {
        store: this.store,
        hostId: this.hostId,
        underlay: this.underlay,
        bridge: this.bridges.get(name),
        stateDir: this.opts.stateDir,
        subnetEnvPaths: this.subnetEnvPaths(name),
        resyncSeconds: this.opts.resyncSeconds,
        kernel: kernelWatch,
        onReaddressed: (r, was) => void this.endpoints.readdress(r, was.subnet).catch((err) => this.log.error({ err, network: r.name }, 're-addressing containers failed')),
        leaseTtlSeconds: this.opts.leaseTtlSeconds,
        graceSeconds: this.opts.graceSeconds,
        ...(this.opts.hostRecordSeconds !== undefined ? { hostRecordSeconds: this.opts.hostRecordSeconds } : {}),
        ipMasq: this.opts.ipMasq,
        forwardParents: this.opts.forwardParents,
        onReconciled: (r, secs, err) => {
          this.metrics.observeReconcile(r.name, secs, err);
          void this.health.probe();
        },
        log: this.log,
      });
      await runner.start();
      this.runners.set(name, runner);
      this.failed.delete(name);
      this.clearRetry(name);
      if (runner.gateway) await this.dns.startNetwork(name, runner.gateway, config.Network); // never throws
      return runner;
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      this.failed.set(name, msg);
      this.log.error({ network: name, err: msg }, 'cannot join network; retrying with backoff');
      this.scheduleRetry(name);
      return undefined;
    }
  }

  /** A failed join is tried again after 1 s, 2 s, 4 s … up to a minute (a subnet may free up, the store may come back). */
  private scheduleRetry(name: string): void {
    if (this.stopped) return;
    const prev = this.retries.get(name);
    const delayMs = Math.min(60_000, prev ? prev.delayMs * 2 : 1000);
    if (prev) clearTimeout(prev.timer);
    const timer = setTimeout(() => {
      this.joining = this.joining.then(async () => {
        if (this.stopped || this.runners.has(name)) return;
        if (!this.opts.networks && !(await listNetworkNames(this.store).catch(() => [name])).includes(name)) {
          this.failed.delete(name);
          this.clearRetry(name);
          return;
        }
        await this.join(name);
      });
    }, delayMs);
    timer.unref();
    this.retries.set(name, { at: Date.now() + delayMs, delayMs, timer });
  }

  private clearRetry(name: string): void {
    const r = this.retries.get(name);
    if (r) clearTimeout(r.timer);
    this.retries.delete(name);
  }

  /** `<state-dir>/<network>/subnet.env` for each network; flannel's single `<state-dir>/subnet.env` for weft0's. */
  private subnetEnvPaths(network: string): string[] {
    const own = subnetEnvPath(this.opts.stateDir, network);
    return this.bridges.get(network) === 'weft0' ? [own, path.join(this.opts.stateDir, 'subnet.env')] : [own];
  }

  /** subnet.env and docker.env files of networks no longer in the store (removed while this agent was down). */
  private async removeStaleSubnetEnv(known: readonly string[]): Promise<void> {
    const dirs = await readdir(this.opts.stateDir, { withFileTypes: true }).catch(() => []);
    for (const d of dirs) {
      if (!d.isDirectory() || known.includes(d.name)) continue;
      for (const f of [subnetEnvPath(this.opts.stateDir, d.name), dockerEnvPath(this.opts.stateDir, d.name)]) await rm(f, { force: true }).catch(() => {});
    }
  }

  get(name?: string): NetworkRunner {
    if (name) {
      const r = this.runners.get(name);
      if (r) return r;
      const why = this.failed.get(name);
      throw new WeftError(why ? `network ${name} is not running on this host: ${why}` : `unknown network "${name}" (this host runs: ${[...this.runners.keys()].join(', ') || 'none'})`);
    }
    return this.defaultNetwork();
  }

  /**
   * The network of a request that names none: the only network this host knows, else the one created with
   * `--default`. Never "the first": that would change when a network whose name sorts first is added.
   */
  private defaultNetwork(): NetworkRunner {
    const known = new Set([...this.runners.keys(), ...this.failed.keys()]);
    if (!known.size) throw new WeftError('this host runs no network yet: create one with `weft network create NAME --subnet CIDR`');
    const marked = this.all().filter((r) => r.config.Default === true);
    if (known.size === 1 && this.runners.size === 1) return this.all()[0]!;
    if (marked.length === 1) return marked[0]!;
    if (known.size === 1) return this.get([...known][0]);
    throw new WeftError(`several networks: pass --network NAME (one of: ${[...known].sort().join(', ')}), or create one with --default`);
  }

  all(): NetworkRunner[] {
    return [...this.runners.values()];
  }

  /** From memory only (runners and the cached health probe): answers at once, also with the store down. */
  status(): AgentStatus {
    const h = this.health.snap;
    const networks = this.all().map((r) => {
      const n = r.status();
      const counts = h.networks.get(r.name);
      for (const p of n.peers) {
        const reach = h.reachable.get(p.publicIp);
        if (reach) p.reachable = reach.ok;
      }
      const extra = this.endpointSources.reduce((a, src) => a + src.count(r.name), 0);
      return counts ? { ...n, endpoints: counts.endpoints + extra, ipam: { used: counts.ipamUsed, size: counts.ipamSize } } : n;
    });
    return {
      hostId: this.hostId,
      publicIp: this.underlay.ip,
      iface: this.underlay.iface,
      networks,
      ...(this.failed.size ? { failed: Object.fromEntries(this.failed) } : {}),
      store: { ...h.store },
      endpoints: networks.reduce((a, n) => a + (n.endpoints ?? 0), 0),
      ...(this.ui ? { ui: this.ui.url } : {}),
      ...(this.dns.serving().length ? { dns: { domain: this.dns.domain, networks: this.dns.serving() } } : {}),
      now: Date.now(),
    };
  }

  private routes(): Route[] {
    return [
      { method: 'GET', path: '/status', handler: () => this.status() },
      { method: 'GET', path: '/ui', handler: () => this.ui ?? { error: 'the web map is off (weft agent --ui-addr)' } },
      { method: 'GET', path: '/metrics', contentType: this.metrics.contentType, handler: () => this.metrics.text() },
      { method: 'GET', path: '/peers', handler: () => this.all().map((r) => ({ network: r.name, peers: r.status().peers })) },
      {
        method: 'GET',
        path: '/endpoints',
        handler: async () => [
          ...(await this.endpoints.list()).map(({ owner: _o, ...ep }) => ep),
          ...(await Promise.all(this.endpointSources.map((s) => s.list().catch(() => [])))).flat(),
        ],
      },
      // an attach right after the agent started waits for the networks it is joining (the API answers at once)
      { method: 'POST', path: '/attach', body: attachRequestSchema, handler: async (body) => (await this.initialJoins, this.endpoints.attach(body as AttachRequest).finally(() => this.health.probeSoon())) },
      { method: 'POST', path: '/detach', body: detachRequestSchema, handler: async (body) => (await this.initialJoins, this.endpoints.detach(body as DetachRequest).finally(() => this.health.probeSoon())) },
      { method: 'POST', path: '/docker-opts', body: dockerOptsRequestSchema, handler: (body) => this.dockerOpts((body ?? {}) as { network?: string }) },
      { method: 'POST', path: '/rotate-keys', body: rotateKeysRequestSchema, handler: (body) => this.rotateKeys(body) },
      {
        method: 'POST',
        path: '/reset',
        handler: async () => {
          const done = await this.reset();
          setImmediate(() => process.emit('SIGTERM'));
          return done;
        },
      },
    ];
  }

  /**
   * flannel's DOCKER_NETWORK_OPTIONS done right: the network's host bridge becomes docker0 (ports moved,
   * kept across restarts), Docker's IPAM gets the upper half of the lease (--fixed-cidr) and weft the
   * lower half, dockerd leaves NAT to weft. Then: restart dockerd with the options returned.
   */
  private async dockerOpts(b: { network?: string }): Promise<DockerOptions> {
    const r = this.get(b.network);
    const other = this.all().find((x) => x !== r && x.bridge === DOCKER_BRIDGE);
    if (other) throw new WeftError(`docker0 already serves network ${other.name} on this host; dockerd has one default bridge`);
    if (r.bridge !== DOCKER_BRIDGE) {
      // a dockerd running with its own docker0 keeps it: re-addressing it under its containers would cut them off
      const current = await getLink(DOCKER_BRIDGE);
      const addr = current?.addr_info?.find((a) => a.family === 'inet');
      if (addr && `${addr.local}/${addr.prefixlen}` !== `${r.gateway}/${r.lease.subnet.split('/')[1]}`) {
        throw new WeftError(`docker0 is dockerd's bridge with ${addr.local}/${addr.prefixlen} now: stop dockerd, run \`weft docker-opts\` again, then start dockerd with the options it prints`);
      }
      await r.moveToBridge(DOCKER_BRIDGE);
      this.bridges.set(r.name, DOCKER_BRIDGE);
      this.log.info({ network: r.name }, 'docker0 is now the host bridge of this network: restart dockerd with `weft docker-opts`');
    }
    const plan = r.dockerPlan;
    if (!plan) throw new WeftError(`network ${r.name} cannot serve Docker's default bridge (backend ${r.module.type})`);
    return plan;
  }

  /** `weft rotate-keys`: new key pairs for one network ({network}) or every network whose backend has keys. */
  private async rotateKeys(body: unknown): Promise<Array<{ network: string; subnet: string; backendData: Record<string, unknown> }>> {
    const b = (body ?? {}) as { network?: string };
    const runners = b.network ? [this.get(b.network)] : this.all().filter((r) => r.backend.rotateKeys);
    if (!runners.length) throw new WeftError('no network on this host has keys to rotate');
    const out = [];
    for (const r of runners) {
      const lease = await r.rotateKeys();
      out.push({ network: r.name, subnet: lease.subnet, backendData: lease.backendData ?? {} });
    }
    return out;
  }

  /** Stops following the store and serving the API; the data plane stays. */
  async stop(): Promise<void> {
    this.stopped = true;
    for (const name of [...this.retries.keys()]) this.clearRetry(name);
    if (this.repairTimer) clearInterval(this.repairTimer);
    this.watch?.close();
    await this.health.stop();
    this.metricsServer?.close();
    this.metricsServer?.closeAllConnections?.();
    await new Promise<void>((resolve) => (this.server ? this.server.close(() => resolve()) : resolve()));
    this.server?.closeAllConnections?.();
    await this.joining;
    await this.dns.stop();
    for (const r of this.runners.values()) await r.stop();
    await this.store.close();
    stopWarm(); // the attach path's idle processes (src/system/warm.ts, src/system/netlink.ts)
    stopNetlink();
    kernelWatch.stop();
    for (const l of this.locks.splice(0)) await l.release();
  }

  /** Detaches every container, gives every lease back and removes bridges, devices and rules. */
  async reset(): Promise<{ networks: string[] }> {
    this.stopped = true;
    this.watch?.close();
    const names = [...this.runners.keys()];
    for (const ep of await this.endpoints.list()) await this.endpoints.detach({ container: ep.owner, network: ep.network }).catch(() => {});
    await this.dns.stop();
    for (const [name, r] of this.runners) {
      await r.release();
      // the lease is given back: `weft docker-opts` without an agent must not print it to dockerd any more
      await rm(dockerEnvPath(this.opts.stateDir, name), { force: true }).catch(() => {});
      await removeBridge(this.bridges.get(name)).catch(() => {});
      this.bridges.forget(name);
    }
    this.runners.clear();
    await removeAllWeftRules();
    await removeAntispoof();
    return { networks: names };
  }
}
