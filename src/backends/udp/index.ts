import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { BackendConfig } from '../../config/types.js';
import type { Lease } from '../../lease/types.js';
import { cidrWithin, networkAddress } from '../../net/ipv4.js';
import { getLink } from '../../system/ip.js';
import { KernelBatch, readRoutes, routeDst, type RouteSpec } from '../../system/ops.js';
import { findRunning, pidFileProcess, superviseProcess, terminatePid, type SupervisedProcess, describeExit } from '../../system/process.js';
import { WeftError } from '../../util/errors.js';
import { packageRoot } from '../../util/package-root.js';
import { registerBackend } from '../registry.js';
import { diffRoutes, RefusalLog } from '../routes.js';
import type { Backend, BackendContext, BackendStatus, ConnectedNetwork } from '../types.js';
import { judgeUdp } from './doctor.js';
import { DEFAULT_UDP_PORT, parseStats, planUdpPeers, renderTable, UDP_OVERHEAD, udpDeviceName, type UdpBackendData, type UdpPeer, type UdpStats } from './table.js';

export { DEFAULT_UDP_PORT, UDP_OVERHEAD, udpDeviceName } from './table.js';

/** weft-udpd, built from ./native/weft-udpd.c by node-gyp (binding.gyp at the repo root) at `npm ci` / `npm run build`. */
const ROOT = packageRoot(import.meta.url);
export const UDPD_BINARY = path.join(ROOT, 'build/Release/weft-udpd');

/** Files in the network's state dir (mode 0700). */
export const TABLE_FILE = 'udp.table';
export const STATS_FILE = 'udp.stats.json';
export const PID_FILE = 'weft-udpd.pid';
export const LOG_FILE = 'weft-udpd.log';

/** Supervisors by device name: a backend created again for the same device (a join retried) takes over. */
const supervisors = new Map<string, SupervisedProcess>();

/** weft-udpd's arguments: fixed per (device, address, port, state dir), so the next agent can adopt it by its command line. */
function udpdArgs(device: string, ip: string, port: number, stateDir: string): string[] {
  return ['run', device, ip, String(port), path.join(stateDir, TABLE_FILE), path.join(stateDir, STATS_FILE)];
}

/**
 * udp: flannel's UDP mode. Packets for peer subnets are routed into a TUN device (`weft-tun` + 7 hex digits,
 * unique per network and host); weft-udpd (C, ./native) reads them and sends each in a UDP datagram (port
 * 8285 by default, `Port`) to the underlay address of the host whose lease holds the destination, and writes
 * datagrams from peers into the TUN device. Unencrypted (use wireguard for that). MTU = underlay − 28.
 *
 * Split of work: this module keeps the routing table (planUdpPeers: leases → subnet ⇒ peer ip:port), the
 * device's address, MTU and routes (diffRoutes), and the process; it writes the table to `udp.table` in the
 * network's state dir and sends SIGHUP. weft-udpd only forwards, filters and counts: a datagram is dropped
 * and counted when its sender ip:port is not a current peer (`unknownPeer`), when the inner source is not in
 * that sender's lease (`spoofedSource`), when the inner destination is not in this host's lease (`notLocal`)
 * or when it is not a whole IPv4 packet (`malformed`); packets from the TUN device with no peer for their
 * destination count as `noRoute`. Counters (`udp.stats.json`, at most 1 s old) are in `weft status --json`
 * and /metrics (weft_backend_drops_total{reason="spoofedSource"}, weft_backend_packets_total{direction="rx"} …).
 *
 * Traffic across an agent restart: none is lost. weft-udpd is a process of its own, not stopped with the
 * agent (SIGTERM, SIGKILL or a crash); the next agent adopts it through `weft-udpd.pid` (PID + command line)
 * and rewrites the table only when the leases changed. test/udp-e2e.test.ts kills and restarts an agent
 * under a 10/s ping: no ping lost, longest gap 0.13–0.50 s on a loaded machine. While the agent is away,
 * peer changes are not applied. A weft-udpd left with other arguments (Port or address changed) is replaced.
 * The TUN device is persistent (TUNSETPERSIST): when weft-udpd itself dies the device, its address and
 * routes stay, packets are dropped until the supervisor starts it again (500 ms, doubling with repeated
 * failures), and the new one reads the table file at start. weft-udpd stays in the agent's process group
 * (like wireguard-go, for its CPU share): under systemd use KillMode=mixed or process to keep it across restarts.
 */
