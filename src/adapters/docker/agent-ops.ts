/**
 * DockerBackendOps on top of the host agent: networks and leases in the store, addresses from weft's IPAM
 * (so no two hosts ever hand out one address), veths on the agent's bridge. Also the store records that let
 * every host create the same Docker network (docker/networks/<name>).
 */
import { containsAddress, tryParseCidr, tryParseIp } from '../../net/ipv4.js';
import { setTimeout as sleep } from 'node:timers/promises';
import { backendFieldsFromOptions } from '../../config/backend-spec.js';
import { DEFAULT_BACKEND } from '../../config/network.js';
import { checkNewNetwork, createNetwork, findNetwork, listNetworks } from '../../config/registry.js';
import { removeNetwork as removeWeftNetwork } from '../../lease/remove-network.js';
import type { NetworkConfig } from '../../config/types.js';
import { Ipam } from '../../ipam/ipam.js';
import { listLeases } from '../../lease/leases.js';
import type { Lease } from '../../lease/types.js';
import { networkKeys } from '../../store/layout.js';
import type { Store } from '../../store/types.js';
import { endpointDriver } from '../../backends/endpoints/registry.js';
import type { AddressPlan } from '../../backends/types.js';
import { inPlan, poolRange } from '../../agent/endpoints.js';
import { WeftError } from '../../util/errors.js';
import type { DockerApi } from './docker-api.js';
import { subnetFields, type DockerBackendOps, type EndpointNames, type EndpointPorts, type HostNetwork, type WeftNetworkOptions } from './plugin.js';
import { syncHostRecords, type NamedEndpoint } from '../../dns/registry.js';
import { reconcileDnat, type PortRule } from '../../system/iptables.js';

/** What the Docker adapter uses of a running network (the agent's NetworkRunner has these). */
export interface RunnerLike {
  readonly name: string;
  readonly config: NetworkConfig;
  readonly lease: Lease;
  readonly gateway: string | undefined;
  /** The host bridge, when the backend has one. */
  readonly bridge: string | undefined;
  readonly backend: { readonly mtu: number; readonly parent?: string };
  /** How containers of this backend join (veth-bridge, macvlan, …). */
  readonly module: { readonly endpointDriver?: string; readonly wantsEndpoints?: boolean };
  /** Where this host's containers take addresses. */
  readonly plan: AddressPlan;
}

/** What the Docker adapter uses of the agent (src/agent/agent.ts's Agent has these). */
export interface AgentLike {
  readonly store: Store;
  readonly hostId: string;
  readonly runners: Map<string, RunnerLike>;
  /** Networks this host could not join, with the reason. */
  readonly failed: Map<string, string>;
  /** Joins a network (idempotent); undefined when it failed (reason in `failed`). */
  join(name: string): Promise<RunnerLike | undefined>;
  /** Where Docker's endpoints are added for `weft ps` and `weft status` (the Agent's endpointSources). */
  readonly endpointSources?: Array<{ list(): Promise<import('../../agent/types.js').Endpoint[]>; count(network: string): number }>;
}

/** Where the Docker network behind a weft network is described for the other hosts. */
export const DOCKER_NETWORKS_PREFIX = 'docker/networks/';

export interface DockerNetworkRecord {
  /** The weft network. */
  network: string;
  /** Docker's name for it (the same on every host). */
  dockerName: string;
  subnet: string;
  /** -o options and --ipam-opt options it was created with. */
  options: Record<string, string>;
  ipamOptions: Record<string, string>;
  /** Host whose Docker created it first. */
  createdBy: string;
  /** True when the weft network was created for Docker (then `docker network rm` removes it too). */
  owned: boolean;
  /**
   * Set by `docker network rm` while endpoints remain on other hosts (Docker removes its own network even
   * when the driver objects): no new endpoints; the network goes everywhere when the last one is released.
   */
  removing?: { by: string; at: string };
}

export interface AgentDockerOpsOptions {
  docker?: DockerApi;
  /** How long joinNetwork waits for the agent's own watch to join a new network (ms, default 5000). */
  joinWaitMs?: number;
}

export class AgentDockerOps implements DockerBackendOps {
  private readonly ipam: Ipam;

  constructor(
    readonly agent: AgentLike,
    private readonly o: AgentDockerOpsOptions = {},
  ) {
    this.ipam = new Ipam(agent.store);
  }

