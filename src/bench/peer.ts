import '../backends/all.js';
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { accessSync, constants as fsc } from 'node:fs';
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { callAgent } from '../agent/client.js';
import type { AgentStatus, Endpoint, NetworkStatus } from '../agent/types.js';
import { openStore } from '../store/index.js';
import { networkKeys } from '../store/layout.js';
import type { Store } from '../store/types.js';
import { run } from '../system/exec.js';
import { ipJson } from '../system/ip.js';
import { inNetns } from '../system/netns.js';
import { pidAlive } from '../system/process.js';
import { UsageError, WeftError } from '../util/errors.js';
import { backendEncrypts, withRatios, type BenchRow } from './backends.js';
import { measureRounds, pingRtts, summarise, type MeasuredPath, type NsRun } from './measure.js';

/**
 * `weft bench serve` / `weft bench --peer HOST`: the benchmark on the user's own hosts, two machines that
 * each run an agent and see each other, with nothing but weft on them (no ssh between them).
 *
 * Host B (`serve`) makes a short-lived bench container (a netns `weft-bench-<pid>-<n>`) per network, has its
 * agent attach it, runs `iperf3 -s` in each and on its underlay address, and publishes where they listen in
 * the store (`weft-bench/servers/<hostId>`, TTL, renewed while it serves). Host A (`--peer`) finds that
 * record, checks every address in it against the store (the peer's lease and its agent's endpoint records),
 * attaches its own bench container to the same networks, measures container → container per network and
 * host → host on the underlay, then marks the run done (`weft-bench/done/<hostId>`), and B takes everything
 * down. Either side removes what it made on exit, on failure, on Ctrl-C/SIGTERM and (B) after --timeout.
 *
 * Traffic goes only to the addresses the peer published and the store vouches for.
 */

const ROOT = 'weft-bench/';
export const serverKey = (hostId: string) => `${ROOT}servers/${hostId}`;
export const doneKey = (hostId: string) => `${ROOT}done/${hostId}`;
/** The record lives this long unless renewed (a killed `serve` leaves it at most this long). */
const RECORD_TTL_SECONDS = 30;
const RENEW_MS = 10_000;
/** Bench containers: `weft-bench-<pid of the weft that made it>-<n>`. */
const NS_PREFIX = 'weft-bench-';
export const DEFAULT_PORT = 5201;

/** One bench container of `serve`: where its iperf3 listens. */
export interface ServeTarget {
  network: string;
  backend: string;
  /** Address without prefix length. */
  address: string;
  container: string;
  mtu: number;
}

/** What `serve` publishes under serverKey(hostId). */
export interface ServeRecord {
  hostId: string;
  publicIp: string;
  port: number;
  /** Identifies this run of `serve`: the done key must name it. */
  session: string;
  targets: ServeTarget[];
  /** When it stops serving at the latest (ms since epoch). */
  until: number;
}

/** Parses a record another host wrote (untrusted): undefined when it is not one. */
export function parseServeRecord(value: string): ServeRecord | undefined {
  try {
    const v = JSON.parse(value) as Partial<ServeRecord>;
    const ipv4 = (s: unknown): s is string => typeof s === 'string' && /^\d{1,3}(\.\d{1,3}){3}$/.test(s);
    if (typeof v?.hostId !== 'string' || !ipv4(v.publicIp) || typeof v.session !== 'string' || !Array.isArray(v.targets)) return undefined;
    if (!Number.isInteger(v.port) || v.port! < 1 || v.port! > 65535) return undefined;
    const targets = v.targets.filter(
      (t): t is ServeTarget => !!t && typeof t.network === 'string' && typeof t.backend === 'string' && ipv4(t.address) && typeof t.container === 'string' && typeof t.mtu === 'number',
    );
    return { hostId: v.hostId, publicIp: v.publicIp, port: v.port!, session: v.session, targets, until: typeof v.until === 'number' ? v.until : 0 };
  } catch {
    return undefined;
  }
}

function parseDone(value: string): { session?: string; by?: string } | undefined {
  try {
    const v = JSON.parse(value) as { session?: unknown; by?: unknown };
    return { ...(typeof v.session === 'string' ? { session: v.session } : {}), ...(typeof v.by === 'string' ? { by: v.by } : {}) };
  } catch {
    return undefined;
  }
}