export class UdpBackend implements Backend {
  readonly type = 'udp';
  readonly mtu: number;
  readonly device: string;
  readonly port: number;
  readonly tableFile: string;
  readonly statsFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  private proc?: SupervisedProcess;
  private lastExit?: string;
  private ready = false;
  private own?: Lease;
  /** The peers of the last reconcile (undefined before the first: the table file is left as it is). */
  private peers?: UdpPeer[];
  private lastLeases?: Lease[];
  /** CIDRs of the networks connected to this one (their containers may send to ours through a peer). */
  private connected: string[] = [];
  private stats?: UdpStats;
  private statsAt = 0;
  private lock: Promise<unknown> = Promise.resolve();
  private readonly refusals: RefusalLog;

  constructor(private readonly ctx: BackendContext) {
    const b = ctx.network.Backend;
    this.port = b.Port === undefined ? DEFAULT_UDP_PORT : Number(b.Port);
    if (!Number.isInteger(this.port) || this.port < 1 || this.port > 65535) throw new WeftError(`udp Port ${b.Port} is out of range`);
    this.device = udpDeviceName(ctx.networkName, ctx.hostId);
    this.mtu = ctx.underlay.mtu - UDP_OVERHEAD;
    this.tableFile = path.join(ctx.stateDir, TABLE_FILE);
    this.statsFile = path.join(ctx.stateDir, STATS_FILE);
    this.pidFile = path.join(ctx.stateDir, PID_FILE);
    this.logFile = path.join(ctx.stateDir, LOG_FILE);
    this.refusals = new RefusalLog((p, why) => ctx.log.error({ network: ctx.networkName, peer: p.publicIp, subnet: p.subnet }, `udp: skipping peer ${p.publicIp} (${p.subnet}): ${why}`));
  }

