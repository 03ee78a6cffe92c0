/**
 * weft as a Docker remote network driver and IPAM driver (libnetwork's plugin protocol: HTTP+JSON on a
 * unix socket, discovered as /run/docker/plugins/<name>.sock).
 *
 *   docker network create -d weft --ipam-driver weft --subnet 10.40.0.0/16 prodnet
 *   docker run --network prodnet [--ip 10.40.x.y] ...
 *
 * How Docker's calls map onto weft:
 * - RequestPool records the pool; the weft network (in the store, so every host sees it) is created when
 *   the Docker network is (CreateNetwork), named after the Docker network (resolved through the Docker
 *   API when available; `--ipam-opt weft.network=NAME` overrides; else "docker-10.40.0.0-16").
 * - A host joins the network (lease + bridge + backend) when its first container needs an address, so a
 *   network that is exhausted fails `docker run` with weft's message, not `docker network create`.
 * - Addresses come from this host's lease and carry the lease's prefix length (10.40.1.2/24), and Join
 *   gives every container this host's bridge as gateway plus a route to the whole network: Docker's
 *   per-network gateway is the same on every host and cannot be right for all of them, so the gateway
 *   address Docker records (first usable address of the pool) is a placeholder weft never hands out.
 * - NetworkDriver scope is "local" with ConnectivityScope "global": Docker 20.10 refuses a "global"-scope
 *   driver outside Swarm ("This node is not a swarm manager"); weft itself makes the network span hosts.
 * - Every call is serialised, and the plugin's own state (pools, networks, endpoints) is saved after each
 *   change, because Docker never replays CreateNetwork/CreateEndpoint after a plugin restart.
 */
import { containsAddress, formatCidr, stripPrefix, tryParseCidr, tryParseIp } from '../../net/ipv4.js';
import { gatewayOf } from '../../ipam/addresses.js';
import * as http from 'node:http';
import { chmodSync, mkdirSync, rmSync } from 'node:fs';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { readBody, removeStaleSocket } from '../../agent/api.js';
import { describeIssue, MAX_BODY_BYTES } from '../../agent/schemas.js';
import {
  GATEWAY_ADDRESS_TYPE,
  PLUGIN_CONTENT_TYPE,
  PLUGIN_REQUEST_SCHEMAS,
  REQUEST_ADDRESS_TYPE,
  type CreateEndpointRequest,
  type CreateNetworkRequest,
  type DeleteNetworkRequest,
  type EndpointRequest,
  type JoinRequest,
  type JoinResponse,
  type ReleaseAddressRequest,
  type ReleasePoolRequest,
  type RequestAddressRequest,
  type RequestPoolRequest,
} from './protocol.js';
import type { EndpointRecord, NetworkRecord, PluginState, StateStore } from './state.js';
import { allBackendOptions, backendFieldsFromOptions } from '../../config/backend-spec.js';
import { DEFAULT_BACKEND, parseNetworkConfig } from '../../config/network.js';
import { describePort, parsePortMap, portsClash, type PublishedPort } from './ports.js';
import { containerNames } from '../../dns/registry.js';

export const DEFAULT_PLUGIN_NAME = 'weft';
export const DEFAULT_PLUGIN_DIR = '/run/docker/plugins';
const PLUGIN_SOCKET_MODE = 0o600;

/** Options a user can give with `--ipam-opt` or `-o` (both spellings: with and without the `weft.` prefix). */
export interface WeftNetworkOptions {
  /** Name of the weft network (default: the Docker network's name). */
  network?: string;
  /** Prefix length of each host's subnet (default 24). */
  subnetLen?: number;
  /** First and last host subnet handed out (flannel's SubnetMin/SubnetMax; `weft network create --subnet-min/--subnet-max`). */
  subnetMin?: string;
  subnetMax?: string;
  /** Backend type (default vxlan). */
  backend?: string;
  /** The backend's own options by flag (vni, port, parent, gateway, …: each module's BackendModule.options), as given. */
  backendOptions?: Record<string, string>;
}

/** This host's view of a weft network it has joined. */
export interface HostNetwork {
  name: string;
  /** The whole network, e.g. "10.40.0.0/16". */
  network: string;
  /** This host's lease, e.g. "10.40.1.0/24". */
  subnet: string;
  /** This host's bridge address, the containers' gateway (no prefix length). */
  gateway: string;
  bridge: string;
  mtu: number;
}

/**
 * What the plugin needs from the host's agent. Every method is idempotent; errors meant for the user are
 * thrown with a message that makes sense on its own (the plugin prefixes "weft: ").
 */