/** Which of the agent's networks to use: the named ones (all of them by default), narrowed to `backends`. */
export function pickNetworks(st: AgentStatus, names: string[] | undefined, backends: string[] | undefined): NetworkStatus[] {
  const joined = st.networks;
  const have = joined.map((n) => n.name);
  for (const name of names ?? []) {
    if (!have.includes(name)) throw new UsageError(`unknown network "${name}" (this host's agent runs: ${have.join(', ') || 'none'})`);
  }
  let nets = names?.length ? joined.filter((n) => names.includes(n.name)) : joined;
  if (backends?.length) {
    nets = nets.filter((n) => backends.includes(n.backend));
    if (!nets.length) throw new UsageError(`no network with backend ${backends.join(' or ')} on this host (it runs: ${joined.map((n) => `${n.name} (${n.backend})`).join(', ') || 'none'})`);
  }
  if (!nets.length) throw new WeftError(`this host's agent runs no network to measure`);
  return nets;
}

/** True when `cmd` is an executable file on $PATH. */
export function onPath(cmd: string, envPath = process.env.PATH ?? ''): boolean {
  return envPath.split(':').filter(Boolean).some((d) => {
    try {
      accessSync(path.join(d, cmd), fsc.X_OK);
      return true;
    } catch {
      return false;
    }
  });
}

function needTools(): void {
  for (const t of ['iperf3', 'ping']) {
    if (!onPath(t)) throw new WeftError(`${t} not found on this host: install it (Debian/Ubuntu: apt install ${t === 'ping' ? 'iputils-ping' : t}) on both hosts`);
  }
}

/** The store both sides meet in: --store, else $WEFT_STORE, else the one the local agent uses. */
async function storeFor(given: string | undefined, st: AgentStatus): Promise<Store> {
  const url = given || process.env.WEFT_STORE || st.store?.url;
  if (!url) throw new UsageError('which store? pass --store URL (or set $WEFT_STORE)');
  return openStore(url);
}

async function agentStatus(api: string): Promise<AgentStatus> {
  return callAgent<AgentStatus>(api, 'GET', '/status', undefined, { timeoutMs: 15_000 });
}

/** Runs argv in a netns by name, or in this process's own namespace when `ns` is ''. */
const execIn: NsRun = (ns, argv) => {
  const [c, a] = ns ? inNetns(ns, argv[0]!, argv.slice(1)) : [argv[0]!, argv.slice(1)];
  return run(c, a, { allowFail: true, timeoutMs: 120_000 });
};

/** SIGINT/SIGTERM while a bench runs: noted (cleanup runs in `finally`), not fatal at once. */
class Signals {
  fired: NodeJS.Signals | undefined;
  private wake: (() => void) | undefined;
  readonly signalled = new Promise<void>((r) => (this.wake = r));
  private readonly on = (s: NodeJS.Signals) => {
    this.fired = s;
    this.wake?.();
  };
  constructor() {
    process.on('SIGINT', this.on);
    process.on('SIGTERM', this.on);
  }
  /** Throws when a signal came (between steps of the setup or the measuring). */
  check(): void {
    if (this.fired) throw new WeftError(`interrupted (${this.fired}); removed what the bench made`, 'EINTR');
  }
  close(): void {
    process.off('SIGINT', this.on);
    process.off('SIGTERM', this.on);
  }
}

/** The bench containers this weft process makes, attached through the local agent; removed by `removeAll`. */
class BenchContainers {
  readonly made: Array<{ ns: string; network: string }> = [];
  constructor(private readonly api: string) {}

  async add(network: string, say: (l: string) => void): Promise<{ ns: string; address: string }> {
    const ns = `${NS_PREFIX}${process.pid}-${this.made.length + 1}`;
    await run('ip', ['netns', 'add', ns]);
    this.made.push({ ns, network });
    await run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    const ep = await callAgent<Endpoint>(this.api, 'POST', '/attach', { container: ns, network }, { timeoutMs: 60_000 });
    const address = ep.address.split('/')[0]!;
    say(`${network}: bench container ${ns} attached, ${address}`);
    return { ns, address };
  }

  /** Detaches and deletes every bench container made here; carries on past failures. */
  async removeAll(): Promise<void> {
    for (const { ns } of this.made.reverse()) await removeContainer(this.api, ns);
    this.made.length = 0;
  }
}

async function removeContainer(api: string, ns: string): Promise<void> {
  await callAgent(api, 'POST', '/detach', { container: ns }, { timeoutMs: 30_000 }).catch(() => {});
  await run('ip', ['netns', 'del', ns], { allowFail: true });
}