  private serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.lock.then(fn, fn);
    this.lock = next.catch(() => {});
    return next;
  }

  /** Starts (or adopts) weft-udpd, which makes the persistent TUN device; returns { Port } for the lease. */
  init(): Promise<Record<string, unknown>> {
    return this.serial(async () => {
      if (!fs.existsSync(UDPD_BINARY)) throw new WeftError(`the udp backend needs ${UDPD_BINARY}: build it with \`npm run build\` (node-gyp and a C compiler)`);
      // an adopted weft-udpd forwards by this file: keep it until the first reconcile knows the leases
      if (!fs.existsSync(this.tableFile)) this.writeTable(undefined, []);
      supervisors.get(this.device)?.release();
      await this.replaceOutdated();
      this.proc = this.supervise();
      try {
        await this.waitReady(this.proc.adopted ? 1000 : 5000);
      } catch (err) {
        await this.proc.stop();
        if (!this.proc.adopted) throw err;
        this.ctx.log.warn({ network: this.ctx.networkName }, 'udp: the adopted weft-udpd did not answer; starting a new one');
        this.proc = this.supervise();
        await this.waitReady(5000).catch(async (e) => {
          await this.proc!.stop();
          throw e;
        });
      }
      supervisors.set(this.device, this.proc);
      this.ready = true;
      const data: UdpBackendData = { Port: this.port };
      return { ...data };
    });
  }

  /**
   * A weft-udpd of this device still running with other arguments (the network's Port or this host's address
   * changed while the agent was away) holds the TUN device and would keep a new one from starting: stop it.
   */
  private async replaceOutdated(): Promise<void> {
    const cur = udpdOfDevice(this.pidFile, this.device);
    if (!cur) return;
    const want = udpdArgs(this.device, this.ctx.underlay.ip, this.port, this.ctx.stateDir);
    if (cur.argv.length === want.length + 1 && want.every((a, i) => cur.argv[i + 1] === a)) return;
    this.ctx.log.info({ network: this.ctx.networkName, pid: cur.pid, was: cur.argv.slice(1).join(' ') }, `udp: weft-udpd ${cur.pid} runs with other arguments; replacing it`);
    await terminatePid(cur.pid);
  }

  private supervise(): SupervisedProcess {
    return superviseProcess({
      name: `weft-udpd ${this.device}`,
      cmd: UDPD_BINARY,
      args: udpdArgs(this.device, this.ctx.underlay.ip, this.port, this.ctx.stateDir),
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

  /** Waits until the running weft-udpd wrote its stats (device open, socket bound) and the device exists. */
  private async waitReady(ms: number): Promise<void> {
    const until = Date.now() + ms;
    for (;;) {
      const pid = this.proc?.pid;
      if (pid !== undefined) {
        if (this.proc!.adopted) process.kill(pid, 'SIGUSR1');
        const st = this.readStats();
        if (st?.pid === pid && (await getLink(this.device, this.ctx.sys))) return;
      }
      if (Date.now() > until) {
        const tail = fs.existsSync(this.logFile) ? fs.readFileSync(this.logFile, 'utf8').trim().split('\n').slice(-2).join('; ') : '';
        throw new WeftError(`weft-udpd did not start ${this.device} on ${this.ctx.underlay.ip}:${this.port}${this.lastExit ? ` (it ${this.lastExit})` : ''}${tail ? `: ${tail}` : ''}; see ${this.logFile}`);
      }
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** weft-udpd died and was started again: it reads the table itself; put address, MTU and routes back if they went. */
  private restarted(): void {
    void this.serial(async () => {
      await this.waitReady(5000);
      if (this.own) await this.applyOwn(this.own);
      if (this.lastLeases) await this.applyPeers(this.lastLeases);
      this.ctx.log.info({ network: this.ctx.networkName, device: this.device }, 'udp: weft-udpd restarted');
    }).catch((err) => this.ctx.log.error({ err, network: this.ctx.networkName }, 'udp: checking the restarted weft-udpd failed; the next reconcile retries'));
  }

  activate(own: Lease): Promise<void> {
    return this.serial(() => this.applyOwn(own));
  }

  private async applyOwn(own: Lease): Promise<void> {
    this.own = own;
    const link = await getLink(this.device, this.ctx.sys);
    if (!link) throw new WeftError(`udp: ${this.device} does not exist (weft-udpd is not running; see ${this.logFile})`);
    // the subnet's network address /32 (as vxlan and wireguard): the host talks to peers from an address in its lease
    const want = `${networkAddress(own.subnet)}/32`;
    const have = (link.addr_info ?? []).filter((a) => a.family === 'inet').map((a) => `${a.local}/${a.prefixlen}`);
    const batch = new KernelBatch();
    for (const a of have) if (a !== want) batch.addrDel(a, this.device);
    if (!have.includes(want)) batch.addrAdd(want, this.device);
    if (link.mtu !== this.mtu) batch.linkSet(this.device, { mtu: this.mtu });
    if (!link.flags?.includes('UP')) batch.linkSet(this.device, { up: true });
    await batch.commit(this.ctx.sys);
    if (this.peers) this.writeTable(own.subnet, this.peers, this.connected);
  }

  reconcile(leases: Lease[]): Promise<void> {
    return this.serial(async () => {
      this.lastLeases = leases;
      if (this.own) await this.applyOwn(this.own);
      await this.applyPeers(leases);
    });
  }

  private async applyPeers(leases: Lease[]): Promise<void> {
    const plan = planUdpPeers(leases, { network: this.ctx.network.Network, ownSubnet: this.own?.subnet, ownIp: this.ctx.underlay.ip, defaultPort: this.port });
    for (const r of plan.refused) this.refusals.refuse(r, r.why);
    this.peers = plan.peers;
    this.writeTable(this.own?.subnet, plan.peers, this.connected);
    const routes = (await readRoutes({ dev: this.device, ...this.ctx.sys })).filter((r) => r.dst !== 'default' && cidrWithin(routeDst(r.dst), this.ctx.network.Network));
    const want: RouteSpec[] = plan.peers.map((p) => ({ dst: p.subnet, dev: this.device }));
    const batch = new KernelBatch();
    diffRoutes(routes, want, batch);
    await batch.commit({ ...this.ctx.sys, force: true });
  }

  /** Connected networks (after every reconcile): their sources are accepted from peers too. */
  connectedNetworks(networks: ConnectedNetwork[]): Promise<void> {
    const cidrs = networks.map((n) => n.cidr);
    return this.serial(async () => {
      this.connected = cidrs;
      if (this.peers) this.writeTable(this.own?.subnet, this.peers, cidrs);
    });
  }

  /** Writes the table (atomically, 0600) when it changed, and tells weft-udpd to read it. */
  private writeTable(own: string | undefined, peers: readonly UdpPeer[], allow: readonly string[] = []): void {
    const text = renderTable(own, peers, allow);
    let old: string | undefined;
    try {
      old = fs.readFileSync(this.tableFile, 'utf8');
    } catch {
      old = undefined;
    }
    if (old === text) return;
    const tmp = `${this.tableFile}.${process.pid}.tmp`;
    fs.writeFileSync(tmp, text, { mode: 0o600 });
    fs.renameSync(tmp, this.tableFile);
    const pid = this.proc?.pid;
    if (pid !== undefined) {
      try {
        process.kill(pid, 'SIGHUP');
      } catch {
        /* gone: the restarted one reads the file at start */
      }
    }
  }

  private readStats(): UdpStats | undefined {
    try {
      return parseStats(fs.readFileSync(this.statsFile, 'utf8'));
    } catch {
      return undefined;
    }
  }

  async start(): Promise<void> {}

  /** Leaves weft-udpd running (traffic flows on while the agent is away; the next agent adopts it). */
  async stop(): Promise<void> {
    this.proc?.release();
    if (this.proc && supervisors.get(this.device) === this.proc) supervisors.delete(this.device);
  }

  /** From weft-udpd's stats file (written each second when counters change; a call asks it for a fresh one for the next). */
  status(): BackendStatus {
    const pid = this.proc?.pid;
    if (pid !== undefined && Date.now() - this.statsAt > 200) {
      this.statsAt = Date.now();
      try {
        process.kill(pid, 'SIGUSR1');
      } catch {
        /* gone */
      }
    }
    this.stats = this.readStats() ?? this.stats;
    const st = this.stats?.pid === pid ? this.stats : undefined;
    const running = (this.proc?.running() ?? false) && st !== undefined;
    const what = running ? `weft-udpd pid ${pid}${this.proc!.adopted ? ' (adopted)' : ''}` : `weft-udpd NOT RUNNING (${this.lastExit ?? 'not started'})`;
    const peers = this.peers?.length ?? 0;
    const c = st?.counters;
    return {
      healthy: running,
      device: this.device,
      port: this.port,
      pid,
      restarts: this.proc?.restarts ?? 0,
      adopted: this.proc?.adopted ?? false,
      lastExit: this.lastExit,
      logFile: this.logFile,
      peers: (this.peers ?? []).map((p) => ({ ...p })),
      counters: c ?? {},
      drops: st?.drops ?? {},
      detail: `${what}, ${this.device} udp ${this.port}, ${peers} peer${peers === 1 ? '' : 's'}${c ? `, tx ${c.txPackets} rx ${c.rxPackets} packets, ${st!.drops.total} dropped` : ''}`,
    };
  }

  /** Stops weft-udpd by PID, deletes the (persistent) TUN device and the state files. */
  async teardown(): Promise<void> {
    if (this.proc) await this.proc.stop();
    else await stopUdpd(this.ctx.stateDir, this.device); // `weft reset` without an agent
    supervisors.delete(this.device);
    if (await getLink(this.device, this.ctx.sys)) await new KernelBatch().linkDel(this.device).commit({ ...this.ctx.sys, force: true });
    for (const f of [this.tableFile, this.statsFile, this.pidFile, this.logFile]) fs.rmSync(f, { force: true });
  }
}

/** The PID of the weft-udpd a state dir's PID file names, when it still runs with these arguments. */
export function runningUdpd(stateDir: string, device: string, ip: string, port = DEFAULT_UDP_PORT): number | undefined {
  return findRunning(path.join(stateDir, PID_FILE), UDPD_BINARY, udpdArgs(device, ip, port, stateDir));
}

/** The weft-udpd a PID file names when it serves `device` (whatever its other arguments), with its argv. */
function udpdOfDevice(pidFile: string, device: string): { pid: number; argv: string[] } | undefined {
  const cur = pidFileProcess(pidFile);
  return cur && path.basename(cur.argv[0] ?? '') === path.basename(UDPD_BINARY) && cur.argv[1] === 'run' && cur.argv[2] === device ? cur : undefined;
}

/** Stops the weft-udpd of a state dir's PID file by PID (only if it is a weft-udpd of `device`); for `weft reset` without an agent, tests and bench. */
export async function stopUdpd(stateDir: string, device: string): Promise<number | undefined> {
  const pid = udpdOfDevice(path.join(stateDir, PID_FILE), device)?.pid;
  if (pid !== undefined) await terminatePid(pid);
  fs.rmSync(path.join(stateDir, PID_FILE), { force: true });
  return pid;
}

registerBackend({
  type: 'udp',
  description: 'userspace UDP tunnel (flannel udp): a TUN device, weft-udpd sends packets to the peer leasing their subnet; unencrypted; works across L3',
  mtuOverhead: UDP_OVERHEAD,
  defaults: { Port: DEFAULT_UDP_PORT },
  configSchema: z.looseObject({
    Port: z.number().int().min(1).max(65535, { message: 'port out of range (1–65535)' }).optional(),
  }),
  options: [{ flag: 'port', field: 'Port', kind: 'int', description: 'UDP port of the udp backend (default 8285, or the lowest one no other udp network uses)' }],
  allocateIds(config: BackendConfig, others: BackendConfig[]): BackendConfig {
    if (config.Port !== undefined) return config;
    const used = new Set(others.filter((o) => o.Type === 'udp').map((o) => o.Port ?? DEFAULT_UDP_PORT));
    let port = DEFAULT_UDP_PORT;
    while (used.has(port)) port++;
    return { ...config, Port: port };
  },
  conflict(config, other) {
    if (other.backend.Type !== 'udp') return undefined;
    const mine = config.Port ?? DEFAULT_UDP_PORT;
    return mine === (other.backend.Port ?? DEFAULT_UDP_PORT) ? `UDP port ${mine} is already used by network "${other.name}"; pick another with --port` : undefined;
  },
  deviceNames: () => [],
  doctor: judgeUdp,
  create: (ctx) => new UdpBackend(ctx),
});
