import { mkdirSync, chmodSync } from 'node:fs';
import path from 'node:path';
import { addressPlan, backendModule } from '../backends/registry.js';
import type { AddressPlan, Backend, BackendModule, EndpointInfo, Underlay } from '../backends/types.js';
import { checkUnderlayOverlap } from '../config/ranges.js';
import type { NetworkConfig } from '../config/types.js';
import { LeaseManager } from '../lease/manager.js';
import { writeSubnetEnv, type SubnetEnv } from '../lease/subnet-env.js';
import type { Lease } from '../lease/types.js';
import { networkKeys } from '../store/layout.js';
import type { Store, Watch } from '../store/types.js';
import { ensureBridge } from '../system/bridge.js';
import { ensureForwardAccept, ensureMasquerade, forwardNeedsAccept, removeMasquerade } from '../system/iptables.js';
import { enableIpForward } from '../system/sysctl.js';
import { connectedPrefixes } from '../system/underlay.js';
import type { Logger } from '../util/log.js';
import type { NetworkStatus } from './types.js';

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
  writeSubnetEnv(file: string, env: SubnetEnv): Promise<void>;
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
  writeSubnetEnv: (file, env) => writeSubnetEnv(file, env),
};

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
  ipMasq?: boolean;
  /** iptables chains that jump to weft's accept rules (FORWARD; plus DOCKER-USER where Docker runs). */
  forwardParents?: string[];
  /** Seconds between reconciles that run without a store change (default 30). */
  resyncSeconds?: number;
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
  /** What the last successful reconcile applied (peers and endpoints), to skip no-op events. */
  private applied?: string;
  private readonly host: HostOps;
  private running?: Promise<void>;
  private readonly abort = new AbortController();
  /** Reconciles applied so far (tests and the demo wait on it). */
  reconciles = 0;
  /** Events that changed nothing and were skipped without touching the kernel. */
  skipped = 0;
  /** The last reconcile's error, shown by `weft status` until one succeeds. */
  lastError?: string;

  constructor(
    readonly name: string,
    readonly config: NetworkConfig,
    private readonly opts: RunnerOptions,
  ) {
    this.module = backendModule(config.Backend.Type);
    this.host = opts.host ?? realHostOps;
  }

  /** Where containers of this host take addresses and which gateway they use. */
  get plan(): AddressPlan {
    return addressPlan(this.lease, this.config);
  }

  /** The containers' gateway (no prefix length), or undefined when the backend gives them none. */
  get gateway(): string | undefined {
    return this.plan.gateway;
  }

  /** The host bridge's name, or undefined when containers hang off none (macvlan). */
  get bridge(): string | undefined {
    return this.module.wantsBridge === false ? undefined : this.opts.bridge;
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
    this.backend = this.module.create({
      networkName: this.name,
      network: this.config,
      underlay,
      log,
      stateDir: this.stateDir(),
      bridge: this.opts.bridge,
      hostId,
      sys: {},
      store,
    });
    // a network overlapping this host's own routes would shadow its traffic (refused at create on the creating host; checked here on every host)
    checkUnderlayOverlap(this.config.Network, await this.host.connectedPrefixes(underlay.iface), `this host's underlay ${underlay.iface}`);
    const backendData = await this.backend.init();
    this.leases = new LeaseManager(store, this.name, {
      hostId,
      ttlSeconds: this.opts.leaseTtlSeconds,
      graceSeconds: this.opts.graceSeconds,
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
    // Reconcile now and then even without store changes: repairs routes someone deleted by hand.
    this.resyncTimer = setInterval(() => this.kick(true), (this.opts.resyncSeconds ?? 30) * 1000);
    this.resyncTimer.unref();
  }

  /** Everything on this host that depends on the lease: bridge address, backend, forwarding, NAT, subnet.env. */
  private async applyLease(): Promise<void> {
    const plan = this.plan;
    if (this.bridge && plan.gateway) {
      const len = plan.prefixLen ?? Number(plan.pool.split('/')[1]);
      await this.host.ensureBridge(this.bridge, `${plan.gateway}/${len}`, this.backend.mtu);
    }
    await this.backend.activate(this.lease);
    await this.ensureForwarding();
    const ipMasq = Boolean(this.opts.ipMasq ?? this.config.IPMasq);
    if (ipMasq) await this.host.ensureMasquerade(this.config.Network);
    else await this.host.removeMasquerade(this.config.Network);
    const env = { network: this.config.Network, subnet: this.lease.subnet, mtu: this.backend.mtu, ipMasq };
    for (const file of this.opts.subnetEnvPaths) await this.host.writeSubnetEnv(file, env);
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
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    await this.leases?.stop(); // waits for a renewal under way (the store is closed after)
    this.abort.abort();
    await this.running;
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
      status: backendStatus,
      ...(this.lastError ? { error: this.lastError } : {}),
      peers: this.peers.map((p) => ({ subnet: p.subnet, publicIp: p.publicIp, hostId: p.hostId })),
    };
  }

  private onLeases(all: Lease[]): void {
    this.lastAll = all;
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
      const state = fingerprint(this.lease, peers, endpoints);
      if (!force && state === this.applied) {
        this.skipped++;
        continue;
      }
      try {
        await this.ensureForwarding();
        await this.backend.reconcile(peers, endpoints);
        this.applied = state;
        this.peers = peers;
        this.reconciles++;
        this.lastError = undefined;
      } catch (err) {
        this.applied = undefined;
        this.lastError = `reconcile failed: ${(err as Error).message}`;
        this.opts.log.error({ err, network: this.name }, 'reconcile failed; will retry on the next change');
      }
    }
  }
}

/** What a reconcile depends on, as one comparable string (expiry times left out: a renewal is no change). */
function fingerprint(own: Lease, peers: Lease[], endpoints: EndpointInfo[] | undefined): string {
  const p = peers.map((l) => [l.subnet, l.publicIp, l.backendType, l.backendData, l.hostId ?? '']).sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  const e = (endpoints ?? []).map((x) => [x.hostId, x.address, x.mac]).sort((a, b) => a.join().localeCompare(b.join()));
  return JSON.stringify([own.subnet, p, e]);
}