/** Bench containers whose weft process is gone (killed with SIGKILL): detach them from this agent and delete them. */
async function removeLeftovers(api: string, say: (l: string) => void): Promise<void> {
  const names = (await ipJson<Array<{ name: string }>>(['netns', 'list']).catch(() => [])).map((n) => n.name);
  for (const ns of names) {
    const m = new RegExp(`^${NS_PREFIX}(\\d+)-\\d+$`).exec(ns);
    if (!m || pidAlive(Number(m[1]))) continue;
    say(`removing ${ns}, left by an earlier bench that did not finish`);
    await removeContainer(api, ns);
  }
}

/** Starts `iperf3 -s` bound to `address` (in `ns`, or here when ''), and waits until it listens. */
async function startServer(ns: string, address: string, port: number, children: ChildProcess[]): Promise<void> {
  const argv = ['iperf3', '-s', '-B', address, '-p', String(port)];
  const [c, a] = ns ? inNetns(ns, argv[0]!, argv.slice(1)) : [argv[0]!, argv.slice(1)];
  const child = spawn(c, a, { stdio: ['ignore', 'pipe', 'pipe'] });
  children.push(child);
  let out = '';
  child.stdout!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-2000)));
  child.stderr!.on('data', (b: Buffer) => (out = (out + b.toString()).slice(-2000)));
  child.on('error', () => {});
  for (let i = 0; i < 50; i++) {
    if (child.exitCode !== null || child.signalCode !== null) break;
    const ss = await execIn(ns, ['ss', '-Hltn', `src ${address}:${port}`]);
    if (ss.stdout.trim()) return;
    await sleep(100);
  }
  const why = out.trim().split('\n').pop() || (child.exitCode !== null ? `exited with ${child.exitCode}` : 'not listening after 5 s');
  throw new WeftError(`iperf3 -s on ${address}:${port}${ns ? ` (in ${ns})` : ''} failed: ${why}${/in use/i.test(why) ? ' (pick another port with --port)' : ''}`);
}

async function stopServers(children: ChildProcess[]): Promise<void> {
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) c.kill('SIGTERM');
  for (let i = 0; i < 20 && children.some((c) => c.exitCode === null && c.signalCode === null); i++) await sleep(50);
  for (const c of children) if (c.pid && c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
  children.length = 0;
}

export interface ServeOptions {
  api: string;
  store?: string;
  networks?: string[];
  backends?: string[];
  port?: number;
  /** Stop serving after this long (seconds). */
  timeoutSeconds?: number;
  /** Keep serving after a client's run finished (until the timeout or a signal). */
  keep?: boolean;
  progress?: (line: string) => void;
  /** Called once everything listens and the record is published. */
  onReady?: (r: ServeRecord) => void;
}

export interface ServeResult {
  record: ServeRecord;
  /** Why it stopped. */
  reason: 'done' | 'timeout' | 'signal';
  /** Hosts whose run finished. */
  runs: string[];
}