export interface DockerBackendOps {
  /**
   * Makes sure weft network `name` exists in the store with this subnet (created when absent; an error when
   * it exists with another subnet or overlaps another network). `docker` is kept with it so other hosts
   * can create the same Docker network.
   */
  ensureNetwork(
    name: string,
    subnet: string,
    opts: WeftNetworkOptions & { docker?: { name: string; options: Record<string, string>; ipamOptions: Record<string, string> } },
  ): Promise<void>;
  /** Joins the network on this host (lease, bridge, backend) unless already joined. Throws on exhaustion. */
  joinNetwork(name: string): Promise<HostNetwork>;
  /**
   * Allocates an address in this host's lease: `address` when given (an error naming the holder when it is
   * taken on any host, or when it belongs to another host's subnet), else the next free one.
   * Returns it with the lease's prefix length ("10.40.1.2/24").
   */
  allocateAddress(name: string, req: { address?: string; owner: string }): Promise<string>;
  /** Releases an address of this host (no prefix length); no error when it is not allocated. */
  releaseAddress(name: string, ip: string): Promise<void>;
  /** Creates a veth pair on this host's bridge of `name`: host end enslaved and up, peer left in the host namespace. */
  createVeth(name: string, req: { endpointId: string; mac: string; address?: string }): Promise<{ hostIf: string; peerIf: string; mac: string }>;
  /** Deletes the veth (no error when it is gone). */
  deleteVeth(name: string, hostIf: string): Promise<void>;
  /**
   * Removes the network everywhere (config, leases, addresses) — only when no endpoint is left on any
   * host; otherwise throws naming them. No error when the network does not exist.
   */
  removeNetwork(name: string): Promise<void>;
  /** The Docker network's name for a Docker network id, via the Docker API of the daemon served (optional). */
  dockerNetworkName?(networkId: string): Promise<string | undefined>;
  /**
   * Refuses, before Docker creates anything, a subnet that overlaps another weft network or options that
   * clash with one (a VNI in use). A weft network with exactly this subnet is the same network: accepted.
   */
  checkNetwork?(subnet: string, opts: WeftNetworkOptions): Promise<void>;
  /**
   * Makes this host's published ports exactly `ports` (every endpoint's, not a change): DNAT from the host's
   * addresses to the containers. Called after every change and at plugin start (reconcile).
   */
  publishPorts?(ports: EndpointPorts[]): Promise<void>;
  /**
   * The container behind an endpoint (name and aliases on that network), via the Docker API; undefined
   * while Docker does not list it (yet). Throws when Docker does not answer. Optional: without it the
   * plugin registers no names.
   */
  containerOfEndpoint?(networkId: string, endpointId: string): Promise<{ id: string; name: string; aliases: string[] } | undefined>;
  /**
   * Makes this host's DNS records of Docker containers exactly `names` (every endpoint's, not a change):
   * each name → its endpoint's address in its weft network, on every host. `networks`: only these weft
   * networks changed (their records are compared; default every network).
   */
  publishNames?(names: EndpointNames[], networks?: string[]): Promise<void>;
}

/** One endpoint's DNS names, for DockerBackendOps.publishNames. */
export interface EndpointNames {
  /** The weft network. */
  network: string;
  /** The container's address (no prefix length). */
  ip: string;
  names: string[];
  container: string;
}

/** One endpoint's published ports, for DockerBackendOps.publishPorts. */
export interface EndpointPorts {
  endpointId: string;
  /** The weft network. */
  network: string;
  /** The container's address (no prefix length). */
  ip: string;
  ports: PublishedPort[];
}

export interface PluginOptions {
  ops: DockerBackendOps;
  state: StateStore;
  /** Plugin name: the socket is <pluginDir>/<name>.sock and the driver is `-d <name>` (default weft). */
  name?: string;
  pluginDir?: string;
  /** Full socket path (overrides pluginDir/name). */
  socketPath?: string;
  /** Capability scope (default "local"; see the header). */
  scope?: 'local' | 'global';
  /** How long to wait for Docker to report the name of a new network (ms, default 5000). */
  nameTimeoutMs?: number;
  /** How long to keep asking Docker for the container of a joined endpoint, for its DNS names (ms, default 60000). */
  containerTimeoutMs?: number;
  log?: { info(obj: object, msg?: string): void; warn(obj: object, msg?: string): void; error(obj: object, msg?: string): void };
}

/** An error whose message goes to the Docker user as it is. */
export class PluginError extends Error {
  constructor(message: string, readonly status = 500) {
    super(message);
  }
}

type Handler = (body: any) => Promise<unknown>; // eslint-disable-line @typescript-eslint/no-explicit-any

function randomMac(): string {
  const b = randomBytes(6);
  b[0] = (b[0]! & 0xfe) | 0x02;
  return [...b].map((x) => x.toString(16).padStart(2, '0')).join(':');
}

function stringOptions(o: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (o && typeof o === 'object') for (const [k, v] of Object.entries(o)) if (typeof v === 'string') out[k] = v;
  return out;
}

/** weft options from -o / --ipam-opt maps (later maps win). */
export function parseWeftOptions(...maps: Array<Record<string, string>>): WeftNetworkOptions {
  const o: WeftNetworkOptions = {};
  const get = (m: Record<string, string>, k: string) => m[`weft.${k}`] ?? m[k];
  for (const m of maps) {
    const network = get(m, 'network');
    if (network) o.network = network;
    const len = get(m, 'subnet-len') ?? get(m, 'subnetlen');
    if (len !== undefined) {
      if (!/^\d{1,2}$/.test(len) || Number(len) > 30) throw new PluginError(`invalid weft.subnet-len "${len}" (a prefix length up to 30)`);
      o.subnetLen = Number(len);
    }
    for (const [flag, field] of [['subnet-min', 'subnetMin'], ['subnet-max', 'subnetMax']] as const) {
      const v = get(m, flag) ?? get(m, flag.replace('-', ''));
      if (v === undefined) continue;
      if (tryParseIp(v) === undefined) throw new PluginError(`invalid weft.${flag} "${v}" (an IPv4 address: the first address of a host subnet)`);
      o[field] = v;
    }
    const backend = get(m, 'backend');
    if (backend) o.backend = backend;
    for (const bo of allBackendOptions()) {
      const v = get(m, bo.flag);
      if (v !== undefined) o.backendOptions = { ...o.backendOptions, [bo.flag]: v };
    }
  }
  // Checked now (kinds, options of another backend), so `docker network create` fails, not `docker run`.
  try {
    backendFieldsFromOptions(o.backend ?? DEFAULT_BACKEND, (f) => o.backendOptions?.[f], (f) => `-o weft.${f}`);
  } catch (err) {
    throw new PluginError((err as Error).message);
  }
  return o;
}

