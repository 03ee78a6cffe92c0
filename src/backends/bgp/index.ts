import fs from 'node:fs';
import path from 'node:path';
import { z } from 'zod';
import type { Lease } from '../../lease/types.js';
import { isIPv4 } from '../../net/ipv4.js';
import { BGP_PEERS_PREFIX } from '../../store/layout.js';
import type { Watch, WatchEvent } from '../../store/types.js';
import { birdAnswers, birdCheckConfig, birdMissing, birdCommand, birdConfigure, birdProtocolDetail, birdProtocols, readBirdRoutes } from '../../system/bird.js';
import { canonicalCidr, cidrWithin } from '../../net/ipv4.js';
import { KernelBatch, routeDst } from '../../system/ops.js';
import { findRunning, superviseProcess, terminatePid, type SupervisedProcess } from '../../system/process.js';
import { WeftError } from '../../util/errors.js';
import { registerBackend } from '../registry.js';
import type { Backend, BackendContext, BackendStatus } from '../types.js';
import { birdConfig, sessionPeer, sessions as sessionSpecs, type BirdConfigInput, type SessionKind, type WeftPeer } from './config.js';
import { judgeBgp } from './doctor.js';
import { MAX_ASN, parsePeerEntry, type ExternalPeerRecord } from './peers.js';

export const DEFAULT_ASN = 64512;
export const DEFAULT_HOLD_TIME = 30;

/** One BGP session as `weft status` shows it. */
export interface BgpSession {
  peer: string;
  kind: SessionKind;
  /** BGP state: Established, Active, Connect, Idle, … ("Down" when bird has no such protocol yet). */
  state: string;
  /** bird's Info column after the state, e.g. "Socket: Connection refused", "BGP Error: Bad peer AS". */
  info: string;
  since?: string;
  /** `show protocols all`'s "Last error", for sessions not Established. */
  lastError?: string;
}

/**
 * bgp: pure layer 3 with BGP (the Calico model). The agent writes a BIRD 2 config for its host
 * (`<stateDir>/bird.conf`), runs `bird -f` with its own control socket (`<stateDir>/bird.ctl`) and reloads it
 * with `birdc configure` when peers change (unchanged sessions stay up). BIRD announces the lease subnet
 * and puts the routes it learns into the kernel (`proto bird`). No tunnel device, no static routes by weft.
 *
 * Agent down: bird runs in its own session (detached, PID in `<stateDir>/bird.pid`) and stays up when the
 * agent stops or crashes: sessions and kernel routes stay, traffic flows on; peers that join or leave
 * meanwhile are followed once the agent is back (it adopts the running bird by PID and reconfigures it).
 * If bird itself dies, `persist` keeps its kernel routes on this host, but the peers withdraw this host's
 * subnet after the hold time; the agent (when running) restarts bird with backoff.
 * teardown (`weft reset`, network removed) stops bird by PID and removes its routes and files.
 */
export class BgpBackend implements Backend {
  readonly type = 'bgp';
  readonly mtu: number;
  readonly asn: number;
  readonly holdTime: number;
  readonly reflectors: string[];
  readonly confFile: string;
  readonly sockFile: string;
  readonly pidFile: string;
  readonly logFile: string;
  private own?: Lease;
  private peers: WeftPeer[] = [];
  private readonly external = new Map<string, ExternalPeerRecord>();
  private proc?: SupervisedProcess;
  private watch?: Watch;
  private poll?: NodeJS.Timeout;
  private applying: Promise<void> = Promise.resolve();
  private sessionsNow: BgpSession[] = [];
  private birdError?: string;
  private configures = 0;
  private peersKnown = false;
  /** The config text the running bird was last told to load (undefined: unknown, e.g. adopted). */
  private loaded?: string;
  private stopped = false;
  /** Peer subnets with no `proto bird` route in the kernel yet (their traffic has no way there). */
  private unrouted: string[] = [];
  private externalKnown = false;

