import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { BackendConfig } from '../../config/types.js';
import type { Lease } from '../../lease/types.js';
import { cidrWithin, networkAddress } from '../../net/ipv4.js';
import { getLink } from '../../system/ip.js';
import { createLink } from '../../system/kernel.js';
import { KernelBatch, readRoutes, routeDst, type RouteSpec } from '../../system/ops.js';
import { findRunning, superviseProcess, terminatePid, type SupervisedProcess, describeExit } from '../../system/process.js';
import { run } from '../../system/exec.js';
import { setSysctl } from '../../system/sysctl.js';
import { fileMode, generateWgKeyPair, loadOrCreateKey, WIREGUARD_GO, wgSet, wgShow, wgSocketPath, writeKeyFile, type WgDeviceState } from '../../system/wireguard.js';
import { WeftError } from '../../util/errors.js';
import { registerBackend } from '../registry.js';
import { diffRoutes, RefusalLog } from '../routes.js';
import type { Backend, BackendContext, BackendStatus, ConnectedNetwork } from '../types.js';
import { judgeWireguard } from './doctor.js';
import { DEFAULT_WG_PORT, peerChanges, planPeers, WG_OVERHEAD, wgDeviceName, type ConnectedLeases, type WgBackendData } from './peers.js';

export { DEFAULT_WG_PORT, WG_OVERHEAD, wgDeviceName } from './peers.js';

export type WgImplementation = 'kernel' | 'wireguard-go';

/** Files in the network's state dir (mode 0700). */
export const KEY_FILE = 'wireguard.key';
export const PID_FILE = 'wireguard-go.pid';
export const LOG_FILE = 'wireguard-go.log';

/** Supervisors by device name: a backend created again for the same device (a join retried) takes over. */
const supervisors = new Map<string, SupervisedProcess>();

/**
 * wireguard: an encrypted routed data plane. One device per (network, host), named by wgDeviceName; the
 * host's private key lives in `<state-dir>/<network>/wireguard.key` (mode 0600, never in the store); the
 * lease publishes { PublicKey, ListenPort }. Every peer is a WireGuard peer with allowed-ips = its subnet and
 * endpoint = publicIp:ListenPort, and its subnet is routed via the device (diffRoutes). The device carries
 * the subnet's network address /32 (as vxlan does) so the host itself talks from an address peers accept.
 *
 * Kernel WireGuard when `ip link add … type wireguard` works; otherwise (or with Implementation
 * "wireguard-go") the userspace wireguard-go, run in the foreground (`wireguard-go -f DEV`) and supervised:
 * restarted with backoff when it dies, and then configured again from scratch (key, port, address, peers, routes).
 *
 * Traffic while the agent is down: none is lost. wireguard-go is not stopped with the agent: it keeps
 * forwarding while the agent is stopped (SIGTERM), killed or restarting (kernel WireGuard needs no process at
 * all). The next agent adopts it through `wireguard-go.pid` (PID + start time, so a recycled PID is never
 * taken) and reconfigures nothing that is already right, so sessions survive (test/wireguard-e2e.test.ts
 * kills and restarts an agent under a 10/s ping: no ping lost, longest time without a reply 0.26 s on a
 * loaded machine). What does stop while the agent is down: peer changes (a new host, a rotated key) and
 * restarts of a wireguard-go that dies in that window. `weft reset` / removing the network stops it by PID.
 *
 * wireguard-go stays in the agent's session and process group (not `detached`): with the kernel's autogroup
 * scheduling a process in a session of its own gets a CPU share of its own, and wireguard-go started that way
 * ran at 0.55–0.85× of the same wireguard-go in the caller's session on this loaded machine (bench: 1.00× the
 * hand-made path this way). So Ctrl-C on an agent running in a terminal signals the group and stops
 * wireguard-go too (traffic stops until the agent is started again, which starts a new one); under systemd
 * use KillMode=mixed or process to keep it across `systemctl restart`.
 *
 * MTU: underlay − 80 (IPv6 outer header + UDP + WireGuard's 32 bytes), so the same value is right over IPv4
 * and IPv6 underlays.
 *
 * Connected networks (`weft network connect`): a peer's allowed-ips also hold its host's subnets in the
 * networks connected to this one (the module asks for their leases: wantsConnectedLeases), since traffic
 * between two networks goes out through one network's device and comes back through the other's; see
 * planPeers and connectedNetworks().
 *
 * Key rotation (`weft rotate-keys`): a new pair is written (atomically, 0600) and set on the device, and
 * the lease is rewritten with the new PublicKey; peers replace the old peer entry with the new key on their
 * next reconcile (store watch), and the first packet either way makes a new handshake. Traffic to this host
 * stalls between the key change here and the peers' reconcile (about the store's watch latency): measured in
 * test/wireguard-e2e.test.ts under a 10/s ping, no ping lost and 0.3–0.8 s without a reply.
 */
