import type { Backend, Underlay } from '../backends/types.js';
import { createBackend } from '../backends/registry.js';
import type { NetworkConfig } from '../config/types.js';
import { LeaseManager } from '../lease/manager.js';
import { writeSubnetEnv } from '../lease/subnet-env.js';
import type { Lease } from '../lease/types.js';
import type { Store, Watch } from '../store/types.js';
import { ensureBridge } from '../system/bridge.js';
import { ensureForwardAccept, ensureMasquerade, forwardNeedsAccept } from '../system/iptables.js';
import { enableIpForward } from '../system/sysctl.js';
import type { Logger } from '../util/log.js';
import { gatewayCidr, gatewayOf } from '../ipam/addresses.js';
import type { NetworkStatus } from './types.js';

export interface RunnerOptions {
  store: Store;
  hostId: string;
  underlay: Underlay;
  bridge: string;
  /** Where subnet.env goes (the network's own file; for weft0's network also flannel's single file). */
  subnetEnvPaths: string[];
  leaseTtlSeconds?: number;
  graceSeconds?: number;
  ipMasq?: boolean;
  /** iptables chains that jump to weft's accept rules (FORWARD; plus DOCKER-USER where Docker runs). */
  forwardParents?: string[];
  /** Seconds between reconciles that run without a store change (default 30). */
  resyncSeconds?: number;
  log: Logger;
}

/**
 * Runs one network on this host: lease → bridge → backend → follow peers. Reconciles are serialised and
 * coalesced: a burst of lease changes leads to one reconcile with the latest set.
 */
export class NetworkRunner {
  lease!: Lease;
  peers: Lease[] = [];
  backend!: Backend;
  private leases!: LeaseManager;
  private watch?: Watch;
  private resyncTimer?: NodeJS.Timeout;
  private lastAll: Lease[] = [];
  private pending?: Lease[];
  private running?: Promise<void>;
  /** Resolves when the first reconcile after start has been applied (tests and demo wait on it). */
  reconciles = 0;

  constructor(
    readonly name: string,
    readonly config: NetworkConfig,
    private readonly opts: RunnerOptions,
  ) {}

  get gateway(): string {
    return gatewayOf(this.lease.subnet);
  }

  async start(): Promise<void> {
    const { store, hostId, underlay, log } = this.opts;
    this.backend = createBackend({ networkName: this.name, network: this.config, underlay, log });
    const backendData = await this.backend.init();
    this.leases = new LeaseManager(store, this.name, {
      hostId,
      ttlSeconds: this.opts.leaseTtlSeconds,
      graceSeconds: this.opts.graceSeconds,
      log,
    });
    this.lease = await this.leases.acquire({ publicIp: underlay.ip, backendType: this.backend.type, backendData });
    log.info({ network: this.name, subnet: this.lease.subnet }, 'lease acquired');
    await enableIpForward();
    await ensureBridge(this.opts.bridge, gatewayCidr(this.lease.subnet), this.backend.mtu);
    await this.backend.activate(this.lease);
    await this.ensureForwarding();
    if (this.opts.ipMasq ?? this.config.IPMasq) await ensureMasquerade(this.config.Network);
    const env = {
      network: this.config.Network,
      subnet: this.lease.subnet,
      mtu: this.backend.mtu,
      ipMasq: Boolean(this.opts.ipMasq ?? this.config.IPMasq),
    };
    for (const file of this.opts.subnetEnvPaths) await writeSubnetEnv(file, env);
    this.leases.start((lease) => {
      this.opts.log.warn({ network: this.name, was: this.lease.subnet, now: lease.subnet }, 'LEASE CHANGED on renewal: containers on the old subnet lose connectivity; restart the agent');
    });
    this.watch = this.leases.watchLeases((all) => this.onLeases(all));
    // Reconcile now and then even without store changes: repairs routes someone deleted by hand.
    this.resyncTimer = setInterval(() => this.onLeases(this.lastAll), (this.opts.resyncSeconds ?? 30) * 1000);
    this.resyncTimer.unref();
  }

  /** Stops following the store. The data plane stays as it is (an agent restart must not cut traffic). */
  async stop(): Promise<void> {
    this.watch?.close();
    if (this.resyncTimer) clearInterval(this.resyncTimer);
    this.leases?.stop();
    await this.running;
  }

  /** Gives the lease back and removes what the backend made (`weft reset`). */
  async release(): Promise<void> {
    await this.stop();
    await this.leases.release();
    await this.backend.teardown();
  }

  status(): NetworkStatus {
    return {
      name: this.name,
      subnet: this.lease.subnet,
      backend: this.backend.type,
      bridge: this.opts.bridge,
      mtu: this.backend.mtu,
      peers: this.peers.map((p) => ({ subnet: p.subnet, publicIp: p.publicIp, hostId: p.hostId })),
    };
  }

  private onLeases(all: Lease[]): void {
    this.lastAll = all;
    this.pending = all.filter((l) => l.subnet !== this.lease.subnet);
    if (!this.running) this.running = this.drain();
  }

  /** Accept rules only where something could drop our traffic (checked again on every reconcile: Docker may start later). */
  private async ensureForwarding(): Promise<void> {
    if (await forwardNeedsAccept()) await ensureForwardAccept(this.config.Network, { parents: this.opts.forwardParents });
  }

  private async drain(): Promise<void> {
    while (this.pending) {
      const peers = this.pending;
      this.pending = undefined;
      try {
        await this.ensureForwarding();
        await this.backend.reconcile(peers);
        this.peers = peers;
        this.reconciles++;
      } catch (err) {
        this.opts.log.error({ err, network: this.name }, 'reconcile failed; will retry on the next change');
      }
    }
    this.running = undefined;
  }
}