  constructor(private readonly ctx: BackendContext) {
    const b = ctx.network.Backend;
    this.asn = Number(b.ASN ?? DEFAULT_ASN);
    this.holdTime = Number(b.HoldTime ?? DEFAULT_HOLD_TIME);
    this.reflectors = ((b.RouteReflectors as string[] | undefined) ?? []).map(String);
    if (!Number.isInteger(this.asn) || this.asn < 1 || this.asn > MAX_ASN) throw new WeftError(`bgp ASN ${b.ASN} is out of range 1–${MAX_ASN}`);
    if (!Number.isInteger(this.holdTime) || this.holdTime < 3 || this.holdTime > 65535) throw new WeftError(`bgp HoldTime ${b.HoldTime} is out of range 3–65535`);
    for (const r of this.reflectors) if (!isIPv4(r)) throw new WeftError(`bgp RouteReflectors: ${JSON.stringify(r)} is not an IPv4 address`);
    this.mtu = ctx.underlay.mtu;
    this.confFile = path.join(ctx.stateDir, 'bird.conf');
    this.sockFile = path.join(ctx.stateDir, 'bird.ctl');
    this.pidFile = path.join(ctx.stateDir, 'bird.pid');
    this.logFile = path.join(ctx.stateDir, 'bird.log');
  }

  /** Runs `fn` after every earlier config change (writes and reloads never interleave). */
  private serial(fn: () => Promise<void>): Promise<void> {
    const next = this.applying.then(fn, fn);
    this.applying = next.catch(() => {});
    return next;
  }

  configInput(): BirdConfigInput {
    const net = this.ctx.network;
    return {
      routerId: this.ctx.underlay.ip,
      asn: this.asn,
      network: canonicalCidr(net.Network),
      subnetLen: net.SubnetLen ?? 24,
      ...(this.own ? { own: { subnet: canonicalCidr(this.own.subnet), bridge: this.ctx.bridge } } : {}),
      holdTime: this.holdTime,
      peers: this.peers,
      reflectors: this.reflectors,
      external: [...this.external.values()].filter((p) => p.network === undefined || p.network === this.ctx.networkName).map((p) => ({ ip: p.ip, asn: p.asn })),
    };
  }

  /**
   * Writes bird.conf when it changed (checked by `bird -p` first) and has a running bird re-read it.
   * Until the peers (first reconcile) and the external peers (first store resync) are known, an existing
   * file is left as it is: it is what a bird adopted after an agent restart runs, and a config without its
   * sessions would close them.
   */
  private apply(): Promise<void> {
    return this.serial(async () => {
      const known = this.peersKnown && (this.externalKnown || !this.ctx.store);
      if (!known && fs.existsSync(this.confFile)) return;
      const text = birdConfig(this.configInput());
      let have: string | undefined;
      try {
        have = fs.readFileSync(this.confFile, 'utf8');
      } catch {
        have = undefined;
      }
      if (have !== text) {
        const tmp = `${this.confFile}.tmp`;
        fs.writeFileSync(tmp, text, { mode: 0o600 });
        try {
          await birdCheckConfig(tmp);
        } catch (err) {
          fs.rmSync(tmp, { force: true });
          throw err;
        }
        fs.renameSync(tmp, this.confFile);
      }
      // a reload that failed (or an adopted bird whose config is unknown) is retried on the next apply
      if (this.loaded !== text && this.proc?.running() && (await birdAnswers(this.sockFile))) {
        await birdConfigure(this.sockFile);
        this.loaded = text;
        this.configures++;
        this.ctx.log.info({ network: this.ctx.networkName, sessions: sessionSpecs(this.configInput()).map((s) => s.peer) }, 'bgp: bird reconfigured');
      }
    });
  }

  /** Publishes the AS number in the lease (doctor compares them). */
  async init(): Promise<Record<string, unknown>> {
    const missing = birdMissing();
    if (missing.length) throw new WeftError(`the bgp backend needs BIRD 2: ${missing.join(' and ')} not found in PATH (Debian package bird2)`);
    fs.mkdirSync(this.ctx.stateDir, { recursive: true, mode: 0o700 });
    return { ASN: this.asn };
  }

  async activate(own: Lease): Promise<void> {
    this.own = own;
    await this.apply();
  }