export class WireguardBackend implements Backend {
  readonly type = 'wireguard';
  readonly mtu: number;
  readonly device: string;
  readonly port: number;
  readonly keepalive: number;
  readonly keyFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  private readonly want: 'auto' | WgImplementation;
  implementation?: WgImplementation;
  private proc?: SupervisedProcess;
  /** Why the last wireguard-go ended, for status and doctor. */
  private lastExit?: string;
  /** Set once init() has configured the device: a (re)start after that is a restart to configure from scratch. */
  private ready = false;
  private publicKey?: string;
  private own?: Lease;
  private lastLeases?: Lease[];
  /** Networks connected to this one, with their leases (their subnets of a peer's host join its allowed-ips). */
  private connected: ConnectedLeases[] = [];
  private connectedKey = '[]';
  /** Endpoints we set per public key (so a roamed peer is not pulled back on every resync). */
  private readonly endpointsSet = new Map<string, string>();
  private wgState?: WgDeviceState;
  private stateAt = 0;
  private poll?: NodeJS.Timeout;
  private lock: Promise<unknown> = Promise.resolve();
  private readonly refusals: RefusalLog;

  constructor(private readonly ctx: BackendContext) {
    const b = ctx.network.Backend;
    this.port = b.ListenPort === undefined ? DEFAULT_WG_PORT : Number(b.ListenPort);
    this.keepalive = b.PersistentKeepaliveInterval === undefined ? 0 : Number(b.PersistentKeepaliveInterval);
    this.want = (b.Implementation as 'auto' | WgImplementation | undefined) ?? 'auto';
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) throw new WeftError(`wireguard ListenPort ${b.ListenPort} is out of range`);
    this.device = wgDeviceName(ctx.networkName, ctx.hostId);
    this.mtu = ctx.underlay.mtu - WG_OVERHEAD;
    this.keyFile = path.join(ctx.stateDir, KEY_FILE);
    this.pidFile = path.join(ctx.stateDir, PID_FILE);
    this.logFile = path.join(ctx.stateDir, LOG_FILE);
    this.refusals = new RefusalLog((p, why) =>
      ctx.log.error({ network: ctx.networkName, peer: p.publicIp, subnet: p.subnet }, `wireguard: skipping peer ${p.publicIp} (${p.subnet}): ${why}`),
    );
  }

  /** Runs `fn` after every earlier call (wireguard-go restarts, reconciles and key rotations never interleave). */
  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lock.then(fn, fn);
    this.lock = next.catch(() => {});
    return next;
  }

  /** Loads or makes the key, creates or adopts the device (kernel, else wireguard-go), sets key and port. */
  init(): Promise<Record<string, unknown>> {
    return this.serial(async () => {
      const key = loadOrCreateKey(this.keyFile);
      if (key.how === 'generated') this.ctx.log.info({ network: this.ctx.networkName, publicKey: key.publicKey, note: key.note }, `wireguard: generated this host's key pair (${this.keyFile})`);
      if (key.how === 'mode-fixed') this.ctx.log.warn({ network: this.ctx.networkName, note: key.note }, `wireguard: ${this.keyFile} was readable by others; set its mode to 0600`);
      this.publicKey = key.publicKey;
      await this.ensureDevice();
      await this.configureDevice();
      await this.looseRpFilter();
      this.ready = true;
      return this.backendData();
    });
  }

  private backendData(): Record<string, unknown> {
    const data: WgBackendData = { PublicKey: this.publicKey!, ListenPort: this.port };
    return { ...data };
  }

  private async ensureDevice(): Promise<void> {
    const sys = this.ctx.sys;
    const link = await getLink(this.device, sys);
    if (link?.linkinfo?.info_kind === 'wireguard' && this.want !== 'wireguard-go') {
      this.implementation = 'kernel';
      return;
    }
    if (!link && this.want !== 'wireguard-go') {
      try {
        await createLink('wireguard', { name: this.device, mtu: this.mtu }, sys);
        this.implementation = 'kernel';
        this.ctx.log.info({ network: this.ctx.networkName, device: this.device }, 'wireguard: using kernel WireGuard');
        return;
      } catch (err) {
        if (this.want === 'kernel' || (err as WeftError).code !== 'ENOKERNEL') throw err;
        this.ctx.log.info({ network: this.ctx.networkName, device: this.device, why: (err as Error).message }, 'wireguard: no kernel WireGuard here; using wireguard-go');
      }
    }
    this.implementation = 'wireguard-go';
    const have = await run(WIREGUARD_GO, ['--version'], { allowFail: true }).catch((err: Error) => ({ code: -1, stderr: err.message }));
    if (have.code !== 0) throw new WeftError(`no kernel WireGuard here and wireguard-go cannot run (${have.stderr.trim() || `exit ${have.code}`}): install the wireguard-go package`);
    supervisors.get(this.device)?.release();
    this.proc = this.supervise();
    try {
      await this.waitForDevice(this.proc.adopted ? 1000 : 5000);
    } catch (err) {
      if (!this.proc.adopted) {
        await this.proc.stop();
        throw err;
      }
      // adopted but without its device or socket: not usable; start a fresh one
      this.ctx.log.warn({ network: this.ctx.networkName, pid: this.proc.pid }, `wireguard: the running wireguard-go has no ${this.device}; starting a new one`);
      await this.proc.stop();
      this.proc = this.supervise();
      await this.waitForDevice(5000).catch(async (e) => {
        await this.proc!.stop();
        throw e;
      });
    }
    supervisors.set(this.device, this.proc);
  }

  private supervise(): SupervisedProcess {
    return superviseProcess({
      name: `wireguard-go ${this.device}`,
      cmd: WIREGUARD_GO,
      args: ['-f', this.device],
      log: this.ctx.log,
      netns: this.ctx.sys.netns,
      pidFile: this.pidFile,
      logFile: this.logFile,
      onExit: (info) => void (this.lastExit = describeExit(info)),
      onStart: ({ adopted }) => {
        if (this.ready && !adopted) this.restarted();
      },
    });
  }

  /** Waits until wireguard-go made its device and control socket. */
  private async waitForDevice(ms: number): Promise<void> {
    const sock = wgSocketPath(this.device);
    const until = Date.now() + ms;
    while (!(fs.existsSync(sock) && (await getLink(this.device, this.ctx.sys)))) {
      if (Date.now() > until) throw new WeftError(`wireguard-go did not make ${this.device} and ${sock}${this.lastExit ? ` (it ${this.lastExit})` : ''}; see ${this.logFile}`);
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** wireguard-go died and was started again: configure it all from scratch (key, port, address, peers, routes). */
  private restarted(): void {
    this.endpointsSet.clear();
    void this.serial(async () => {
      await this.waitForDevice(5000);
      await this.configureDevice();
      await this.looseRpFilter();
      if (this.own) await this.applyOwn(this.own);
      if (this.lastLeases) await this.applyPeers(this.lastLeases);
      this.ctx.log.info({ network: this.ctx.networkName, device: this.device }, 'wireguard: wireguard-go restarted and reconfigured');
    }).catch((err) => this.ctx.log.error({ err, network: this.ctx.networkName }, 'wireguard: reconfiguring the restarted wireguard-go failed; the next reconcile retries'));
  }

  /**
   * rp_filter loose (2) on the device. Between connected networks traffic is asymmetric: a packet from
   * network A to B arrives on B's device while the route back to its source is A's device, and strict
   * reverse-path filtering (conf.all.rp_filter=1 on some distributions) would drop it. The device itself
   * checks every source against the sending peer's allowed-ips, which is stricter than rp_filter.
   */
  private async looseRpFilter(): Promise<void> {
    await setSysctl(`net.ipv4.conf.${this.device}.rp_filter`, '2', this.ctx.sys).catch((err: Error) =>
      this.ctx.log.warn({ network: this.ctx.networkName, device: this.device, err: err.message }, 'wireguard: could not set rp_filter=2 on the device (connected networks need it where rp_filter is strict)'),
    );
  }

  /** Private key and listen port, when they differ from what the device has. */
  private async configureDevice(): Promise<void> {
    const st = await wgShow(this.device, this.ctx.sys);
    const args: string[] = [];
    if (st.listenPort !== this.port) args.push('listen-port', String(this.port));
    if (st.publicKey !== this.publicKey) args.push('private-key', this.keyFile);
    await wgSet(this.device, args, this.ctx.sys);
  }

  activate(own: Lease): Promise<void> {
    return this.serial(() => this.applyOwn(own));
  }

  private async applyOwn(own: Lease): Promise<void> {
    this.own = own;
    const link = await getLink(this.device, this.ctx.sys);
    if (!link) throw new WeftError(`wireguard: ${this.device} does not exist${this.implementation === 'wireguard-go' ? ' (wireguard-go is not running; it is being restarted)' : ''}`);
    const want = `${networkAddress(own.subnet)}/32`;
    const have = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    const batch = new KernelBatch();
    for (const a of have) if (a !== want) batch.addrDel(a, this.device);
    if (!have.includes(want)) batch.addrAdd(want, this.device);
    if (link.mtu !== this.mtu) batch.linkSet(this.device, { mtu: this.mtu });
    if (!link.flags?.includes('UP')) batch.linkSet(this.device, { up: true });
    await batch.commit(this.ctx.sys);
  }

  reconcile(leases: Lease[]): Promise<void> {
    return this.serial(async () => {
      this.lastLeases = leases;
      await this.configureDevice();
      if (this.own) await this.applyOwn(this.own);
      await this.applyPeers(leases);
    });
  }

  private async applyPeers(leases: Lease[]): Promise<void> {
    const sys = this.ctx.sys;
    const plan = planPeers(leases, {
      network: this.ctx.network.Network,
      ownSubnet: this.own?.subnet,
      ownIp: this.ctx.underlay.ip,
      ownHostId: this.ctx.hostId,
      ownKey: this.publicKey,
      connected: this.connected,
      defaultPort: this.port,
      keepalive: this.keepalive,
    });
    for (const r of plan.refused) this.refusals.refuse(r, r.why);
    const st = await wgShow(this.device, sys);
    const args = peerChanges(st.peers, plan.peers, this.endpointsSet);
    if (args.length) {
      this.ctx.log.debug({ network: this.ctx.networkName, changes: args.length }, 'wireguard: peer changes');
      await wgSet(this.device, args, sys);
    }
    this.endpointsSet.clear();
    for (const p of plan.peers) this.endpointsSet.set(p.publicKey, p.endpoint);
    const routes = (await readRoutes({ dev: this.device, ...sys })).filter((r) => r.dst !== 'default' && cidrWithin(routeDst(r.dst), this.ctx.network.Network));
    const want: RouteSpec[] = plan.peers.map((p) => ({ dst: p.subnet, dev: this.device }));
    const batch = new KernelBatch();
    diffRoutes(routes, want, batch);
    await batch.commit({ ...sys, force: true });
    await this.refresh();
  }

  /**
   * Networks connected to this one (told after every reconcile, with their leases): a peer's subnets in them
   * join its allowed-ips, so that traffic between the connected networks passes cryptokey routing (see
   * planPeers). Applied when they changed; a disconnect takes them out again.
   */
  connectedNetworks(networks: ConnectedNetwork[]): Promise<void> {
    const next: ConnectedLeases[] = networks.map((n) => ({ name: n.name, cidr: n.cidr, leases: n.leases ?? [] }));
    const key = JSON.stringify(next.map((n) => [n.name, n.cidr, n.leases!.map((l) => [l.subnet, l.publicIp, l.hostId ?? ''])]));
    return this.serial(async () => {
      if (key === this.connectedKey) return;
      this.connected = next;
      if (this.lastLeases) await this.applyPeers(this.lastLeases);
      this.connectedKey = key; // after success only: a failed apply is retried on the next call
    });
  }

  /**
   * A new key pair for this host (`weft rotate-keys`): written to the key file, set on the device; returns the
   * lease data to publish. Sessions with peers end here; they resume as soon as peers learn the new key.
   */
  rotateKeys(): Promise<Record<string, unknown>> {
    return this.serial(async () => {
      const pair = generateWgKeyPair();
      writeKeyFile(this.keyFile, pair.privateKey);
      this.publicKey = pair.publicKey;
      await wgSet(this.device, ['private-key', this.keyFile], this.ctx.sys);
      this.ctx.log.info({ network: this.ctx.networkName, publicKey: pair.publicKey }, 'wireguard: rotated this host\'s key pair');
      await this.refresh();
      return this.backendData();
    });
  }

  /** Caches `wg show` for status() (which is synchronous). */
  private async refresh(): Promise<void> {
    try {
      this.wgState = await wgShow(this.device, this.ctx.sys);
      this.stateAt = Date.now();
    } catch {
      this.wgState = undefined;
    }
  }

  async start(signal: AbortSignal): Promise<void> {
    this.poll = setInterval(() => void this.refresh(), 5000);
    this.poll.unref();
    signal.addEventListener('abort', () => clearInterval(this.poll), { once: true });
  }

  /** Leaves wireguard-go running (traffic flows on while the agent is away; the next agent adopts it). */
  async stop(): Promise<void> {
    clearInterval(this.poll);
    this.proc?.release();
    if (this.proc && supervisors.get(this.device) === this.proc) supervisors.delete(this.device);
  }

  /** From the cache of `wg show` (at most 5 s old; a call that finds it older than 1 s refreshes it for the next). */
  status(): BackendStatus {
    if (Date.now() - this.stateAt > 1000) void this.refresh();
    const go = this.implementation === 'wireguard-go';
    const running = go ? (this.proc?.running() ?? false) : this.implementation === 'kernel';
    const st = this.wgState;
    const peers = (st?.peers ?? []).map((p) => ({ publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: p.allowedIps, latestHandshake: p.latestHandshake, rxBytes: p.rxBytes, txBytes: p.txBytes }));
    const shaken = peers.filter((p) => p.latestHandshake > 0).length;
    const what = go ? (running ? `wireguard-go pid ${this.proc!.pid}${this.proc!.adopted ? ' (adopted)' : ''}` : `wireguard-go NOT RUNNING (${this.lastExit ?? 'not started'})`) : 'kernel WireGuard';
    return {
      healthy: running,
      implementation: this.implementation,
      device: this.device,
      listenPort: this.port,
      publicKey: this.publicKey,
      keyFile: this.keyFile,
      keyFileMode: fileMode(this.keyFile),
      ...(go ? { pid: this.proc?.pid, restarts: this.proc?.restarts ?? 0, adopted: this.proc?.adopted ?? false, lastExit: this.lastExit, logFile: this.logFile } : {}),
      peers,
      stateAt: this.stateAt,
      detail: `${what}, ${this.device} port ${this.port}, ${peers.length} peer${peers.length === 1 ? '' : 's'} (${shaken} with a handshake)`,
    };
  }

  /** Stops wireguard-go by PID (or deletes the kernel device), removes its socket, key and PID file. */
  async teardown(): Promise<void> {
    clearInterval(this.poll);
    if (this.proc) await this.proc.stop();
    else await stopWireguardGo(this.pidFile, this.device); // `weft reset` without an agent
    supervisors.delete(this.device);
    if (await getLink(this.device, this.ctx.sys)) await new KernelBatch().linkDel(this.device).commit({ ...this.ctx.sys, force: true });
    for (const f of [wgSocketPath(this.device), this.keyFile, this.pidFile, this.logFile]) fs.rmSync(f, { force: true });
  }
}

/**
 * Stops the wireguard-go a PID file names (only if that PID still runs `wireguard-go -f DEVICE`) and removes
 * the PID file and its socket; returns the PID it stopped. For `weft reset` without an agent, tests and bench.
 */
export async function stopWireguardGo(pidFile: string, device: string): Promise<number | undefined> {
  const pid = findRunning(pidFile, WIREGUARD_GO, ['-f', device]);
  if (pid !== undefined) await terminatePid(pid);
  fs.rmSync(pidFile, { force: true });
  fs.rmSync(wgSocketPath(device), { force: true });
  return pid;
}

/** The PID of the wireguard-go a PID file names, when it still runs `wireguard-go -f DEVICE`. */
export function runningWireguardGo(pidFile: string, device: string): number | undefined {
  return findRunning(pidFile, WIREGUARD_GO, ['-f', device]);
}

registerBackend({
  type: 'wireguard',
  encrypted: true,
  description: 'encrypted (WireGuard: kernel, else wireguard-go): a peer per host, its subnet routed via the device; works across L3',
  mtuOverhead: WG_OVERHEAD,
  defaults: { ListenPort: DEFAULT_WG_PORT },
  configSchema: z.looseObject({
    ListenPort: z.number().int().min(1).max(65535, { message: 'port out of range (1–65535)' }).optional(),
    PersistentKeepaliveInterval: z.number().int().min(0).max(65535, { message: 'out of range (0–65535 seconds; 0 = off)' }).optional(),
    Implementation: z.enum(['auto', 'kernel', 'wireguard-go']).optional(),
  }),
  options: [
    { flag: 'listen-port', field: 'ListenPort', kind: 'int', description: 'WireGuard UDP port (default 51820, or the lowest one no other network uses)' },
    { flag: 'keepalive', field: 'PersistentKeepaliveInterval', kind: 'int', description: 'WireGuard persistent keepalive in seconds (default 0 = off; set it behind NAT)' },
    { flag: 'wireguard', field: 'Implementation', kind: 'string', description: 'auto (kernel if it has WireGuard, else wireguard-go), kernel or wireguard-go' },
  ],
  allocateIds(config: BackendConfig, others: BackendConfig[]): BackendConfig {
    if (config.ListenPort !== undefined) return config;
    const used = new Set(others.filter((o) => o.Type === 'wireguard').map((o) => o.ListenPort ?? DEFAULT_WG_PORT));
    let port = DEFAULT_WG_PORT;
    while (used.has(port)) port++;
    return { ...config, ListenPort: port };
  },
  conflict(config, other) {
    const mine = config.ListenPort ?? DEFAULT_WG_PORT;
    return mine === (other.backend.ListenPort ?? DEFAULT_WG_PORT) ? `WireGuard port ${mine} is already used by network "${other.name}"; pick another with --listen-port` : undefined;
  },
  deviceNames: () => [],
  wantsConnectedLeases: true,
  doctor: judgeWireguard,
  create: (ctx) => new WireguardBackend(ctx),
});
