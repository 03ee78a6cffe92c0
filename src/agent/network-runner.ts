import { mkdirSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { addressPlan, backendModule } from '../backends/registry.js';
import type { AddressPlan, Backend, BackendModule, ConnectedNetwork, EndpointInfo, Underlay } from '../backends/types.js';
import { checkUnderlayOverlap } from '../config/ranges.js';
import type { NetworkConfig } from '../config/types.js';
import { listLeases, watchLeases } from '../lease/leases.js';
import { LeaseManager } from '../lease/manager.js';
import { writeSubnetEnv, type SubnetEnv } from '../lease/subnet-env.js';
import { dockerEnvPath, removeDockerEnv, writeDockerEnv, type DockerPlan } from '../lease/docker-env.js';
import { Ipam } from '../ipam/ipam.js';
import type { Lease } from '../lease/types.js';
import { CONNECTIONS_PREFIX, networkKeys } from '../store/layout.js';
import type { Store, Watch } from '../store/types.js';
import { ensureBridge, movePorts } from '../system/bridge.js';
import { ensureForwardAccept, ensureMasquerade, forwardNeedsAccept, isolationRules, reconcileIsolation, reconcileMasqExemptions, removeMasquerade } from '../system/iptables.js';
import { isolationPolicy, type IsolationPolicy } from '../config/connections.js';
import { enableIpForward } from '../system/sysctl.js';
import { connectedPrefixes } from '../system/underlay.js';
import { WeftError } from '../util/errors.js';
import type { Logger } from '../util/log.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { blockSize, cidrContains, formatCidr, intToIp, parseCidr } from '../net/ipv4.js';
import { gatewayOf } from '../ipam/addresses.js';
import type { NetworkStatus } from './types.js';
import { DEFAULT_RESYNC_SECONDS } from '../config/network.js';
import { NO_KERNEL_WATCH, type KernelTokens } from '../system/kernel-watch.js';
import { compareStrings } from '../util/compare.js';

/** Docker's default bridge: in docker0 mode it is the network's host bridge. */
export const DOCKER_BRIDGE = 'docker0';

/** What the runner changes on the host outside the backend (injectable: unit tests record instead of touching the kernel). */
export interface HostOps {
  /** The IPv4 prefixes on the underlay interface ([] when unreadable). */
  connectedPrefixes(iface: string): Promise<string[]>;
  enableIpForward(): Promise<unknown>;
  ensureBridge(name: string, gatewayCidr: string, mtu: number): Promise<unknown>;
  /** Accept rules for the network's forwarded traffic where something could drop it. */
  ensureForwarding(cidr: string, parents?: string[]): Promise<void>;
  ensureMasquerade(cidr: string): Promise<void>;
  /** Removes the network's masquerade rules (an agent restarted without --ip-masq). */
  removeMasquerade(cidr: string): Promise<void>;
  /** Traffic between any two of these weft networks is not masqueraded (reconcileMasqExemptions). */
  exemptBetweenNetworks(cidrs: string[]): Promise<void>;
  writeSubnetEnv(file: string, env: SubnetEnv): Promise<void>;
  /** The docker0 plan `weft docker-opts` prints when no agent answers (written 0644, atomically). */
  writeDockerEnv(file: string, plan: DockerPlan): Promise<void>;
  removeDockerEnv(file: string): Promise<void>;
  /** Moves every port of bridge `from` onto `to` and deletes `from`. */
  movePorts(from: string, to: string): Promise<unknown>;
  /** Makes the isolation chain hold exactly `rules` (isolationRules), jumped to from `parents`. */
  reconcileIsolation(rules: readonly string[][], parents?: string[]): Promise<unknown>;
}

export const realHostOps: HostOps = {
  connectedPrefixes: (iface) => connectedPrefixes(iface).catch(() => []),
  enableIpForward: () => enableIpForward(),
  ensureBridge: (name, gw, mtu) => ensureBridge(name, gw, mtu),
  async ensureForwarding(cidr, parents) {
    if (await forwardNeedsAccept()) await ensureForwardAccept(cidr, { parents });
  },
  ensureMasquerade: (cidr) => ensureMasquerade(cidr),
  removeMasquerade: (cidr) => removeMasquerade(cidr),
  exemptBetweenNetworks: (cidrs) => reconcileMasqExemptions(cidrs),
  writeSubnetEnv: (file, env) => writeSubnetEnv(file, env),
  writeDockerEnv: (file, plan) => writeDockerEnv(file, plan),
  removeDockerEnv: (file) => removeDockerEnv(file),
  movePorts: (from, to) => movePorts(from, to),
  reconcileIsolation: (rules, parents) => reconcileIsolation(rules, { parents }),
};
/** Smallest container MTU a network config may ask for (IPv4 hosts must accept 576-byte datagrams). */
const MIN_MTU = 576;

export interface RunnerOptions {
  /** Host changes outside the backend (default: the real kernel). */
  host?: HostOps;
  store: Store;
  hostId: string;
  underlay: Underlay;
  bridge: string;
  /** The agent's state dir; the network's own is `<stateDir>/<network>` (mode 0700). */
  stateDir: string;
  /** Where subnet.env goes (the network's own file; for weft0's network also flannel's single file). */
  subnetEnvPaths: string[];
  leaseTtlSeconds?: number;
  graceSeconds?: number;
  /** How long this host's record outlives its lease and grace (default LeaseManager's: 7 days). */
  hostRecordSeconds?: number;
  ipMasq?: boolean;
  /** iptables chains that jump to weft's accept rules (FORWARD; plus DOCKER-USER where Docker runs). */
  forwardParents?: string[];
  /** Seconds between reconciles that run without a store change (default 30). */
  resyncSeconds?: number;
  /**
   * What changed in the kernel since a read (src/system/kernel-watch.ts): a periodic resync skips the reads
   * whose kernel state did not change and whose inputs are the same (default: none skipped).
   */
  kernel?: KernelTokens;
  /** Told after each reconcile with its duration and error, if any (metrics). */
  onReconciled?: (runner: NetworkRunner, seconds: number, error?: string) => void;
  /** Told when the lease changed on renewal and the host side was re-addressed (the agent re-attaches containers). */
  onReaddressed?: (runner: NetworkRunner, was: Lease) => void;
  log: Logger;
}

/**
 * Runs one network on this host: lease → bridge (when the backend wants one) → backend → follow peers.
 * Reconciles are serialised and coalesced: a burst of lease changes leads to one reconcile with the latest set.
 */
export class NetworkRunner {
  lease!: Lease;
  peers: Lease[] = [];
  backend!: Backend;
  readonly module: BackendModule;
  private leases!: LeaseManager;
  private watches: Watch[] = [];
  private resyncTimer?: NodeJS.Timeout;
  private lastAll: Lease[] = [];
  private endpoints = new Map<string, EndpointInfo>();
  private dirty = false;
  /** A periodic resync is due: re-read the kernel even if nothing changed in the store. */
  private forced = false;
  /** The forwarding accepts were checked since the last failed reconcile (forced reconciles check again). */
  private forwardingChecked = false;
  /**
   * The networks and connections the isolation rules follow, as last read from the store; read again only when
   * `policyStale` (a connections event, the set of networks changed, a failed reconcile): it was a listing of every
   * key under networks/ (all leases and host records too) on every reconcile of every agent (issue 15).
   */
  private policy?: IsolationPolicy;
  private policyStale = true;
  /** The backend's last reconcile succeeded: a change of peers may diff against what it applied (ReconcileHow). */
  private backendApplied = false;
  /** The isolation rules the last reconcile made the kernel hold (forced reconciles compare with the kernel again). */
  private appliedIsolation: string | undefined;
  /**
   * Networks connected to this one whose leases the backend follows (modules with wantsConnectedLeases):
   * a lease watch each while connected; `leases` is the latest set (undefined until first read).
   */
  private readonly connected = new Map<string, { watch: Watch; leases?: Lease[] }>();
  /** stop() began: follow no more connected networks. */
  private stopping = false;
  /** What the last successful reconcile applied (peers and endpoints), to skip no-op events. */
  private applied?: string;
  /** Kernel-watch tokens taken before the last successful reads (forwarding check, backend, isolation chain). */
  private readonly tokens: { forwarding?: string; backend?: string; isolation?: string } = {};
  /** Kernel reads a periodic resync skipped because nothing they depend on changed (tests, metrics). */
  resyncReadsSkipped = 0;
  private readonly host: HostOps;
  /** The host bridge (weft0, …; docker0 in docker0 mode). */
  private bridgeName: string;
  private running?: Promise<void>;
  private readonly abort = new AbortController();
  /** Reconciles applied so far (tests and the demo wait on it). */
  reconciles = 0;
  /** Events that changed nothing and were skipped without touching the kernel. */
  skipped = 0;
  /** The last reconcile's error, shown by `weft status` until one succeeds. */
  lastError?: string;
  /** Per peer subnet: when its lease was last seen written with a new expiry (its holder renewed it). */
  private readonly seen = new Map<string, { expiresAt?: number; at: number }>();

  constructor(
    readonly name: string,
    readonly config: NetworkConfig,
    private readonly opts: RunnerOptions,
  ) {
    this.module = backendModule(config.Backend.Type);
    this.host = opts.host ?? realHostOps;
    this.bridgeName = opts.bridge;
  }

  /**
   * Where containers of this host take addresses and which gateway they use. When Docker's default bridge
   * is this network's host bridge (docker0 mode, `weft docker-opts`), Docker's IPAM hands out the upper
   * half of the lease (--fixed-cidr) and weft only the lower half: no address is ever handed out twice.
   */
  get plan(): AddressPlan {
    const plan = addressPlan(this.lease, this.config);
    const fixed = this.dockerFixedCidr;
    return fixed ? { ...plan, last: intToIp(parseCidr(fixed).base - 1) } : plan;
  }

  /** Docker's --fixed-cidr in docker0 mode: the upper half of this host's lease; undefined otherwise. */
  get dockerFixedCidr(): string | undefined {
    if (this.bridgeName !== DOCKER_BRIDGE || !this.lease || this.dockerModeProblem()) return undefined;
    return upperHalf(this.lease.subnet);
  }

  /**
   * What dockerd must be started with while docker0 is this network's bridge (`weft docker-opts`); undefined
   * when it is not in docker0 mode.
   */
  get dockerPlan(): DockerPlan | undefined {
    const fixedCidr = this.dockerFixedCidr;
    if (!fixedCidr) return undefined;
    return { network: this.name, subnet: this.lease.subnet, bip: `${gatewayOf(this.lease.subnet)}/${parseCidr(this.lease.subnet).len}`, fixedCidr, mtu: this.backend.mtu, ipMasq: false };
  }

  /**
   * Why docker0 cannot be this network's bridge, or undefined: dockerd's bridge holds `--bip` (the lease's
   * gateway) and its IPAM hands out `--fixed-cidr` of the lease, so the network must give each host a
   * lease of its own with the gateway on the host bridge (not l2, bridge or macvlan).
   */
  private dockerModeProblem(): string | undefined {
    if (this.module.wantsBridge === false) return `network ${this.name} uses no host bridge (backend ${this.module.type})`;
    const base = addressPlan(this.lease, this.config);
    if (base.pool !== this.lease.subnet || base.bridgeAddress === false || base.gateway !== gatewayOf(this.lease.subnet) || base.first || base.last || parseCidr(this.lease.subnet).len > 29) {
      return `network ${this.name} cannot serve Docker's default bridge: its ${this.module.type} backend does not give each host a subnet of its own with the gateway on the host bridge`;
    }
    return undefined;
  }

  /**
   * Makes `name` this network's host bridge: created with the gateway address, every container port moved
   * onto it, the old bridge removed. For docker0 mode, before dockerd restarts with `--bip` on it: refused
   * (nothing changed) when weft already handed out an address in the part of the lease Docker's IPAM would
   * take, and the docker0 plan (docker.env) written once the ports are on docker0.
   */
  async moveToBridge(name: string): Promise<void> {
    const old = this.bridge;
    if (!old) throw new WeftError(`network ${this.name} uses no host bridge (backend ${this.module.type})`);
    if (old === name) return;
    if (name === DOCKER_BRIDGE) {
      const problem = this.dockerModeProblem();
      if (problem) throw new WeftError(problem);
      // narrow the plan first: an attach from now on takes an address in the lower half; then look at what
      // was handed out before (an attach that read the old plan re-checks its address after allocating)
      this.bridgeName = name;
      try {
        await this.checkDockerRangeFree();
      } catch (err) {
        this.bridgeName = old;
        throw err;
      }
    }
    this.bridgeName = name;
    await this.applyLease({ dockerPlan: false });
    await this.host.movePorts(old, name);
    await this.writeDockerPlan();
  }

  /**
   * Refuses docker0 mode while an address weft handed out on this host lies in Docker's --fixed-cidr: Docker's
   * IPAM knows nothing of weft's and would give it to a default-bridge container too.
   */
  private async checkDockerRangeFree(): Promise<void> {
    const fixed = upperHalf(this.lease.subnet);
    const { store, hostId } = this.opts;
    const held = (await new Ipam(store).list({ network: this.name, subnet: this.lease.subnet })).filter((a) => cidrContains(fixed, a.address) && (!a.host || a.host === hostId));
    if (!held.length) return;
    const names = new Map<string, string>();
    for (const e of await store.list(networkKeys(store, this.name).endpointsPrefix(hostId))) {
      try {
        const ep = JSON.parse(e.value) as { owner?: unknown; container?: unknown };
        if (typeof ep.owner === 'string' && typeof ep.container === 'string') names.set(ep.owner, ep.container);
      } catch {
        /* not an endpoint record */
      }
    }
    const list = held.map((a) => `${a.address} (${names.get(a.owner) ?? (a.owner.startsWith('docker:') ? `a Docker endpoint, ${a.owner}` : a.owner || 'no owner')})`);
    throw new WeftError(
      `cannot make docker0 the bridge of network ${this.name}: Docker's IPAM would hand out ${fixed} (--fixed-cidr), where weft has already given ${list.join(', ')}; detach ${held.length === 1 ? 'it' : 'them'} (attached again, weft gives them addresses below ${fixed.split('/')[0]}), then run \`weft docker-opts\` again`,
    );
  }

  /** Writes the docker0 plan in docker0 mode and removes a stale one otherwise. */
  private async writeDockerPlan(): Promise<void> {
    const file = dockerEnvPath(this.opts.stateDir, this.name);
    const plan = this.dockerPlan;
    if (plan) await this.host.writeDockerEnv(file, plan);
    else await this.host.removeDockerEnv(file);
  }

  /** The containers' gateway (no prefix length), or undefined when the backend gives them none. */
  get gateway(): string | undefined {
    return this.plan.gateway;
  }

  /** The host bridge's name, or undefined when containers hang off none (macvlan). */
  get bridge(): string | undefined {
    return this.module.wantsBridge === false ? undefined : this.bridgeName;
  }

  /** This network's own state dir (keys, generated configs), made 0700. */
  private stateDir(): string {
    const dir = path.join(this.opts.stateDir, this.name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    chmodSync(dir, 0o700);
    return dir;
  }

  async start(): Promise<void> {
    const { store, hostId, underlay, log } = this.opts;
    this.backendApplied = false;
    this.backend = this.module.create({
      networkName: this.name,
      network: this.config,
      underlay: this.underlayForMtu(underlay),
      log,
      stateDir: this.stateDir(),
      bridge: this.opts.bridge,
      hostId,
      sys: {},
      store,
    });
    // a network overlapping this host's own routes would shadow its traffic (refused at create on the creating host; checked here on every host)
    if (!this.module.sharesUnderlay) checkUnderlayOverlap(this.config.Network, await this.host.connectedPrefixes(underlay.iface), `this host's underlay ${underlay.iface}`);
    const backendData = await this.backend.init();
    this.leases = new LeaseManager(store, this.name, {
      hostId,
      ttlSeconds: this.opts.leaseTtlSeconds,
      graceSeconds: this.opts.graceSeconds,
      ...(this.opts.hostRecordSeconds !== undefined ? { hostRecordSeconds: this.opts.hostRecordSeconds } : {}),
      log,
    });
    this.lease = await this.leases.acquire({ publicIp: underlay.ip, backendType: this.backend.type, backendData });
    log.info({ network: this.name, subnet: this.lease.subnet }, 'lease acquired');
    await this.host.enableIpForward();
    await this.applyLease();
    await this.backend.start?.(this.abort.signal);
    this.leases.start((lease) => void this.onLeaseChanged(lease));
    const keys = networkKeys(store, this.name);
    this.watches.push(this.leases.watchLeases((all) => this.onLeases(all)));
    if (this.module.wantsEndpoints) this.watches.push(store.watch(keys.endpointsRoot, (ev) => this.onEndpointEvent(ev)));
    // a connect/disconnect (or a network created or removed elsewhere) changes the isolation rules: force a reconcile
    if (!store.flannelLayout) this.watches.push(store.watch(CONNECTIONS_PREFIX, () => this.networksChanged()));
    // Reconcile now and then even without store changes: repairs routes someone deleted by hand.
    this.resyncTimer = setInterval(() => this.kick(true), (this.opts.resyncSeconds ?? DEFAULT_RESYNC_SECONDS) * 1000);
    this.resyncTimer.unref();
  }

  /**
   * The underlay as the backend should size its MTU from it. A network config may set `MTU` (the container
   * MTU): it must fit the underlay link minus the backend's overhead (else a WeftError, shown by `weft status`),
   * and the backend then sees an underlay of MTU + overhead, so every backend honours it without knowing.
   */
  private underlayForMtu(u: Underlay): Underlay {
    const want = (this.config as { MTU?: unknown }).MTU;
    if (want === undefined) return u;
    const overhead = this.module.mtuOverhead;
    const max = u.mtu - overhead;
    if (typeof want !== 'number' || !Number.isInteger(want) || want < MIN_MTU)
      throw new WeftError(`network ${this.name}: MTU ${JSON.stringify(want)} must be a whole number of at least ${MIN_MTU}`);
    if (want > max)
      throw new WeftError(`network ${this.name}: MTU ${want} is too large for the underlay: ${u.iface} has MTU ${u.mtu} and ${this.module.type} needs ${overhead} bytes of it (at most ${max})`);
    return { ...u, mtu: want + overhead };
  }

  /**
   * `weft rotate-keys`: the backend makes a new key pair and the lease is rewritten with its new data; peers
   * pick it up through their lease watch. Renewals pause meanwhile, so a renewal in flight with the old data
   * cannot land last (checked once more after a moment).
   */
  rotateKeys(): Promise<Lease> {
    // two callers at once rotate one after the other
    const next = this.rotation.then(() => this.rotateOnce());
    this.rotation = next.catch(() => {});
    return next;
  }

  private rotation: Promise<unknown> = Promise.resolve();

  private async rotateOnce(): Promise<Lease> {
    if (!this.backend.rotateKeys) throw new WeftError(`network ${this.name}: the ${this.backend.type} backend has no keys to rotate`);
    const backendData = await this.backend.rotateKeys();
    const req = { publicIp: this.opts.underlay.ip, backendType: this.backend.type, backendData };
    this.leases.stop();
    try {
      let lease = await this.leases.acquire(req);
      await sleep(200);
      if (JSON.stringify(this.leases.lease?.backendData) !== JSON.stringify(backendData)) lease = await this.leases.acquire(req);
      if (lease.subnet !== this.lease.subnet) await this.onLeaseChanged(lease);
      else this.lease = lease;
      this.opts.log.info({ network: this.name }, 'published the rotated keys in the lease');
      return lease;
    } finally {
      if (!this.abort.signal.aborted) this.leases.start((lease) => void this.onLeaseChanged(lease));
    }
  }

  /** Everything on this host that depends on the lease: bridge address, backend, forwarding, NAT, subnet.env. */
  private async applyLease(o: { dockerPlan?: false } = {}): Promise<void> {
    const plan = this.plan;
    if (this.bridge && plan.gateway && plan.bridgeAddress !== false) {
      const len = plan.prefixLen ?? Number(plan.pool.split('/')[1]);
      await this.host.ensureBridge(this.bridge, `${plan.gateway}/${len}`, this.backend.mtu);
    }
    await this.backend.activate(this.lease);
    await this.ensureForwarding();
    // docker0 mode: dockerd runs with --ip-masq=false (its rule would NAT traffic to peers too); weft masquerades egress itself
    const ipMasq = Boolean(this.opts.ipMasq ?? this.config.IPMasq) || this.bridgeName === DOCKER_BRIDGE;
    if (ipMasq) await this.host.ensureMasquerade(this.config.Network);
    else await this.host.removeMasquerade(this.config.Network);
    const env = { network: this.config.Network, subnet: this.lease.subnet, mtu: this.backend.mtu, ipMasq };
    for (const file of this.opts.subnetEnvPaths) await this.host.writeSubnetEnv(file, env);
    if (o.dockerPlan !== false) await this.writeDockerPlan();
  }

  /**
   * The renewal found our subnet gone (expired and re-leased while we were cut off) and leased another:
   * re-address the bridge, the backend, subnet.env and the peer filter, then let the agent re-attach the
   * containers with addresses in the new subnet.
   */
  private async onLeaseChanged(lease: Lease): Promise<void> {
    const was = this.lease;
    this.opts.log.warn({ network: this.name, was: was.subnet, now: lease.subnet }, `!!! LEASE CHANGED on renewal: ${was.subnet} → ${lease.subnet}; re-addressing this host and its containers`);
    this.lease = lease;
    try {
      await this.applyLease();
      this.opts.onReaddressed?.(this, was);
      this.kick(true);
    } catch (err) {
      this.lastError = `re-addressing to ${lease.subnet} failed: ${(err as Error).message}`;
      this.opts.log.error({ err, network: this.name }, 're-addressing after a lease change failed; retried on the next reconcile');
    }
  }

  /** Stops following the store and the backend's processes. Kernel state stays (a restart must not cut traffic). */
  async stop(): Promise<void> {
    for (const w of this.watches) w.close();
    this.watches = [];
    this.stopping = true;
    this.closeConnected();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.leases?.stop(); // waits for a renewal under way (the store is closed after)
    this.abort.abort();
    await this.running;
    this.closeConnected(); // a reconcile under way may have followed one more
    await this.backend?.stop?.();
  }

  /** Gives the lease back and removes what the backend made (`weft reset`). */
  async release(): Promise<void> {
    await this.stop();
    await this.leases.release();
    await this.backend.teardown();
  }

  status(): NetworkStatus {
    let backendStatus;
    try {
      backendStatus = this.backend.status();
    } catch (err) {
      backendStatus = { healthy: false, detail: `status failed: ${(err as Error).message}` };
    }
    return {
      name: this.name,
      subnet: this.lease.subnet,
      backend: this.backend.type,
      bridge: this.bridge ?? '',
      mtu: this.backend.mtu,
      ...(this.gateway ? { gateway: this.gateway } : {}),
      leaseExpiresAt: this.lease.expiresAt,
      ...(this.leases ? { leaseTtlSeconds: this.leases.ttlSeconds } : {}),
      status: backendStatus,
      ...(this.lastError ? { error: this.lastError } : {}),
      peers: this.peers.map((p) => {
        const latest = this.lastAll.find((l) => l.subnet === p.subnet) ?? p;
        const seen = this.seen.get(p.subnet);
        return {
          subnet: p.subnet,
          publicIp: p.publicIp,
          hostId: p.hostId,
          backendData: p.backendData,
          ...(seen ? { lastSeen: seen.at } : {}),
          ...(latest.expiresAt !== undefined ? { expiresAt: latest.expiresAt } : {}),
        };
      }),
    };
  }

  private closeConnected(): void {
    for (const c of this.connected.values()) c.watch.close();
    this.connected.clear();
  }

  private connectedFingerprint(): string {
    return this.module.wantsConnectedLeases ? connectedLeasesKey(this.connected) : '';
  }

  /**
   * Follows the leases of exactly these connected networks (wantsConnectedLeases): a watch for each newly
   * connected one (read once at once, so the backend is told in this same reconcile), closed on disconnect.
   * A change of their leases kicks a reconcile (the fingerprint includes them).
   */
  private async followConnected(names: string[]): Promise<void> {
    const want = new Set(this.stopping ? [] : names);
    for (const [name, c] of this.connected) {
      if (want.has(name)) continue;
      c.watch.close();
      this.connected.delete(name);
    }
    for (const name of want) {
      if (this.connected.has(name)) continue;
      const entry: { watch: Watch; leases?: Lease[] } = {
        watch: watchLeases(this.opts.store, name, (all) => {
          if (this.connected.get(name) !== entry) return;
          entry.leases = all;
          this.kick();
        }),
      };
      this.connected.set(name, entry);
      try {
        const now = await listLeases(this.opts.store, name);
        entry.leases ??= now;
      } catch (err) {
        this.opts.log.warn({ err, network: this.name, connected: name }, `could not read the leases of the connected network "${name}" (the watch retries)`);
      }
    }
  }

  private onLeases(all: Lease[]): void {
    this.lastAll = all;
    const now = Date.now();
    for (const l of all) {
      const was = this.seen.get(l.subnet);
      if (!was || was.expiresAt !== l.expiresAt) this.seen.set(l.subnet, { expiresAt: l.expiresAt, at: now });
    }
    for (const k of [...this.seen.keys()]) if (!all.some((l) => l.subnet === k)) this.seen.delete(k);
    this.kick();
  }

  private onEndpointEvent(ev: Parameters<Parameters<Store['watch']>[1]>[0]): void {
    const keys = networkKeys(this.opts.store, this.name);
    const put = (key: string, value: string) => {
      try {
        const e = JSON.parse(value) as { hostId?: unknown; address?: unknown; mac?: unknown; name?: unknown };
        if (typeof e.hostId === 'string' && typeof e.address === 'string' && typeof e.mac === 'string') {
          this.endpoints.set(key, { hostId: e.hostId, address: e.address, mac: e.mac, ...(typeof e.name === 'string' ? { name: e.name } : {}) });
        }
      } catch {
        /* not an endpoint record: ignored */
      }
    };
    if (ev.type === 'resync') {
      this.endpoints.clear();
      for (const e of ev.entries) if (e.key.startsWith(keys.endpointsRoot)) put(e.key, e.value);
    } else if (ev.type === 'put') put(ev.entry.key, ev.entry.value);
    else if (!this.endpoints.delete(ev.key)) return;
    this.kick();
  }

  /** The networks or their connections changed (or may have: a watch resync): the isolation rules are read again. */
  networksChanged(): void {
    this.policyStale = true;
    this.kick(true);
  }

  /**
   * Asks for a reconcile with the latest state; one runs at a time and a burst becomes one more. Without
   * `force` a reconcile whose peers and endpoints equal the last applied ones does nothing (a lease
   * renewal touches no kernel state and spawns no process); the periodic resync forces one.
   */
  kick(force = false): void {
    this.dirty = true;
    this.forced ||= force;
    if (this.running) return;
    // drain() may finish without awaiting anything (a skipped no-op): clear `running` only after it has
    // settled, and look at `dirty` again then, so that no kick is lost in between
    this.running = this.drain().finally(() => {
      this.running = undefined;
      if (this.dirty) this.kick();
    });
  }

  /** Accept rules only where something could drop our traffic (checked again on every resync: Docker may start later). */
  private async ensureForwarding(): Promise<void> {
    await this.host.ensureForwarding(this.config.Network, this.opts.forwardParents);
  }

  private async drain(): Promise<void> {
    while (this.dirty) {
      this.dirty = false;
      const force = this.forced;
      this.forced = false;
      const peers = this.lastAll.filter((l) => l.subnet !== this.lease.subnet);
      const endpoints = this.module.wantsEndpoints ? [...this.endpoints.values()] : undefined;
      const state = fingerprint(this.lease, peers, endpoints) + this.connectedFingerprint();
      if (!force && state === this.applied) {
        this.skipped++;
        continue;
      }
      const t0 = process.hrtime.bigint();
      try {
        // A change of peers or endpoints touches only what depends on them: the forwarding accepts are
        // checked on the first and on every forced (periodic) reconcile, the isolation chain when its rules
        // changed or on a forced one. So a host joining costs each peer the backend's work alone (issue 15:
        // iptables processes on every lease event were most of a join's CPU at 50 hosts).
        //
        // A forced reconcile re-reads the kernel only where something may differ: each read's kernel-watch
        // token is taken before it and kept; a resync whose inputs are the ones applied and whose token is
        // the same skips it (issue 15: an idle agent's resync was six processes a minute). A change by hand
        // (a route or rule deleted) changes the token, and the next resync repairs it as before.
        const kernel = this.opts.kernel ?? NO_KERNEL_WATCH;
        const unchanged = (tok: string | undefined, was: string | undefined) => tok !== undefined && tok === was;
        if (force || !this.forwardingChecked) {
          const tok = kernel.token(['nft']);
          if (this.forwardingChecked && unchanged(tok, this.tokens.forwarding)) this.resyncReadsSkipped++;
          else {
            this.tokens.forwarding = undefined;
            await this.ensureForwarding();
          }
          this.forwardingChecked = true;
          this.tokens.forwarding = tok;
        }
        const backendKinds = this.backend.kernelReads?.();
        const btok = backendKinds ? kernel.token(backendKinds) : undefined;
        if (force && state === this.applied && unchanged(btok, this.tokens.backend)) this.resyncReadsSkipped++;
        else {
          this.tokens.backend = undefined;
          // a change of peers or endpoints applies the difference to what the backend applied; the first, the
          // periodic and any reconcile after a failure read the kernel (drift is repaired there)
          await this.backend.reconcile(peers, endpoints, { readKernel: force || !this.backendApplied });
          this.backendApplied = true;
          this.tokens.backend = btok;
        }
        // Networks are isolated unless connected; an unreadable store keeps the rules as they are.
        if (this.policyStale || !this.policy) {
          this.policyStale = false; // an event during the read marks it stale again
          this.policy = await isolationPolicy(this.opts.store);
        }
        const policy = this.policy;
        const rules = isolationRules(policy.networks, policy.connected);
        const rulesKey = JSON.stringify([rules, policy.networks.map((n) => n.cidr).sort()]); // the masquerade exemptions follow the networks
        const itok = kernel.token(['nft']);
        if (force || rulesKey !== this.appliedIsolation) {
          if (rulesKey === this.appliedIsolation && unchanged(itok, this.tokens.isolation)) this.resyncReadsSkipped++;
          else {
            this.appliedIsolation = undefined;
            await this.host.reconcileIsolation(rules, this.opts.forwardParents);
            await this.host.exemptBetweenNetworks(policy.networks.map((n) => n.cidr).sort());
            this.appliedIsolation = rulesKey;
            this.tokens.isolation = itok;
          }
        }
        const connected = policy.networks.filter((n) => n.name !== this.name && policy.connected.has([this.name, n.name].sort().join('+')));
        let applied = state;
        if (this.module.wantsConnectedLeases) {
          await this.followConnected(connected.map((n) => n.name));
          // what the backend is told now (a lease event of a connected network after this kicks again)
          applied = fingerprint(this.lease, peers, endpoints) + this.connectedFingerprint();
        }
        await this.backend.connectedNetworks?.(connected.map((n): ConnectedNetwork => (this.module.wantsConnectedLeases ? { ...n, leases: this.connected.get(n.name)?.leases ?? [] } : n)));
        this.applied = applied;
        this.peers = peers;
        this.reconciles++;
        this.lastError = undefined;
      } catch (err) {
        this.applied = undefined;
        this.forwardingChecked = false;
        this.backendApplied = false;
        this.policy = undefined;
        this.appliedIsolation = undefined;
        this.tokens.forwarding = this.tokens.backend = this.tokens.isolation = undefined;
        this.lastError = `reconcile failed: ${(err as Error).message}`;
        this.opts.log.error({ err, network: this.name }, 'reconcile failed; will retry on the next change');
      }
      this.opts.onReconciled?.(this, Number(process.hrtime.bigint() - t0) / 1e9, this.lastError);
    }
  }
}

/** The upper half of a lease: Docker's --fixed-cidr in docker0 mode. */
function upperHalf(subnet: string): string {
  const lease = parseCidr(subnet);
  return formatCidr({ base: lease.base + blockSize(lease.len + 1), len: lease.len + 1 });
}

/** What a reconcile depends on of the connected networks' leases: subnet and holder (expiry left out). */
function connectedLeasesKey(connected: ReadonlyMap<string, { leases?: Lease[] }>): string {
  const out: string[] = [];
  for (const [name, c] of [...connected].sort((a, b) => compareStrings(a[0], b[0]))) out.push(name, ...(c.leases ?? []).map((l) => `${l.subnet} ${l.publicIp} ${l.hostId ?? ''}`));
  return out.length ? JSON.stringify(out) : '';
}

/** What a reconcile depends on, as one comparable string (expiry times left out: a renewal is no change). */
function fingerprint(own: Lease, peers: Lease[], endpoints: EndpointInfo[] | undefined): string {
  const p = peers.map((l) => [l.subnet, l.publicIp, l.backendType, l.backendData, l.hostId ?? '']).sort((a, b) => compareStrings(String(a[0]), String(b[0])));
  const e = (endpoints ?? []).map((x) => [x.hostId, x.address, x.mac]).sort((a, b) => compareStrings(a.join(), b.join()));
  return JSON.stringify([own.subnet, p, e]);
}