  async start(signal: AbortSignal): Promise<void> {
    await this.apply();
    const [cmd, args] = birdCommand(this.confFile, this.sockFile);
    this.proc = superviseProcess({
      cmd,
      args,
      name: 'bird',
      netns: this.ctx.sys.netns,
      log: this.ctx.log,
      detached: true,
      pidFile: this.pidFile,
      logFile: this.logFile,
      backoffMs: { min: 500, max: 10_000 },
      // a bird we start reads the file as it is now; an adopted one runs whatever it last loaded
      onStart: ({ adopted }) => {
        try {
          this.loaded = adopted ? undefined : fs.readFileSync(this.confFile, 'utf8');
        } catch {
          this.loaded = undefined;
        }
      },
    });
    // bird answers on its socket within a moment (an adopted one keeps its config until the first reconcile)
    const until = Date.now() + 10_000;
    while (!(await birdAnswers(this.sockFile))) {
      if (Date.now() > until || signal.aborted) {
        this.birdError = `bird does not answer on ${this.sockFile}; see ${this.logFile}`;
        this.ctx.log.error({ network: this.ctx.networkName, log: this.logFile }, `bgp: ${this.birdError}`);
        break;
      }
      await new Promise((r) => setTimeout(r, 100));
    }
    if (this.ctx.store) this.watch = this.ctx.store.watch(BGP_PEERS_PREFIX, (ev) => this.onPeerEvent(ev));
    // session states for status(): every 2 s, every 0.5 s while something is not up yet
    const tick = async () => {
      await this.refreshSessions();
      if (signal.aborted || this.stopped) return;
      this.poll = setTimeout(() => void tick(), this.status().healthy ? 2000 : 500);
      this.poll.unref();
    };
    signal.addEventListener('abort', () => {
      if (this.poll) clearTimeout(this.poll);
      this.watch?.close();
    });
    await tick();
  }

  private onPeerEvent(ev: WatchEvent): void {
    if (ev.type === 'resync') {
      this.externalKnown = true;
      this.external.clear();
      for (const e of ev.entries) {
        const p = parsePeerEntry(e);
        if (p) this.external.set(p.ip, p);
      }
    } else if (ev.type === 'put') {
      const p = parsePeerEntry(ev.entry);
      if (p) this.external.set(p.ip, p);
      else {
        // another client wrote something that is not a peer: no session on its word (an earlier one goes)
        this.ctx.log.warn({ key: ev.entry.key }, 'bgp: ignoring a peer record that does not parse');
        if (!this.external.delete(ev.entry.key.slice(BGP_PEERS_PREFIX.length))) return;
      }
    } else {
      const ip = ev.key.slice(BGP_PEERS_PREFIX.length);
      if (!this.external.delete(ip)) return;
    }
    this.apply().catch((err) => this.ctx.log.error({ err, network: this.ctx.networkName }, 'bgp: applying external peers failed'));
  }

  /** Peers = the other hosts' leases (full mesh, or the set the reflector serves). */
  async reconcile(leases: Lease[]): Promise<void> {
    const ownSubnet = this.own ? canonicalCidr(this.own.subnet) : undefined;
    const peers: WeftPeer[] = [];
    for (const l of leases) {
      const subnet = canonicalCidr(l.subnet);
      if (subnet === ownSubnet || l.publicIp === this.ctx.underlay.ip || !isIPv4(l.publicIp)) continue;
      if (!cidrWithin(subnet, this.ctx.network.Network)) continue;
      peers.push({ ip: l.publicIp, subnet, ...(l.hostId ? { hostId: l.hostId } : {}) });
    }
    this.peers = peers;
    this.peersKnown = true;
    await this.apply();
    await this.refreshSessions();
  }

  /** Reads every session's state from bird (kept for status(), which must answer at once). */
  private async refreshSessions(): Promise<void> {
    const specs = sessionSpecs(this.configInput());
    if (!this.proc?.running()) {
      this.sessionsNow = specs.map((s) => ({ peer: s.peer, kind: s.kind, state: 'Down', info: 'bird is not running' }));
      return;
    }
    try {
      const rows = await birdProtocols(this.sockFile);
      const out: BgpSession[] = [];
      for (const s of specs) {
        const row = rows.find((r) => r.name === s.name);
        const peer = sessionPeer(s.name)!;
        if (!row) {
          out.push({ peer: peer.ip, kind: s.kind, state: 'Down', info: 'not configured in bird yet' });
          continue;
        }
        const session: BgpSession = { peer: peer.ip, kind: s.kind, state: row.bgpState || row.state, info: row.detail ?? '', since: row.since };
        if (session.state !== 'Established') {
          const d = await birdProtocolDetail(this.sockFile, s.name).catch(() => undefined);
          if (d?.lastError) session.lastError = d.lastError;
        }
        out.push(session);
      }
      this.sessionsNow = out;
      const routed = new Set((await readBirdRoutes(this.ctx.sys)).map((r) => canonicalCidr(routeDst(r.dst))));
      this.unrouted = this.peers.map((p) => p.subnet!).filter((sn) => !routed.has(sn));
      this.birdError = undefined;
    } catch (err) {
      this.birdError = `birdc: ${(err as Error).message}`;
    }
  }