/** `weft bench serve`: bench containers + iperf3 servers on this host until a client's run is done. */
export async function serveBench(o: ServeOptions): Promise<ServeResult> {
  const say = o.progress ?? (() => {});
  const port = o.port ?? DEFAULT_PORT;
  const st = await agentStatus(o.api);
  const nets = pickNetworks(st, o.networks, o.backends);
  needTools();
  const store = await storeFor(o.store, st);
  const sig = new Signals();
  const boxes = new BenchContainers(o.api);
  const children: ChildProcess[] = [];
  let published = false;
  let renew: NodeJS.Timeout | undefined;
  try {
    await removeLeftovers(o.api, say);
    const targets: ServeTarget[] = [];
    for (const n of nets) {
      sig.check();
      const { ns, address } = await boxes.add(n.name, say);
      targets.push({ network: n.name, backend: n.backend, address, container: ns, mtu: n.mtu });
    }
    sig.check();
    await startServer('', st.publicIp, port, children);
    for (const t of targets) await startServer(t.container, t.address, port, children);
    say(`iperf3 servers listen on ${[st.publicIp, ...targets.map((t) => t.address)].map((a) => `${a}:${port}`).join(', ')}`);
    sig.check();
    const until = Date.now() + (o.timeoutSeconds ?? 600) * 1000;
    const record: ServeRecord = { hostId: st.hostId, publicIp: st.publicIp, port, session: randomBytes(6).toString('hex'), targets, until };
    const publish = () => store.put(serverKey(st.hostId), JSON.stringify(record), { ttlSeconds: RECORD_TTL_SECONDS });
    await store.delete(doneKey(st.hostId));
    await publish();
    published = true;
    renew = setInterval(() => void publish().catch((e) => say(`cannot renew ${serverKey(st.hostId)}: ${(e as Error).message}`)), RENEW_MS);
    o.onReady?.(record);

    const runs: string[] = [];
    let reason: ServeResult['reason'] = 'timeout';
    while (Date.now() < until) {
      if (sig.fired) {
        reason = 'signal';
        break;
      }
      const done = await store.get(doneKey(st.hostId)).catch(() => undefined);
      const d = done ? parseDone(done.value) : undefined;
      if (done && d?.session === record.session) {
        runs.push(String(d.by ?? '?'));
        say(`run by ${d.by ?? '?'} finished`);
        await store.delete(doneKey(st.hostId), done.revision).catch(() => {});
        if (!o.keep) {
          reason = 'done';
          break;
        }
      }
      await Promise.race([sleep(500), sig.signalled]);
    }
    if (reason === 'timeout') say(`no more waiting: --timeout ${o.timeoutSeconds ?? 600} s passed`);
    return { record, reason, runs };
  } finally {
    if (boxes.made.length) say('cleaning up: iperf3 servers, bench containers, store keys');
    clearInterval(renew);
    await stopServers(children);
    if (published) await store.delete(serverKey(st.hostId)).catch(() => {});
    await store.delete(doneKey(st.hostId)).catch(() => {});
    await boxes.removeAll();
    await store.close().catch(() => {});
    sig.close();
  }
}

export interface PeerBenchOptions {
  api: string;
  store?: string;
  /** The peer's host id or underlay address. */
  peer: string;
  networks?: string[];
  backends?: string[];
  seconds?: number;
  reps?: number;
  pings?: number;
  /** How long to wait for the peer's `weft bench serve` to appear (seconds). */
  waitSeconds?: number;
  progress?: (line: string) => void;
}

export interface PeerBenchResult {
  host: { hostId: string; publicIp: string };
  peer: { hostId: string; publicIp: string };
  rows: BenchRow[];
}

/** Checks every address of the peer's record against the store: its lease's underlay IP, its agent's endpoint records. */
async function verifyRecord(store: Store, st: AgentStatus, r: ServeRecord, nets: NetworkStatus[]): Promise<void> {
  const leaseIps = new Set(st.networks.flatMap((n) => n.peers.filter((p) => p.hostId === r.hostId).map((p) => p.publicIp)));
  if (!leaseIps.has(r.publicIp)) throw new WeftError(`the bench record of ${r.hostId} names ${r.publicIp}, which is not the underlay address of its lease (${[...leaseIps].join(', ') || 'none'}); not measuring`);
  for (const n of nets) {
    const t = r.targets.find((x) => x.network === n.name)!;
    const eps = await store.list(networkKeys(store, n.name).endpointsPrefix(r.hostId));
    const ok = eps.some((e) => {
      try {
        const ep = JSON.parse(e.value) as Partial<Endpoint>;
        return ep.container === t.container && typeof ep.address === 'string' && ep.address.split('/')[0] === t.address;
      } catch {
        return false;
      }
    });
    if (!ok) throw new WeftError(`the bench record of ${r.hostId} names ${t.address} on ${n.name}, which its agent has not attached (no endpoint record); not measuring`);
  }
}

/** Finds the peer's serve record, waiting up to `waitSeconds` for it. */
async function findPeer(store: Store, st: AgentStatus, peer: string, waitSeconds: number, say: (l: string) => void): Promise<ServeRecord> {
  const known = new Map<string, string>();
  for (const n of st.networks) for (const p of n.peers) known.set(p.hostId ?? p.publicIp, p.publicIp);
  if (peer === st.hostId || peer === st.publicIp) throw new UsageError(`--peer ${peer} is this host; name the other host (run \`weft bench serve\` there)`);
  const hostId = known.has(peer) ? peer : [...known].find(([, ip]) => ip === peer)?.[0];
  if (!hostId) {
    throw new WeftError(`peer "${peer}" not found: no host with that id or underlay address shares a network with this one (peers: ${[...known].map(([h, ip]) => `${h} ${ip}`).join(', ') || 'none'})`);
  }
  const until = Date.now() + waitSeconds * 1000;
  let said = false;
  for (;;) {
    const e = await store.get(serverKey(hostId));
    const r = e ? parseServeRecord(e.value) : undefined;
    if (r && r.hostId === hostId) return r;
    if (Date.now() >= until) break;
    if (!said) say(`waiting up to ${waitSeconds} s for \`weft bench serve\` on ${hostId}…`);
    said = true;
    await sleep(500);
  }
  throw new WeftError(`peer ${hostId} (${known.get(hostId)}) is not serving a bench: run \`weft bench serve\` on it first (waited ${waitSeconds} s)`);
}

