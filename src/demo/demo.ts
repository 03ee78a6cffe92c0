import '../backends/all.js';
import { spawn } from 'node:child_process';
import { setTimeout as sleep } from 'node:timers/promises';
import fs from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { createNetwork } from '../config/registry.js';
import { openStore } from '../store/index.js';
import { AgentProcess, alive } from '../testbed/agents.js';
import { cleanupPrefix, createTestbed } from '../testbed/index.js';
import { formatMatrix, pingAll, pingPairs, type PingResult, type PingTarget } from '../testbed/ping.js';
import { PATIENCE } from '../testbed/wait.js';
import { implementedBackends } from '../backends/registry.js';
import { WeftError } from '../util/errors.js';

/** Everything the demo makes is named from these, so `weft demo down` finds it again. */
export const DEMO_PREFIX = process.env.WEFT_DEMO_PREFIX ?? 'wdemo';
export const DEMO_DIR = process.env.WEFT_DEMO_DIR ?? '/run/weft-demo';
const STATE_FILE = path.join(DEMO_DIR, 'demo.json');

export interface DemoOptions {
  hosts: number;
  containers: number;
  backend: string;
  subnet?: string;
  /** Port on 127.0.0.1 where the web map of the first host is forwarded (default 9403; 0: no map). */
  uiPort?: number;
  progress?: (line: string) => void;
}

interface DemoState {
  prefix: string;
  agents: Array<{ host: string; pid: number; api: string }>;
  /** The socat that forwards 127.0.0.1:uiPort to the first agent's web map socket. */
  uiProxyPid?: number;
}

/** The demo's web map port on this machine's loopback ($WEFT_DEMO_UI_PORT, else 9403). */
export const DEMO_UI_PORT = Number(process.env.WEFT_DEMO_UI_PORT ?? 9403);

export interface DemoResult {
  backend: string;
  containers: Array<PingTarget & { host: string; api: string }>;
  pings: PingResult[];
  matrix: string;
  ok: boolean;
  /** The live web map, when it is forwarded. */
  ui?: string;
}

/**
 * `weft demo`: N hosts as namespaces on one underlay switch, an agent in each against one embedded SQLite
 * store, M containers per host, then an all-pairs ping. Everything stays up for the user to explore until
 * `weft demo down`.
 */
export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const say = o.progress ?? (() => {});
  if (fs.existsSync(STATE_FILE)) throw new WeftError(`a demo is already running (state in ${DEMO_DIR}); run 'weft demo down' first`);
  if (o.hosts < 1 || o.hosts > 50) throw new WeftError(`--hosts must be between 1 and 50, got ${o.hosts}`);
  if (o.containers < 1 || o.containers > 50) throw new WeftError(`--containers must be between 1 and 50, got ${o.containers}`);
  if (!implementedBackends().includes(o.backend)) {
    throw new WeftError(`the demo runs one of: ${implementedBackends().join(', ')} (got --backend ${o.backend})`);
  }
  await cleanupPrefix(DEMO_PREFIX); // leftovers of a demo whose state file is gone
  fs.mkdirSync(DEMO_DIR, { recursive: true });
  const state: DemoState = { prefix: DEMO_PREFIX, agents: [] };
  const save = () => fs.writeFileSync(STATE_FILE, JSON.stringify(state, null, 2) + '\n');
  save();
  try {
    return await build(o, state, save);
  } catch (err) {
    // A half-built demo is of no use: take it down, then report why it failed.
    await demoDown().catch(() => {});
    throw err;
  }
}