  status(): BackendStatus {
    const running = this.proc?.running() ?? false;
    const up = this.sessionsNow.filter((s) => s.state === 'Established').length;
    const total = this.sessionsNow.length;
    const pid = this.proc?.pid;
    const detail = running
      ? `bird pid ${pid}${this.proc?.adopted ? ' (adopted)' : ''}, AS ${this.asn}, ${up}/${total} BGP session${total === 1 ? '' : 's'} Established${this.reflectors.length ? `, route reflectors ${this.reflectors.join(', ')}` : ', full mesh'}${this.unrouted.length ? `; no route yet to ${this.unrouted.join(', ')}` : ''}`
      : `bird is not running${this.birdError ? `: ${this.birdError}` : ''}`;
    return {
      healthy: running && up === total && this.unrouted.length === 0,
      detail,
      asn: this.asn,
      holdTime: this.holdTime,
      reflectors: this.reflectors,
      bird: { pid, running, adopted: this.proc?.adopted ?? false, restarts: this.proc?.restarts ?? 0, configures: this.configures, socket: this.sockFile, config: this.confFile, log: this.logFile, ...(this.birdError ? { error: this.birdError } : {}) },
      sessions: this.sessionsNow,
      ...(this.unrouted.length ? { unrouted: this.unrouted } : {}),
    };
  }

  /** Leaves bird running (detached): sessions and routes stay while the agent is down; a new agent adopts it. */
  async stop(): Promise<void> {
    this.stopped = true;
    if (this.poll) clearTimeout(this.poll);
    this.watch?.close();
    await this.applying;
    this.proc?.release();
  }

  /** Stops bird by PID, removes the routes it put in the kernel and its files. */
  async teardown(): Promise<void> {
    this.stopped = true;
    if (this.poll) clearTimeout(this.poll);
    this.watch?.close();
    await this.applying;
    if (this.proc) await this.proc.stop();
    else {
      const pid = findRunning(this.pidFile, ...birdCommand(this.confFile, this.sockFile));
      if (pid) await terminatePid(pid);
    }
    const routes = await readBirdRoutes(this.ctx.sys).catch(() => []);
    if (routes.length) {
      const batch = new KernelBatch();
      for (const r of routes) batch.routeDel({ dst: r.dst, ...(r.gateway ? { via: r.gateway } : {}), ...(r.dev ? { dev: r.dev } : {}) });
      await batch.commit({ ...this.ctx.sys, force: true });
    }
    for (const f of [this.confFile, `${this.confFile}.tmp`, this.sockFile, this.pidFile, this.logFile]) fs.rmSync(f, { force: true });
  }
}

registerBackend({
  type: 'bgp',
  description: 'pure layer 3: BIRD on every host announces its subnet by BGP (full mesh, route reflectors, external peers); no encapsulation',
  mtuOverhead: 0,
  defaults: { ASN: DEFAULT_ASN, HoldTime: DEFAULT_HOLD_TIME },
  configSchema: z.looseObject({
    ASN: z.number().int().min(1).max(MAX_ASN, { message: `AS number out of range (1–${MAX_ASN})` }).optional(),
    HoldTime: z.number().int().min(3, { message: 'BGP hold time must be at least 3 s' }).max(65535).optional(),
    RouteReflectors: z.array(z.string().refine(isIPv4, { message: 'route reflector must be an IPv4 address' })).optional(),
  }),
  options: [
    { flag: 'asn', field: 'ASN', kind: 'int', description: `BGP AS number of the network (default ${DEFAULT_ASN})` },
    { flag: 'hold-time', field: 'HoldTime', kind: 'int', description: `BGP hold time in seconds (default ${DEFAULT_HOLD_TIME}, at least 3)` },
    { flag: 'route-reflector', field: 'RouteReflectors', kind: 'strings', description: 'underlay IPs of the route reflectors, comma-separated (default: full mesh)' },
  ],
  conflict: (_config, other) =>
    `network "${other.name}" already uses the bgp backend: one BIRD per host serves one bgp network (TCP port 179 and the kernel's "proto bird" routes are per host)`,
  doctor: judgeBgp,
  create: (ctx) => new BgpBackend(ctx),
});