  private get store(): Store {
    return this.agent.store;
  }

  async checkNetwork(subnet: string, opts: WeftNetworkOptions): Promise<void> {
    const same = (await listNetworks(this.store)).find((n) => n.config.Network === subnet);
    if (same) {
      // The same network, joined by name later — unless a `docker network rm` is under way: accepting the
      // create would let Docker make a network that the removal then deletes under the user.
      const rec = await this.record(same.name);
      if (rec?.removing) {
        throw new WeftError(
          `network ${same.name} (${subnet}) is being removed (docker network rm on host ${rec.removing.by} at ${rec.removing.at}); ` +
            `it goes away once its last container is gone (${await this.describeAddresses(same.name)}): create it again after that`,
        );
      }
      return;
    }
    const type = opts.backend ?? DEFAULT_BACKEND;
    await checkNewNetwork(this.store, {
      Network: subnet,
      ...subnetFields(opts),
      Backend: { Type: type, ...backendFieldsFromOptions(type, (f) => opts.backendOptions?.[f], (f) => `-o weft.${f}`) },
    });
  }

  async ensureNetwork(
    name: string,
    subnet: string,
    opts: WeftNetworkOptions & { docker?: { name: string; options: Record<string, string>; ipamOptions: Record<string, string> } },
  ): Promise<void> {
    let config = await findNetwork(this.store, name);
    let owned = false;
    if (!config) {
      const type = opts.backend ?? DEFAULT_BACKEND;
      const backend: Record<string, unknown> = { Type: type, ...backendFieldsFromOptions(type, (f) => opts.backendOptions?.[f], (f) => `-o weft.${f}`) };
      try {
        config = await createNetwork(this.store, name, {
          Network: subnet,
          ...subnetFields(opts),
          Backend: backend,
        });
        owned = true;
      } catch (err) {
        // another host's Docker may have created it at the same moment
        config = await findNetwork(this.store, name);
        if (!config) throw err;
      }
    }
    if (config.Network !== subnet) {
      throw new WeftError(`weft network ${name} already exists with subnet ${config.Network}, not ${subnet}: create the Docker network with --subnet ${config.Network}`);
    }
    const key = DOCKER_NETWORKS_PREFIX + name;
    const existing = await this.store.get(key);
    if (existing) {
      const rec = JSON.parse(existing.value) as DockerNetworkRecord;
      if (rec.removing) {
        throw new WeftError(`network ${name} is being removed (docker network rm on host ${rec.removing.by}); it goes away once its last container is gone`);
      }
    }
    if (opts.docker) {
      if (!existing) {
        const rec: DockerNetworkRecord = {
          network: name,
          dockerName: opts.docker.name,
          subnet,
          options: opts.docker.options,
          ipamOptions: opts.docker.ipamOptions,
          createdBy: this.agent.hostId,
          owned,
        };
        await this.store.compareAndSwap(key, 0, JSON.stringify(rec));
      }
    }
  }

  async joinNetwork(name: string): Promise<HostNetwork> {
    const runner = await this.runner(name, true);
    return {
      name,
      network: runner.config.Network,
      subnet: runner.lease.subnet,
      gateway: runner.gateway ?? '',
      bridge: runner.bridge ?? '',
      mtu: runner.backend.mtu,
    };
  }

  /** The running network; joins it (waiting first for the agent's own store watch to do so) when `join`. */
  private async runner(name: string, join: boolean): Promise<RunnerLike> {
    const have = this.agent.runners.get(name);
    if (have) return have;
    if (!(await findNetwork(this.store, name))) throw new WeftError(`no weft network ${name} in ${this.store.url}`);
    if (!join) throw new WeftError(`this host has not joined network ${name}`);
    const end = Date.now() + (this.o.joinWaitMs ?? 5000);
    while (Date.now() < end && !this.agent.failed.has(name)) {
      const r = this.agent.runners.get(name);
      if (r) return r;
      await sleep(50);
    }
    const r = this.agent.runners.get(name) ?? (await this.agent.join(name));
    if (r) return r;
    throw new WeftError(this.agent.failed.get(name) ?? `cannot join network ${name} on this host`);
  }

  /** Which host holds the lease an address falls in. */
  private async leaseHolding(name: string, ip: number): Promise<Lease | undefined> {
    for (const l of await listLeases(this.store, name)) {
      const b = tryParseCidr(l.subnet);
      if (b && containsAddress(b, ip)) return l;
    }
    return undefined;
  }