/** `weft bench --peer HOST`: measures to the peer's `weft bench serve`, per network and on the underlay. */
export async function runPeerBench(o: PeerBenchOptions): Promise<PeerBenchResult> {
  const say = o.progress ?? (() => {});
  const seconds = o.seconds ?? 3;
  const reps = o.reps ?? 1;
  const pings = o.pings ?? 20;
  const st = await agentStatus(o.api);
  let nets = pickNetworks(st, o.networks, o.backends);
  needTools();
  const store = await storeFor(o.store, st);
  const sig = new Signals();
  const boxes = new BenchContainers(o.api);
  try {
    const rec = await findPeer(store, st, o.peer, o.waitSeconds ?? 30, say);
    const served = new Set(rec.targets.map((t) => t.network));
    if (o.networks?.length) {
      const missing = nets.filter((n) => !served.has(n.name)).map((n) => n.name);
      if (missing.length) throw new WeftError(`${rec.hostId} serves no bench container on ${missing.join(', ')} (it serves: ${[...served].join(', ') || 'none'}); run \`weft bench serve --network …\` there`);
    } else {
      nets = nets.filter((n) => served.has(n.name));
      if (!nets.length) throw new WeftError(`${rec.hostId} serves no network this host is on (it serves: ${[...served].join(', ') || 'none'})`);
    }
    await verifyRecord(store, st, rec, nets);
    say(`peer ${rec.hostId} (${rec.publicIp}) serves ${rec.targets.map((t) => `${t.network} ${t.address}`).join(', ')}`);
    await removeLeftovers(o.api, say);

    interface Path {
      backend: string;
      network?: string;
      path: MeasuredPath;
      mtu: number;
    }
    const underlayMtu = (await ipJson<Array<{ mtu?: number }>>(['link', 'show', 'dev', st.iface]).catch(() => []))[0]?.mtu ?? 0;
    const all: Path[] = [{ backend: 'underlay', path: { key: 'underlay', srcNs: '', dstIp: rec.publicIp, port: rec.port }, mtu: underlayMtu }];
    for (const n of nets) {
      sig.check();
      const { ns } = await boxes.add(n.name, say);
      const t = rec.targets.find((x) => x.network === n.name)!;
      all.push({ backend: n.backend, network: n.name, path: { key: n.name, srcNs: ns, dstIp: t.address, port: rec.port }, mtu: Math.min(n.mtu, t.mtu) });
    }
    for (const p of all) {
      sig.check();
      say(`checking ${p.path.key} → ${p.path.dstIp}`);
      await pingRtts(execIn, p.path, 2); // neighbours warm; a broken path fails here, loudly
    }
    const res = await measureRounds(
      all.map((p) => p.path),
      execIn,
      { reps, seconds, pings, say, check: () => sig.check() },
    );
    const rows: BenchRow[] = all.map((p) => ({
      path: p.network === undefined ? 'underlay' : `${p.backend} (network ${p.network})`,
      ...(p.network === undefined ? {} : { backend: p.backend, network: p.network }),
      ...summarise(res.get(p.path.key)!),
      mtu: p.mtu,
      encrypted: p.network === undefined ? false : backendEncrypts(p.backend),
    }));
    await store.put(doneKey(rec.hostId), JSON.stringify({ session: rec.session, by: st.hostId, at: Date.now() }), { ttlSeconds: 60 });
    return { host: { hostId: st.hostId, publicIp: st.publicIp }, peer: { hostId: rec.hostId, publicIp: rec.publicIp }, rows: withRatios(rows) };
  } finally {
    if (boxes.made.length) say('cleaning up: bench containers');
    await boxes.removeAll();
    await store.close().catch(() => {});
    sig.close();
  }
}

/** The netns names of bench containers present now (for tests and `weft doctor`-style checks). */
export async function benchNamespaces(): Promise<string[]> {
  return (await ipJson<Array<{ name: string }>>(['netns', 'list']).catch(() => [])).map((n) => n.name).filter((n) => n.startsWith(NS_PREFIX));
}