/** The network config fields that -o / --ipam-opt set besides the backend (SubnetLen, SubnetMin, SubnetMax). */
export function subnetFields(o: WeftNetworkOptions): { SubnetLen?: number; SubnetMin?: string; SubnetMax?: string } {
  return {
    ...(o.subnetLen !== undefined ? { SubnetLen: o.subnetLen } : {}),
    ...(o.subnetMin !== undefined ? { SubnetMin: o.subnetMin } : {}),
    ...(o.subnetMax !== undefined ? { SubnetMax: o.subnetMax } : {}),
  };
}

/** "10.40.0.0/16" → "docker-10.40.0.0-16": the weft network name when Docker's name is not known. */
export function derivedNetworkName(pool: string): string {
  return `docker-${pool.replace('/', '-')}`;
}

export class DockerPlugin {
  readonly name: string;
  readonly socketPath: string;
  private server?: http.Server;
  private state!: PluginState;
  private queue: Promise<unknown> = Promise.resolve();
  private readonly handlers: Record<string, Handler>;
  private readonly internal: Record<string, Handler>;
  /** Docker names being resolved for networks just created. */
  private readonly naming = new Map<string, Promise<string | undefined>>();
  /** Endpoints in the saved state at start: the only ones pruneEndpoints may judge (newer ones may not be in Docker's view yet). */
  private loadedEndpoints = new Set<string>();
  /** Lookups of joined endpoints' containers under way (for their DNS names), by endpoint id. */
  private readonly lookups = new Map<string, Promise<void>>();

  constructor(readonly opts: PluginOptions) {
    this.name = opts.name ?? DEFAULT_PLUGIN_NAME;
    this.socketPath = opts.socketPath ?? path.join(opts.pluginDir ?? DEFAULT_PLUGIN_DIR, `${this.name}.sock`);
    this.handlers = {
      '/Plugin.Activate': async () => ({ Implements: ['NetworkDriver', 'IpamDriver'] }),
      '/NetworkDriver.GetCapabilities': async () => ({ Scope: this.opts.scope ?? 'local', ConnectivityScope: 'global' }),
      '/NetworkDriver.CreateNetwork': (b: CreateNetworkRequest) => this.createNetwork(b),
      '/NetworkDriver.DeleteNetwork': (b: DeleteNetworkRequest) => this.deleteNetwork(b),
      '/NetworkDriver.CreateEndpoint': (b: CreateEndpointRequest) => this.createEndpoint(b),
      '/NetworkDriver.EndpointOperInfo': (b: EndpointRequest) => this.endpointOperInfo(b),
      '/NetworkDriver.DeleteEndpoint': (b: EndpointRequest) => this.deleteEndpoint(b),
      '/NetworkDriver.Join': (b: JoinRequest) => this.join(b),
      '/NetworkDriver.Leave': (b: EndpointRequest) => this.leave(b),
      '/NetworkDriver.DiscoverNew': async () => ({}),
      '/NetworkDriver.DiscoverDelete': async () => ({}),
      '/NetworkDriver.ProgramExternalConnectivity': (b: EndpointRequest & { Options?: Record<string, unknown> | null }) => this.programExternal(b),
      '/NetworkDriver.RevokeExternalConnectivity': (b: EndpointRequest) => this.revokeExternal(b),
      '/IpamDriver.GetCapabilities': async () => ({ RequiresMACAddress: false, RequiresRequestReplay: false }),
      '/IpamDriver.GetDefaultAddressSpaces': async () => ({ LocalDefaultAddressSpace: 'weft', GlobalDefaultAddressSpace: 'weft' }),
      '/IpamDriver.RequestPool': (b: RequestPoolRequest) => this.requestPool(b),
      '/IpamDriver.ReleasePool': (b: ReleasePoolRequest) => this.releasePool(b),
      '/IpamDriver.RequestAddress': (b: RequestAddressRequest) => this.requestAddress(b),
      '/IpamDriver.ReleaseAddress': (b: ReleaseAddressRequest) => this.releaseAddress(b),
    };
    // internal: queued follow-up of CreateNetwork (not reachable over the socket)
    this.internal = {
      '/weft.AdoptNetwork': (b: { NetworkID: string; DockerName: string }) => this.adoptNetwork(b),
      '/weft.PruneEndpoints': (b: { present: (ep: EndpointRecord) => Promise<boolean | undefined> }) => this.pruneEndpoints(b.present),
      '/weft.NameEndpoint': (b: { EndpointID: string; container: { name: string; aliases: string[] } }) => this.nameEndpoint(b),
      '/weft.PublishNames': async () => this.applyNames(),
    };
  }