  async allocateAddress(name: string, req: { address?: string; owner: string }): Promise<string> {
    const runner = await this.runner(name, true);
    const own = runner.plan.pool;
    const me = this.agent.hostId;
    if (req.address) {
      const n = tryParseIp(req.address);
      if (n === undefined) throw new WeftError(`invalid address "${req.address}"`);
      const ownBlock = tryParseCidr(own)!;
      if (!containsAddress(ownBlock, n)) {
        const holder = await this.leaseHolding(name, n);
        if (holder) {
          const taken = (await this.ipam.list({ network: name, subnet: holder.subnet })).some((a) => a.address === req.address);
          const who = holder.hostId ?? holder.publicIp;
          if (taken) throw new WeftError(`address ${req.address} is already in use on host ${who}`);
          throw new WeftError(
            `address ${req.address} belongs to host ${who}'s subnet ${holder.subnet} of network ${name}; containers on this host (${me}) take addresses in ${own}`,
          );
        }
        throw new WeftError(`address ${req.address} is in no host's subnet of network ${name} yet; containers on this host (${me}) take addresses in ${own}`);
      }
      const taken = (await this.ipam.list({ network: name, subnet: own })).some((a) => a.address === req.address);
      if (taken) throw new WeftError(`address ${req.address} is already in use on host ${me}`);
    }
    const ask = () => this.ipam.allocate({ network: name, subnet: own, range: poolRange(runner.plan), host: this.agent.hostId, owner: req.owner, ...(req.address ? { address: req.address } : {}) });
    let alloc = await ask();
    // docker0 mode (`weft docker-opts`) may have narrowed the range meanwhile: never keep an address Docker's own IPAM hands out
    if (!inPlan(runner.plan, alloc.address)) {
      await this.ipam.release({ network: name, subnet: own, owner: req.owner, host: this.agent.hostId });
      alloc = await ask();
    }
    return alloc.cidr;
  }

  async releaseAddress(name: string, ip: string): Promise<void> {
    const runner = this.agent.runners.get(name);
    if (!runner) return; // the network (and its addresses) is gone
    await this.ipam.release({ network: name, subnet: runner.plan.pool, address: ip });
    const rec = await this.record(name);
    // The address is free: that is all Docker asked. Endpoints left elsewhere only mean the removal waits.
    if (rec?.removing) await this.removeIfUnused(name);
  }

  /** Removes a network being removed once no address is left on any host; otherwise leaves it for the last release. */
  private async removeIfUnused(name: string): Promise<void> {
    const keys = networkKeys(this.store, name);
    if ((await this.store.list(keys.ipamPrefix)).length) return;
    await this.removeNetwork(name);
  }

  /** "10.40.1.9 on host h2, …" for the addresses still allocated in a network. */
  private async describeAddresses(name: string): Promise<string> {
    const keys = networkKeys(this.store, name);
    const addresses = (await this.store.list(keys.ipamPrefix)).map((e) => e.key.slice(keys.ipamPrefix.length).split('/'));
    if (!addresses.length) return 'none left';
    const leases = await listLeases(this.store, name);
    const where = addresses.map(([subnetKey, ip]) => {
      const l = leases.find((x) => x.subnet === subnetKey!.replace(/-(\d+)$/, '/$1'));
      return `${ip} on host ${l ? (l.hostId ?? l.publicIp) : '?'}`;
    });
    return `${addresses.length} endpoint(s): ${where.slice(0, 10).join(', ')}${where.length > 10 ? ' …' : ''}`;
  }

  private async record(name: string): Promise<DockerNetworkRecord | undefined> {
    const e = await this.store.get(DOCKER_NETWORKS_PREFIX + name);
    if (!e) return undefined;
    try {
      return JSON.parse(e.value) as DockerNetworkRecord;
    } catch {
      return undefined;
    }
  }