async function build(o: DemoOptions, state: DemoState, save: () => void): Promise<DemoResult> {
  const say = o.progress ?? (() => {});

  say(`building ${o.hosts} hosts on an underlay switch (namespaces ${DEMO_PREFIX}-*)`);
  const tb = await createTestbed({ prefix: DEMO_PREFIX, hosts: o.hosts });
  const storeUrl = `sqlite://${path.join(DEMO_DIR, 'weft.db')}`;
  const store = await openStore(storeUrl, { create: true }); // the demo makes its own database
  try {
    const { subnet, extra } = demoNetwork(o, tb.underlayCidr);
    await createNetwork(store, 'demo', { Network: subnet, ...extra, Backend: { Type: o.backend } });
    say(`network demo ${subnet}, backend ${o.backend}, store ${storeUrl}`);
  } finally {
    await store.close();
  }

  const agents: AgentProcess[] = [];
  // The hosts are namespaces, so an agent's 127.0.0.1 is not the user's. The first agent serves its web map
  // on a unix socket (file paths cross namespaces) and a socat on the user's 127.0.0.1 forwards to it.
  const uiSock = path.join(DEMO_DIR, 'ui.sock');
  const uiPort = o.uiPort ?? DEMO_UI_PORT;
  for (const h of tb.hosts) {
    const args = h === tb.hosts[0] && uiPort ? ['--ui-addr', `unix:${uiSock}`] : [];
    const a = await new AgentProcess(h, { storeUrl, dir: DEMO_DIR, detached: true, args }).start();
    agents.push(a);
    state.agents.push({ host: h.id, pid: a.pid, api: a.api });
    save();
  }
  // An agent answers its API before it holds its lease: the subnets are known once every host sees the others
  await Promise.all(agents.map((a) => a.waitForPeers(o.hosts - 1)));
  for (const a of agents) {
    const net = (await a.status())?.networks[0];
    say(`  ${a.host.id} (${a.host.ip}): agent pid ${a.pid}, subnet ${net?.subnet ?? '?'}`);
  }
  const ui = uiPort ? await forwardUi(uiSock, uiPort, state, save) : undefined;
  if (ui) say(`live map: ${ui}`);

  const containers: DemoResult['containers'] = [];
  for (const a of agents) {
    for (let i = 1; i <= o.containers; i++) {
      const ns = await tb.addContainer(a.host, `c${i}`);
      const ep = await a.attach(ns);
      containers.push({ ns, label: `${a.host.id}-c${i}`, ip: ep.address.split('/')[0]!, host: a.host.id, api: a.api });
    }
    say(`  ${a.host.id}: attached ${o.containers} containers`);
  }

  // Some data planes come up a moment after the leases (bgp: once the BGP sessions are Established)
  const until = Date.now() + 20_000 * PATIENCE;
  const unhealthy = async () => (await Promise.all(agents.map((a) => a.status()))).some((st) => !st || st.networks.some((n) => n.status?.healthy === false));
  if (await unhealthy()) say('waiting for the data plane to come up (backend status healthy)');
  while ((await unhealthy()) && Date.now() < until) await sleep(200);

  say(`pinging all ${containers.length * (containers.length - 1)} pairs`);
  const pings = await pingAll(containers);
  // A just-attached container's route or neighbour may still be on its way (a busy machine, a WireGuard
  // handshake): a pair that did not answer is asked again for a bounded while before it counts as failed.
  const retryUntil = Date.now() + RETRY_MS * PATIENCE;
  const byLabel = new Map(containers.map((c) => [c.label, c]));
  for (let first = true; pings.some((p) => !p.ok) && Date.now() < retryUntil; first = false) {
    const failed = pings.filter((p) => !p.ok);
    if (first) say(`  ${failed.length} pair${failed.length === 1 ? '' : 's'} did not answer yet: asking again for up to ${(RETRY_MS * PATIENCE) / 1000} s`);
    await sleep(500);
    const again = await pingPairs(failed.map((p) => [byLabel.get(p.from)!, byLabel.get(p.to)!] as const));
    for (const r of again) pings[pings.findIndex((p) => p.from === r.from && p.to === r.to)] = r;
  }
  return { backend: o.backend, containers, pings, matrix: formatMatrix(containers, pings), ok: pings.every((p) => p.ok), ...(ui ? { ui } : {}) };
}

/** How long pairs that did not answer at first are asked again (× PATIENCE). */
const RETRY_MS = 10_000;

/** Starts the socat that forwards 127.0.0.1:port to the web map's socket; resolves with the URL once it answers. */
async function forwardUi(sock: string, port: number, state: DemoState, save: () => void): Promise<string> {
  for (let i = 0; i < 50 && !fs.existsSync(sock); i++) await new Promise((r) => setTimeout(r, 100));
  const child = spawn('socat', [`TCP-LISTEN:${port},bind=127.0.0.1,reuseaddr,fork`, `UNIX-CONNECT:${sock}`], { stdio: 'ignore', detached: true });
  child.on('error', () => {});
  if (!child.pid) throw new WeftError('cannot start socat for the web map (install socat, or pass --ui-port 0)');
  child.unref();
  state.uiProxyPid = child.pid;
  save();
  const answers = () =>
    new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), resolve(true)));
      s.once('error', () => resolve(false));
    });
  for (let i = 0; i < 50; i++) {
    if (!alive(child.pid)) throw new WeftError(`cannot forward the web map to 127.0.0.1:${port} (port taken?): pass --ui-port N, or 0 for none`);
    if (await answers()) return `http://127.0.0.1:${port}/`;
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new WeftError(`the web map's forwarder on 127.0.0.1:${port} does not answer`);
}

/**
 * The demo network: 10.244.0.0/16 unless --subnet says otherwise; the bridge backend puts containers on the
 * hosts' own segment, so its network is the underlay /24 with per-host /28 ranges from .128 on (clear of the
 * hosts' and switch's addresses).
 */
function demoNetwork(o: DemoOptions, underlay: string): { subnet: string; extra: Record<string, unknown> } {
  if (o.backend !== 'bridge') return { subnet: o.subnet ?? '10.244.0.0/16', extra: {} };
  const subnet = o.subnet ?? underlay;
  const base = subnet.split('/')[0]!.split('.').slice(0, 3).join('.');
  return { subnet, extra: o.subnet ? {} : { SubnetLen: 28, SubnetMin: `${base}.128` } };
}

/** `weft demo down`: stops the demo's agents by PID and removes its namespaces and files. */
export async function demoDown(): Promise<{ stopped: number; namespaces: string[] }> {
  let stopped = 0;
  if (fs.existsSync(STATE_FILE)) {
    const state = JSON.parse(fs.readFileSync(STATE_FILE, 'utf8')) as DemoState;
    for (const a of state.agents) {
      if (alive(a.pid)) {
        process.kill(a.pid, 'SIGTERM');
        stopped++;
      }
    }
    for (let i = 0; i < 50 && state.agents.some((a) => alive(a.pid)); i++) await new Promise((r) => setTimeout(r, 100));
    for (const a of state.agents) if (alive(a.pid)) process.kill(a.pid, 'SIGKILL');
    if (state.uiProxyPid && alive(state.uiProxyPid)) process.kill(state.uiProxyPid, 'SIGTERM');
  }
  const namespaces = await cleanupPrefix(DEMO_PREFIX);
  fs.rmSync(DEMO_DIR, { recursive: true, force: true });
  return { stopped, namespaces };
}