  /** Loads the saved state and listens on the socket. */
  async start(): Promise<void> {
    this.state = await this.opts.state.load();
    this.loadedEndpoints = new Set(Object.keys(this.state.endpoints));
    // Published ports are kernel state: made again from the saved state (and stale ones dropped) at every start.
    await this.applyPorts().catch((err) => this.opts.log?.warn({ err: (err as Error).message }, 'cannot restore published ports'));
    mkdirSync(path.dirname(this.socketPath), { recursive: true });
    await removeStaleSocket(this.socketPath);
    const server = http.createServer((req, res) => void this.serve(req, res));
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      // dockerd (root) is the only caller: the socket is 0600 from the moment it exists
      const old = process.umask(0o177);
      try {
        server.listen(this.socketPath, () => resolve());
      } finally {
        process.umask(old);
      }
    });
    chmodSync(this.socketPath, PLUGIN_SOCKET_MODE);
    this.server = server;
    // DNS names are store records: made again from the saved state (and those of containers removed while
    // the plugin was down dropped); endpoints joined before their container was looked up are looked up now.
    void this.call('/weft.PublishNames', {}).then((r) => {
      if (r.status !== 200) this.opts.log?.warn({ answer: r.body }, 'cannot restore the DNS names of Docker containers');
    });
    for (const ep of Object.values(this.state.endpoints)) if (ep.hostIf && !ep.dnsNames) this.lookUpContainer(ep);
  }

  async stop(): Promise<void> {
    const s = this.server;
    this.server = undefined;
    if (s) {
      await new Promise<void>((resolve) => {
        s.close(() => resolve());
        s.closeAllConnections();
      });
    }
    await Promise.allSettled([...this.naming.values(), ...this.lookups.values()]);
    await this.queue.catch(() => {});
    rmSync(this.socketPath, { force: true });
  }

  /** The endpoint records as they are (read only; for `weft ps` and status counts). */
  endpointRecords(): readonly EndpointRecord[] {
    return this.state ? Object.values(this.state.endpoints) : [];
  }

  /** A copy of the plugin's state (for `weft status`, tests). */
  snapshot(): PluginState {
    return JSON.parse(JSON.stringify(this.state)) as PluginState;
  }

  /** Dispatches one protocol call as Docker would make it (also used by tests). */
  async call(method: string, body: unknown, internal = true): Promise<{ status: number; body: unknown }> {
    const h = this.handlers[method] ?? (internal ? this.internal[method] : undefined);
    if (!h) return { status: 404, body: { Err: `weft: unknown plugin method ${method}` } };
    const schema = PLUGIN_REQUEST_SCHEMAS[method];
    const input = body === undefined ? {} : body;
    const checked = schema ? schema.safeParse(input) : { success: true as const, data: input };
    if (!checked.success) {
      return { status: 400, body: { Err: `weft: invalid ${method.slice(1)} request: ${describeIssue(checked.error, input)}` } };
    }
    const run = this.queue.then(() => h(checked.data));
    this.queue = run.catch(() => {});
    try {
      return { status: 200, body: (await run) ?? {} };
    } catch (err) {
      const msg = err instanceof Error ? err.message : String(err);
      if (!(err instanceof PluginError)) this.opts.log?.warn({ err: msg, method }, 'docker plugin call failed');
      return { status: err instanceof PluginError ? err.status : 500, body: { Err: msg.startsWith('weft: ') ? msg : `weft: ${msg}` } };
    }
  }

  private async serve(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    let raw: string;
    try {
      raw = await readBody(req, MAX_BODY_BYTES);
    } catch (err) {
      // over the limit: answered unread, and the connection closed so the rest is never buffered
      const text = JSON.stringify({ Err: `weft: ${(err as Error).message}` });
      res.writeHead((err as { code?: string }).code === 'ETOOLARGE' ? 413 : 400, {
        'content-type': PLUGIN_CONTENT_TYPE,
        'content-length': Buffer.byteLength(text),
        connection: 'close',
      });
      res.end(text, () => req.socket.destroy());
      return;
    }
    let out: { status: number; body: unknown } | undefined;
    let body: unknown;
    try {
      body = raw.trim() ? JSON.parse(raw) : undefined;
    } catch {
      out = { status: 400, body: { Err: 'weft: request body is not JSON' } };
    }
    out ??= await this.call(new URL(req.url ?? '/', 'http://docker').pathname, body, false);
    const text = JSON.stringify(out.body);
    // One connection per call: Docker's plugin client keeps idle connections, and when it reuses one just as
    // the server closes it (Node's keep-alive timeout) the POST fails and Docker retries it with the body
    // already consumed — an empty request (seen as a RequestPool "without a subnet" on a busy machine).
    res.shouldKeepAlive = false;
    res.writeHead(out.status, { 'content-type': PLUGIN_CONTENT_TYPE, 'content-length': Buffer.byteLength(text), connection: 'close' });
    res.end(text);
  }

  private async save(): Promise<void> {
    await this.opts.state.save(this.state);
  }

  // ---------------- IPAM ----------------

  private async requestPool(b: RequestPoolRequest): Promise<unknown> {
    if (b.V6) throw new PluginError('IPv6 pools are not supported; create the network without --ipv6');
    if (!b.Pool) {
      throw new PluginError(
        'the weft IPAM driver needs a subnet: docker network create -d weft --ipam-driver weft --subnet 10.40.0.0/16 NAME',
      );
    }
    if (b.SubPool) throw new PluginError('--ip-range is not supported: weft gives each host its own part of the subnet');
    const block = tryParseCidr(b.Pool);
    if (!block) throw new PluginError(`invalid subnet "${b.Pool}" (expected a.b.c.d/len without host bits)`);
    const options = stringOptions(b.Options);
    const opts = parseWeftOptions(options);
    // The same rule as `weft network create` (config/network.ts): too small a subnet is refused here, at create time.
    try {
      parseNetworkConfig({ Network: b.Pool, ...subnetFields(opts), Backend: { Type: opts.backend ?? DEFAULT_BACKEND } });
    } catch (err) {
      throw new PluginError(`subnet ${b.Pool}: ${(err as Error).message}`);
    }
    if (this.opts.ops.checkNetwork) {
      try {
        await this.opts.ops.checkNetwork(formatCidr(block), opts);
      } catch (err) {
        throw new PluginError((err as Error).message);
      }
    }
    const pool = formatCidr(block);
    const poolId = pool;
    for (const n of Object.values(this.state.networks)) {
      if (n.pool === pool && this.state.pools[poolId]) {
        throw new PluginError(`subnet ${pool} is already used by Docker network ${n.dockerName ?? n.id.slice(0, 12)} on this host`);
      }
    }
    if (opts.subnetLen !== undefined && opts.subnetLen < block.len) {
      throw new PluginError(`weft.subnet-len ${opts.subnetLen} is shorter than the subnet ${pool}`);
    }
    this.state.pools[poolId] = { pool, options, ...(opts.network ? { network: opts.network } : {}) };
    await this.save();
    return { PoolID: poolId, Pool: pool, Data: {} };
  }

  private async releasePool(b: ReleasePoolRequest): Promise<unknown> {
    if (this.state.pools[b.PoolID]) {
      delete this.state.pools[b.PoolID];
      await this.save();
    }
    return {};
  }

  private poolOf(poolId: string) {
    const p = this.state.pools[poolId];
    if (!p) throw new PluginError(`unknown address pool ${poolId} (was the network created with --ipam-driver weft?)`);
    return p;
  }

  private async requestAddress(b: RequestAddressRequest): Promise<unknown> {
    const pool = this.poolOf(b.PoolID);
    const block = tryParseCidr(pool.pool)!;
    const opts = stringOptions(b.Options);
    if (opts[REQUEST_ADDRESS_TYPE] === GATEWAY_ADDRESS_TYPE) {
      // Docker's per-network gateway: a placeholder (see the header). Each container's real gateway is its host's bridge (Join).
      const gw = b.Address ? stripPrefix(b.Address) : gatewayOf(formatCidr(block));
      const n = tryParseIp(gw);
      if (n === undefined || !containsAddress(block, n)) throw new PluginError(`gateway ${b.Address} is not inside ${pool.pool}`);
      return { Address: `${gw}/${block.len}`, Data: {} };
    }
    const requested = b.Address ? stripPrefix(b.Address) : undefined;
    if (requested !== undefined) {
      const n = tryParseIp(requested);
      if (n === undefined) throw new PluginError(`invalid address "${b.Address}"`);
      if (!containsAddress(block, n)) throw new PluginError(`address ${requested} is not inside the network's subnet ${pool.pool}`);
    }
    const net = await this.networkForPool(b.PoolID);
    if (!net.dockerName && !net.network) {
      const dn = await this.naming.get(net.id);
      if (dn) net.dockerName = dn;
    }
    const name = await this.ensureWeftNetwork(net);
    await this.opts.ops.joinNetwork(name);
    // Docker does not say which endpoint an address is for: every allocation gets its own owner
    // (weft's IPAM hands the same owner the same address again).
    const owner = `docker:${net.id.slice(0, 12)}:${randomBytes(6).toString('hex')}`;
    const address = await this.opts.ops.allocateAddress(name, { ...(requested ? { address: requested } : {}), owner });
    return { Address: address, Data: {} };
  }

  private async releaseAddress(b: ReleaseAddressRequest): Promise<unknown> {
    const pool = this.state.pools[b.PoolID];
    if (!pool) return {};
    const ip = stripPrefix(b.Address);
    if (ip === gatewayOf(pool.pool)) return {}; // the gateway placeholder
    const net = Object.values(this.state.networks).find((n) => n.poolId === b.PoolID);
    const name = net?.network ?? pool.network;
    if (name) await this.opts.ops.releaseAddress(name, ip);
    return {};
  }

  // ---------------- NetworkDriver ----------------

  private async createNetwork(b: CreateNetworkRequest): Promise<unknown> {
    if (!b.NetworkID) throw new PluginError('CreateNetwork without a NetworkID');
    if (b.IPv6Data && b.IPv6Data.length) throw new PluginError('IPv6 is not supported by weft networks');
    const v4 = b.IPv4Data ?? [];
    if (v4.length !== 1) throw new PluginError(`a weft network has exactly one IPv4 subnet (got ${v4.length})`);
    const poolText = v4[0]!.Pool;
    const poolId = Object.keys(this.state.pools).find((id) => this.state.pools[id]!.pool === poolText);
    if (!poolId) {
      throw new PluginError(`subnet ${poolText} was not allocated by weft: use --ipam-driver weft with -d ${this.name}`);
    }
    const generic = stringOptions((b.Options ?? {})['com.docker.network.generic']);
    parseWeftOptions(this.state.pools[poolId]!.options, generic); // validate now
    const pool = this.state.pools[poolId]!;
    const rec: NetworkRecord = { id: b.NetworkID, poolId, pool: pool.pool, options: generic };
    const early = parseWeftOptions(pool.options, generic).network;
    if (early) rec.network = early;
    this.state.networks[b.NetworkID] = rec;
    await this.save();
    // Docker knows the network's name only after we answer: resolve it (outside the call queue), then
    // create the weft network in the store as a queued call of its own.
    const naming = this.resolveName(b.NetworkID).finally(() => this.naming.delete(b.NetworkID));
    this.naming.set(b.NetworkID, naming);
    void naming.then((dockerName) =>
      this.call('/weft.AdoptNetwork', { NetworkID: b.NetworkID, DockerName: dockerName ?? '' }).then((r) => {
        if (r.status !== 200) this.opts.log?.warn({ network: b.NetworkID, answer: r.body }, 'creating the weft network failed; will retry on first use');
      }),
    );
    return {};
  }

  /** Polls the Docker API for the name of a new network (never blocks the call queue). */
  private async resolveName(networkId: string): Promise<string | undefined> {
    const lookup = this.opts.ops.dockerNetworkName;
    if (!lookup) return undefined;
    const end = Date.now() + (this.opts.nameTimeoutMs ?? 5000);
    while (Date.now() < end && this.server) {
      const name = await lookup.call(this.opts.ops, networkId).catch(() => undefined);
      if (name) return name;
      await new Promise((r) => setTimeout(r, 100));
    }
    return undefined;
  }

  private async adoptNetwork(b: { NetworkID: string; DockerName: string }): Promise<unknown> {
    const rec = this.state.networks[b.NetworkID];
    if (!rec) return {};
    if (b.DockerName && !rec.dockerName) rec.dockerName = b.DockerName;
    await this.ensureWeftNetwork(rec);
    return {};
  }

  private async networkForPool(poolId: string): Promise<NetworkRecord> {
    const net = Object.values(this.state.networks).find((n) => n.poolId === poolId);
    if (!net) throw new PluginError(`no Docker network uses address pool ${poolId} on this host`);
    return net;
  }

  /** The weft network behind a Docker network, created in the store on first need. */
  private async ensureWeftNetwork(rec: NetworkRecord): Promise<string> {
    const pool = this.state.pools[rec.poolId];
    const ipamOptions = pool?.options ?? {};
    const opts = parseWeftOptions(ipamOptions, rec.options);
    const name = rec.network ?? opts.network ?? rec.dockerName ?? derivedNetworkName(rec.pool);
    await this.opts.ops.ensureNetwork(name, rec.pool, {
      ...opts,
      network: name,
      docker: { name: rec.dockerName ?? name, options: rec.options, ipamOptions },
    });
    if (rec.network !== name) {
      rec.network = name;
      if (pool) pool.network = name;
      await this.save();
    }
    return name;
  }

  private async deleteNetwork(b: DeleteNetworkRequest): Promise<unknown> {
    const rec = this.state.networks[b.NetworkID];
    if (!rec) return {};
    const left = Object.values(this.state.endpoints).filter((e) => e.networkId === b.NetworkID);
    if (left.length) {
      throw new PluginError(`network ${rec.dockerName ?? rec.network} still has ${left.length} endpoint(s) on this host`);
    }
    // Docker removes its network whatever a remote driver answers (only "forbidden" errors count, which a
    // plugin cannot send), so the local record goes in any case; weft keeps the network while other hosts
    // still have containers on it and removes it when the last one is gone (the ops decide).
    delete this.state.networks[b.NetworkID];
    await this.save();
    if (rec.network) {
      try {
        await this.opts.ops.removeNetwork(rec.network);
      } catch (err) {
        this.opts.log?.warn({ network: rec.network, err: err instanceof Error ? err.message : String(err) }, 'docker network removed here; weft network kept for now');
      }
    }
    return {};
  }

  private network(id: string): NetworkRecord {
    const rec = this.state.networks[id];
    if (!rec) throw new PluginError(`unknown network ${id.slice(0, 12)} (not created through weft on this host)`);
    return rec;
  }

  private async createEndpoint(b: CreateEndpointRequest): Promise<unknown> {
    const rec = this.network(b.NetworkID);
    if (!b.EndpointID) throw new PluginError('CreateEndpoint without an EndpointID');
    const iface = b.Interface ?? { Address: '', AddressIPv6: '', MacAddress: '' };
    if (!iface.Address) throw new PluginError('endpoint has no IPv4 address (the network must use --ipam-driver weft)');
    if (iface.AddressIPv6) throw new PluginError('IPv6 endpoints are not supported by weft networks');
    const name = await this.ensureWeftNetwork(rec);
    const existing = this.state.endpoints[b.EndpointID];
    const mac = existing?.mac ?? (iface.MacAddress || randomMac());
    const ep: EndpointRecord = existing ?? { id: b.EndpointID, networkId: b.NetworkID, network: name, address: iface.Address, mac };
    this.state.endpoints[b.EndpointID] = ep;
    await this.save();
    return { Interface: iface.MacAddress ? {} : { MacAddress: mac } };
  }

  private endpoint(id: string): EndpointRecord {
    const ep = this.state.endpoints[id];
    if (!ep) throw new PluginError(`unknown endpoint ${id.slice(0, 12)}`);
    return ep;
  }

  private async endpointOperInfo(b: EndpointRequest): Promise<unknown> {
    const ep = this.endpoint(b.EndpointID);
    return {
      Value: {
        network: ep.network,
        address: ep.address,
        mac: ep.mac,
        ...(ep.hostIf ? { hostInterface: ep.hostIf } : {}),
        ...(ep.gateway ? { gateway: ep.gateway } : {}),
      },
    };
  }

  private async join(b: JoinRequest): Promise<JoinResponse> {
    const ep = this.endpoint(b.EndpointID);
    const host = await this.opts.ops.joinNetwork(ep.network);
    if (!ep.hostIf || !ep.peerIf) {
      const v = await this.opts.ops.createVeth(ep.network, { endpointId: ep.id, mac: ep.mac, address: ep.address });
      ep.hostIf = v.hostIf;
      ep.peerIf = v.peerIf;
      delete ep.returningIf;
      ep.mac = v.mac;
    }
    ep.gateway = host.gateway;
    await this.save();
    // The container's name and aliases become DNS names: Docker names them only after Join returns.
    this.lookUpContainer(ep);
    // Backends whose containers sit on the whole network (l2, bridge, macvlan) get addresses with the network's
    // prefix: the network is directly connected, so no route through the gateway (there may be no gateway).
    const direct = ep.address.split('/')[1] === host.network.split('/')[1];
    return {
      InterfaceName: { SrcName: ep.peerIf, DstPrefix: 'eth' },
      Gateway: host.gateway,
      GatewayIPv6: '',
      StaticRoutes: direct || !host.gateway ? [] : [{ Destination: host.network, RouteType: 0, NextHop: host.gateway }],
      DisableGatewayService: false,
    };
  }

  // ---------------- DNS names ----------------

  /**
   * Asks Docker (in the background: never part of a call Docker waits for) which container an endpoint
   * belongs to, until it says or containerTimeoutMs passes, then registers its names as a queued call.
   * Docker lists the endpoint only once the container has started, after Join; a Docker that is slow or
   * down costs retries and a log line, never a failed `docker run`.
   */
  private lookUpContainer(ep: EndpointRecord): void {
    const lookup = this.opts.ops.containerOfEndpoint;
    if (!lookup || !this.opts.ops.publishNames || this.lookups.has(ep.id)) return;
    const id = ep.id;
    const task = (async () => {
      const end = Date.now() + (this.opts.containerTimeoutMs ?? 60_000);
      let wait = 100;
      let lastErr: string | undefined;
      while (this.server && this.state.endpoints[id]?.hostIf) {
        try {
          const c = await lookup.call(this.opts.ops, ep.networkId, id);
          if (c) {
            const r = await this.call('/weft.NameEndpoint', { EndpointID: id, container: { name: c.name, aliases: c.aliases } });
            if (r.status !== 200) this.opts.log?.warn({ endpoint: id.slice(0, 12), answer: r.body }, 'cannot register the DNS names of a Docker container');
            return;
          }
          lastErr = undefined;
        } catch (err) {
          lastErr = (err as Error).message;
        }
        if (Date.now() >= end) break;
        await new Promise((r) => setTimeout(r, Math.min(wait, Math.max(0, end - Date.now()))));
        wait = Math.min(wait * 2, 2000);
      }
      if (this.server && this.state.endpoints[id]?.hostIf) {
        this.opts.log?.warn(
          { endpoint: id.slice(0, 12), network: ep.network, ...(lastErr ? { err: lastErr } : {}) },
          'Docker did not name the container of this endpoint in time: it gets no DNS name',
        );
      }
    })().finally(() => this.lookups.delete(id));
    this.lookups.set(id, task);
  }

  /** Queued follow-up of Join: the endpoint's names, when it is still joined. */
  private async nameEndpoint(b: { EndpointID: string; container: { name: string; aliases: string[] } }): Promise<unknown> {
    const ep = this.state.endpoints[b.EndpointID];
    if (!ep?.hostIf) return {}; // left meanwhile
    const { names, invalid } = containerNames([b.container.name, ...b.container.aliases]);
    if (invalid.length) this.opts.log?.warn({ container: b.container.name, invalid }, 'names of a Docker container that cannot be DNS names: skipped');
    ep.container = b.container.name;
    ep.dnsNames = names;
    await this.save();
    await this.applyNames([ep.network]);
    this.opts.log?.info({ container: b.container.name, network: ep.network, names, address: ep.address }, 'DNS names of a Docker container registered');
    return {};
  }

  /** Every endpoint's DNS names to the ops (the whole set: this host's Docker records are made to match it). */
  private async applyNames(networks?: string[]): Promise<void> {
    if (!this.opts.ops.publishNames) return;
    const all: EndpointNames[] = Object.values(this.state.endpoints)
      .filter((e) => e.dnsNames?.length && (!networks || networks.includes(e.network)))
      .map((e) => ({ network: e.network, ip: stripPrefix(e.address), names: e.dnsNames!, container: (e.container ?? e.id.slice(0, 12)).slice(0, 256) }));
    await this.opts.ops.publishNames(all, networks);
  }

  /** Removes an endpoint's DNS names (leave, delete). A store that fails is logged: Docker's call goes on. */
  private async dropNames(ep: EndpointRecord): Promise<void> {
    if (!ep.dnsNames) return;
    delete ep.dnsNames;
    await this.save();
    await this.applyNames([ep.network]).catch((err) => this.opts.log?.warn({ err: (err as Error).message, endpoint: ep.id.slice(0, 12) }, 'cannot remove the DNS names of a Docker container'));
  }

  // ---------------- published ports ----------------

  /** Every endpoint's published ports to the ops (the whole set: the kernel is made to match it). */
  private async applyPorts(): Promise<void> {
    if (!this.opts.ops.publishPorts) return;
    const all: EndpointPorts[] = Object.values(this.state.endpoints)
      .filter((e) => e.ports?.length)
      .map((e) => ({ endpointId: e.id, network: e.network, ip: stripPrefix(e.address), ports: e.ports! }));
    await this.opts.ops.publishPorts(all);
  }

  private async programExternal(b: EndpointRequest & { Options?: Record<string, unknown> | null }): Promise<unknown> {
    const ep = this.endpoint(b.EndpointID);
    let ports: PublishedPort[];
    try {
      ports = parsePortMap(b.Options);
    } catch (err) {
      throw new PluginError((err as Error).message);
    }
    if (!ports.length && !ep.ports?.length) return {};
    if (ports.length && !this.opts.ops.publishPorts) throw new PluginError('published ports (-p) are not supported by this weft plugin');
    for (const p of ports) {
      for (const other of Object.values(this.state.endpoints)) {
        if (other.id === ep.id) continue;
        const clash = other.ports?.find((q) => portsClash(p, q));
        if (clash) throw new PluginError(`host port ${describePort(p)} is already published by container endpoint ${other.id.slice(0, 12)} (${other.address}, ${describePort(clash)})`);
      }
    }
    const was = ep.ports;
    if (ports.length) ep.ports = ports;
    else delete ep.ports;
    await this.save();
    try {
      await this.applyPorts();
    } catch (err) {
      // no half-made state: the endpoint's ports go back to what they were
      if (was) ep.ports = was;
      else delete ep.ports;
      await this.save();
      await this.applyPorts().catch(() => {});
      throw new PluginError(`cannot publish ${ports.map(describePort).join(', ')}: ${(err as Error).message}`);
    }
    return {};
  }

  /**
   * Forgets the endpoints Docker no longer has (`present` says false): a container removed while the plugin
   * was down never got its Revoke/Leave/DeleteEndpoint/ReleaseAddress, so its published ports would stay
   * (pointing at an address that may go to another container) and its address would stay taken. Its ports
   * are unpublished, its host veth deleted (if any is left) and its address released. `present` undefined
   * (Docker not answering): kept.
   */
  private async pruneEndpoints(present: (ep: EndpointRecord) => Promise<boolean | undefined>): Promise<string[]> {
    const gone: EndpointRecord[] = [];
    for (const ep of Object.values(this.state.endpoints)) {
      if (!this.loadedEndpoints.has(ep.id)) continue;
      if ((await present(ep).catch(() => undefined)) !== false) continue;
      delete this.state.endpoints[ep.id];
      gone.push(ep);
    }
    if (!gone.length) return [];
    await this.save();
    if (gone.some((e) => e.ports?.length)) await this.applyPorts();
    const named = gone.filter((e) => e.dnsNames?.length).map((e) => e.network);
    if (named.length) await this.applyNames([...new Set(named)]).catch((err) => this.opts.log?.warn({ err: (err as Error).message }, 'cannot remove the DNS names of removed containers'));
    for (const ep of gone) {
      const iface = ep.hostIf ?? ep.returningIf;
      if (iface) await this.opts.ops.deleteVeth(ep.network, iface).catch(() => {});
      await this.opts.ops.releaseAddress(ep.network, stripPrefix(ep.address)).catch((err) => this.opts.log?.warn({ err: (err as Error).message, address: ep.address }, 'cannot release the address of a removed container'));
    }
    this.opts.log?.info({ endpoints: gone.map((e) => e.id.slice(0, 12)) }, 'forgot endpoints of containers Docker removed while the plugin was down');
    return gone.map((e) => e.id);
  }

  /** See pruneEndpoints; queued like Docker's calls. */
  async pruneStaleEndpoints(present: (ep: EndpointRecord) => Promise<boolean | undefined>): Promise<string[]> {
    const r = await this.call('/weft.PruneEndpoints', { present });
    if (r.status !== 200) throw new Error((r.body as { Err?: string }).Err ?? 'prune failed');
    return r.body as string[];
  }

  private async revokeExternal(b: EndpointRequest): Promise<unknown> {
    await this.dropPorts(this.state.endpoints[b.EndpointID]);
    return {};
  }

  /** Unpublishes an endpoint's ports (revoke, leave, delete). */
  private async dropPorts(ep: EndpointRecord | undefined): Promise<void> {
    if (!ep?.ports) return;
    delete ep.ports;
    await this.save();
    await this.applyPorts();
  }

  private async leave(b: EndpointRequest): Promise<unknown> {
    const ep = this.state.endpoints[b.EndpointID];
    if (!ep) return {};
    await this.dropPorts(ep);
    await this.dropNames(ep);
    if (ep.hostIf) await this.opts.ops.deleteVeth(ep.network, ep.hostIf);
    // An interface with no host end (macvlan) is still in the container now; Docker moves it back to the host
    // after Leave (libnetwork restores a sandbox's interfaces), so DeleteEndpoint removes it then.
    if (ep.hostIf && ep.hostIf === ep.peerIf) ep.returningIf = ep.peerIf;
    delete ep.hostIf;
    delete ep.peerIf;
    await this.save();
    return {};
  }

  private async deleteEndpoint(b: EndpointRequest): Promise<unknown> {
    const ep = this.state.endpoints[b.EndpointID];
    if (!ep) return {};
    await this.dropPorts(ep);
    await this.dropNames(ep);
    const iface = ep.hostIf ?? ep.returningIf;
    if (iface) await this.opts.ops.deleteVeth(ep.network, iface);
    delete this.state.endpoints[b.EndpointID];
    await this.save();
    return {};
  }
}