  async createVeth(name: string, req: { endpointId: string; mac: string; address?: string }): Promise<{ hostIf: string; peerIf: string; mac: string }> {
    const runner = await this.runner(name, true);
    const id = req.endpointId.replace(/[^0-9a-zA-Z]/g, '').slice(0, 11);
    const made = await endpointDriver(runner.module.endpointDriver).prepare({
      hostIf: `wd${id}`,
      peerIf: `wp${id}`,
      bridge: runner.bridge,
      parent: runner.backend.parent,
      mtu: runner.backend.mtu,
      mac: req.mac,
      address: req.address,
    });
    if (runner.module.wantsEndpoints && req.address) {
      // Backends that program containers' MACs (l2) find Docker's containers here too. The record has no
      // owner or host interface: the agent's own endpoint repair leaves it to Docker's lifecycle.
      const rec = { hostId: this.agent.hostId, address: req.address, mac: made.mac, docker: req.endpointId };
      await this.store.put(networkKeys(this.store, name).endpoint(this.agent.hostId, `docker-${id}`), JSON.stringify(rec));
    }
    return { hostIf: made.hostIf, peerIf: made.ifname, mac: made.mac };
  }

  async deleteVeth(name: string, hostIf: string): Promise<void> {
    const runner = this.agent.runners.get(name);
    await endpointDriver(runner?.module.endpointDriver).leave({ hostIf, ifname: hostIf });
    if (runner?.module.wantsEndpoints && /^w[dp][0-9a-zA-Z]+$/.test(hostIf)) {
      await this.store.delete(networkKeys(this.store, name).endpoint(this.agent.hostId, `docker-${hostIf.slice(2)}`));
    }
  }

  /**
   * `docker network rm` on this host. Docker removes its own network whatever the driver answers, so this
   * never refuses: with endpoints left (on any host) the network is marked as being removed and goes away
   * when the last one is released; a weft network that existed before Docker used it stays in the store.
   */
  async removeNetwork(name: string): Promise<void> {
    const dockerKey = DOCKER_NETWORKS_PREFIX + name;
    const rec = await this.record(name);
    if (!(await findNetwork(this.store, name))) {
      await this.store.delete(dockerKey);
      return;
    }
    if (!rec || !rec.owned) {
      // no record: Docker never made this weft network (or its record went with a removal elsewhere); not Docker's to remove
      await this.store.delete(dockerKey);
      return;
    }
    const keys = networkKeys(this.store, name);
    if ((await this.store.list(keys.ipamPrefix)).length) {
      if (rec && !rec.removing) {
        rec.removing = { by: this.agent.hostId, at: new Date().toISOString() };
        await this.store.put(dockerKey, JSON.stringify(rec));
      }
      throw new WeftError(`network ${name} still has ${await this.describeAddresses(name)}; it is removed everywhere when they are gone`);
    }
    await this.store.delete(dockerKey);
    await removeWeftNetwork(this.store, name, { force: true });
    // A lease renewal that was already under way may write its keys back: sweep once more.
    await sleep(300);
    for (const prefix of keys.ownedPrefixes) for (const e of await this.store.list(prefix)) await this.store.delete(e.key);
  }

  /** DNAT for every published port of this host (the whole set; see DockerBackendOps.publishPorts). */
  async publishPorts(all: EndpointPorts[]): Promise<void> {
    const rules: PortRule[] = [];
    for (const e of all) {
      const cidr = this.agent.runners.get(e.network)?.config.Network;
      for (const p of e.ports) {
        rules.push({ proto: p.proto, ...(p.hostIp ? { hostIp: p.hostIp } : {}), hostPort: p.hostPort, ip: e.ip, port: p.port, ...(cidr ? { networkCidr: cidr } : {}), owner: e.endpointId.slice(0, 12) });
      }
    }
    await reconcileDnat(rules);
  }

  async dockerNetworkName(networkId: string): Promise<string | undefined> {
    return this.o.docker?.networkName(networkId);
  }

  async containerOfEndpoint(networkId: string, endpointId: string): Promise<{ id: string; name: string; aliases: string[] } | undefined> {
    if (!this.o.docker) return undefined;
    return this.o.docker.containerOfEndpoint(networkId, endpointId);
  }

  /** This host's Docker records in each network (every network in the store unless named) become `all`'s. */
  async publishNames(all: EndpointNames[], networks?: string[]): Promise<void> {
    const names = networks ?? (await listNetworks(this.store)).map((n) => n.name);
    for (const network of new Set([...names, ...all.map((e) => e.network)])) {
      const wanted: NamedEndpoint[] = all.filter((e) => e.network === network).flatMap((e) => e.names.map((name) => ({ name, ip: e.ip, container: e.container })));
      await syncHostRecords(this.store, network, this.agent.hostId, wanted, 'docker');
    }
  }
}
